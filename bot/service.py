"""The job service: admission, the durable fair queue, workers, restart and shutdown.

A job is charged when it is admitted (under a lock, so two quick requests cannot
both slip past a limit) and refunded if it fails or is cancelled. At most
``MAX_CONCURRENT_JOBS`` API calls are in flight. Everything a member sees goes
through the ``Notifier`` that ``cogs/`` provides; this module knows no Discord.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import time
from collections.abc import Sequence
from typing import Any, Protocol

from bot.config import Config
from bot.errors import AtelierError
from bot.image_api import APIAnswer, ImageAPIClient, ImageEditRequest, ImageEditResult
from bot.images import PreparedImage
from bot.inputs import InputStore
from bot.jobs import Job, JobRequest, JobStatus, new_job_id, utc_day
from bot.ledger import DayUsage, UsageLedger
from bot.limits import GuildLimits, Requester, ShuttingDownError, check_access, check_quota
from bot.queue import FairQueue
from bot.storage import JobStore

log = logging.getLogger(__name__)

INTERRUPTED = (
    "The bot stopped twice while this edit was running, so it was not tried again. "
    "You were not charged; please send it again."
)
INPUTS_LOST = "This edit's images were lost while the bot restarted. You were not charged; please send it again."


class Notifier(Protocol):
    """How the service shows a job's life to its member (implemented in ``cogs/``)."""

    async def job_queued(self, job: Job, position: int) -> None:
        """The job waits at ``position`` (1 = next)."""

    async def job_started(self, job: Job) -> None:
        """The API call is starting."""

    async def job_succeeded(self, job: Job, result: ImageEditResult) -> dict[str, int]:
        """Post the result; return what was uploaded (width, height, bytes). Raise ``AtelierError`` if it can't."""
        ...

    async def job_failed(self, job: Job, error: AtelierError) -> None:
        """Say the job failed; must not raise."""

    async def job_paused(self, job: Job) -> None:
        """The bot is shutting down; the job will resume after the restart."""

    async def job_cancelled(self, job: Job) -> None:
        """The job was withdrawn; stop showing its progress (the canceller's reply says so)."""


class CancelRefusedError(AtelierError):
    """The job cannot be cancelled (not yours, already running, already over)."""


class JobService:
    """Owns the queue and the workers; one per bot."""

    def __init__(self, config: Config, store: JobStore, api: ImageAPIClient, inputs: InputStore) -> None:
        self.config = config
        self.store = store
        self.api = api
        self.inputs = inputs
        self.notifier: Notifier | None = None
        self.accepting = True
        self.ledger = UsageLedger()
        self._settings: dict[int, dict[str, Any]] = {}
        self._queue = FairQueue()
        self._queued: dict[str, Job] = {}
        self._positions: dict[str, int] = {}
        self._admission = asyncio.Lock()
        self._wakeup = asyncio.Event()
        self._slots = asyncio.Semaphore(config.max_concurrent_jobs)
        self._running: dict[str, asyncio.Task[None]] = {}
        self._next_up: str | None = None  # marked running, waiting for a free slot
        self._deliveries: set[asyncio.Task[None]] = set()
        self._dispatcher: asyncio.Task[None] | None = None

    # Start, restart and stop ----------------------------------------------------------------

    async def start(self, notifier: Notifier) -> None:
        """Resume what a previous run left behind, then start dispatching."""
        self.notifier = notifier
        now = time.time()
        # A day back covers the longest cooldown; counts are per UTC day.
        self.ledger.load(utc_day(now), await self.store.ledger_snapshot(utc_day(now), now - 86400))
        for job in await self.store.jobs_with_status([JobStatus.RUNNING, JobStatus.QUEUED]):
            if job.status is JobStatus.RUNNING:
                if job.restarts >= 1:
                    log.warning("job=%s interrupted twice while running; failing it", job.id)
                    await self._finish_failed(job, AtelierError(INTERRUPTED, log_detail="interrupted twice"))
                    continue
                log.info("job=%s was running when the bot stopped; retrying it once", job.id)
                job = await self._set(job, status=JobStatus.QUEUED, restarts=job.restarts + 1, started_at=None)
            if not await self.inputs.exists(job.id):
                await self._finish_failed(job, AtelierError(INPUTS_LOST, log_detail="inputs missing on resume"))
                continue
            self._push(job)
        await self._announce_positions()
        self._dispatcher = asyncio.create_task(self._dispatch(), name="atelier-dispatcher")

    async def shutdown(self, grace: float) -> None:
        """Stop taking work, let running calls finish for ``grace`` s, put back the rest."""
        self.accepting = False
        if self._dispatcher is not None:
            self._dispatcher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._dispatcher
        running = list(self._running.values())
        if running:
            log.info("waiting up to %.0fs for %d running job(s)", grace, len(running))
            _, pending = await asyncio.wait(running, timeout=grace)
            for task in pending:
                task.cancel()
            await asyncio.gather(*pending, return_exceptions=True)
        if self._deliveries:
            await asyncio.wait(list(self._deliveries), timeout=5)
        for job in list(self._queued.values()):
            await self._notify_paused(job)
        log.info("job service stopped; %d job(s) will resume after the restart", len(self._queued))

    # Admission --------------------------------------------------------------------------------

    async def guild_overrides(self, guild_id: int) -> dict[str, Any]:
        """The limits an admin changed in a guild (cached; the store is read once per guild)."""
        if guild_id not in self._settings:
            self._settings[guild_id] = await self.store.guild_settings(guild_id)
        return self._settings[guild_id]

    async def save_guild_overrides(self, guild_id: int, overrides: dict[str, Any], by: int) -> None:
        """Persist a guild's changed limits; they apply to the next request."""
        await self.store.save_guild_settings(guild_id, overrides, by)
        self._settings[guild_id] = dict(overrides)

    async def limits_for(self, guild_id: int | None) -> GuildLimits | None:
        """The limits in force in a guild (``None`` for DMs)."""
        if guild_id is None:
            return None
        return GuildLimits.resolve(self.config, await self.guild_overrides(guild_id))

    def usage(self, user_id: int, guild_id: int | None) -> DayUsage:
        """A member's usage today, as admission sees it."""
        return self.ledger.usage(user_id, guild_id, utc_day(time.time()))

    async def admit(self, request: JobRequest, who: Requester) -> Job:
        """Check permissions and limits and charge the job, atomically; raise if refused."""
        if not self.accepting:
            raise ShuttingDownError()
        limits = await self.limits_for(who.guild_id)
        check_access(self.config, limits, who)
        # The check and the charge happen together in memory, so the acknowledgement never
        # waits on the database behind other members, and no two requests share one last slot.
        async with self._admission:
            now = time.time()
            check_quota(self.config, limits, who, self.ledger.usage(who.user_id, who.guild_id, utc_day(now)), now)
            job = Job(
                id=new_job_id(),
                status=JobStatus.QUEUED,
                created_at=now,
                charge_day=utc_day(now),
                charged=True,
                cost_usd=self.config.price_per_image,
                **dataclasses.asdict(request),
            )
            self.ledger.charge(job)
        try:
            await self.store.insert_job(job)
        except Exception:
            self.ledger.end(job, refund=True)
            raise
        return job

    async def set_delivery(self, job: Job, delivery: dict[str, object]) -> Job:
        """Record where the job's progress and result are shown."""
        return await self._set(job, delivery={**job.delivery, **delivery})

    async def enqueue(self, job: Job, images: Sequence[PreparedImage]) -> None:
        """Keep the prepared inputs with the job and put it in line."""
        await self.inputs.save(job.id, images)
        if not self.ledger.is_active(job.id):
            await self.inputs.delete(job.id)  # cancelled while its images were being prepared
            return
        self._push(job)
        await self._announce_positions()

    async def abandon(self, job: Job, error: AtelierError) -> None:
        """A job that could not start (bad input): refund it and record why."""
        await self._finish_failed(job, error, notify=False)

    async def cancel(self, job_id: str, by_user: int, is_moderator: bool) -> Job:
        """Withdraw a queued job (its requester or a moderator); it costs nothing."""
        job = await self.store.get_job(job_id)
        if job is None:
            raise CancelRefusedError("That edit no longer exists.")
        if job.user_id != by_user and not is_moderator:
            raise CancelRefusedError("Only the member who asked (or a moderator) can cancel this edit.")
        if job_id in self._running or (job.status is JobStatus.RUNNING and job_id != self._next_up):
            raise CancelRefusedError("This edit is already running and can't be stopped; it will finish shortly.")
        if not self.ledger.is_active(job.id):
            raise CancelRefusedError(f"This edit has already {job.status.value}.")
        self._queue.remove(job_id)
        self._queued.pop(job_id, None)
        self.ledger.end(job, refund=True)
        job = await self._set(
            job,
            status=JobStatus.CANCELLED,
            charged=False,
            finished_at=time.time(),
            error=f"cancelled by {by_user}",
        )
        await self.inputs.delete(job_id)
        log.info("job=%s kind=%s user=%s outcome=cancelled by=%s", job.id, job.kind, job.user_id, by_user)
        if self.notifier is not None:
            await self.notifier.job_cancelled(job)
        await self._announce_positions()
        return job

    # The queue and the workers ----------------------------------------------------------------

    def _push(self, job: Job) -> None:
        self._queue.push(job.user_id, job.id, job.created_at)
        self._queued[job.id] = job
        self._wakeup.set()

    async def _announce_positions(self) -> None:
        positions = self._queue.positions()
        changed = {j: p for j, p in positions.items() if self._positions.get(j) != p}
        self._positions = positions
        for job_id, place in changed.items():
            job = self._queued.get(job_id)
            if job is not None and self.notifier is not None:
                await self.notifier.job_queued(job, place)

    async def _dispatch(self) -> None:
        """Take the next job, ready it while the slots are busy, start it the moment one frees."""
        while True:
            job = await self._next_in_line()
            self._next_up = job.id
            try:
                # Recorded as running before the call (a crash from here on counts towards its one
                # retry), and its inputs read, while other calls are still in flight.
                job, images = await asyncio.gather(
                    self._set(job, status=JobStatus.RUNNING, started_at=time.time()), self.inputs.load(job.id)
                )
                await self._slots.acquire()
            except asyncio.CancelledError:
                await self._put_back(job)
                raise
            except Exception as exc:  # the store failed us: fail this job, keep dispatching
                log.exception("job=%s could not be started", job.id)
                await self._finish_failed(job, AtelierError(UNEXPECTED_TEXT, log_detail=repr(exc)))
                continue
            finally:
                self._next_up = None
            if not self.ledger.is_active(job.id):  # cancelled while it waited for the slot
                self._slots.release()
                continue
            self._running[job.id] = asyncio.create_task(self._run(job, images), name=f"atelier-job-{job.id}")

    async def _next_in_line(self) -> Job:
        job_id = self._queue.pop()
        while job_id is None:
            self._wakeup.clear()
            await self._wakeup.wait()
            job_id = self._queue.pop()
        job = self._queued.pop(job_id)
        await self._announce_positions()
        return job

    async def _run(self, job: Job, images: list[PreparedImage] | None) -> None:
        """One job, holding an API slot: the slot covers the API call; delivery happens outside it."""
        slot_held = True
        try:
            if self.notifier is not None:
                await self.notifier.job_started(job)
            if images is None:
                raise AtelierError(INPUTS_LOST, log_detail="inputs missing at start")
            answer = await self.api.call(ImageEditRequest(job.prompt, images, job.size))
            del images
            # The API call is over: free its slot before decoding and uploading.
            self._slots.release()
            slot_held = False
            self._running.pop(job.id, None)
            delivery = asyncio.create_task(self._deliver(job, answer), name=f"atelier-deliver-{job.id}")
            self._deliveries.add(delivery)
            delivery.add_done_callback(self._deliveries.discard)
        except AtelierError as error:
            await self._finish_failed(job, error)
        except asyncio.CancelledError:
            await self._put_back(job)
            raise
        except Exception as exc:  # a bug: log it whole, tell the member, keep the worker alive
            log.exception("job=%s failed unexpectedly", job.id)
            await self._finish_failed(job, AtelierError(UNEXPECTED_TEXT, log_detail=repr(exc)))
        finally:
            if slot_held:
                self._slots.release()
            self._running.pop(job.id, None)

    async def _deliver(self, job: Job, answer: APIAnswer) -> None:
        assert self.notifier is not None
        try:
            result = await self.api.decode(answer)
            del answer  # the base64 body is a third larger than the image: let it go now
            uploaded = await self.notifier.job_succeeded(job, result)
        except AtelierError as error:
            await self._finish_failed(job, error, notify=True)
            return
        except Exception as exc:
            log.exception("job=%s delivery failed unexpectedly", job.id)
            await self._finish_failed(job, AtelierError(UNEXPECTED_TEXT, log_detail=repr(exc)))
            return
        usage = result.usage
        self.ledger.end(job, refund=False)
        finished = await self._set(
            job,
            status=JobStatus.SUCCEEDED,
            finished_at=time.time(),
            attempts=result.attempts,
            api_seconds=result.api_seconds,
            input_tokens=usage.input_tokens if usage else None,
            output_tokens=usage.output_tokens if usage else None,
            total_tokens=usage.total_tokens if usage else None,
            output_width=uploaded.get("width"),
            output_height=uploaded.get("height"),
            output_bytes=uploaded.get("bytes"),
        )
        await self.inputs.delete(job.id)
        log.info(
            "job=%s kind=%s user=%s guild=%s outcome=succeeded images=%d size=%s api=%.2fs attempts=%d "
            "wait=%.2fs total=%.2fs out=%sx%s bytes=%s",
            job.id, job.kind, job.user_id, job.guild_id, job.input_count, job.size or "auto",
            result.api_seconds, result.attempts, (finished.started_at or 0) - job.created_at,
            (finished.finished_at or 0) - job.created_at, uploaded.get("width"), uploaded.get("height"),
            uploaded.get("bytes"),
        )  # fmt: skip

    async def _finish_failed(self, job: Job, error: AtelierError, *, notify: bool = True) -> None:
        """Mark a job failed and refunded, drop its inputs, and tell the member (once per job)."""
        if not self.ledger.end(job, refund=True):
            log.info("job=%s already ended; not failing it again (%s)", job.id, error.log_detail)
            return
        failed = await self._set(
            job, status=JobStatus.FAILED, charged=False, finished_at=time.time(), error=error.log_detail[:500]
        )
        await self.inputs.delete(job.id)
        log.info(
            "job=%s kind=%s user=%s guild=%s outcome=failed error=%s reason=%r total=%.2fs",
            job.id, job.kind, job.user_id, job.guild_id, type(error).__name__, error.log_detail,
            (failed.finished_at or 0) - job.created_at,
        )  # fmt: skip
        if notify and self.notifier is not None:
            await self.notifier.job_failed(failed, error)

    async def _put_back(self, job: Job) -> None:
        """Shutdown caught this job mid-call: queue it again for after the restart."""
        with contextlib.suppress(Exception):
            await self._set(job, status=JobStatus.QUEUED, started_at=None)
        self._queued[job.id] = job
        log.info("job=%s put back in the queue for after the restart", job.id)

    async def _notify_paused(self, job: Job) -> None:
        if self.notifier is not None:
            await self.notifier.job_paused(job)

    async def _set(self, job: Job, **values: Any) -> Job:
        """Record new values of a job and return it updated (the service is the only writer)."""
        await self.store.update_job(job.id, **values)
        return dataclasses.replace(job, **values)

    # Read-only views --------------------------------------------------------------------------

    def position(self, job_id: str) -> int | None:
        """A waiting job's place in line, or ``None``."""
        return self._positions.get(job_id)

    def in_flight(self) -> int:
        """API calls in flight right now."""
        return len(self._running)


UNEXPECTED_TEXT = "Something went wrong on our side; it has been logged. You were not charged."
