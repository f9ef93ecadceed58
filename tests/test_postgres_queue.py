"""The shared queue in PostgreSQL: money checked in the database, fair claims, the cap, leases, notices.

These run against a real PostgreSQL (a fresh database per test); see ``tests/postgres.py``.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import AsyncIterator

import pytest
from bot.postgres_store import PostgresJobStore
from bot.queue import FairQueue
from bot.storage import ClaimMiss, ClaimTerms

from bot.core.job import Delivered, Job, JobKind, JobRequest, utc_day
from bot.core.states import JobState
from bot.errors import QueueFullError
from bot.media.images import PreparedImage
from bot.servers.limits import LimitReachedError, Quota
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


async def test_admission_under_concurrency_sells_exactly_the_limit(store: PostgresJobStore) -> None:
    now = time.time()
    quota = Quota(now, user_today=9, daily_limit=10)

    async def admit(n: int) -> bool:
        try:
            await store.admit_job(make_job(f"j{n}", 1, now + n * 1e-6), quota, holder="test", lease_until=now)
        except LimitReachedError:
            return False
        return True

    accepted = await asyncio.gather(*(admit(n) for n in range(50)))
    assert sum(accepted) == 10
    usage = await store.day_usage(1, 10, utc_day(now), now)
    assert (usage.user_today, usage.user_active, usage.guild_today) == (10, 10, 10)
    assert usage.spend_today == pytest.approx(0.30)


def edge_quotas(now: float) -> dict[str, tuple[Quota, int]]:
    """A quota per limit, and how many edits it lets through (a member's, or the server's, all at 0.03)."""
    return {
        "budget": (Quota(now, spend_today=0.09 - 0.03 + 1e-9, budget=0.09), 3),
        "guild": (Quota(now, guild_today=2, guild_limit=3), 3),
        "active": (Quota(now, user_active=1, max_active=2), 2),
        "daily": (Quota(now, user_today=3, daily_limit=4), 4),
        "cooldown": (Quota(now, user_last_accepted=now - 30, cooldown=30), 1),
    }


@pytest.mark.parametrize("limit", ["budget", "guild", "active", "daily", "cooldown"])
async def test_the_database_decides_each_limit_like_the_quota_does(store: PostgresJobStore, limit: str) -> None:
    """At each limit's edge the database's admission agrees with ``Quota.exceeded`` on the same totals,
    and its refusal is the quota's own explanation."""
    now = time.time()
    quota, lets_through = edge_quotas(now)[limit]
    decisions = []
    for n in range(lets_through + 2):
        user = n if limit == "guild" else 1  # the server's limit counts every member's edits
        before = await store.day_usage(user, 10, utc_day(now), now)
        try:
            await store.admit_job(make_job(f"{limit}{n}", user, now), quota, holder="test", lease_until=now + 60)
        except LimitReachedError as refusal:
            assert quota.exceeded(before) == limit
            with pytest.raises(LimitReachedError) as explained:
                quota.check(before)
            assert refusal.user_message == explained.value.user_message
            decisions.append(False)
        else:
            assert quota.exceeded(before) is None
            decisions.append(True)
    assert decisions == [True] * lets_through + [False, False]


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


async def notices_until_marker(store: PostgresJobStore, heard: asyncio.Queue[str]) -> list[str]:
    """Every notice heard up to a marker sent last (notices arrive in the order their transactions commit)."""
    await store.notify("marker")
    seen = []
    async with asyncio.timeout(5):
        while (payload := await heard.get()) != "marker":
            seen.append(payload)
    return seen


async def test_a_call_that_ends_hands_its_slot_to_the_next_job_in_the_same_transaction(store: PostgresJobStore) -> None:
    heard: asyncio.Queue[str] = asyncio.Queue()
    store.on_notice(heard.put_nowait)
    async with asyncio.timeout(10):
        assert await heard.get() == "reconnected"
    t = time.time()
    await add(store, make_job("r1", 1, t))
    await add(store, make_job("q1", 2, t + 1))
    running = await store.claim_next("w1", time.time(), LEASE, 1)
    assert running is not None and running.id == "r1"
    assert await store.claim("w2", time.time(), LEASE, 1) is ClaimMiss.NO_SLOT  # the cap: one call at a time
    await notices_until_marker(store, heard)

    terms = ClaimTerms("w1", time.time(), LEASE, 1)
    ended = await store.move_and_claim("r1", JobState.RUNNING, JobState.DELIVERING, {}, refund=False, claim=terms)
    assert ended.moved and isinstance(ended.claimed, Job) and ended.claimed.id == "q1"
    assert ended.claimed.state is JobState.RUNNING
    assert await store.pool.fetchval("SELECT claimed_by FROM jobs WHERE id = 'q1'") == "w1"
    # The slot was taken with it: no worker is woken for it, the gateways re-tell places.
    assert await notices_until_marker(store, heard) == ["claimed"]

    # Nothing left to claim: the slot is free for whoever queues next, and every worker hears it.
    ended = await store.move_and_claim("q1", JobState.RUNNING, JobState.DELIVERING, {}, refund=False, claim=terms)
    assert ended.moved and ended.claimed is ClaimMiss.NO_JOB
    assert await notices_until_marker(store, heard) == ["slot"]

    # A move the store refuses (the job is elsewhere) claims nothing and tells no one.
    refused = await store.move_and_claim("q1", JobState.RUNNING, JobState.DELIVERING, {}, refund=False, claim=terms)
    assert not refused.moved and refused.claimed is None
    assert await notices_until_marker(store, heard) == []


async def test_a_move_tells_other_processes_only_when_it_happened(store: PostgresJobStore) -> None:
    heard: asyncio.Queue[str] = asyncio.Queue()
    store.on_notice(heard.put_nowait)
    async with asyncio.timeout(10):
        assert await heard.get() == "reconnected"
    await add(store, make_job("j1", 7, time.time()))
    assert await notices_until_marker(store, heard) == ["queued"]
    assert not (await store.move_job("j1", JobState.PREPARING, JobState.QUEUED, {}, refund=False)).moved
    assert await notices_until_marker(store, heard) == []
    await store.move_job("j1", JobState.QUEUED, JobState.RUNNING, {}, refund=False)
    await store.move_job("j1", JobState.RUNNING, JobState.DELIVERING, {}, refund=False)
    undelivered = {"delivered": Delivered.UNDELIVERED}
    await store.move_job("j1", JobState.DELIVERING, JobState.SUCCEEDED, undelivered, refund=False)
    # The gateways tell a member whose result could not reach them, next time they come.
    assert await notices_until_marker(store, heard) == ["slot", "notices:7"]


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


async def test_the_cap_on_queued_inputs_holds_when_jobs_save_at_once(store: PostgresJobStore) -> None:
    """Saves write side by side and are checked one at a time: never more kept than the cap allows."""
    image = PreparedImage(b"\x89PNG" + b"x" * 99_996, "image/png", 10, 10)

    async def save(n: int) -> bool:
        try:
            await store.save_inputs(f"job{n}", [image], cap_bytes=550_000)
        except QueueFullError:
            return False
        return True

    kept = await asyncio.gather(*(save(n) for n in range(10)))
    assert sum(kept) == 5
    assert await store.queued_input_bytes() == 500_000
    for n, was_kept in enumerate(kept):
        assert await store.inputs_exist(f"job{n}") is was_kept  # a refused job left nothing behind


async def test_the_totals_say_when_the_longest_waiting_queued_job_joined_the_line(store: PostgresJobStore) -> None:
    """For ``atelier_queue_oldest_wait_seconds``: the earliest time in line among queued jobs only (the
    time it was queued, or its acceptance when no time was recorded), ``None`` with nothing queued."""
    t = time.time()
    assert (await store.totals(utc_day(t))).oldest_queued_at is None
    await add(store, make_job("preparing", 1, t - 300), JobState.PREPARING)  # oldest, but not in line yet
    assert (await store.totals(utc_day(t))).oldest_queued_at is None
    for job_id, user, created, queued in (("slow-images", 2, t - 100, t - 50), ("quick", 3, t - 90, t - 80)):
        await add(store, make_job(job_id, user, created), JobState.PREPARING)
        assert (
            await store.move_job(job_id, JobState.PREPARING, JobState.QUEUED, {"queued_at": queued}, refund=False)
        ).moved
    assert (await store.totals(utc_day(t))).oldest_queued_at == pytest.approx(t - 80)
    await add(store, make_job("no-time", 4, t - 85))  # queued without a recorded time: its acceptance counts
    assert (await store.totals(utc_day(t))).oldest_queued_at == pytest.approx(t - 85)
    claimed = [await store.claim_next("w", time.time(), LEASE, 10) for _ in range(3)]
    assert {job.id for job in claimed if job is not None} == {"slow-images", "quick", "no-time"}
    assert (await store.totals(utc_day(t))).oldest_queued_at is None  # running jobs wait no more
