"""Input retention: how long an ended job's inputs stay for Reroll, within the window and the cap, on both
databases (the ``store`` fixture).

Jobs are driven through the real lifecycle, with the retention as its hook for ended jobs (as the engine
wires it), on a clock the test moves: nothing here sleeps.
"""

from __future__ import annotations

import asyncio
import random
import zlib
from collections.abc import Callable, Sequence

from bot.core.job import Delivered, Job
from bot.core.quota import Quota
from bot.core.records import NoticeDraft
from bot.core.states import JobState
from bot.errors import AtelierError
from bot.i18n import _t
from bot.jobs.inputs import JobInputs
from bot.jobs.lifecycle import Lifecycle
from bot.jobs.retention import ORPHAN_GRACE, Retention
from bot.media.images import PreparedImage
from bot.scheduler import Scheduler
from bot.store.store import Store
from tests.stores import LEASE, NOON, clock, make_job, query, value

HOUR = 3600.0
PNG = b"\x89PNG" + b"p" * 996  # the store keeps bytes; what they are does not matter here


class Jobs:
    """Jobs made, run and ended through the lifecycle, as the engine's admission and workers do."""

    def __init__(self, store: Store, time: Callable[[], float], retention: Retention | None) -> None:
        self.store = store
        self.lifecycle = Lifecycle(store, "worker", lease_seconds=LEASE, clock=time)
        self.lifecycle.attach(None, retention, None)  # retention: told of every job this process ends
        self.inputs = JobInputs(store, cap_bytes=1 << 30)

    async def queued(self, job_id: str, data: bytes = PNG) -> Job:
        """A job accepted, its image saved, and queued (each job by a member of its own)."""
        now = self.lifecycle.clock()
        job = await self.lifecycle.create(
            make_job(job_id, zlib.crc32(job_id.encode()), now, holder="worker"), Quota(now)
        )
        preparing = await self.lifecycle.move(job, JobState.PREPARING)
        assert preparing is not None
        await self.inputs.save(job_id, [PreparedImage(data, "image/png", 8, 8)])
        queued = await self.lifecycle.move(preparing, JobState.QUEUED)
        assert queued is not None
        return queued

    async def run_next(self, succeed: bool = True) -> Job:
        """Claim the next job and end it: its result posted, or failed by the API."""
        claimed = await self.lifecycle.claim_up_to(max_running=1000, count=1)
        assert isinstance(claimed, list)
        (running,) = claimed
        if not succeed:
            ended = await self.lifecycle.move(
                running, JobState.FAILED, error=AtelierError(_t("The API said no."), log_detail="no")
            )
        else:
            delivering = await self.lifecycle.move(running, JobState.DELIVERING, api_seconds=1.0)
            assert delivering is not None
            ended = await self.lifecycle.move(
                delivering, JobState.SUCCEEDED, delivered=Delivered.POSTED, notice=NoticeDraft(done_how="posted")
            )
        assert ended is not None and ended.state.terminal
        return ended

    async def done(self, job_id: str, succeed: bool = True) -> Job:
        """One job, queued and ended (nothing else waits)."""
        await self.queued(job_id)
        ended = await self.run_next(succeed)
        assert ended.id == job_id
        return ended


def retention_of(store: Store, hours: float, cap_bytes: int, time: Callable[[], float]) -> Retention:
    return Retention(store, hours=hours, cap_bytes=cap_bytes, scheduler=Scheduler("test"), clock=time)


async def test_a_result_is_kept_for_the_window_then_swept(store: Store) -> None:
    now, time = clock(NOON)
    retention = retention_of(store, 24, 10**6, time)
    jobs = Jobs(store, time, retention)
    await jobs.done("a1")
    waiting = await jobs.queued("w1")  # unfinished: it keeps its inputs whatever the window
    assert await retention.kept_now("a1") and await store.load_inputs("a1") is not None
    now[0] += 24 * HOUR - 1
    assert await retention.sweep() == 0 and await retention.kept_now("a1")
    now[0] += 1
    assert not await retention.kept_now("a1")  # past the window even before the sweep comes
    assert await store.inputs_exist("a1")
    assert await retention.sweep() == 1
    assert not await store.inputs_exist("a1") and await store.load_inputs("a1") is None
    assert await retention.kept_now(waiting.id) and await store.inputs_exist(waiting.id)


async def test_failed_and_cancelled_jobs_lose_their_inputs_at_once(store: Store) -> None:
    _, time = clock(NOON)
    retention = retention_of(store, 24, 10**6, time)
    jobs = Jobs(store, time, retention)
    await jobs.done("f1", succeed=False)
    queued = await jobs.queued("c1")
    assert await jobs.lifecycle.move("c1", JobState.CANCELLED) is not None
    await jobs.done("s1")
    for job_id in ("f1", queued.id):
        assert not await store.inputs_exist(job_id) and not await retention.kept_now(job_id)
    assert await retention.kept_now("s1")


async def test_zero_hours_keeps_nothing(store: Store) -> None:
    _, time = clock(NOON)
    retention = retention_of(store, 0, 10**6, time)
    jobs = Jobs(store, time, retention)
    await jobs.done("s1")
    assert not await store.inputs_exist("s1") and not await retention.kept_now("s1")
    waiting = await jobs.queued("w1")
    assert await retention.kept_now(waiting.id)  # an unfinished job still has its own
    # Between a job's end and its inputs' deletion (the hook runs after the end is written), nothing is
    # offered for a reroll either: here the hook is not attached, so the inputs stay.
    unhooked = Jobs(store, time, None)
    await unhooked.done("s2")
    assert await store.inputs_exist("s2") and not await retention.kept_now("s2", ended=True)


async def test_a_start_drops_the_inputs_of_jobs_that_ended_as_their_process_stopped(store: Store) -> None:
    now, time = clock(NOON)
    before = retention_of(store, 1, 10**6, time)
    jobs = Jobs(store, time, before)
    await jobs.done("old1")  # kept, and past its hour by the time of the start below
    now[0] += HOUR / 2
    await jobs.done("new1")  # kept, still within its hour
    # A process that ended a job and stopped before it marked the inputs kept: they are nobody's now.
    await Jobs(store, time, retention=None).done("lost1")
    await jobs.queued("run1")  # unfinished: never touched
    now[0] += HOUR / 2 + 1
    after = retention_of(store, 1, 10**6, time)
    await after.sweep()
    assert {job_id: await store.inputs_exist(job_id) for job_id in ("old1", "new1", "lost1", "run1")} == {
        "old1": False,
        "new1": True,
        "lost1": False,
        "run1": True,
    }


async def test_a_sweep_drops_the_inputs_of_a_job_that_ended_unkept_once_it_ended_a_minute_ago(store: Store) -> None:
    """A job ended, but its inputs were never marked kept (the marking failed, or its process died as it ended).
    A sweep leaves them for a minute (another process's end is written before it marks them), then drops them.
    Before, only a start dropped them: until then they counted against the queue's cap on inputs."""
    now, time = clock(NOON)
    retention = retention_of(store, 24, 10**6, time)
    await Jobs(store, time, retention=None).done("lost1")
    await Jobs(store, time, retention).done("kept1")
    now[0] += ORPHAN_GRACE - 1
    assert await retention.sweep() == 0
    assert await store.inputs_exist("lost1")
    now[0] += 2
    assert await retention.sweep() == 1
    assert not await store.inputs_exist("lost1") and await retention.kept_now("kept1")


async def test_the_oldest_go_first_when_the_cap_is_reached(store: Store) -> None:
    now, time = clock(NOON)
    retention = retention_of(store, 24, 3 * len(PNG), time)
    jobs = Jobs(store, time, retention)
    for n in range(6):
        await jobs.done(f"j{n}")
        now[0] += 1
    assert await kept(store) == ["j3", "j4", "j5"]
    # Inputs larger than the whole cap are not kept at all, and push nothing out.
    await jobs.queued("big", PNG * 4)
    await jobs.run_next()
    assert not await store.inputs_exist("big") and await kept(store) == ["j3", "j4", "j5"]
    # A smaller cap (a restart with a new setting) applies at the next sweep: again the oldest go.
    assert await retention_of(store, 24, 2 * len(PNG), time).sweep() == 1
    assert await kept(store) == ["j4", "j5"]


async def kept(store: Store) -> list[str]:
    """The jobs whose inputs are kept after they ended, oldest first."""
    rows = await query(
        store,
        "SELECT job_id FROM input_sets WHERE ended_at IS NOT NULL ORDER BY ended_at, job_id",
    )
    return [str(row["job_id"]) for row in rows]


async def kept_bytes(store: Store) -> int:
    # Measured from the images themselves, not from the sets' own record of their size.
    return int(
        await value(
            store,
            "SELECT COALESCE(SUM(length(i.data)), 0) FROM job_inputs i JOIN input_sets s ON s.job_id = i.job_id "
            "WHERE s.ended_at IS NOT NULL",
        )
    )


class CapWatch:
    """A notifier: after every job this process ends, the kept inputs in the store are measured."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self.seen: list[int] = []

    async def job_moved(self, job: Job, before: JobState, error: AtelierError | None) -> None:
        if job.state.terminal:
            self.seen.append(await kept_bytes(self.store))

    async def queue_moved(self, places: Sequence[tuple[Job, int]]) -> None:
        pass

    async def job_paused(self, job: Job) -> None:
        pass

    async def run_lost(self, job: Job) -> None:
        pass


async def test_kept_inputs_never_exceed_the_cap_under_many_finished_jobs(store: Store) -> None:
    """Three hundred jobs, ending twenty-five at a time: after every end the kept inputs fit the cap, the cap
    is used, failed jobs keep nothing, and what stays is what ended last."""
    rng = random.Random(11)
    cap = 30_000
    ticks = iter(range(1, 1 << 30))

    def time() -> float:
        return NOON + next(ticks) / 100  # every reading a little later: ends are ordered

    retention = retention_of(store, 24, cap, time)
    jobs = Jobs(store, time, retention)
    watch = CapWatch(store)
    jobs.lifecycle.attach(watch, retention, None)
    failed: list[str] = []
    last_batch: set[str] = set()
    for batch in range(12):
        names = [f"j{batch:02d}-{n:02d}" for n in range(25)]
        # Each image 1.5 to 4 kB: the successes of one batch alone fill the cap.
        await asyncio.gather(*(jobs.queued(name, rng.randbytes(rng.randrange(1500, 4001))) for name in names))
        ended = await asyncio.gather(*(jobs.run_next(succeed=n % 7 != 3) for n in range(25)))
        failed += [job.id for job in ended if job.state is JobState.FAILED]
        last_batch = {job.id for job in ended if job.state is JobState.SUCCEEDED}
    final = [(await jobs.done(f"final{n}")).id for n in range(5)]  # one after another, at the end
    assert len(watch.seen) == 12 * 25 + 5 and max(watch.seen) <= cap
    assert max(watch.seen) > cap - 4000  # the cap was reached: the oldest had to go
    remaining = await kept(store)
    assert await kept_bytes(store) <= cap
    assert remaining[-5:] == final  # what ended last stays
    assert set(remaining) - set(final) <= last_batch  # nothing of the earlier batches
    assert not [job_id for job_id in failed if await store.inputs_exist(job_id)]
    assert await store.queued_input_bytes() == 0  # nothing unfinished, nothing left unmarked
