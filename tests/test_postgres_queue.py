"""The shared queue in PostgreSQL: money checked in the database, fair claims, the cap, leases, notices.

These run against a real PostgreSQL (a fresh database per test); see ``tests/postgres.py``.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import AsyncIterator

import pytest

from bot.errors import QueueFullError
from bot.images import PreparedImage
from bot.jobs import Job, JobKind, JobRequest, utc_day
from bot.ledger import DayUsage
from bot.limits import LimitReachedError
from bot.postgres_store import PostgresJobStore
from bot.queue import FairQueue
from bot.states import JobState
from bot.storage import ClaimMiss
from tests.postgres import fresh_database

LEASE = 30.0


@pytest.fixture
async def store() -> AsyncIterator[PostgresJobStore]:
    async with fresh_database() as url:
        backend = PostgresJobStore(url, pool_size=10)
        await backend.open()
        yield backend
        await backend.close()


def make_job(job_id: str, user_id: int, at: float, guild_id: int = 10) -> Job:
    now = at
    return Job(
        id=job_id,
        request=JobRequest(JobKind.EDIT, user_id, guild_id, 100, job_id, None, 1),
        state=JobState.ACCEPTED,
        created_at=now,
        charge_day=utc_day(now),
        cost_usd=0.03,
    )


async def add(store: PostgresJobStore, job: Job, state: JobState = JobState.QUEUED) -> None:
    """A job accepted and moved along to ``state`` (as admission would)."""
    await store.create_job(job)
    path = [JobState.PREPARING, JobState.QUEUED]
    current = JobState.ACCEPTED
    for step in path[: path.index(state) + 1] if state in path else []:
        assert (await store.move_job(job.id, current, step, {}, refund=False)).moved
        current = step


def at_most(limit: int) -> object:
    def check(usage: DayUsage) -> None:
        if usage.user_today >= limit:
            raise LimitReachedError(f"used {usage.user_today} of {limit}")

    return check


async def test_admission_under_concurrency_sells_exactly_the_limit(store: PostgresJobStore) -> None:
    now = time.time()

    async def admit(n: int) -> bool:
        try:
            await store.admit_job(
                make_job(f"j{n}", 1, now + n * 1e-6), at_most(10), whole_day=False, holder="test", lease_until=now
            )  # type: ignore[arg-type]
        except LimitReachedError:
            return False
        return True

    accepted = await asyncio.gather(*(admit(n) for n in range(50)))
    assert sum(accepted) == 10
    usage = await store.day_usage(1, 10, utc_day(now), now)
    assert (usage.user_today, usage.user_active, usage.guild_today) == (10, 10, 10)
    assert usage.spend_today == pytest.approx(0.30)


async def test_claims_go_round_robin_between_members_in_each_members_order(store: PostgresJobStore) -> None:
    t = time.time()
    for n, (job_id, user) in enumerate([("a1", 1), ("a2", 1), ("a3", 1), ("b1", 2), ("c1", 3)]):
        await add(store, make_job(job_id, user, t + n))
    claimed = []
    for _ in range(5):
        job = await store.claim_next("w", time.time(), LEASE, 10)
        assert job is not None and job.state is JobState.RUNNING
        claimed.append(job.id)
    assert claimed == ["a1", "b1", "c1", "a2", "a3"]
    assert await store.claim_next("w", time.time(), LEASE, 10) is None
    # Why nothing was taken is what the worker waits for next: a queued job, not a free slot.
    assert await store.claim("w", time.time(), LEASE, 10) is ClaimMiss.NO_JOB


async def test_a_members_later_job_waits_for_their_earlier_one_still_preparing(store: PostgresJobStore) -> None:
    t = time.time()
    await add(store, make_job("a1", 1, t), JobState.PREPARING)
    await add(store, make_job("a2", 1, t + 1))
    assert await store.claim_next("w", time.time(), LEASE, 10) is None
    await store.move_job("a1", JobState.PREPARING, JobState.QUEUED, {}, refund=False)
    assert [(await store.claim_next("w", time.time(), LEASE, 10)).id for _ in range(2)] == ["a1", "a2"]  # type: ignore[union-attr]


async def test_the_cap_counts_running_jobs_with_a_live_lease_across_workers(store: PostgresJobStore) -> None:
    t = time.time()
    for n in range(4):
        await add(store, make_job(f"j{n}", n, t + n))
    assert await store.claim_next("w1", time.time(), LEASE, 2) is not None
    assert await store.claim_next("w2", time.time(), LEASE, 2) is not None
    assert await store.claim_next("w3", time.time(), LEASE, 2) is None
    assert await store.claim("w3", time.time(), LEASE, 2) is ClaimMiss.NO_SLOT  # two jobs wait, no slot
    # A lease that ran out (its worker is gone) no longer holds a slot; the job is due for a take-over.
    later = time.time() + LEASE + 1
    assert {j.id for j in await store.expired_jobs(later)} == {"j0", "j1"}
    assert await store.claim_next("w3", later, LEASE, 2) is not None


async def test_concurrent_claims_never_take_one_job_twice(store: PostgresJobStore) -> None:
    t = time.time()
    for n in range(60):
        await add(store, make_job(f"j{n:02d}", n % 7, t + n))

    async def worker(name: str) -> list[str]:
        taken = []
        while (job := await store.claim_next(name, time.time(), LEASE, 1000)) is not None:
            taken.append(job.id)
        return taken

    results = await asyncio.gather(*(worker(f"w{n}") for n in range(6)))
    everything = [job_id for taken in results for job_id in taken]
    assert sorted(everything) == sorted(f"j{n:02d}" for n in range(60))


async def test_places_in_line_computed_in_sql_match_the_fair_queue(store: PostgresJobStore) -> None:
    rng = random.Random(7)
    t = time.time()
    mirror = FairQueue()
    for n in range(40):
        user = rng.randrange(6)
        await add(store, make_job(f"j{n:02d}", user, t + n))
        mirror.add(user, f"j{n:02d}", t + n, ready=True)
    for _ in range(7):  # some turns already taken, so members are ranked by their last turn
        job = await store.claim_next("w", time.time(), LEASE, 1000)
        assert job is not None and mirror.take() == job.id
    from_sql = {job.id: place for job, place in await store.queue_positions()}
    assert from_sql == mirror.positions()


async def test_an_enqueue_wakes_a_listening_process_within_100_ms(store: PostgresJobStore) -> None:
    heard: asyncio.Queue[tuple[str, float]] = asyncio.Queue()
    store.on_notice(lambda payload: heard.put_nowait((payload, time.perf_counter())))
    async with asyncio.timeout(10):
        assert (await heard.get())[0] == "reconnected"
    await store.create_job(make_job("j1", 1, time.time()))
    await store.move_job("j1", JobState.ACCEPTED, JobState.PREPARING, {}, refund=False)
    sent = time.perf_counter()
    await store.move_job("j1", JobState.PREPARING, JobState.QUEUED, {}, refund=False)
    async with asyncio.timeout(5):
        payload, received = await heard.get()
    assert payload == "queued" and received - sent < 0.1


async def test_queued_inputs_are_capped(store: PostgresJobStore) -> None:
    image = PreparedImage(b"\x89PNG" + b"x" * 996, "image/png", 10, 10)
    await store.save_inputs("a", [image, image], cap_bytes=3000)
    assert await store.queued_input_bytes() == 2000
    with pytest.raises(QueueFullError):
        await store.save_inputs("b", [image, image], cap_bytes=3000)
    loaded = await store.load_inputs("a")
    assert loaded is not None and [i.data for i in loaded] == [image.data, image.data]
    await store.delete_inputs("a")
    assert not await store.inputs_exist("a") and await store.load_inputs("a") is None
    await store.save_inputs("b", [image, image], cap_bytes=3000)
