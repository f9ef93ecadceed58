"""The one function that moves a job (``Lifecycle.move``), and the jobs this process holds.

Every change of a job's state goes through ``move``. It checks the move against the table in
``bot.core.states`` (an illegal move is refused with a log line and changes nothing), and has
the store write it (``bot.store``) in one transaction with everything that goes with it: the
refund row a failed or cancelled job is owed (at most one, keyed by the job), the settlement
row of a succeeded job priced by tokens (at most one, keyed by the job), the API
attempts the move records, and, when the job ends, the notice its member is owed (the
outbox). The store refuses a move whose job is no longer where the mover thought it was, and
a move of a job held under a lease names its holder and run (``Fence``), so a process that
lost its lease cannot move, refund or deliver anything of that job. Then ``move`` tells the
observers (metrics, audit, the model breaker), the notifier, and the outbox.

This process holds the jobs it is admitting and the jobs it claimed and runs; their leases
are renewed by ``bot.jobs.keeper``. Everything else about jobs is read from the store.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import Awaitable, Callable, Collection, Mapping, Sequence
from typing import Any, Protocol

from bot.core.attempts import Attempt
from bot.core.job import Job
from bot.core.quota import Quota
from bot.core.records import AdmitOrder, ClaimMiss, ClaimTerms, Fence, MoveOrder, MoveResult, NoticeDraft
from bot.core.states import HELD, MONEY, JobState, MoneyEffect, allowed
from bot.errors import AtelierError, UnexpectedError
from bot.i18n import _t
from bot.jobs.handovers import HandOvers
from bot.jobs.intake import Intake
from bot.media.images import OutputImage
from bot.ports import Move, MoveObserver, Notifier
from bot.retries import asked_until_answered
from bot.store.store import Store

log = logging.getLogger(__name__)

Clock = Callable[[], float]
INTERRUPTED_TWICE = _t(
    "The bot stopped twice while this edit was running, so it was not tried again. "
    "You were not charged; please send it again."
)
# How many more tries at recording what a run did, after the database refused it, and the share of the lease they
# take in all (``record_pauses``).
RECORD_RETRIES = 5
RECORD_SHARE = 0.25
ENDED_WITHOUT_REASON = _t("This edit could not be finished. You were not charged; please send it again.")


def record_pauses(lease_seconds: float) -> list[float]:
    """The pauses before each new try at recording what a run did that cannot be undone (a paid answer, a posted
    result) when the database refused it: doubling, ``RECORD_SHARE`` of the lease in all (the lease is renewed
    meanwhile). With the default lease of a minute, 0.5 s to 7.7 s, 15 s in all: the time a database takes to
    restart."""
    first = lease_seconds * RECORD_SHARE / (2**RECORD_RETRIES - 1)
    return [first * 2**n for n in range(RECORD_RETRIES)]


class EndedHook(Protocol):
    """Told of every job this process ended, after the store recorded it (retention of its inputs)."""

    async def job_ended(self, job: Job) -> None: ...


class OwnNotices(Protocol):
    """The outbox, told of a notice this process owes right now (it ended the job)."""

    async def tell_own(self, job_id: str) -> None: ...


def failure_notice(error: AtelierError | None) -> NoticeDraft:
    """What a failed job's member is owed: the reason, and whether only they should see it."""
    if error is None:
        return NoticeDraft({"text": ENDED_WITHOUT_REASON.to_json(), "private": False})
    return NoticeDraft({"text": error.user_message.to_json(), "private": error.private})


class Lifecycle:
    """The moves between a job's states, and what this process holds."""

    def __init__(self, store: Store, holder: str, *, lease_seconds: float, clock: Clock = time.time) -> None:
        self.store = store
        self.holder = holder
        self.lease_seconds = lease_seconds
        self.clock = clock
        self._held: dict[str, Job] = {}  # the jobs this process holds under a lease, as it last moved them
        self._notifier: Notifier | None = None
        self._observers: list[MoveObserver] = []
        self._ended: EndedHook | None = None
        self._outbox: OwnNotices | None = None
        self._moved = asyncio.Event()
        # The stamps of claims that failed on a database error: written or not, known when it answers again.
        self._unheard: set[float] = set()
        self._last_stamp = -math.inf
        self._intake = Intake(store)
        self._hand_overs = HandOvers(store, holder, lease_seconds, self._claim_stamp, self._unheard.add)

    def attach(self, notifier: Notifier | None, ended: EndedHook | None, outbox: OwnNotices | None) -> None:
        """Tell ``notifier`` about moves, ``ended`` about every end, ``outbox`` about notices owed now."""
        self._notifier = notifier
        self._ended = ended
        self._outbox = outbox

    def on_hand_over(self, claimed: Callable[[list[Job]], None]) -> None:
        """Call ``claimed`` with the jobs a group of hand-overs claimed, as soon as the group is written."""
        self._hand_overs.on_claimed = claimed

    def observe(self, observer: MoveObserver) -> None:
        """Tell ``observer`` about every move from now on (synchronously, right after the store wrote it)."""
        self._observers.append(observer)

    # Creating, claiming and moving jobs ---------------------------------------------------------

    async def create(self, job: Job, quota: Quota) -> Job:
        """Check the member's totals against ``quota`` and record the accepted job (held by this process)
        and its charge, as one step in the store; ``LimitReachedError`` says which limit refused."""
        assert job.state is JobState.ACCEPTED and job.holder == self.holder
        refused = await self._intake.admit(AdmitOrder(job, quota, self.clock() + self.lease_seconds))
        if refused is not None:
            raise quota.refusal(*refused)
        self._held[job.id] = job
        return job

    async def claim_up_to(self, max_running: int, count: int) -> list[Job] | ClaimMiss:
        """Move up to ``count`` jobs (one per free slot), the next in fair order, from queued to running for this
        process, in one transaction (at most ``max_running`` running across every process); or say why none
        was taken.

        A claim whose transaction failed on a database error may have been written all the same, when only its
        answer was lost with the connection: its jobs are then this process's, running, and nobody runs them.
        So the next claim first looks for them by that claim's stamp, and takes them up if it finds them.
        """
        found = await self._claimed_after_all(count)
        if found:
            return found
        now = self._claim_stamp()
        try:
            taken = await self.store.claim_up_to(ClaimTerms(self.holder, now, self.lease_seconds, max_running), count)
        except Exception:
            self._unheard.add(now)
            raise
        if isinstance(taken, list):
            for job in taken:
                await self._claimed(job)
        return taken

    def _claim_stamp(self) -> float:
        """Now, as a claim's stamp (its jobs' ``started_at``): never one this process gave before. A claim whose
        answer was lost is found by its stamp; had another claim the same one (a clock that stood still, or two
        claims within its resolution), the jobs of that claim, not yet taken up by its own caller, would be
        found too and started twice."""
        self._last_stamp = max(self.clock(), math.nextafter(self._last_stamp, math.inf))
        return self._last_stamp

    async def _claimed_after_all(self, most: int) -> list[Job]:
        """Up to ``most`` jobs that claims whose answer was lost took after all (their stamps ``_unheard``), taken
        up as if those claims had answered: held, observed, told. A stamp is forgotten once the store answered
        for it (its jobs taken up, or none found: that claim was not written), unless its jobs are left over."""
        if not self._unheard:
            return []
        stamps = set(self._unheard)
        found = [
            job for job in await self.store.claimed_at(self.holder, stamps, self.clock()) if job.id not in self._held
        ]
        taken, left = found[:most], found[most:]
        self._unheard -= stamps - {job.started_at for job in left if job.started_at is not None}
        for job in taken:
            log.warning("job=%s run=%d was claimed after all (its claim's answer was lost); starting it", job.id,
                        job.run)  # fmt: skip
            await self._claimed(job)
        return taken

    async def _claimed(self, job: Job) -> None:
        self._held[job.id] = job
        self._moved.set()
        self._observe(Move(job, JobState.QUEUED))
        await self._tell(job, JobState.QUEUED, None)

    async def move(
        self,
        job: Job | str,
        target: JobState,
        *,
        error: AtelierError | None = None,
        attempts: Sequence[Attempt] = (),
        result: OutputImage | None = None,
        notice: NoticeDraft | None = None,
        settle: int | None = None,
        gone: Collection[str] | None = None,
        **values: Any,
    ) -> Job | None:
        """Move a job to ``target``; return it as stored now, or ``None`` if the move is refused.

        Given a ``Job`` (the mover's own view of it) a held job's move is fenced by the holder and
        run that view names; given an id (a cancel), the job is read first and moved if it is still
        where it was. ``result`` (the posted image) goes to the observers only. ``settle`` is the
        signed difference (micro-dollars) that settles a charge by tokens, on a move that settles.
        ``gone``: the move is a take-over's, which found these holders gone (``Fence.gone``).
        """
        if settle is not None and MONEY[target] is not MoneyEffect.SETTLE:
            raise ValueError(f"a move to {target} settles nothing")
        moved, _ = await self._move(job, target, error, attempts, result, notice, None, values, settle, gone)
        return moved

    async def move_and_claim(
        self, job: Job, target: JobState, max_running: int | None, *, attempts: Sequence[Attempt] = (), **values: Any
    ) -> tuple[Job | None, Job | ClaimMiss | None]:
        """``move``, and if it moved, claim the next job for this process in the same transaction (the slot a
        call's end frees goes to the next job at once); return the job moved and the job claimed, or why not.
        Calls that end together are written together (``bot.jobs.handovers``)."""
        if max_running is None:
            return await self._move(job, target, None, attempts, None, None, None, values)
        order = await self._order(job, target, None, attempts, None, values, None)
        if order is None:
            return None, None
        stored = await self._hand_overs.move_and_claim(order, max_running)
        return await self._after(job, order, stored, None, attempts, None)

    async def written_after_all(
        self,
        job: Job,
        target: JobState,
        attempts: Sequence[Attempt] = (),
        *,
        result: OutputImage | None = None,
        notice: NoticeDraft | None = None,
        settle: int | None = None,
    ) -> Job | None:
        """A move of ``job`` (this process's run) whose try failed on a database error, and whose next try was
        refused: if the store holds the job at ``target`` under that same run, the failed try was written after
        all (its commit went through; only the answer was lost with the connection). Take it up as if that try
        had answered (held, observed, told) and return it; else ``None``."""
        stored = await self.store.get_job(job.id)
        if stored is None or stored.state is not target or stored.holder != self.holder or stored.run != job.run:
            return None
        order = await self._order(job, target, None, attempts, notice, {}, settle)
        if order is None:
            return None
        log.warning("job=%s run=%d: its move to %s was written after all (its answer was lost)", job.id, job.run,
                    target)  # fmt: skip
        moved, _ = await self._after(job, order, MoveResult(stored), None, attempts, result)
        return moved

    async def move_for_good(
        self,
        job: Job,
        target: JobState,
        *,
        result: OutputImage | None = None,
        notice: NoticeDraft | None = None,
        settle: int | None = None,
        **values: Any,
    ) -> Job | None:
        """``move`` a job whose run did what cannot be undone (its result is posted): a database error does not
        end it. The move is tried again after each of ``record_pauses``, then every last pause, for as long as
        it takes; a try refused after a failed one reads the job (``written_after_all``). ``None``: refused,
        the run lost its job."""
        moved = await asked_until_answered(
            lambda: self.move(job, target, result=result, notice=notice, settle=settle, **values),
            record_pauses(self.lease_seconds), f"job={job.id} run={job.run}: recording its move to {target}", log,
            for_good=True,
        )  # fmt: skip
        if moved.value is None and moved.failed_before:
            return await self.written_after_all(job, target, result=result, notice=notice, settle=settle)
        return moved.value

    async def _move(
        self,
        job: Job | str,
        target: JobState,
        error: AtelierError | None,
        attempts: Sequence[Attempt],
        result: OutputImage | None,
        notice: NoticeDraft | None,
        claim_for: int | None,
        values: dict[str, Any],
        settle: int | None = None,
        gone: Collection[str] | None = None,
    ) -> tuple[Job | None, Job | ClaimMiss | None]:
        order = await self._order(job, target, error, attempts, notice, values, settle, gone)
        if order is None:
            return None, None
        claim = ClaimTerms(self.holder, order.now, self.lease_seconds, claim_for) if claim_for is not None else None
        (stored,) = await self.store.move_all([order], claim)
        return await self._after(job, order, stored, error, attempts, result)

    async def _order(
        self,
        job: Job | str,
        target: JobState,
        error: AtelierError | None,
        attempts: Sequence[Attempt],
        notice: NoticeDraft | None,
        values: dict[str, Any],
        settle: int | None,
        gone: Collection[str] | None = None,
    ) -> MoveOrder | None:
        """The move as the store is to write it, or ``None`` if it is refused before that (``gone``: a
        take-over's move, ``Fence.gone``)."""
        if isinstance(job, str):
            found = await self.store.get_job(job)
            if found is None or found.state.terminal:
                log.warning("job=%s refused move to %s: it is not an unfinished job", job, target)
                return None
            current, fence = found, None
        else:
            current = job
            taking_over = frozenset(gone) if gone is not None else None
            fence = Fence(job.holder, job.run, taking_over) if job.state in HELD and job.holder is not None else None
        if not allowed(current.state, target, current.restarts):
            log.warning("job=%s refused move %s -> %s", current.id, current.state, target)
            return None
        now = self.clock()
        stamped = _stamp(current, target, error, attempts, values, now)
        if target.terminal and notice is None:
            notice = failure_notice(error) if target is JobState.FAILED else NoticeDraft()
        refund = MONEY[target] is MoneyEffect.REFUND
        return MoveOrder(current.id, current.state, target, stamped, refund, self.holder, now, attempts, fence, notice,
                         settle)  # fmt: skip

    async def _after(
        self,
        job: Job | str,
        order: MoveOrder,
        stored: MoveResult,
        error: AtelierError | None,
        attempts: Sequence[Attempt],
        result: OutputImage | None,
    ) -> tuple[Job | None, Job | ClaimMiss | None]:
        """What follows a move the store wrote (or refused): what this process holds, and who is told."""
        before, target, fence, notice = order.current, order.target, order.fence, order.notice
        moved = stored.job
        if moved is None:
            why = "another process holds it now" if fence is not None else "the store holds another state"
            log.warning("job=%s refused move %s -> %s: %s", order.job_id, before, target, why)
            if fence is not None and fence.holder == self.holder:
                lost = self._held.pop(order.job_id, None)
                if lost is not None and lost.run == fence.run:
                    # Its lease's renewals no longer see it (not held), so they cannot report it lost: its status
                    # line stops here, or it would tick on (showing nothing) for the life of the process.
                    await self.tell_lost(lost)
            return None, None
        if moved.state in HELD and moved.holder == self.holder:
            self._held[moved.id] = moved
        else:
            self._held.pop(moved.id, None)
        self._moved.set()
        # Before any await: an observer hears of every move the store recorded, in order.
        self._observe(Move(moved, before, error, tuple(attempts), result, order.settle or 0))
        if target.terminal:
            _log_end(moved)
            if self._ended is not None:
                try:
                    await self._ended.job_ended(moved)
                except Exception as exc:  # its inputs wait for the next start's sweep; the move and its telling stand
                    UnexpectedError.capture(exc, f"the end of job {moved.id}: its inputs")
        await self._tell(moved, before, error)
        owed_now = notice is not None and notice.done_how is None and notice.delay == 0
        if target.terminal and owed_now and self._outbox is not None:
            # The status line is closed by now (the notifier above): the final word comes last.
            await self._outbox.tell_own(moved.id)
        if isinstance(stored.claimed, Job):
            await self._claimed(stored.claimed)
        return moved, stored.claimed

    async def interrupt(
        self, job: Job, attempts: Sequence[Attempt] = (), *, gone: Collection[str] | None = None
    ) -> Job | None:
        """A stop (or a crash found later: ``gone``, a take-over's move) caught this job running or delivering:
        back in line once, else failed."""
        if job.state not in (JobState.RUNNING, JobState.DELIVERING):
            return None
        if allowed(job.state, JobState.INTERRUPTED, job.restarts):
            return await self.move(job, JobState.INTERRUPTED, attempts=attempts, gone=gone)
        error = AtelierError(INTERRUPTED_TWICE, log_detail="interrupted twice")
        return await self.move(job, JobState.FAILED, error=error, attempts=attempts, gone=gone)

    # What this process holds --------------------------------------------------------------------

    def held(self, *states: JobState) -> list[Job]:
        """The jobs this process holds (in ``states``, when given), oldest first."""
        return sorted(
            (job for job in self._held.values() if not states or job.state in states), key=lambda j: j.created_at
        )

    def holds(self, job_id: str) -> Job | None:
        return self._held.get(job_id)

    async def renew(self) -> list[Job]:
        """Extend the leases of the jobs this process holds; forget and return those it no longer holds
        (their lease lapsed and another process took them over)."""
        asked = {job.id: job.run for job in self._held.values()}
        if not asked:
            return []
        renewed = await self.store.renew(self.holder, asked, self.clock() + self.lease_seconds)
        return self._forget_lost(asked, renewed)

    def let_go(self, job: Job) -> None:
        """Stop holding ``job``'s run (its lease is no longer renewed, and the run is no longer this process's):
        when its lease lapses, the take-over treats it as a run a crash caught."""
        held = self._held.get(job.id)
        if held is not None and held.run == job.run:
            del self._held[job.id]

    async def still_holds(self, job: Job) -> bool:
        """Whether this process still holds ``job``'s run (its lease is extended if so): asked before anything
        that must not come from a run that lost its job, such as a status edit or posting a result."""
        held = self._held.get(job.id)
        if held is None or held.run != job.run:
            return False  # let go, lost or ended: nothing of that run may renew its lease or act for it
        renewed = await self.store.renew(self.holder, [job.id], self.clock() + self.lease_seconds)
        return not self._forget_lost({job.id: job.run}, renewed)

    def _forget_lost(self, asked: Mapping[str, int], renewed: Mapping[str, int]) -> list[Job]:
        lost = []
        for job_id, run in asked.items():
            held = self._held.get(job_id)
            if held is not None and held.run == run and renewed.get(job_id) != run:
                lost.append(self._held.pop(job_id))
                log.warning("job=%s run=%d lost: its lease lapsed and another process holds it now", job_id, run)
        return lost

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

    # Telling --------------------------------------------------------------------------------------

    def _observe(self, move: Move) -> None:
        for observer in self._observers:
            try:
                observer.job_moved(move)
            except Exception as exc:  # a lost count or audit line, never a stuck job
                UnexpectedError.capture(exc, f"an observer of job {move.job.id}")

    async def tell_lost(self, job: Job) -> None:
        """Tell the notifier this process lost ``job``'s run (another holds the job now): its line stops."""
        await self._notify(job, lambda notifier: notifier.run_lost(job))

    async def tell_paused(self, job: Job) -> None:
        """Tell the notifier this process is stopping and ``job`` will run again after the restart."""
        await self._notify(job, lambda notifier: notifier.job_paused(job))

    async def _tell(self, job: Job, before: JobState, error: AtelierError | None) -> None:
        await self._notify(job, lambda notifier: notifier.job_moved(job, before, error))

    async def _notify(self, job: Job, call: Callable[[Notifier], Awaitable[None]]) -> None:
        if self._notifier is None:
            return
        try:
            await call(self._notifier)
        except Exception as exc:  # the member may miss an update; the job must not
            UnexpectedError.capture(exc, f"the notifier for job {job.id}")


def _stamp(
    job: Job,
    target: JobState,
    error: AtelierError | None,
    attempts: Sequence[Attempt],
    values: dict[str, Any],
    now: float,
) -> dict[str, Any]:
    """The values a move records besides the caller's: times, the error, counts."""
    if target is JobState.QUEUED:
        values.setdefault("queued_at", now)
    if target.terminal:
        values.setdefault("finished_at", now)
    if error is not None:
        values["error"] = error.log_detail[:500]
    if job.state is JobState.INTERRUPTED and target is JobState.QUEUED:
        values.update(restarts=job.restarts + 1, started_at=None)
    if attempts:
        values["attempts"] = job.attempts + len(attempts)
    return values


def _log_end(job: Job) -> None:
    """One line per job outcome, with its id and timings."""
    request = job.request
    common = (
        f"job={job.id} kind={request.kind} origin={request.origin} user={request.user_id} guild={request.guild_id} "
        f"outcome={job.state} images={request.input_count} size={request.size or 'auto'}"
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
