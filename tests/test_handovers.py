"""Hand-overs written in groups (``bot.jobs.handovers``), on both databases (the ``store`` fixture).

Calls that end together pass their slots on in one transaction: their moves, then one claim for as
many jobs as moved. Each caller still gets what a move and claim of its own would have given it.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

import pytest

from bot.core.attempts import Attempt, AttemptOutcome
from bot.core.job import Job
from bot.core.records import ClaimMiss, ClaimTerms, Fence, MoveOrder, MoveResult
from bot.core.states import JobState
from bot.jobs.lifecycle import Lifecycle
from bot.store.script import Fetch, Op, Script
from bot.store.store import Store
from bot.store.store import _moves as moves_script
from tests.stores import LEASE, NOON, Heard, add, make_job, query

WORKER = "w"


class Groups(Store):
    """The store, recording the size of every group of moves written, and able to hold a write back."""

    def __init__(self, store: Store, fail_with: str | None = None) -> None:
        super().__init__(store.database)
        self.sizes: list[int] = []
        self.gate = asyncio.Event()
        self.gate.set()
        self.entered = asyncio.Event()
        self.fail_with = fail_with  # a job whose moves fail (as a bad row would)

    async def move_all(self, orders: Sequence[MoveOrder], claim: ClaimTerms | None = None) -> list[MoveResult]:
        self.sizes.append(len(orders))
        self.entered.set()
        await self.gate.wait()
        if any(order.job_id == self.fail_with for order in orders):
            raise RuntimeError(f"a bad row in job {self.fail_with}")
        return await super().move_all(orders, claim)


async def running(store: Store, count: int, members: int = 0) -> list[Job]:
    """``count`` jobs running under ``WORKER`` (``r0``…), and ``members`` jobs waiting behind them, one a member."""
    for n in range(count):
        await add(store, make_job(f"r{n}", 1 + n, NOON + n))
    taken = await store.claim_up_to(ClaimTerms(WORKER, NOON + 50, LEASE, 100), count)
    assert isinstance(taken, list) and len(taken) == count
    for n in range(members):
        await add(store, make_job(f"q{n}", 100 + n, NOON + 60 + n))
    return taken


def lifecycle(store: Store) -> Lifecycle:
    return Lifecycle(store, WORKER, lease_seconds=LEASE, clock=lambda: NOON + 100)


async def test_calls_that_end_together_pass_their_slots_on_in_one_claim(store: Store) -> None:
    """Six calls end at once: one transaction moves the six and claims six, the next in fair order, one
    for each caller, in the order taken."""
    jobs = await running(store, 6, members=8)
    groups = Groups(store)
    ends = lifecycle(groups)
    results = await asyncio.gather(*(ends.move_and_claim(job, JobState.DELIVERING, 6) for job in jobs))
    assert groups.sizes == [6]
    assert [(moved.id, moved.state) for moved, _ in results if moved is not None] == [
        (f"r{n}", JobState.DELIVERING) for n in range(6)
    ]
    claimed = [taken for _, taken in results]
    assert all(isinstance(job, Job) for job in claimed)
    assert [(job.id, job.state, job.holder, job.run) for job in claimed if isinstance(job, Job)] == [
        (f"q{n}", JobState.RUNNING, WORKER, 1) for n in range(6)
    ]
    assert all(ends.holds(f"q{n}") is not None for n in range(6))  # held, so their leases are renewed


async def test_a_group_claims_no_more_than_the_cap_leaves_and_frees_the_rest(store: Store) -> None:
    """Two calls run in another process and the cap is four: when the four calls here end together, two slots
    are left though three jobs wait. The first two in fair order are claimed here, the third stays in line,
    the other two callers learn there was none, and every process hears that a slot is free."""
    jobs = await running(store, 4, members=2)
    await add(store, make_job("other1", 50, NOON + 90))
    await add(store, make_job("other2", 51, NOON + 91))
    elsewhere = await store.claim_up_to(ClaimTerms("x", NOON + 95, LEASE, 100), 2)
    assert isinstance(elsewhere, list) and [job.id for job in elsewhere] == ["q0", "q1"]
    await add(store, make_job("q9", 109, NOON + 96))
    heard = Heard(store)
    await heard.since_last()
    ends = lifecycle(store)
    results = await asyncio.gather(*(ends.move_and_claim(job, JobState.DELIVERING, 4) for job in jobs))
    assert [moved.state if moved else None for moved, _ in results] == [JobState.DELIVERING] * 4
    taken = [claimed.id if isinstance(claimed, Job) else claimed for _, claimed in results]
    assert taken[:2] == ["other1", "other2"] and all(isinstance(miss, ClaimMiss) for miss in taken[2:])
    waiting = await store.get_job("q9")
    assert waiting is not None and waiting.state is JobState.QUEUED
    assert "slot" in await heard.since_last()


async def test_a_group_that_fails_is_written_again_one_move_at_a_time(store: Store) -> None:
    """One job's bad row fails its group's transaction: nothing of the group is written; each move is then
    written alone, so the others go on and only that job's caller gets the error."""
    jobs = await running(store, 3, members=3)
    groups = Groups(store, fail_with="r1")
    ends = lifecycle(groups)
    results = await asyncio.gather(
        *(ends.move_and_claim(job, JobState.DELIVERING, 3) for job in jobs), return_exceptions=True
    )
    assert groups.sizes == [3, 1, 1, 1]
    assert isinstance(results[1], RuntimeError) and "r1" in str(results[1])
    for result in (results[0], results[2]):
        assert not isinstance(result, BaseException)
        moved, claimed = result
        assert moved is not None and moved.state is JobState.DELIVERING and isinstance(claimed, Job)
    still = await store.get_job("r1")
    assert still is not None and still.state is JobState.RUNNING


class WrittenThenLost(Store):
    """The store; a group's first transaction is written, then its answer is lost (the connection drops)."""

    def __init__(self, store: Store) -> None:
        super().__init__(store.database)
        self.lost = 0

    async def move_all(self, orders: Sequence[MoveOrder], claim: ClaimTerms | None = None) -> list[MoveResult]:
        written = await super().move_all(orders, claim)
        if len(orders) > 1 and not self.lost:
            self.lost += 1
            raise ConnectionError("the connection dropped before the commit's answer came")
        return written


async def test_a_group_written_though_its_answer_was_lost_is_found_by_each_caller_and_its_claims_by_the_next(
    store: Store,
) -> None:
    """A group's transaction is committed, but its answer is lost. Written again alone, each move is refused (it
    happened): each caller gets the group's error, not a refusal, so its next try reads the job and finds it
    delivering under its run. The jobs the group claimed are found by the claim's stamp at the next claim.
    Before, each caller took the refusal for a lost job and discarded its paid answer."""
    jobs = await running(store, 3, members=3)
    lost = WrittenThenLost(store)
    ends = lifecycle(lost)
    results = await asyncio.gather(
        *(ends.move_and_claim(job, JobState.DELIVERING, 3) for job in jobs), return_exceptions=True
    )
    assert lost.lost == 1
    assert all(isinstance(result, ConnectionError) for result in results), results
    found = [await ends.written_after_all(job, JobState.DELIVERING) for job in jobs]
    assert [(job.id, job.state) for job in found if job is not None] == [
        (f"r{n}", JobState.DELIVERING) for n in range(3)
    ]
    claimed = await ends.claim_up_to(3, 3)
    assert isinstance(claimed, list)
    assert [(job.id, job.state, job.holder) for job in claimed] == [
        (f"q{n}", JobState.RUNNING, WORKER) for n in range(3)
    ]
    assert all(ends.holds(f"q{n}") is not None for n in range(3))  # held now, so their leases are renewed
    assert await ends.claim_up_to(4, 1) is ClaimMiss.NO_JOB  # found once; nothing else waits


class ClaimLostThenHeldBack(Store):
    """The store; the first claim is written and its answer lost; a group's moves are written, then their answer
    waits for ``gate`` (a hand-over whose claim is committed but not yet back with its caller)."""

    def __init__(self, store: Store) -> None:
        super().__init__(store.database)
        self.lost = False
        self.gate = asyncio.Event()
        self.written = asyncio.Event()

    async def claim_up_to(self, terms: ClaimTerms, count: int) -> list[Job] | ClaimMiss:
        taken = await super().claim_up_to(terms, count)
        if not self.lost:
            self.lost = True
            raise ConnectionError("the connection dropped before the commit's answer came")
        return taken

    async def move_all(self, orders: Sequence[MoveOrder], claim: ClaimTerms | None = None) -> list[MoveResult]:
        written = await super().move_all(orders, claim)
        self.written.set()
        await self.gate.wait()
        return written


async def test_a_lost_claim_finds_only_its_own_jobs_though_the_clock_stood_still(store: Store) -> None:
    """A claim's answer is lost; then a hand-over claims, and before its answer is back with its caller the next
    claim looks for the lost claim's jobs by its stamp. The clock has not moved between the two claims, but each
    had a stamp of its own: the lost claim's job is found, the hand-over's is not, so each job starts once.
    Before, both claims had the same stamp and the hand-over's job was started twice."""
    (job,) = await running(store, 1, members=3)
    held_back = ClaimLostThenHeldBack(store)
    ends = lifecycle(held_back)
    with pytest.raises(ConnectionError):
        await ends.claim_up_to(5, 1)
    hand_over = asyncio.create_task(ends.move_and_claim(job, JobState.DELIVERING, 5))
    await asyncio.wait_for(held_back.written.wait(), 5)
    found = await ends.claim_up_to(5, 3)
    held_back.gate.set()
    _, handed = await asyncio.wait_for(hand_over, 5)
    assert isinstance(found, list) and [job.id for job in found] == ["q0"]
    assert isinstance(handed, Job) and handed.id == "q1"
    stamps = await query(store, "SELECT id, started_at FROM jobs WHERE id IN ('q0', 'q1') ORDER BY id")
    assert stamps[0]["started_at"] != stamps[1]["started_at"]


async def test_a_caller_cancelled_while_its_move_is_written_gets_it_then_the_cancel(store: Store) -> None:
    """The group's moves happen whatever one caller does: a caller cancelled meanwhile still gets the job
    claimed for it (or it would be held and never run), and the cancel comes at its next wait."""
    (job,) = await running(store, 1, members=1)
    groups = Groups(store)
    groups.gate.clear()
    ends = lifecycle(groups)
    seen: list[object] = []

    async def end() -> None:
        seen.append(await ends.move_and_claim(job, JobState.DELIVERING, 4))
        await asyncio.sleep(0)
        seen.append("not cancelled")

    caller = asyncio.create_task(end())
    async with asyncio.timeout(10):
        await groups.entered.wait()
    caller.cancel()
    await asyncio.sleep(0)
    groups.gate.set()
    with pytest.raises(asyncio.CancelledError):
        async with asyncio.timeout(10):
            await caller
    assert len(seen) == 1
    moved, claimed = seen[0]  # type: ignore[misc]
    assert moved.state is JobState.DELIVERING and isinstance(claimed, Job) and claimed.id == "q0"


async def test_a_caller_cancelled_before_its_move_is_written_moves_nothing(store: Store) -> None:
    """A caller waiting behind a group being written, cancelled, leaves the queue: its job stays running."""
    first, second = await running(store, 2, members=2)
    groups = Groups(store)
    groups.gate.clear()
    ends = lifecycle(groups)
    writing = asyncio.create_task(ends.move_and_claim(first, JobState.DELIVERING, 4))
    async with asyncio.timeout(10):
        await groups.entered.wait()
    behind = asyncio.create_task(ends.move_and_claim(second, JobState.DELIVERING, 4))
    await asyncio.sleep(0)
    behind.cancel()
    groups.gate.set()
    async with asyncio.timeout(10):
        moved, claimed = await writing
        with pytest.raises(asyncio.CancelledError):
            await behind
    assert moved is not None and isinstance(claimed, Job)
    assert groups.sizes == [1]
    left = await store.get_job(second.id)
    assert left is not None and left.state is JobState.RUNNING


def recording(script: Script[Any], seen: list[Op]) -> Script[Any]:
    """``script``, with every operation it yields recorded in ``seen``."""
    op = next(script)
    while True:
        seen.append(op)
        try:
            op = script.send((yield op))
        except StopIteration as stop:
            return stop.value


async def test_the_moves_of_a_group_are_one_statement_each_job_with_its_own_values_and_fence(store: Store) -> None:
    """Four ends written together: one ``UPDATE`` moves them, each with its own API time, attempt count and
    run; the one whose run is stale (another process took its job over) is refused and left as it was; the
    attempts of those moved are all kept."""
    jobs = await running(store, 4)
    attempt = Attempt(1, NOON + 60, 2.0, AttemptOutcome.SUCCEEDED, True, 200)
    orders = [
        MoveOrder(job.id, JobState.RUNNING, JobState.DELIVERING, {"api_seconds": 1.5 + n, "attempts": n + 1},
                  False, WORKER, NOON + 100, (attempt,), Fence(WORKER, job.run + (n == 2)))
        for n, job in enumerate(jobs)
    ]  # fmt: skip
    seen: list[Op] = []
    results = await store.database.run(recording(moves_script(orders, None), seen))
    assert [isinstance(op, Fetch) and op.sql.startswith("UPDATE jobs SET status") for op in seen].count(True) == 1
    assert [(r.job.id, r.job.state, r.job.api_seconds, r.job.attempts) if r.job else None for r in results] == [
        ("r0", JobState.DELIVERING, 1.5, 1),
        ("r1", JobState.DELIVERING, 2.5, 2),
        None,
        ("r3", JobState.DELIVERING, 4.5, 4),
    ]
    stale = await store.get_job("r2")
    assert stale is not None and stale.state is JobState.RUNNING and stale.api_seconds is None
    kept = await query(store, "SELECT job_id, run FROM api_attempts ORDER BY job_id")
    assert kept == [{"job_id": "r0", "run": 1}, {"job_id": "r1", "run": 1}, {"job_id": "r3", "run": 1}]
    # Moves not alike (here: one ends its job) go one statement each, as ever.
    mixed = [
        MoveOrder("r0", JobState.DELIVERING, JobState.SUCCEEDED, {}, False, WORKER, NOON + 101, (), Fence(WORKER, 1)),
        MoveOrder("r1", JobState.DELIVERING, JobState.DELIVERING, {}, False, WORKER, NOON + 101, (), Fence(WORKER, 1)),
    ]
    seen.clear()
    results = await store.database.run(recording(moves_script(mixed, None), seen))
    assert [isinstance(op, Fetch) and op.sql.startswith("UPDATE jobs SET status") for op in seen].count(True) == 2
    assert [r.job.state if r.job else None for r in results] == [JobState.SUCCEEDED, JobState.DELIVERING]


async def test_the_jobs_a_group_claimed_are_told_at_once_and_a_failing_listener_changes_nothing(store: Store) -> None:
    """As soon as a group is written, the jobs it claimed are told in one call (the dispatcher reads their images
    in one reading, before the callers resume one by one). A listener that fails is logged; every caller still
    gets its move and its claim."""
    jobs = await running(store, 4, members=6)
    ends = lifecycle(store)
    told: list[list[str]] = []

    def claimed(taken: list[Job]) -> None:
        told.append([job.id for job in taken])
        raise RuntimeError("a listener's bug")

    ends.on_hand_over(claimed)
    results = await asyncio.gather(*(ends.move_and_claim(job, JobState.DELIVERING, 4) for job in jobs))
    assert told == [["q0", "q1", "q2", "q3"]]
    pairs = [(moved.id if moved else None, taken.id if isinstance(taken, Job) else taken) for moved, taken in results]
    assert pairs == [(f"r{n}", f"q{n}") for n in range(4)]
