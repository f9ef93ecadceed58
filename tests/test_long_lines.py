"""A long line stays cheap for the gateway: reading places and editing status lines do not grow with it.

With ten thousand waiting jobs a reading of every place takes a good part of a second, and every
job that starts moves every place. The benchmark's 10,000-job row (``bench/scale.py``) found the
gateway spending all its time on both, so that an ``/edit`` waited a minute for its answer.
"""

from __future__ import annotations

import asyncio
from collections.abc import Collection, Sequence

import pytest

from bot.core.job import Job
from bot.core.records import ClaimTerms
from bot.core.states import JobState
from bot.errors import AtelierError
from bot.jobs.places import COALESCE, READ_SPACING, Places, pause_after
from bot.scheduler import Scheduler
from bot.store.store import Store
from cogs.delivery.status import FULL_PACE_PLACES, place_interval
from tests.stores import LEASE, NOON, add, make_job


def test_a_short_reading_of_the_places_is_followed_by_the_usual_short_pause() -> None:
    assert pause_after(0.002) == COALESCE


def test_a_long_reading_of_the_places_is_followed_by_a_pause_in_proportion() -> None:
    assert pause_after(0.5) == pytest.approx(0.5 * READ_SPACING)
    # Reading never takes more than this share of the process, however long the line.
    assert 0.5 / (0.5 + pause_after(0.5)) <= 1 / (1 + READ_SPACING)


def test_places_near_the_front_are_shown_at_the_full_pace() -> None:
    assert {place_interval(10.0, place) for place in range(1, FULL_PACE_PLACES + 1)} == {10.0}


def test_places_further_back_are_edited_less_often_in_steps() -> None:
    far = FULL_PACE_PLACES
    assert [place_interval(10.0, place) for place in (far, 2 * far - 1, 2 * far, 4 * far - 1, 4 * far, 10 * far)] == [
        10.0, 10.0, 20.0, 20.0, 40.0, 80.0
    ]  # fmt: skip


@pytest.mark.parametrize(("waiting", "most"), [(100, 11), (1_000, 28), (10_000, 44)])
def test_the_edits_of_a_whole_line_grow_with_the_log_of_its_length(waiting: int, most: float) -> None:
    per_second = sum(1 / place_interval(10.0, place) for place in range(1, waiting + 1))
    assert per_second <= most  # at one edit per line every 10 s it would be waiting / 10


class Told:
    """A notifier that keeps the places it was told (and nothing else)."""

    def __init__(self) -> None:
        self.moved: list[list[tuple[str, int]]] = []
        self.left: list[str] = []

    async def job_moved(self, job: Job, before: JobState, error: AtelierError | None) -> None:
        pass

    async def job_paused(self, job: Job) -> None:
        pass

    async def run_lost(self, job: Job) -> None:
        pass

    async def queue_moved(self, places: Sequence[tuple[Job, int]]) -> None:
        self.moved.append([(job.id, place) for job, place in places])

    async def queue_left(self, job_ids: Sequence[str]) -> None:
        self.left += job_ids


class Counting(Store):
    """The store, counting the jobs it reads whole for the places."""

    def __init__(self, store: Store) -> None:
        super().__init__(store.database)
        self.read: list[str] = []
        self.readings = 0

    async def places(self) -> list[tuple[str, int]]:
        self.readings += 1
        return await super().places()

    async def jobs(self, job_ids: Collection[str]) -> list[Job]:
        self.read += job_ids
        return await super().jobs(job_ids)


async def test_a_waiting_job_is_read_whole_once_and_its_place_again_at_every_move(store: Store) -> None:
    counting = Counting(store)
    for n in range(20):
        await add(store, make_job(f"j{n:02d}", n % 5, NOON + n))
    told = Told()
    places = Places(counting, Scheduler("places"))
    places._notifier = told  # as start() would, without its loop: this test reads when it wants
    await places.announce()
    first = dict(told.moved[-1])
    assert told.moved[-1] == [(job.id, place) for job, place in await store.positions()]
    assert sorted(counting.read) == [f"j{n:02d}" for n in range(20)]

    claimed = await store.claim(ClaimTerms("worker", NOON, LEASE, 10))
    assert isinstance(claimed, Job) and first[claimed.id] == 1
    await add(store, make_job("late", 9, NOON + 30))  # a new member's first job: ahead of everyone's second
    await places.announce()
    assert told.left == [claimed.id]
    now = [(job.id, place) for job, place in await store.positions()]
    assert told.moved[-1] == [(job_id, place) for job_id, place in now if first.get(job_id) != place]
    assert sorted(counting.read) == sorted([*(f"j{n:02d}" for n in range(20)), "late"])  # only the newcomer


class TellingTold(Told):
    """The same, saying when it was told."""

    def __init__(self) -> None:
        super().__init__()
        self.told = asyncio.Event()

    async def queue_moved(self, places: Sequence[tuple[Job, int]]) -> None:
        await super().queue_moved(places)
        self.told.set()


async def test_a_reading_of_the_places_waits_for_the_answers_of_a_burst(store: Store) -> None:
    """With thousands waiting, a reading and everyone's new place take the process for a while: the members
    waiting for the answer to a command come first (``Admission.answers_first``)."""
    counting = Counting(store)
    await add(store, make_job("j00", 1, NOON))
    answered = asyncio.Event()
    asked = asyncio.Event()
    read_when_asked: list[int] = []

    async def answers_first() -> None:
        read_when_asked.append(counting.readings)
        asked.set()
        await answered.wait()

    told = TellingTold()
    scheduler = Scheduler("places")
    places = Places(counting, scheduler, quiet=answers_first)
    places.start(told)
    try:
        async with asyncio.timeout(5):
            await asked.wait()
            assert read_when_asked == [0] and not told.moved  # nothing read before the answers were out
            answered.set()
            await told.told.wait()
        assert told.moved == [[("j00", 1)]] and counting.readings == 1
    finally:
        await scheduler.cancel_all()
