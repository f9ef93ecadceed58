"""Running jobs: the fair choice when an API slot frees, the API call, then delivery outside the slot.

The next job is chosen at the moment a slot is free, not before, so whoever was served
least recently goes next even if they asked while every slot was busy; the job that freed
the slot decodes and delivers once that next job has started. In one process
the choice is an in-memory step (``Lifecycle.take_next``); the store write and the input
read that follow run in the job's own task, so a burst of freed slots starts its jobs
together. With PostgreSQL the choice is a claim in the database: made by the worker whose
call ended, in the transaction that records the end (``Lifecycle.move_and_claim``), else by
an idle worker woken by a notice (``SharedQueue``). At most ``MAX_CONCURRENT_JOBS`` API
calls are in flight (across all workers).
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
from collections.abc import Awaitable, Callable
from typing import Any, Protocol

from bot.delivery import Deliverer
from bot.errors import AtelierError, UnexpectedError
from bot.i18n import _t
from bot.image_api import APIAnswer, Attempt, ImageEditRequest, ImageEditResult
from bot.inputs import JobInputs
from bot.jobs import Job
from bot.lifecycle import Lifecycle
from bot.states import JobState
from bot.storage import ClaimMiss

log = logging.getLogger(__name__)

# The longest a finished call's delivery waits for the next job to start (see ``_hand_over``).
HAND_OVER_SECONDS = 0.1
INPUTS_LOST = _t("This edit's images were lost while the bot restarted. You were not charged; please send it again.")


class EditAPI(Protocol):
    """The image API as the dispatcher uses it (``bot.image_api.ImageAPIClient``)."""

    async def call(self, request: ImageEditRequest, attempts: list[Attempt] | None = None) -> APIAnswer: ...
    async def decode(self, answer: APIAnswer) -> ImageEditResult: ...


class Dispatcher:
    """Starts queued jobs as API slots free, and runs each to its end."""

    def __init__(
        self,
        lifecycle: Lifecycle,
        api: EditAPI,
        inputs: JobInputs,
        deliverer: Deliverer,
        max_concurrent: int,
        next_job: Callable[[], Awaitable[Job]],
        key_for: Callable[[int | None], str | None] = lambda guild_id: None,
        *,
        shared_slots: bool = False,
    ) -> None:
        self._lifecycle = lifecycle
        self._next_job = next_job
        self._key_for = key_for
        self._api = api
        self._inputs = inputs
        self._deliverer = deliverer
        self._slots = asyncio.Semaphore(max_concurrent)
        # With PostgreSQL a slot is free for every worker once the store says the call is over, so
        # this process looks for its next job only then (sooner, its claim would find no slot).
        self._shared_slots = shared_slots
        self._max_concurrent = max_concurrent
        self._stopping = False
        self._task: asyncio.Task[None] | None = None
        self._runs: set[asyncio.Task[None]] = set()  # execution handles, not job state
        self._handing_over: collections.deque[asyncio.Future[None]] = collections.deque()

    def start(self) -> None:
        self._task = asyncio.create_task(self._dispatch(), name="atelier-dispatcher")

    async def stop(self, grace: float) -> None:
        """Start nothing new; give running jobs ``grace`` s; interrupt the rest."""
        self._stopping = True  # before any await: no job starts after the running ones are counted
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        while self._handing_over:  # nothing new starts now: no delivery waits for it
            self._started()
        runs = list(self._runs)
        if runs:
            log.info("waiting up to %.0fs for %d running job(s)", grace, len(runs))
            _, pending = await asyncio.wait(runs, timeout=grace)
            for run in pending:
                run.cancel()
            await asyncio.gather(*pending, return_exceptions=True)

    async def _dispatch(self) -> None:
        while True:
            await self._slots.acquire()
            try:
                job = await self._next_job()
            except BaseException:
                self._slots.release()
                raise
            self._start(job)

    def _start(self, job: Job) -> None:
        """Run ``job`` in its own task, in the slot taken for it."""
        run = asyncio.create_task(self._run(job), name=f"atelier-job-{job.id}")
        self._runs.add(run)
        run.add_done_callback(self._runs.discard)

    async def _put_back(self, job: Job) -> None:
        """A job claimed as a call ended, but a stop began meanwhile: its call was never made, yet it is
        treated like a job a stop caught running (back in line once), the rule every process follows."""
        self._slots.release()
        try:
            await self._lifecycle.interrupt(job.id)
        except Exception as exc:  # its lease runs out, and another process takes it over
            UnexpectedError.capture(exc, f"putting back job {job.id}")

    async def _run(self, job: Job) -> None:
        """One job: its API call holds a slot; decoding and posting happen after the slot is freed."""
        slot_held = True
        attempts: list[Attempt] = []
        try:
            # With PostgreSQL the claim already marked it running; in one process the move does now.
            starting = self._lifecycle.move(job, JobState.RUNNING) if job.state is JobState.QUEUED else _now(job)
            try:
                running, images = await asyncio.gather(starting, self._inputs.load(job.id))
            finally:
                self._started()  # started, or not to be: either way the hand-over is done
            if running is None:  # cancelled or ended while it was being started
                return
            if images is None:
                raise AtelierError(INPUTS_LOST, log_detail="inputs missing at start")
            request = ImageEditRequest(
                running.request.api_prompt,
                images,
                running.request.size,
                model=running.model or "",
                # A key removed since admission: the operator's key makes it (it was accepted already).
                api_key=self._key_for(running.guild_id) if running.guild_key else None,
            )
            del images
            answer = await self._api.call(request, attempts)
            del request
            # The API call is over: its slot is freed before decoding and uploading. Decoding starts
            # at once (the base64 body is a third larger than the image, and sixteen of them waiting
            # would add up), except with PostgreSQL: there the record that the call is over frees the
            # slot for every worker, so it goes first (a decoding thread holds the interpreter and
            # made it 5 times slower: 3 ms, not 15).
            decoding: asyncio.Future[ImageEditResult] | None = None
            if not self._shared_slots:
                self._slots.release()
                slot_held = False
                await self._hand_over()
                decoding = asyncio.ensure_future(self._api.decode(answer))
            try:
                claimed: Job | ClaimMiss | None = None
                if self._shared_slots and not self._stopping:
                    # The slot goes straight to the next job in fair order, in the same transaction.
                    delivering, claimed = await self._lifecycle.move_and_claim(
                        running, JobState.DELIVERING, self._max_concurrent, attempts=attempts,
                        api_seconds=answer.api_seconds,
                    )  # fmt: skip
                else:
                    delivering = await self._lifecycle.move(
                        running, JobState.DELIVERING, attempts=attempts, api_seconds=answer.api_seconds
                    )
            except BaseException:
                if decoding is not None:
                    _discard(decoding)
                raise
            attempts = []
            if isinstance(claimed, Job):
                slot_held = False  # this process's slot passes to the job claimed with it
                await self._hand_over(claimed)
            if slot_held:  # PostgreSQL: now that the store says the call is over
                self._slots.release()
                slot_held = False
            if decoding is None:
                decoding = asyncio.ensure_future(self._api.decode(answer))
            del answer
            if delivering is None:
                _discard(decoding)
                return
            await self._deliverer.deliver(delivering, decoding)
        except AtelierError as error:
            await self._lifecycle.move(job, JobState.FAILED, error=error, attempts=attempts)
        except asyncio.CancelledError:
            # A stop: the job goes back in line once (the call may have been billed already).
            await self._lifecycle.interrupt(job.id, attempts)
            raise
        except Exception as exc:  # a bug: logged whole under a reference; the member is told, the worker lives
            bug = UnexpectedError.capture(exc, f"job {job.id}")
            await self._lifecycle.move(job, JobState.FAILED, error=bug, attempts=attempts)
        finally:
            if slot_held:
                self._slots.release()

    async def _hand_over(self, claimed: Job | None = None) -> None:
        """Let the job that takes the freed slot start before this one decodes and delivers.

        Starting a job is a store write and an input read, a few milliseconds; decoding a result
        holds the interpreter for longer, and its writes would queue ahead of the start's. So
        whoever waits for the slot goes first and the API is kept busy (the benchmark's slot gap
        fell from 34 to 22 ms). The wait is bounded, and skipped when nothing is waiting here.
        With PostgreSQL the next job is the one ``claimed`` with this one's end, started here.
        """
        if claimed is None and len(self._handing_over) >= self._lifecycle.count(JobState.QUEUED):
            return  # nothing waits for a slot that another finished job is not already handing over
        if claimed is not None:
            if self._stopping:
                await self._put_back(claimed)
                return
            self._start(claimed)  # in the slot of the call that just ended
        waiter = asyncio.get_running_loop().create_future()
        self._handing_over.append(waiter)
        try:
            async with asyncio.timeout(HAND_OVER_SECONDS):
                await waiter
        except TimeoutError:
            pass  # the next job is slow to start (a claim, a cancel): deliver this one anyway
        finally:
            with contextlib.suppress(ValueError):
                self._handing_over.remove(waiter)

    def _started(self) -> None:
        """A job was started (or could not be): the oldest hand-over still waiting is done."""
        while self._handing_over:
            waiter = self._handing_over.popleft()
            if not waiter.done():
                waiter.set_result(None)
                return

    def in_flight(self) -> int:
        """API calls in flight right now."""
        return self._lifecycle.count(JobState.RUNNING)


async def _now(job: Job) -> Job:
    return job


def _discard(task: asyncio.Future[Any]) -> None:
    """Drop a result nobody will use (retrieving its error, so none is reported as lost)."""
    if task.done():
        if not task.cancelled():
            task.exception()
    else:
        task.cancel()
