"""The queue in the store, on SQLite and on PostgreSQL alike: admission and its verdict, fair claims and the
cap, leases and fencing, places in line, the notices a move sends, the inputs' cap and the outbox.

Every test runs on both databases (the ``store`` fixture; ids ``sqlite`` and ``postgres``): the store's
behaviour is written once, so it must be the same on each. (The file's name is from when only the
PostgreSQL store had a shared queue.)
"""

from __future__ import annotations

import asyncio
import dataclasses
import random
from pathlib import Path
from typing import Any

import pytest

from bot.config import Config
from bot.core.attempts import Attempt, AttemptOutcome
from bot.core.job import Delivered, Job, utc_day
from bot.core.overrides import GuildOverrides
from bot.core.quota import Limit, Quota
from bot.core.records import ClaimMiss, ClaimTerms, Fence, MoveResult, Notice, NoticeDraft, StoredImage
from bot.core.states import JobState
from bot.errors import QueueFullError
from bot.servers.limits import GuildLimits, Requester, quota_for
from bot.store.store import NOTICE_LEASE, Store
from tests.stores import LEASE, NOON, PRICE, Heard, add, admit, make_job, query, step_to, value

__all__ = ["add", "make_job"]  # tests.test_multiprocess_e2e makes its jobs with these

DAY = 86400.0


def terms(holder: str, now: float = NOON, max_running: int = 1000) -> ClaimTerms:
    return ClaimTerms(holder, now, LEASE, max_running)


async def claim(store: Store, holder: str, now: float = NOON, max_running: int = 1000) -> Job:
    """The next job in fair order for ``holder``; there must be one."""
    taken = await store.claim(terms(holder, now, max_running))
    assert isinstance(taken, Job), taken
    return taken


# Admission -------------------------------------------------------------------------------------------


async def test_admission_under_concurrency_sells_exactly_the_limit(store: Store) -> None:
    """Fifty admissions at once against a daily limit of ten (one member), then against a budget of ten
    edits (fifty members, on the next day): exactly ten pass each time, and every refusal saw the edge."""
    now = NOON
    quota = Quota(now, user_today=9, daily_limit=10)
    verdicts = await asyncio.gather(
        *(store.admit(make_job(f"d{n:02d}", 1, now), quota, now + LEASE) for n in range(50))
    )
    assert sum(v is None for v in verdicts) == 10
    for refused in (v for v in verdicts if v is not None):
        limit, usage = refused
        assert limit is Limit.DAILY and usage.user_today == 10
    usage = await store.usage(1, 10, utc_day(now), now)
    assert (usage.user_today, usage.user_active, usage.guild_today, usage.spend_today) == (10, 10, 10, 10 * PRICE)

    tomorrow = now + DAY
    budget = Quota(tomorrow, spend_today=10 * PRICE - PRICE, budget=10 * PRICE)
    verdicts = await asyncio.gather(
        *(store.admit(make_job(f"b{n:02d}", 100 + n, tomorrow), budget, tomorrow + LEASE) for n in range(50))
    )
    assert sum(v is None for v in verdicts) == 10
    assert {(v[0], v[1].spend_today) for v in verdicts if v is not None} == {(Limit.BUDGET, 10 * PRICE)}
    assert (await store.totals(utc_day(tomorrow))).operator_spend == 10 * PRICE
    assert await value(store, "SELECT COUNT(*) FROM money WHERE entry = 'charge'") == 20
    assert await value(store, "SELECT COUNT(*) FROM jobs") == 20  # a refused request leaves nothing behind


CONFIG = Config(
    discord_token="t" * 24, image_api_key="k" * 24, data_dir=Path("unused"), user_max_active=100, user_daily_limit=None
)
RESETS = "resets at 00:00 UTC (in 12 h 0 min)"


async def test_each_limit_is_decided_at_its_edge_with_its_verdict_and_explanation(store: Store) -> None:
    """For each limit (quotas made by ``quota_for`` from the settings, as admission makes them), the store
    admits up to the edge and refuses the next request, naming the limit, the totals it saw (as ``/usage``
    shows them), and the member's explanation; what frees the limit lets the next one in."""

    async def attempt(job: Job, config: Config = CONFIG, limits: GuildLimits | None = None) -> str | None:
        """Admit ``job`` (at its time); ``None`` if admitted, else the member's explanation of the refusal."""
        at = job.created_at
        limits = limits or GuildLimits.resolve(config, GuildOverrides())
        who = Requester(job.user_id, job.guild_id, 100, None, frozenset(), is_manager=False)
        quota = quota_for(config, limits, who, at, price=job.cost, own_key=job.guild_key)
        before = await store.usage(job.user_id, job.guild_id, job.charge_day, at)
        refused = await store.admit(job, quota, at + LEASE)
        if refused is None:
            return None
        limit, usage = refused
        # What the store saw under its locks is what /usage shows (the day's spend is summed only for a budget,
        # the server's edits only for a server limit).
        assert usage == dataclasses.replace(before, spend_today=usage.spend_today, guild_today=usage.guild_today)
        assert usage.spend_today == (before.spend_today if quota.spend_today is not None else 0)
        assert usage.guild_today == (before.guild_today if quota.guild_today is not None else 0)
        assert await store.get_job(job.id) is None
        return f"{limit}: {quota.refusal(limit, usage).user_message}"

    # The daily budget (every member's edits on the operator's key): three at $0.03 fit in $0.09.
    day = NOON
    budget = dataclasses.replace(CONFIG, daily_budget=90_000)
    assert [await attempt(make_job(f"b{n}", n, day), budget) for n in range(3)] == [None] * 3
    refusal = f"budget: Today's budget for image edits is used up ($0.09 of $0.09); it {RESETS}."
    assert await attempt(make_job("b3", 3, day), budget) == refusal
    # A server's own key is outside the operator's budget; a refund gives the budget back.
    assert await attempt(make_job("b4", 4, day, guild_key=True), budget) is None
    await step_to(store, make_job("b0", 0, day), JobState.CANCELLED)
    assert await attempt(make_job("b5", 5, day), budget) is None
    assert await attempt(make_job("b6", 6, day), budget) == refusal

    # The server's daily limit counts every member's edits there, and no other server's.
    day += DAY
    server = GuildLimits.resolve(CONFIG, GuildOverrides(guild_daily_limit=3))
    assert [await attempt(make_job(f"g{n}", n, day), limits=server) for n in range(3)] == [None] * 3
    assert await attempt(make_job("g3", 3, day), limits=server) == (
        f"guild: This server has used all 3 of its edits for today; the limit {RESETS}."
    )
    assert await attempt(make_job("g4", 4, day, guild_id=11), limits=server) is None

    # The active cap: jobs queued or running; one that ends makes room.
    day += DAY
    active = dataclasses.replace(CONFIG, user_max_active=2)
    assert [await attempt(make_job(f"a{n}", 21, day + n), active) for n in range(2)] == [None] * 2
    refusal = (
        "active: You already have 2 edits queued or running (the most at once is 2). "
        "Wait for one to finish, or cancel one."
    )
    assert await attempt(make_job("a2", 21, day + 2), active) == refusal
    await step_to(store, make_job("a0", 21, day), JobState.FAILED)
    assert await attempt(make_job("a3", 21, day + 3), active) is None

    # The member's daily limit counts net edits: a refunded one is given back.
    day += DAY
    daily = GuildLimits.resolve(CONFIG, GuildOverrides(user_daily_limit=4))
    assert [await attempt(make_job(f"d{n}", 31, day + n / 1000), limits=daily) for n in range(4)] == [None] * 4
    refusal = f"daily: You've used 4 of your 4 edits for today; the limit {RESETS}."
    assert await attempt(make_job("d4", 31, day + 4 / 1000), limits=daily) == refusal
    await step_to(store, make_job("d0", 31, day), JobState.CANCELLED)
    assert await attempt(make_job("d5", 31, day + 5 / 1000), limits=daily) is None
    assert await attempt(make_job("d6", 31, day + 6 / 1000), limits=daily) == refusal
    # Another day starts from nothing.
    assert await attempt(make_job("d7", 31, day + DAY), limits=daily) is None

    # The cooldown: thirty seconds after the last accepted edit, to the second.
    day += 2 * DAY
    cooldown = GuildLimits.resolve(CONFIG, GuildOverrides(user_cooldown_seconds=30.0))
    assert await attempt(make_job("c0", 41, day), limits=cooldown) is None
    wait = "cooldown: Slow down a little: you can start another edit in {}."
    assert await attempt(make_job("c1", 41, day + 1), limits=cooldown) == wait.format("29 s")
    assert await attempt(make_job("c2", 41, day + 29.5), limits=cooldown) == wait.format("1 s")
    assert await attempt(make_job("c3", 41, day + 30), limits=cooldown) is None

    # When several limits refuse at once, the verdict names them in ``Limit``'s order.
    day += DAY
    await admit(store, make_job("e0", 51, day))
    everything = Quota(day, spend_today=0, guild_today=0, user_active=0, user_today=0, user_last_accepted=day - 1)
    refused = await store.admit(make_job("e1", 51, day), everything, day + LEASE)
    assert refused is not None and refused[0] is Limit.BUDGET
    refused = await store.admit(make_job("e1", 51, day), dataclasses.replace(everything, spend_today=None), day)
    assert refused is not None and refused[0] is Limit.GUILD


# Claims, the cap, leases -----------------------------------------------------------------------------


async def test_claims_go_round_robin_between_members_and_wait_for_a_members_earlier_job(store: Store) -> None:
    for n, (job_id, user) in enumerate([("a1", 1), ("a2", 1), ("a3", 1), ("b1", 2), ("c1", 3)]):
        await add(store, make_job(job_id, user, NOON + n))
    # d1 is still preparing (its images on their way): d2, ready, must not overtake it.
    await add(store, make_job("d1", 4, NOON + 10), JobState.PREPARING)
    await add(store, make_job("d2", 4, NOON + 11))
    claimed = []
    for _ in range(5):
        job = await claim(store, "w")
        assert job.state is JobState.RUNNING and job.holder == "w" and job.run == 1
        claimed.append(job.id)
    assert claimed == ["a1", "b1", "c1", "a2", "a3"]
    # Why nothing was taken is what the worker waits for next: a queued job, not a free slot.
    assert await store.claim(terms("w")) is ClaimMiss.NO_JOB
    d1 = await store.get_job("d1")
    assert d1 is not None
    await step_to(store, d1, JobState.QUEUED)
    assert [(await claim(store, "w")).id for _ in range(2)] == ["d1", "d2"]


async def test_the_cap_counts_running_jobs_with_a_live_lease_across_holders(store: Store) -> None:
    for n in range(4):
        await add(store, make_job(f"j{n}", n, NOON + n))
    assert (await claim(store, "w1", NOON, 2)).id == "j0"
    assert (await claim(store, "w2", NOON, 2)).id == "j1"
    assert await store.claim(terms("w3", NOON, 2)) is ClaimMiss.NO_SLOT  # two jobs wait, no slot
    assert await store.holders() == {"w1", "w2"}
    assert await store.abandoned(NOON + LEASE, gone=set()) == []  # the leases hold to their last second
    # A lease that ran out (its holder stalled or died) no longer holds a slot; its job is due for a take-over.
    later = NOON + LEASE + 1
    assert [j.id for j in await store.abandoned(later, gone=set())] == ["j0", "j1"]
    assert (await claim(store, "w3", later, 2)).id == "j2"
    # A renewed lease keeps its slot.
    assert await store.renew("w3", ["j2"], later + 2 * LEASE) == {"j2": 1}
    assert (await claim(store, "w3", later + LEASE + 1, 2)).id == "j3"
    assert await store.claim(terms("w4", later + LEASE + 1, 2)) is ClaimMiss.NO_SLOT


async def test_abandoned_lists_gone_holders_lapsed_leases_no_holder_and_interrupted_jobs(store: Store) -> None:
    now = NOON
    await add(store, make_job("gone1", 1, now, holder="dead"), JobState.PREPARING)  # a live lease, a dead process
    await add(store, make_job("alive1", 2, now + 1, holder="alive"), JobState.PREPARING)
    await admit(store, make_job("nobody", 3, now + 2, holder=None))  # a job from before leases
    await add(store, make_job("stuck", 4, now + 3))
    assert (await claim(store, "stalled", now - LEASE)).id == "stuck"  # its lease runs out now
    await add(store, make_job("cut", 5, now + 4))
    await step_to(store, await claim(store, "w", now), JobState.INTERRUPTED)
    await add(store, make_job("queued", 6, now + 5))
    assert await store.holders() == {"dead", "alive", "stalled"}
    found = [job.id for job in await store.abandoned(now + 1, gone={"dead"})]
    assert found == ["gone1", "nobody", "stuck", "cut"]
    assert [job.id for job in await store.abandoned(now + 1, gone=set())] == ["nobody", "stuck", "cut"]
    assert [job.id for job in await store.abandoned(now, gone=set())] == ["nobody", "cut"]


async def test_concurrent_claims_never_take_one_job_twice(store: Store) -> None:
    for n in range(60):
        await add(store, make_job(f"j{n:02d}", n % 7, NOON + n))
    taken: dict[str, str] = {}  # job -> its holder

    def took(holder: str, job: Job | ClaimMiss) -> None:
        if isinstance(job, Job):
            assert job.id not in taken, f"{job.id} taken twice"
            taken[job.id] = holder

    # Six claims at once: each takes a job of its own (none is told there is none while jobs wait).
    first = await asyncio.gather(*(store.claim(terms(f"w{n}")) for n in range(6)))
    assert all(isinstance(job, Job) for job in first)
    for n, job in enumerate(first):
        took(f"w{n}", job)
    # Eight at once against a cap of ten running calls: four more start, the others hear there is no slot.
    capped = await asyncio.gather(*(store.claim(terms(f"c{n}", max_running=10)) for n in range(8)))
    assert [job for job in capped if not isinstance(job, Job)] == [ClaimMiss.NO_SLOT] * 4
    for n, job in enumerate(capped):
        took(f"c{n}", job)

    async def worker(name: str) -> None:
        while isinstance(job := await store.claim(terms(name)), Job):
            took(name, job)

    await asyncio.gather(*(worker(f"w{n}") for n in range(6)))
    assert sorted(taken) == [f"j{n:02d}" for n in range(60)]
    rows = await query(store, "SELECT id, claimed_by, run, status FROM jobs")
    assert {r["id"]: (r["claimed_by"], r["run"], r["status"]) for r in rows} == {
        job_id: (holder, 1, "running") for job_id, holder in taken.items()
    }


async def test_places_in_line_are_the_order_claims_take(store: Store) -> None:
    rng = random.Random(7)
    for n in range(40):
        await add(store, make_job(f"j{n:02d}", rng.randrange(6), NOON + n))
    for _ in range(7):  # some turns already taken, so members are ranked by their last turn
        await claim(store, "w")
    places = [(job.id, place) for job, place in await store.positions()]
    assert [place for _, place in places] == list(range(1, 34))
    claimed = [(await claim(store, "w")).id for _ in range(33)]
    assert claimed == [job_id for job_id, _ in places]
    assert await store.positions() == []


async def test_places_alone_are_the_queued_positions_without_the_jobs(
    store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    for n in range(12):
        await add(store, make_job(f"j{n:02d}", n % 4, NOON + n), JobState.PREPARING if n == 9 else JobState.QUEUED)
    await claim(store, "w")
    positions = await store.positions()
    assert await store.places() == [(job.id, place) for job, place in positions if job.state is JobState.QUEUED]
    assert len(await store.places()) == 10  # one running, one preparing: in line, yet not to be told a place
    monkeypatch.setattr("bot.store.store.IN_LIST_SIZE", 5)  # read in several lists
    wanted = [job.id for job, _ in positions]
    assert sorted(await store.jobs([*wanted, "gone"]), key=lambda job: job.id) == sorted(
        (job for job, _ in positions), key=lambda job: job.id
    )
    assert await store.jobs([]) == []


# Fencing and leases --------------------------------------------------------------------------------


async def test_a_stale_fence_is_refused_and_changes_nothing(store: Store) -> None:
    await add(store, make_job("f1", 1))
    first = await claim(store, "w1")
    assert (first.holder, first.run) == ("w1", 1)
    attempt = Attempt(1, NOON, 2.0, AttemptOutcome.TIMEOUT, True)
    charged = (await store.totals(first.charge_day)).operator_spend

    async def stale(fence: Fence, holder: str) -> None:
        result = await store.move(
            "f1", JobState.RUNNING, JobState.FAILED, {"error": "stale"}, refund=True, holder=holder,
            now=NOON + 1, attempts=[attempt], fence=fence, notice=NoticeDraft({"text": "stale"}),
        )  # fmt: skip
        assert result.job is None and not result.refunded and result.claimed is None

    async def unchanged() -> None:
        assert await store.get_job("f1") == first
        assert (await store.totals(first.charge_day)).operator_spend == charged
        assert await value(store, "SELECT COUNT(*) FROM notices") == 0
        assert await value(store, "SELECT COUNT(*) FROM api_attempts") == 0

    await stale(Fence("w2", 1), "w2")  # another holder
    await stale(Fence("w1", 0), "w1")  # an older run
    await stale(Fence(None, 1), "w1")  # a move that thinks nobody holds it
    await unchanged()

    # w1 stalls past its lease; w2 takes the job over (fenced by what it read) and runs it again.
    taken_over = await store.move(
        "f1", JobState.RUNNING, JobState.INTERRUPTED, {}, refund=False, holder="w2", now=NOON + LEASE + 1,
        fence=Fence("w1", 1),
    )  # fmt: skip
    assert taken_over.job is not None
    assert (await store.move("f1", JobState.INTERRUPTED, JobState.QUEUED, {"restarts": 1}, refund=False,
                             holder="w2", now=NOON + LEASE + 1)).job is not None  # fmt: skip
    second = await claim(store, "w2", NOON + LEASE + 2)
    assert (second.id, second.holder, second.run) == ("f1", "w2", 2)
    # The first run comes back to life: it can neither move nor keep the job; it only records its attempts.
    await stale(Fence("w1", 1), "w1")
    assert await store.renew("w1", ["f1"], NOON + 3 * LEASE) == {}
    await store.record_attempts("f1", 1, [attempt])
    assert await query(store, "SELECT run, outcome FROM api_attempts") == [{"run": 1, "outcome": "timeout"}]
    # The holder of the current run moves it.
    done = await store.move(
        "f1", JobState.RUNNING, JobState.DELIVERING, {"api_seconds": 1.5}, refund=False, holder="w2",
        now=NOON + LEASE + 5, fence=Fence("w2", 2),
    )  # fmt: skip
    assert done.job is not None and done.job.state is JobState.DELIVERING and done.job.api_seconds == 1.5


async def test_a_take_over_moves_a_job_only_while_it_is_still_abandoned(store: Store) -> None:
    """A take-over reads a lapsed job, then its holder wakes from a stall and renews its lease (and would post
    its result): the take-over's move, fenced by what it read, must leave the job to it. Without that check in
    the move's statement the result would be posted twice (once by the woken run, once by the re-run)."""
    await add(store, make_job("t1", 1))
    first = await claim(store, "w1")
    lapsed = NOON + LEASE + 1
    assert [job.id for job in await store.abandoned(lapsed, gone=set())] == ["t1"]
    assert await store.renew("w1", ["t1"], lapsed + LEASE) == {"t1": 1}  # w1 wakes, before the move

    async def take_over(now: float, gone: frozenset[str]) -> MoveResult:
        return await store.move(
            "t1", JobState.RUNNING, JobState.INTERRUPTED, {}, refund=False, holder="w2", now=now,
            fence=Fence("w1", 1, gone),
        )  # fmt: skip

    assert (await take_over(lapsed + 1, frozenset())).job is None
    assert await store.get_job("t1") == first  # still w1's run, running
    # Its holder's process found gone (its session ended): taken over whatever its lease says.
    moved = (await take_over(lapsed + 2, frozenset({"w9", "w1"}))).job
    assert moved is not None and moved.state is JobState.INTERRUPTED


async def test_a_take_over_of_a_lease_that_stayed_lapsed_goes_ahead(store: Store) -> None:
    await add(store, make_job("t2", 1))
    await claim(store, "w1")
    lapsed = NOON + LEASE + 1
    moved = await store.move(
        "t2", JobState.RUNNING, JobState.INTERRUPTED, {}, refund=False, holder="w2", now=lapsed,
        fence=Fence("w1", 1, frozenset({"w3"})),
    )  # fmt: skip
    assert moved.job is not None and moved.job.state is JobState.INTERRUPTED
    assert await store.renew("w1", ["t2"], lapsed + LEASE) == {}  # the stalled run has lost it for good


async def test_a_members_later_job_waits_behind_one_a_take_over_is_putting_back_in_line(store: Store) -> None:
    """A take-over puts a running job back in line in two moves (interrupted, then queued). A claim between them
    must not start its member's later job first: the member's jobs start in the order they asked them."""
    await add(store, make_job("a1", 1, NOON))
    a1 = await claim(store, "w1")
    await add(store, make_job("a2", 1, NOON + 1))
    await add(store, make_job("b1", 2, NOON + 2))
    later = NOON + LEASE + 1

    async def put_back(job_id: str, target: JobState, fence: Fence | None, **values: Any) -> Job:
        current = await store.get_job(job_id)
        assert current is not None
        moved = await store.move(job_id, current.state, target, values, refund=target is JobState.FAILED,
                                 holder="w2", now=later, fence=fence)  # fmt: skip
        assert moved.job is not None
        return moved.job

    await put_back("a1", JobState.INTERRUPTED, Fence("w1", a1.run, frozenset()))
    assert (await claim(store, "w2", later)).id == "b1"  # the other member's job; not a2
    assert await store.claim(terms("w2", later)) is ClaimMiss.NO_JOB
    await put_back("a1", JobState.QUEUED, None, restarts=1)
    assert (await claim(store, "w2", later)).id == "a1"
    assert (await claim(store, "w2", later)).id == "a2"

    # A job put back that fails instead (interrupted once too often) lets its member's later jobs go.
    await add(store, make_job("c1", 3, NOON + 3))
    c1 = await claim(store, "w1", NOON + 3 - LEASE)  # its lease lapsed by ``later`` too
    await add(store, make_job("c2", 3, NOON + 4))
    await put_back("c1", JobState.INTERRUPTED, Fence("w1", c1.run, frozenset()))
    assert await store.claim(terms("w2", later)) is ClaimMiss.NO_JOB
    await put_back("c1", JobState.FAILED, None, error="interrupted twice")
    assert (await claim(store, "w2", later)).id == "c2"


async def test_renew_returns_only_the_jobs_a_holder_still_holds(store: Store) -> None:
    for n in range(4):
        await add(store, make_job(f"j{n}", n, NOON + n))
    j0, j1, j2, _ = [await claim(store, "w1" if n < 3 else "w2") for n in range(4)]
    await step_to(store, j1, JobState.DELIVERING)  # still held: delivering is a held state
    await step_to(store, j2, JobState.FAILED)  # over: nobody holds it any more
    until = NOON + 3 * LEASE
    assert await store.renew("w1", ["j0", "j1", "j2", "j3", "nope"], until) == {"j0": 1, "j1": 1}
    assert await store.renew("w2", ["j0", "j3"], until) == {"j3": 1}
    assert await store.renew("w1", [], until) == {}
    # Renewed to ``until``: no take-over before then.
    assert [j.id for j in await store.abandoned(until - 1, gone=set())] == []
    assert [j.id for j in await store.abandoned(until + 1, gone=set())] == ["j0", "j1", "j3"]
    # A holder that lost a job and claimed it again in a later run hears the new run (its old run is lost).
    await step_to(store, j0, JobState.INTERRUPTED)
    await store.move("j0", JobState.INTERRUPTED, JobState.QUEUED, {"restarts": 1}, refund=False, holder="w1",
                     now=until)  # fmt: skip
    again = await claim(store, "w1", until)
    assert again.id == "j0" and await store.renew("w1", ["j0"], until + LEASE) == {"j0": 2}


# What a move tells other processes ---------------------------------------------------------------------


async def test_a_moves_notices_are_sent_only_when_it_happened(store: Store) -> None:
    heard = Heard(store)
    assert await heard.since_last() == []
    job = await add(store, make_job("j1", 7))
    assert await heard.since_last() == ["queued"]
    refused = await store.move("j1", JobState.PREPARING, JobState.QUEUED, {}, refund=False, holder="g", now=NOON)
    assert refused.job is None
    assert await heard.since_last() == []
    running = await claim(store, "w")
    assert running.id == job.id and await heard.since_last() == ["claimed"]
    delivering = await step_to(store, running, JobState.DELIVERING)
    assert await heard.since_last() == ["slot"]  # a call's end frees a slot for any worker
    # The gateways tell a member whose result could not reach them, next time they come.
    await step_to(store, delivering, JobState.SUCCEEDED, delivered=Delivered.UNDELIVERED)
    assert await heard.since_last() == ["notices:7"]
    cancelled = await step_to(store, await add(store, make_job("j2", 8)), JobState.CANCELLED)
    assert cancelled.state is JobState.CANCELLED
    # Queued, then it left the line: its member's next job may start now (a wake), and it was cancelled.
    assert await heard.since_last() == ["queued", "queued", "cancel:j2"]


async def test_a_job_queued_wakes_a_listener(store: Store) -> None:
    """On SQLite the notice is delivered in-process right after the commit; on PostgreSQL by ``LISTEN``. (How
    soon is the benchmark's: from enqueue to claim by an idle worker.)"""
    heard: asyncio.Queue[str] = asyncio.Queue()
    store.on_notice(heard.put_nowait)
    preparing = await add(store, make_job("j1", 1), JobState.PREPARING)
    await step_to(store, preparing, JobState.QUEUED)
    async with asyncio.timeout(5):
        while await heard.get() != "queued":
            pass


async def test_a_calls_end_hands_its_slot_to_the_next_job_in_the_same_transaction(store: Store) -> None:
    heard = Heard(store)
    await add(store, make_job("r1", 1, NOON))
    await add(store, make_job("q1", 2, NOON + 1))
    running = await claim(store, "w1", NOON, 1)
    assert running.id == "r1"
    assert await store.claim(terms("w2", NOON, 1)) is ClaimMiss.NO_SLOT  # the cap: one call at a time
    await heard.since_last()

    async def end(job_id: str) -> MoveResult:
        return await store.move(
            job_id, JobState.RUNNING, JobState.DELIVERING, {}, refund=False, holder="w1", now=NOON + 2,
            fence=Fence("w1", 1), claim=terms("w1", NOON + 2, 1),
        )  # fmt: skip

    ended = await end("r1")
    assert ended.job is not None and ended.job.state is JobState.DELIVERING
    claimed = ended.claimed
    assert isinstance(claimed, Job) and (claimed.id, claimed.state, claimed.holder) == ("q1", JobState.RUNNING, "w1")
    assert await store.get_job("q1") == claimed
    # The slot was taken with it: no worker is woken for it, the gateways re-tell places.
    assert await heard.since_last() == ["claimed"]
    # Nothing left to claim: the slot is free for whoever queues next, and every worker hears it.
    ended = await end("q1")
    assert ended.job is not None and ended.claimed is ClaimMiss.NO_JOB
    assert await heard.since_last() == ["slot"]
    # A move the store refuses (the job is elsewhere) claims nothing and tells no one.
    await add(store, make_job("q2", 3, NOON + 3))
    await heard.since_last()
    refused = await end("q1")
    assert refused.job is None and refused.claimed is None
    assert await heard.since_last() == []
    waiting = await store.get_job("q2")
    assert waiting is not None and waiting.state is JobState.QUEUED


# Inputs --------------------------------------------------------------------------------------------------


async def test_queued_inputs_are_capped_also_when_saves_run_at_once(store: Store) -> None:
    image = StoredImage(b"\x89PNG" + b"x" * 996, "image/png", 10, 10)
    await store.save_inputs("a", [image, image], cap_bytes=3000)
    assert await store.queued_input_bytes() == 2000
    with pytest.raises(QueueFullError):
        await store.save_inputs("b", [image, image], cap_bytes=3000)
    assert not await store.inputs_exist("b")  # refused whole: nothing of it is kept
    assert await store.load_inputs("a") == [image, image]
    await store.delete_inputs("a")
    assert not await store.inputs_exist("a") and await store.load_inputs("a") is None
    await store.save_inputs("b", [image, image], cap_bytes=3000)
    await store.delete_inputs("b")

    # Saves write side by side and are checked one at a time: never more kept than the cap allows.
    big = StoredImage(b"\x89PNG" + b"x" * 99_996, "image/png", 10, 10)

    async def save(n: int) -> bool:
        try:
            await store.save_inputs(f"job{n}", [big], cap_bytes=550_000)
        except QueueFullError:
            return False
        return True

    kept = await asyncio.gather(*(save(n) for n in range(10)))
    assert sum(kept) == 5
    assert await store.queued_input_bytes() == 500_000
    for n, was_kept in enumerate(kept):
        assert await store.inputs_exist(f"job{n}") is was_kept  # a refused job left nothing behind


# The outbox ----------------------------------------------------------------------------------------------


async def test_a_terminal_move_writes_one_notice_that_one_teller_at_a_time_tells(store: Store) -> None:
    now = NOON
    for n in range(1, 6):
        await add(store, make_job(f"j{n}", n, now + n))

    async def end(job_id: str, target: JobState, by: str, draft: NoticeDraft | None, at: float = now) -> None:
        job = await store.get_job(job_id)
        assert job is not None
        refund = target is not JobState.SUCCEEDED
        result = await store.move(job_id, job.state, target, {"finished_at": at}, refund=refund, holder=by, now=at,
                                  notice=draft)  # fmt: skip
        assert result.job is not None

    def owed(taken: list[tuple[Notice, Job]]) -> list[str]:
        return [job.id for _, job in taken]

    # A failure, ended by w1: w1's to tell first, no one else's while its lease lives.
    await end("j1", JobState.FAILED, "w1", NoticeDraft({"text": "it broke"}))
    (row,) = await query(store, "SELECT * FROM notices")
    assert (row["job_id"], row["outcome"], row["claimed_by"], row["due_at"], row["done_at"]) == (
        "j1", "failed", "w1", now, None,
    )  # fmt: skip
    assert await store.claim_notices("w2", now + 1, gone=set()) == []
    assert await store.take_own_notice("j1", "w2", now + 1) is None
    own = await store.take_own_notice("j1", "w1", now + 1)
    assert own is not None
    notice, job = own
    assert (notice.outcome, dict(notice.payload), notice.attempts, job.id) == (JobState.FAILED, {"text": "it broke"},
                                                                              1, "j1")  # fmt: skip
    assert await store.holders_of_notices() == {"w1"}
    # Discord did not take it: any process may try again later, and exactly one does.
    await store.notice_later("j1", "w1", now + 5)
    assert await store.holders_of_notices() == set()
    assert await store.claim_notices("w2", now + 4, gone=set()) == []
    tries = await asyncio.gather(*(store.claim_notices(f"t{n}", now + 5, gone=set()) for n in range(5)))
    assert sorted(owed(taken) for taken in tries) == [[], [], [], [], ["j1"]]
    (winner,) = [f"t{n}" for n, taken in enumerate(tries) if taken]
    assert [notice.attempts for taken in tries for notice, _ in taken] == [2]
    assert not await store.notice_done("j1", "w1", "edited", now + 6)  # no longer w1's
    assert await store.notice_done("j1", winner, "edited", now + 6)
    assert not await store.notice_done("j1", winner, "edited", now + 7)  # once
    assert await store.claim_notices("w2", now + 1000, gone=set()) == []

    # A cancel whose own answer tells the member: due after its grace, then anyone's to tell.
    await end("j2", JobState.CANCELLED, "w1", NoticeDraft({"by": 2}, delay=10.0))
    assert await store.claim_notices("w1", now + 9, gone=set()) == []
    assert owed(await store.claim_notices("w2", now + 10, gone=set())) == ["j2"]
    # A posted result was told as it ended: recorded done, never told again.
    await end("j3", JobState.SUCCEEDED, "w1", NoticeDraft(done_how="posted"))
    (row,) = await query(store, "SELECT claimed_by, done_at, how FROM notices WHERE job_id = 'j3'")
    assert row == {"claimed_by": None, "done_at": now, "how": "posted"}
    # A teller that is gone holds nothing, however long its lease.
    await end("j4", JobState.FAILED, "dead", None)
    assert owed(await store.claim_notices("w1", now + 1, gone={"dead"})) == ["j4"]
    # Told at the member's next use: owed to them until they are shown it.
    assert await store.notice_done("j4", "w1", "next_use", now + 2)
    assert await store.next_use_users() == {4}
    assert [(n.job_id, j.user_id) for n, j in await store.next_use_notices(4)] == [("j4", 4)]
    await store.mark_shown(["j4"], now + 3)
    assert await store.next_use_users() == set() and await store.next_use_notices(4) == []

    totals = await store.totals(utc_day(now))
    assert (totals.notices_pending, totals.oldest_notice_at) == (1, now)  # j2, claimed by w2, not yet told
    assert await value(store, "SELECT COUNT(*) FROM notices") == 4  # one per ended job
    # Never a second: a job the store is asked to end again keeps the notice of its first end.
    await end("j5", JobState.FAILED, "w1", NoticeDraft({"text": "first"}), now + 20)
    await end("j5", JobState.FAILED, "w2", NoticeDraft({"text": "second"}), now + 21)
    rows = await query(store, "SELECT payload, claimed_by, created_at FROM notices WHERE job_id = 'j5'")
    assert rows == [{"payload": '{"text": "first"}', "claimed_by": "w1", "created_at": now + 20}]


async def test_due_notices_go_to_exactly_one_of_several_claimers(store: Store) -> None:
    for n in range(23):
        job = await add(store, make_job(f"j{n:02d}", n, NOON + n))
        await step_to(store, job, JobState.FAILED)  # owed by "gateway", whose process is gone now
    # At NOON + 30 every notice is due and its teller's lease still runs: only a gone teller frees them.
    assert await store.claim_notices("t9", NOON + 30, set()) == []
    tries = await asyncio.gather(*(store.claim_notices(f"t{n}", NOON + 30, {"gateway"}) for n in range(4)))
    assert sorted(len(batch) for batch in tries) == [0, 3, 10, 10]  # ten at most per claim
    taken = [job.id for batch in tries for _, job in batch]
    assert sorted(taken) == [f"j{n:02d}" for n in range(23)]  # each exactly once
    assert await store.claim_notices("t9", NOON + 31, {"gateway"}) == []  # the claimers' leases hold them
    assert len(await store.claim_notices("t9", NOON + 30 + NOTICE_LEASE + 1, set())) == 10  # until they lapse


async def test_the_totals_say_when_the_longest_waiting_queued_job_joined_the_line(store: Store) -> None:
    """For ``atelier_queue_oldest_wait_seconds``: the earliest time in line among queued jobs only (the time
    it was queued, or its acceptance when none was recorded); ``None`` with nothing queued."""
    t = NOON
    assert (await store.totals(utc_day(t))).oldest_queued_at is None
    await add(store, make_job("preparing", 1, t - 300), JobState.PREPARING)  # oldest, but not in line yet
    assert (await store.totals(utc_day(t))).oldest_queued_at is None
    for job_id, user, created, queued in (("slow-images", 2, t - 100, t - 50), ("quick", 3, t - 90, t - 80)):
        preparing = await add(store, make_job(job_id, user, created), JobState.PREPARING)
        await step_to(store, preparing, JobState.QUEUED, queued_at=queued)
    assert (await store.totals(utc_day(t))).oldest_queued_at == pytest.approx(t - 80)
    no_time = await add(store, make_job("no-time", 4, t - 85), JobState.PREPARING)
    await step_to(store, no_time, JobState.QUEUED)  # queued without a recorded time: its acceptance counts
    assert (await store.totals(utc_day(t))).oldest_queued_at == pytest.approx(t - 85)
    for _ in range(3):
        assert isinstance(await store.claim(ClaimTerms("worker", t, LEASE, 10)), Job)
    assert (await store.totals(utc_day(t))).oldest_queued_at is None  # running jobs wait no more
