"""Running jobs: the fair choice when an API slot frees, the API call its kind asks for, then delivery.

The next job is chosen at the moment a slot is free, not before, so whoever was served
least recently goes next even if they asked while every slot was busy. The choice is a
claim in the store: made by the run whose call just ended, in the transaction that records
the end (``Lifecycle.move_and_claim``: the slot goes straight to the next job), else by this
process's dispatcher when a notice says a job was queued or a slot freed (every process,
this one included, hears them), one job for each free slot (``Lifecycle.claim_up_to``).
At most ``MAX_CONCURRENT_JOBS`` API calls are in flight, across every process; this process
starts at most its own ``WORKER_SLOTS`` of them (all, unless set). A slot handed over stays in its
process, so without that setting the worker that starts first keeps every slot it took.

A run that loses its job (its lease lapsed while this process stalled, and another process
took the job over) is abandoned: it stops waiting for the call it cannot un-bill, keeps its
attempts as possibly billed, and never moves, posts or refunds anything of that job.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from bot.core.attempts import Attempt, AttemptOutcome
from bot.core.job import Job
from bot.core.records import ClaimMiss
from bot.core.states import JobState
from bot.errors import AtelierError, UnexpectedError
from bot.i18n import _t
from bot.jobs.delivery import Copies, Deliverer
from bot.jobs.inputs import JobInputs
from bot.jobs.kinds import UnknownKindError, kind_of
from bot.jobs.lifecycle import Lifecycle, record_pauses
from bot.jobs.previews import Previews
from bot.media.images import PreparedImage
from bot.provider.client import APIAnswer, ImageEditResult, ProviderRequest
from bot.provider.stream import PartialImage
from bot.retries import asked_until_answered
from bot.scheduler import Scheduler

log = logging.getLogger(__name__)

# Notices are the way to wake up; this poll only covers one lost with a dropped connection.
SAFETY_POLL = 5.0
# The pause before claiming again after the database failed a claim.
CLAIM_RETRY_PAUSE = 1.0
# The longest a finished call's delivery waits for the job that took its slot to start its call.
HAND_OVER_SECONDS = 0.1
INPUTS_MISSING = _t("This edit's images are missing. You were not charged; please send it again.")


class ImageAPI(Protocol):
    """The image API as the dispatcher uses it (``bot.provider.client.ImageAPIClient``)."""

    async def call(
        self,
        request: ProviderRequest,
        attempts: list[Attempt] | None = None,
        on_partial: Callable[[PartialImage], None] | None = None,
    ) -> APIAnswer: ...
    async def decode(self, answer: APIAnswer) -> ImageEditResult: ...


@dataclass
class _Run:
    job: Job
    task: asyncio.Task[Any] | None = None
    abandoned: bool = False
    started: asyncio.Event = field(default_factory=asyncio.Event)  # its API call has begun (or never will)


class Dispatcher:
    """Claims jobs as API slots free, and runs each to its end."""

    def __init__(
        self,
        lifecycle: Lifecycle,
        api: ImageAPI,
        inputs: JobInputs,
        deliverer: Deliverer,
        max_concurrent: int,
        scheduler: Scheduler,
        key_for: Callable[[int | None], str | None] = lambda guild_id: None,
        previews: Previews | None = None,
        *,
        slots: int | None = None,
    ) -> None:
        self._lifecycle = lifecycle
        self._api = api
        self._inputs = inputs
        self._deliverer = deliverer
        self._max_concurrent = max_concurrent
        self._scheduler = scheduler
        self._key_for = key_for
        self._previews = previews  # a streaming call's partial images, shown on its status
        # This process's own slots (``Config.process_slots``: never more than ``max_concurrent``, which all share).
        self._slots = asyncio.Semaphore(slots or max_concurrent)
        self._stopping = False
        self._runs: dict[str, _Run] = {}  # execution handles of this process's runs, not job state
        self._interrupted: list[Job] = []  # put back in line by this process's stop
        # What a dispatcher with nothing to claim waits for: a slot freed, or a job queued.
        self._wakes = {ClaimMiss.NO_SLOT: asyncio.Event(), ClaimMiss.NO_JOB: asyncio.Event()}
        lifecycle.on_hand_over(self._read_ahead)

    def start(self) -> None:
        self._scheduler.schedule("dispatcher", self._dispatch())

    def heard(self, payload: str) -> None:
        """A notice from any process: wake the claim that waits for it."""
        if payload in ("queued", "reconnected"):
            self._wakes[ClaimMiss.NO_JOB].set()
        if payload in ("slot", "reconnected"):
            self._wakes[ClaimMiss.NO_SLOT].set()

    async def stop(self, grace: float) -> list[Job]:
        """Start nothing new; give running calls ``grace`` s; interrupt the rest. The jobs interrupted."""
        self._stopping = True  # before any await: no job starts after the running ones are counted
        self._scheduler.cancel("dispatcher")
        runs = [run.task for run in self._runs.values() if run.task is not None]
        if runs:
            log.info("waiting up to %.0fs for %d running job(s)", grace, len(runs))
            _, pending = await asyncio.wait(runs, timeout=grace)
            for task in pending:
                task.cancel()
            await asyncio.gather(*pending, return_exceptions=True)
        return list(self._interrupted)

    async def abandon(self, job: Job) -> None:
        """This process lost ``job`` (another process holds it now): stop its run, which moves nothing more."""
        run = self._runs.get(job.id)
        if run is None or run.job.run != job.run or run.task is None:
            return
        run.abandoned = True
        run.task.cancel()

    def running(self) -> int:
        """API calls this process has in flight."""
        return len(self._runs)

    async def _dispatch(self) -> None:
        while True:
            await self._slots.acquire()
            free = 1
            while not self._slots.locked():  # every slot free now is filled by the one claim
                await self._slots.acquire()  # at once: a slot is free
                free += 1
            try:
                jobs = await self._next_jobs(free)
            except asyncio.CancelledError:
                for _ in range(free):
                    self._slots.release()
                raise
            except Exception as exc:  # a database error: the dispatcher lives on, and tries again after a pause
                for _ in range(free):
                    self._slots.release()
                log.warning("claiming jobs failed (%s); trying again in %.0f s", type(exc).__name__, CLAIM_RETRY_PAUSE)
                await asyncio.sleep(CLAIM_RETRY_PAUSE)
                continue
            for _ in range(free - len(jobs)):
                self._slots.release()
            for job in jobs:
                self._start(job)

    async def _next_jobs(self, free: int) -> list[Job]:
        """Wait until a job can be claimed for this process, and claim as many as ``free`` slots take in one
        transaction (they are then running): jobs queued together start together, not one claim apiece."""
        while True:
            for wake in self._wakes.values():
                wake.clear()  # before the claim: a notice that comes while it runs is not missed
            taken = await self._lifecycle.claim_up_to(self._max_concurrent, free)
            if isinstance(taken, list):
                return taken
            # Only what could change the answer wakes it: with every slot busy, a burst of queued jobs
            # does not send the dispatcher to the store once for each.
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(SAFETY_POLL):
                    await self._wakes[taken].wait()

    def _read_ahead(self, claimed: list[Job]) -> None:
        """The images of the jobs a group of ended calls claimed, asked in one reading before their runs start."""
        self._inputs.read_ahead([job.id for job in claimed if _needs_images(job)])

    def _start(self, job: Job) -> _Run:
        """Run ``job`` in its own task, in the slot taken for it."""
        run = self._runs[job.id] = _Run(job)
        run.task = self._scheduler.spawn(f"job-{job.id}", self._run(run))
        return run

    async def _run(self, run: _Run) -> None:
        """One job: its API call holds a slot; decoding and posting happen after the slot is passed on."""
        job = current = run.job
        slot_held = True
        attempts: list[Attempt] = []
        copies: asyncio.Future[Copies] | None = None
        try:
            try:
                kind = kind_of(job.kind)
                images = await self._load(job) if kind.needs_images else []
                if images is None:
                    raise kind.after_restart(job, False) or AtelierError(
                        INPUTS_MISSING, log_detail="inputs missing at start"
                    )
                # A key removed since admission: the operator's key makes it (it was accepted already).
                key = self._key_for(job.guild_id) if job.guild_key else None
                request = kind.request(job, images, key)
                # The result's copies of its inputs are made while the call runs, from the inputs just read.
                copies = asyncio.ensure_future(self._deliverer.copies(job, images)) if images else None
                del images
            finally:
                run.started.set()  # started, or not to be: either way the hand-over is done
            preview = self._previews.for_run(job) if self._previews is not None else None
            try:
                answer = await self._api.call(request, attempts, preview)
            finally:
                if preview is not None:
                    preview.stop()
            del request
            # The call is over: recorded, and its slot passed to the next job in fair order, together.
            delivering, claimed = await self._record_answer(job, attempts, answer.api_seconds)
            if delivering is None:
                # Refused: another process holds the job now (a running job cannot be cancelled).
                log.warning("job=%s run=%d: discarding an answer that came after its job was lost", job.id, job.run)
                await self._keep_lost_attempts(job, attempts)
                return
            attempts = []
            current = delivering
            if isinstance(claimed, Job):
                slot_held = False  # this process's slot passes to the job claimed with it
                await self._hand_over(claimed)
            else:
                self._slots.release()
                slot_held = False
            decoding = asyncio.ensure_future(self._api.decode(answer))
            del answer
            await self._deliverer.deliver(delivering, decoding, copies)
        except UnknownKindError as error:
            await self._fail(current, error, attempts)
        except AtelierError as error:
            if run.abandoned:
                await self._keep_lost_attempts(job, attempts)
                return
            await self._fail(current, _explain(current, error), attempts)
        except asyncio.CancelledError:
            if run.abandoned:
                await asyncio.shield(self._keep_lost_attempts(job, attempts))
                raise
            # A stop: the job goes back in line once (the call may have been billed already).
            interrupted = await asyncio.shield(self._lifecycle.interrupt(current, attempts))
            if interrupted is not None and interrupted.state is JobState.INTERRUPTED:
                self._interrupted.append(interrupted)
            raise
        except Exception as exc:  # a bug: logged whole under a reference; the member is told, the worker lives
            bug = UnexpectedError.capture(exc, f"job {job.id}")
            if not run.abandoned:
                await self._fail(current, bug, attempts)
        finally:
            run.started.set()
            self._inputs.forget(job.id)  # a reading asked ahead that this run did not take (it ended first)
            if copies is not None:
                copies.cancel()  # a job that ended before its result: its copies are not needed (done: no-op)
            if slot_held:
                self._slots.release()
            if self._runs.get(job.id) is run:
                del self._runs[job.id]

    async def _load(self, job: Job) -> list[PreparedImage] | None:
        """The job's images, asked again while the database fails to answer (a dropped connection, a restart of
        the server): nothing is called yet, but failing the job for a moment's outage would cost the member their
        edit. The job's lease is renewed meanwhile; the last try's error is the run's."""
        asked = await asked_until_answered(
            lambda: self._inputs.load(job.id), record_pauses(self._lifecycle.lease_seconds),
            f"job={job.id} run={job.run}: reading its images", log,
        )  # fmt: skip
        return asked.value

    async def _record_answer(
        self, job: Job, attempts: list[Attempt], api_seconds: float
    ) -> tuple[Job | None, Job | ClaimMiss | None]:
        """Move the job on to delivering with its attempts, and claim the next job for its slot.

        The answer in hand was paid for, so a database error (a dropped connection, a restart of the
        server) is not the end of it: the move is tried again after a pause, while the job's lease is
        renewed as usual. Trying again cannot do anything twice: a transaction that failed wrote nothing, or,
        when only its commit's answer was lost with the connection, wrote everything, and then the next try is
        refused and the job found delivering under this run (``Lifecycle.written_after_all``). Only after the
        last try does the error end the job (failed, refunded), as before.
        """
        recorded = await asked_until_answered(
            lambda: self._lifecycle.move_and_claim(
                job, JobState.DELIVERING, None if self._stopping else self._max_concurrent, attempts=attempts,
                api_seconds=api_seconds,
            ),
            record_pauses(self._lifecycle.lease_seconds), f"job={job.id} run={job.run}: recording its answer", log,
            not_again=(AtelierError,),
        )  # fmt: skip
        if recorded.failed_before and recorded.value[0] is None:
            # Refused after a failed try: that try may have been written after all, its answer lost with the
            # connection. Then the job is delivering under this very run, and the answer in hand is its own.
            # The job that try claimed for the slot, if any, is found by the dispatcher's next claim, which the slot
            # freed here wakes (``Lifecycle.claim_up_to``).
            delivering = await self._lifecycle.written_after_all(job, JobState.DELIVERING, attempts)
            for wake in self._wakes.values():
                wake.set()
            return delivering, None
        return recorded.value

    async def _fail(self, job: Job, error: AtelierError, attempts: list[Attempt]) -> None:
        """End the run's job as failed (refunded, the member told), or, if the database will not take even
        that, let it go: held, its lease would be renewed for ever and the job stay "editing" until a restart.
        Let go, its lease lapses and the take-over (of any process, this one too) resumes or ends it by the
        rules for a run a crash caught."""
        try:
            await self._lifecycle.move(job, JobState.FAILED, error=error, attempts=attempts)
        except Exception as exc:
            self._lifecycle.let_go(job)
            log.warning(
                "job=%s run=%d: the database refused its end too (%s); letting it go for the take-over",
                job.id, job.run, type(exc).__name__,
            )  # fmt: skip

    async def _hand_over(self, claimed: Job) -> None:
        """Start the job that took the freed slot, and let it reach its API call before this one decodes.

        Starting a job is an input read, a few milliseconds; decoding a result holds the interpreter
        for longer. So the next job goes first and the API is kept busy. The wait is bounded.
        """
        if self._stopping:
            # Claimed as a stop began: its call was never made, yet it is put back as a job a stop caught
            # running (back in line once), the rule every process follows.
            self._inputs.forget(claimed.id)
            self._slots.release()
            try:
                interrupted = await self._lifecycle.interrupt(claimed)
            except Exception as exc:  # not this run's failure: the run that ended delivers its answer all the same
                self._lifecycle.let_go(claimed)
                log.warning("job=%s: putting it back in line at the stop failed (%s); letting it go for the take-over",
                            claimed.id, type(exc).__name__)  # fmt: skip
                return
            if interrupted is not None and interrupted.state is JobState.INTERRUPTED:
                self._interrupted.append(interrupted)
            return
        run = self._start(claimed)
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(HAND_OVER_SECONDS):
                await run.started.wait()

    async def _keep_lost_attempts(self, job: Job, attempts: list[Attempt]) -> None:
        """A run that lost its job keeps its attempts on record (possibly billed), and moves nothing."""
        kept = [
            Attempt(a.number, a.started_at, a.seconds, AttemptOutcome.ABANDONED, True, a.http_status, a.request_id)
            if a.outcome is AttemptOutcome.INTERRUPTED
            else a
            for a in attempts
        ]
        if kept:
            try:
                await self._lifecycle.store.record_attempts(job.id, job.run, kept)
            except Exception as exc:
                UnexpectedError.capture(exc, f"recording the attempts of lost job {job.id}")
        log.info("job=%s run=%d abandoned: another process holds it; %d attempt(s) kept", job.id, job.run, len(kept))


def _needs_images(job: Job) -> bool:
    try:
        return kind_of(job.kind).needs_images
    except UnknownKindError:
        return False  # its run fails at once, reading nothing


def _explain(job: Job, error: AtelierError) -> AtelierError:
    """How the job's kind words a failure (an unknown kind: as it is)."""
    try:
        return kind_of(job.kind).explain(error)
    except UnknownKindError:
        return error
