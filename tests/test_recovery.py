"""The take-over, through the real lifecycle on both databases (the ``store`` fixture): a job whose lease
lapsed is resumed by another process, unless its holder woke from its stall in the meantime.

Two lifecycles share the store, as two processes would: ``w1`` runs the job, ``w2`` takes over what nobody
holds (``bot.jobs.recovery.resume``, as ``Keeper.take_over`` calls it). The clock is moved by hand.
"""

from __future__ import annotations

from bot.core.job import Job
from bot.core.quota import Quota
from bot.core.states import JobState
from bot.jobs.inputs import JobInputs
from bot.jobs.lifecycle import Lifecycle
from bot.jobs.recovery import resume
from bot.media.images import PreparedImage
from bot.store.store import Store
from tests.notifiers import QuietNotifier
from tests.stores import LEASE, NOON, clock, make_job

PNG = b"\x89PNG" + b"p" * 996


class Lines(QuietNotifier):
    """A notifier that keeps which jobs' status lines it was told to stop (``run_lost``)."""

    def __init__(self) -> None:
        self.lost: list[tuple[str, int]] = []

    async def run_lost(self, job: Job) -> None:
        self.lost.append((job.id, job.run))


async def running(store: Store, lifecycle: Lifecycle, job_id: str) -> Job:
    """A job admitted, its image kept, queued and claimed by ``lifecycle``'s process."""
    now = lifecycle.clock()
    job = await lifecycle.create(make_job(job_id, 1, now, holder=lifecycle.holder), Quota(now))
    preparing = await lifecycle.move(job, JobState.PREPARING)
    assert preparing is not None
    await JobInputs(store, cap_bytes=1 << 30).save(job_id, [PreparedImage(PNG, "image/png", 8, 8)])
    assert await lifecycle.move(preparing, JobState.QUEUED) is not None
    claimed = await lifecycle.claim_up_to(max_running=10, count=1)
    assert isinstance(claimed, list) and [job.id for job in claimed] == [job_id]
    return claimed[0]


async def test_a_holder_that_wakes_between_the_take_overs_reading_and_its_move_keeps_its_job(store: Store) -> None:
    now, time = clock(NOON)
    w1 = Lifecycle(store, "w1", lease_seconds=LEASE, clock=time)
    w2 = Lifecycle(store, "w2", lease_seconds=LEASE, clock=time)
    job = await running(store, w1, "j1")
    now[0] += LEASE + 1  # w1 stalls past its lease
    found = await store.abandoned(now[0], gone=set())
    assert [j.id for j in found] == ["j1"]
    # w1 wakes before w2's move, and checks it still holds the job before posting its result: it does.
    assert await w1.still_holds(job)
    await resume(w2, JobInputs(store, cap_bytes=1 << 30), found, gone=set())
    stored = await store.get_job("j1")
    assert stored is not None and (stored.state, stored.holder, stored.run) == (JobState.RUNNING, "w1", 1)
    # So the woken run goes on, and its result is the job's only one.
    delivering = await w1.move(job, JobState.DELIVERING, api_seconds=1.0)
    assert delivering is not None and delivering.state is JobState.DELIVERING


async def test_a_job_whose_holder_stayed_stalled_is_put_back_in_line_and_the_stalled_run_has_lost_it(
    store: Store,
) -> None:
    now, time = clock(NOON)
    w1 = Lifecycle(store, "w1", lease_seconds=LEASE, clock=time)
    w2 = Lifecycle(store, "w2", lease_seconds=LEASE, clock=time)
    job = await running(store, w1, "j2")
    now[0] += LEASE + 1
    await resume(w2, JobInputs(store, cap_bytes=1 << 30), await store.abandoned(now[0], gone=set()), gone=set())
    stored = await store.get_job("j2")
    assert stored is not None and (stored.state, stored.restarts) == (JobState.QUEUED, 1)
    assert not await w1.still_holds(job)  # it wakes too late: it posts nothing, moves nothing
    assert await w1.move(job, JobState.DELIVERING, api_seconds=1.0) is None


async def test_a_run_whose_move_is_refused_after_a_take_over_stops_its_status_line(store: Store) -> None:
    """The stalled run learns it lost its job from its own refused move, before any renewal could tell it (the
    job is then no longer held, so no renewal ever would): its status line must stop there."""
    now, time = clock(NOON)
    w1 = Lifecycle(store, "w1", lease_seconds=LEASE, clock=time)
    w2 = Lifecycle(store, "w2", lease_seconds=LEASE, clock=time)
    lines = Lines()
    w1.attach(lines, None, None)
    job = await running(store, w1, "j3")
    now[0] += LEASE + 1
    await resume(w2, JobInputs(store, cap_bytes=1 << 30), await store.abandoned(now[0], gone=set()), gone=set())
    assert lines.lost == []
    assert await w1.move(job, JobState.DELIVERING, api_seconds=1.0) is None  # the call's answer, too late
    assert lines.lost == [("j3", 1)]
    assert await w1.renew() == []  # nothing held: the renewals would never have told
