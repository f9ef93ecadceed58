"""The one record of unfinished jobs, and the one function that moves a job (``Lifecycle.move``).

Every change of a job's state goes through ``move``. It checks the move against the
table in ``bot.states`` (an illegal move is refused with a log line and changes
nothing), writes the store (only if the store still holds the state it started
from), applies the money effect exactly once (a refund row keyed by the job; the
in-memory ledger follows only what the store wrote), keeps the fair queue in step,
hands a finished job's images to the retention policy (``bot.retention``), and tells its
observers (metrics, audit, the model breaker) and the notifier. Everything else only reads:
the fair queue, the ledger, positions and "who is running" are views of this record.

With PostgreSQL (``shared``), several processes share the jobs: this process's record
holds only the jobs it is working on (being admitted, or claimed and running), the queue
and the money live in the database, and a move of a job held elsewhere (a cancel of a
queued job) reads it from the store first. The store's conditional update is then what
keeps two processes from moving one job twice.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from bot.errors import AtelierError, UnexpectedError
from bot.i18n import _t
from bot.jobs import Destination, Job, utc_day
from bot.ledger import DayUsage, UsageLedger
from bot.ports import Move
from bot.queue import FairQueue
from bot.retention import InputRetention
from bot.states import MONEY, JobState, MoneyEffect, allowed
from bot.storage import ClaimMiss, ClaimTerms

if TYPE_CHECKING:
    from bot.image_api import Attempt
    from bot.images import OutputImage
    from bot.limits import Quota
    from bot.ports import MoveObserver, Notifier
    from bot.storage import JobStore, SharedStore

log = logging.getLogger(__name__)

INTERRUPTED_TWICE = _t(
    "The bot stopped twice while this edit was running, so it was not tried again. "
    "You were not charged; please send it again."
)
# Positions are recomputed at most this often, however many jobs move in a burst.
POSITIONS_EVERY = 0.05
# With PostgreSQL, the jobs a process works on; queued and interrupted jobs wait in the database.
HELD_WHEN_SHARED = frozenset({JobState.ACCEPTED, JobState.PREPARING, JobState.RUNNING, JobState.DELIVERING})


@dataclass
class _Record:
    job: Job
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)


class Lifecycle:
    """Unfinished jobs by id, the moves between their states, and the views derived from them."""

    def __init__(self, store: JobStore, retention: InputRetention, shared: SharedStore | None = None) -> None:
        self._store = store
        self._retention = retention
        self._shared = shared
        self.holder = ""  # with PostgreSQL: this process's name on the leases it holds (set by the engine)
        self.lease_seconds = 60.0
        self._records: dict[str, _Record] = {}
        self._notifier: Notifier | None = None
        self._observers: list[MoveObserver] = []
        self.ledger = UsageLedger()
        self.queue = FairQueue()
        self._ready = asyncio.Event()  # a job may be taken
        self._moved = asyncio.Event()  # something moved (for waiters such as a stop)
        self._reordered = asyncio.Event()  # the queue changed: positions may have too
        self._places: dict[str, int] = {}
        self._announcer: asyncio.Task[None] | None = None

    # Start and stop -------------------------------------------------------------------------

    async def load(self, now: float) -> list[Job]:
        """Read today's money and every unfinished job from the store; return those jobs.

        Only in the single-process mode: with PostgreSQL the database is the record.
        """
        assert self._shared is None
        day = utc_day(now)
        # A day back covers the longest cooldown; counts are per UTC day.
        self.ledger.load(day, await self._store.ledger_snapshot(day, now - 86400))
        jobs = await self._store.unfinished_jobs()
        for job in jobs:
            self._records[job.id] = _Record(job)
            if job.state.waiting:
                self.queue.add(job.user_id, job.id, job.created_at, ready=job.state is JobState.QUEUED)
        self._queue_changed()
        return jobs

    def attach(self, notifier: Notifier) -> None:
        """Start telling ``notifier`` about moves (and, in one process, places in line)."""
        self._notifier = notifier
        if self._announcer is None and self._shared is None:
            self._announcer = asyncio.create_task(self._announce_places(), name="atelier-positions")

    def observe(self, observer: MoveObserver) -> None:
        """Tell ``observer`` about every move from now on (synchronously, right after the store wrote it)."""
        self._observers.append(observer)

    async def detach(self) -> None:
        """Stop announcing places in line."""
        task, self._announcer = self._announcer, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    # The one way to create and move a job ---------------------------------------------------

    async def create(self, job: Job, quota: Quota) -> Job:
        """Check the member's usage against ``quota`` and record the accepted job and its charge, as
        one step (``LimitReachedError`` says which limit refused).

        In one process the check reads the in-memory ledger and the job is counted in memory
        before the first ``await`` (undone if the store refuses it), so no second request can
        slip in between. With PostgreSQL the database checks the same bounds inside the
        statement that charges, under locks on the member's and (when such a limit applies) the
        server's totals and the day's spend, so no second process can either.
        """
        assert job.state is JobState.ACCEPTED
        if self._shared is not None:
            lease = job.created_at + self.lease_seconds
            await self._shared.admit_job(job, quota, holder=self.holder, lease_until=lease)
            self._records[job.id] = _Record(job)
            return job
        quota.check(self.ledger.usage(job.user_id, job.guild_id, job.charge_day, active=self._active(job.user_id)))
        self.ledger.charge(job)
        self._records[job.id] = _Record(job)
        self.queue.add(job.user_id, job.id, job.created_at)
        try:
            await self._store.create_job(job)
        except BaseException:
            self.ledger.release(job)
            del self._records[job.id]
            self.queue.remove(job.id)
            raise
        self._queue_changed()
        return job

    async def claim_next(self, max_running: int) -> Job | ClaimMiss:
        """With PostgreSQL: move the next job in fair order from queued to running, for this process.

        The store chooses it and makes the move in one transaction (``FOR UPDATE SKIP LOCKED``,
        only from ``queued``, at most ``max_running`` running across all processes); this records
        it here and tells the notifier, as ``move`` does.
        """
        assert self._shared is not None and allowed(JobState.QUEUED, JobState.RUNNING, 0)
        job = await self._shared.claim(self.holder, time.time(), self.lease_seconds, max_running)
        if isinstance(job, Job):
            await self._claimed(job)
        return job

    async def _claimed(self, job: Job) -> None:
        """Record a job this process claimed (queued to running in the store) and tell of the move."""
        self._records[job.id] = _Record(job)
        self._moved.set()
        self._observe(Move(job, JobState.QUEUED, None, (), None))
        await self._tell(job, JobState.QUEUED, None)

    async def _record_for(self, job_id: str) -> _Record | None:
        """This process's record of a job; with PostgreSQL, read from the store if held elsewhere."""
        record = self._records.get(job_id)
        if record is None and self._shared is not None:
            job = await self._store.get_job(job_id)
            if job is not None and not job.state.terminal:
                record = self._records.setdefault(job_id, _Record(job))
        return record

    async def move(
        self,
        job: Job | str,
        target: JobState,
        *,
        error: AtelierError | None = None,
        attempts: Sequence[Attempt] = (),
        result: OutputImage | None = None,
        **values: Any,
    ) -> Job | None:
        """Move a job to ``target``; return it moved, or ``None`` if the move is refused.

        ``result`` (the posted image, on the move to succeeded) is only passed on to the observers.
        """
        moved, _ = await self._move(job, target, None, error, attempts, result, values)
        return moved

    async def move_and_claim(
        self, job: Job, target: JobState, max_running: int, *, attempts: Sequence[Attempt] = (), **values: Any
    ) -> tuple[Job | None, Job | ClaimMiss | None]:
        """With PostgreSQL: ``move``, and if it moved, claim the next job for this process in the same
        transaction (``claim_next``); return the job moved (or ``None``) and the job claimed (or why not)."""
        assert self._shared is not None and allowed(JobState.QUEUED, JobState.RUNNING, 0)
        moved, claimed = await self._move(job, target, max_running, None, attempts, None, values)
        if isinstance(claimed, Job):
            await self._claimed(claimed)
        return moved, claimed

    async def _move(
        self,
        job: Job | str,
        target: JobState,
        claim_for: int | None,
        error: AtelierError | None,
        attempts: Sequence[Attempt],
        result: OutputImage | None,
        values: dict[str, Any],
    ) -> tuple[Job | None, Job | ClaimMiss | None]:
        job_id = job if isinstance(job, str) else job.id
        record = await self._record_for(job_id)
        if record is None:
            log.warning("job=%s refused move to %s: it is not an unfinished job", job_id, target)
            return None, None
        async with record.lock:
            before = record.job.state
            if self._records.get(job_id) is not record or not allowed(before, target, record.job.restarts):
                log.warning("job=%s refused move %s -> %s", job_id, before, target)
                return None, None
            values = self._stamp(record.job, target, error, attempts, values)
            refund = MONEY[target] is MoneyEffect.REFUND
            if claim_for is None:
                stored = await self._store.move_job(job_id, before, target, values, refund=refund, attempts=attempts)
            else:
                assert self._shared is not None
                terms = ClaimTerms(self.holder, time.time(), self.lease_seconds, claim_for)
                stored = await self._shared.move_and_claim(
                    job_id, before, target, values, refund=refund, attempts=attempts, claim=terms
                )
            if not stored.moved:
                log.warning("job=%s refused move %s -> %s: the store holds another state", job_id, before, target)
                if self._shared is not None:
                    self._forget(job_id)  # another process moved it: the store knows better
                return None, None
            moved = dataclasses.replace(record.job, state=target, **values)
            record.job = moved
            if stored.refunded:
                self.ledger.refund(moved)
            self._reindex(moved)
            # Before any await: an observer hears of every move the store recorded, in order.
            self._observe(Move(moved, before, error, tuple(attempts), result))
            if target.terminal:
                # Kept a while for a reroll if it succeeded, else deleted now (``bot.retention``).
                await self._retention.job_ended(moved)
                _log_end(moved)
            await self._tell(moved, before, error)
        return moved, stored.claimed

    async def redirect(self, job_id: str, destination: Destination) -> None:
        """Show an unfinished job somewhere else from now on: its status message moved to a new one.

        Not a move (no state, no money) and deliberately not under the job's lock: the
        notifier moves a status message from a task that a move may be waiting for. A move
        that lands meanwhile copies the record after its write, so it keeps this destination.
        """
        await self._store.set_destination(job_id, destination)
        record = self._records.get(job_id)
        if record is not None and not record.job.state.terminal:
            record.job = dataclasses.replace(record.job, destination=destination)

    @staticmethod
    def _stamp(
        job: Job, target: JobState, error: AtelierError | None, attempts: Sequence[Attempt], values: dict[str, Any]
    ) -> dict[str, Any]:
        """The values a move records besides the caller's: times, the error, counts."""
        now = time.time()
        if target is JobState.QUEUED:
            values.setdefault("queued_at", now)
        if target is JobState.RUNNING:
            values.setdefault("started_at", now)
        if target.terminal:
            values.setdefault("finished_at", now)
        if error is not None:
            values["error"] = error.log_detail[:500]
        if job.state is JobState.INTERRUPTED and target is JobState.QUEUED:
            values.update(restarts=job.restarts + 1, started_at=None)
        if attempts:
            values["attempts"] = job.attempts + len(attempts)
        return values

    def _reindex(self, job: Job) -> None:
        if self._shared is not None:
            if job.state not in HELD_WHEN_SHARED:
                self._forget(job.id)
        else:
            if job.state is JobState.QUEUED:
                self.queue.add(job.user_id, job.id, job.created_at, ready=True)
                self.queue.mark_ready(job.id)
            elif not job.state.waiting:
                self.queue.remove(job.id)
            if job.state.terminal:
                del self._records[job.id]
            self._queue_changed()
        self._moved.set()

    def _forget(self, job_id: str) -> None:
        self._records.pop(job_id, None)

    def _observe(self, move: Move) -> None:
        for observer in self._observers:
            try:
                observer.job_moved(move)
            except Exception as exc:  # a lost count or audit line, never a stuck job
                UnexpectedError.capture(exc, f"an observer of job {move.job.id}")

    async def _tell(self, job: Job, before: JobState, error: AtelierError | None) -> None:
        if self._notifier is None:
            return
        try:
            await self._notifier.job_moved(job, before, error)
        except Exception as exc:  # the member may miss an update; the job must not
            UnexpectedError.capture(exc, f"the notifier for job {job.id}")

    async def interrupt(self, job_id: str, attempts: Sequence[Attempt] = ()) -> Job | None:
        """A stop caught this job running or delivering: back in line once, else failed."""
        record = await self._record_for(job_id)
        if record is None or record.job.state not in (JobState.RUNNING, JobState.DELIVERING):
            return None
        if allowed(record.job.state, JobState.INTERRUPTED, record.job.restarts):
            return await self.move(job_id, JobState.INTERRUPTED, attempts=attempts)
        error = AtelierError(INTERRUPTED_TWICE, log_detail="interrupted twice")
        return await self.move(job_id, JobState.FAILED, error=error, attempts=attempts)

    # Views -----------------------------------------------------------------------------------

    def get(self, job_id: str) -> Job | None:
        """An unfinished job, as it is now."""
        record = self._records.get(job_id)
        return record.job if record else None

    def jobs(self, *states: JobState) -> list[Job]:
        """Unfinished jobs (in ``states``, when given), oldest first."""
        return sorted(
            (r.job for r in self._records.values() if not states or r.job.state in states),
            key=lambda j: j.created_at,
        )

    def jobs_of(self, user_id: int) -> list[Job]:
        """A member's unfinished jobs, oldest first."""
        return [job for job in self.jobs() if job.user_id == user_id]

    def count(self, *states: JobState) -> int:
        return sum(1 for _ in self._matching(states))

    def _matching(self, states: Sequence[JobState]) -> Iterator[Job]:
        return (r.job for r in self._records.values() if r.job.state in states)

    def _active(self, user_id: int) -> int:
        return sum(1 for r in self._records.values() if r.job.user_id == user_id)

    async def usage(self, user_id: int, guild_id: int | None, now: float) -> DayUsage:
        """A member's usage today: from the ledger and the record, or with PostgreSQL from the database."""
        if self._shared is not None:
            return await self._shared.day_usage(user_id, guild_id, utc_day(now), now)
        return self.ledger.usage(user_id, guild_id, utc_day(now), active=self._active(user_id))

    async def unfinished_of(self, user_id: int) -> list[Job]:
        """A member's unfinished jobs, oldest first (with PostgreSQL, whichever process holds them)."""
        if self._shared is not None:
            return await self._shared.unfinished_jobs_of(user_id)
        return self.jobs_of(user_id)

    def position(self, job_id: str) -> int | None:
        """A waiting job's place in line (1 = next), as last announced."""
        return self._places.get(job_id)

    # The fair queue ------------------------------------------------------------------------------

    async def take_next(self) -> Job:
        """Wait for a job that may start, and take it out of line (its member's turn is counted)."""
        while True:
            self._ready.clear()
            job_id = self.queue.take()
            if job_id is not None:
                self._queue_changed()
                record = self._records.get(job_id)
                if record is not None:
                    return record.job
                continue
            await self._ready.wait()

    async def wait_until(self, done: Callable[[], bool], timeout: float) -> bool:
        """Wait until ``done()`` holds (checked after every move), at most ``timeout`` s."""
        try:
            async with asyncio.timeout(timeout):
                while True:
                    self._moved.clear()
                    if done():
                        return True
                    await self._moved.wait()
        except TimeoutError:
            return done()

    def _queue_changed(self) -> None:
        if self.queue.has_ready():
            self._ready.set()
        self._reordered.set()

    async def _announce_places(self) -> None:
        """Tell waiting members their new place, coalescing bursts of moves."""
        while True:
            await self._reordered.wait()
            self._reordered.clear()
            places = {
                job_id: place
                for job_id, place in self.queue.positions().items()
                if (record := self._records.get(job_id)) is not None and record.job.state is JobState.QUEUED
            }
            changed = [(self._records[j].job, p) for j, p in places.items() if self._places.get(j) != p]
            self._places = places
            if changed and self._notifier is not None:
                try:
                    await self._notifier.queue_moved(changed)
                except Exception as exc:
                    UnexpectedError.capture(exc, "the notifier for queue places")
            await asyncio.sleep(POSITIONS_EVERY)


def _log_end(job: Job) -> None:
    """One line per job outcome, with its id and timings."""
    request = job.request
    common = (
        f"job={job.id} kind={request.kind} user={request.user_id} guild={request.guild_id} outcome={job.state} "
        f"images={request.input_count} size={request.size or 'auto'}"
    )
    total = (job.finished_at or 0) - job.created_at
    if job.state is JobState.SUCCEEDED:
        wait = (job.started_at or job.created_at) - job.created_at
        log.info(
            "%s api=%.2fs attempts=%d wait=%.2fs total=%.2fs out=%sx%s bytes=%s",
            common, job.api_seconds or 0.0, job.attempts, wait, total, job.output_width, job.output_height,
            job.output_bytes,
        )  # fmt: skip
    else:
        log.info("%s attempts=%d total=%.2fs reason=%r", common, job.attempts, total, job.error)
