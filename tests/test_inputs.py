"""Reading jobs' inputs (``bot.jobs.inputs``), on both databases (the ``store`` fixture)."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

import pytest

from bot.core.records import StoredImage
from bot.jobs.inputs import JobInputs
from bot.media.images import PreparedImage
from bot.scheduler import Scheduler
from bot.store import store as store_module
from bot.store.store import Store
from tests.stores import NOON, add, make_job


class Readings(Store):
    """The store, recording the jobs asked in each reading of inputs."""

    def __init__(self, store: Store) -> None:
        super().__init__(store.database)
        self.readings: list[list[str]] = []
        self.gate = asyncio.Event()  # holds each reading back until set
        self.entered = asyncio.Event()

    async def load_inputs_of(self, job_ids: Sequence[str]) -> dict[str, list[StoredImage]]:
        self.readings.append(sorted(job_ids))
        self.entered.set()
        await self.gate.wait()
        return await super().load_inputs_of(job_ids)


async def test_loads_asked_while_one_is_read_are_read_together_each_in_prompt_order(store: Store) -> None:
    """The jobs a group of ended calls handed their slots to ask for their inputs at once. Asked while a
    reading is under way, they are read together in one reading after it; each gets its own images in
    prompt order, and a job without inputs gets ``None``."""
    inputs = JobInputs(store, cap_bytes=1 << 30)
    for n in range(4):
        await add(store, make_job(f"j{n}", 1 + n, NOON + n))
        images = [PreparedImage(f"{n}-{i}".encode() * 10, "image/png", 8 + i, 8) for i in range(n + 1)]
        await inputs.save(f"j{n}", images)
    await add(store, make_job("empty", 9, NOON + 9))
    readings = Readings(store)
    reading = JobInputs(readings, cap_bytes=1 << 30)
    first = asyncio.create_task(reading.load("j0"))
    async with asyncio.timeout(10):
        await readings.entered.wait()
    rest = asyncio.gather(*(reading.load(job_id) for job_id in ("j1", "j2", "j3", "empty")))
    await asyncio.sleep(0)
    readings.gate.set()
    async with asyncio.timeout(10):
        loaded = [await first, *await rest]
    assert readings.readings == [["j0"], ["empty", "j1", "j2", "j3"]]
    for n in range(4):
        got = loaded[n]
        assert got is not None
        assert [(image.data, image.width) for image in got] == [(f"{n}-{i}".encode() * 10, 8 + i) for i in range(n + 1)]
    assert loaded[4] is None
    assert await reading.load("j2") is not None  # and the next reading works


async def test_a_reading_of_more_jobs_than_one_list_binds_finds_every_one(
    store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A reading is split into lists of ``IN_LIST_SIZE`` jobs (here 2, for five jobs): none is left out, which
    would fail its job as if its inputs were gone. A job asked twice is read once."""
    monkeypatch.setattr(store_module, "IN_LIST_SIZE", 2)
    inputs = JobInputs(store, cap_bytes=1 << 30)
    for n in range(5):
        await add(store, make_job(f"j{n}", 1 + n, NOON + n))
        await inputs.save(f"j{n}", [PreparedImage(f"image {n}".encode(), "image/png", 8, 8)])
    found = await store.load_inputs_of(["j4", "j0", "j1", "j2", "j3", "j0"])
    assert {job_id: [image.data for image in images] for job_id, images in found.items()} == {
        f"j{n}": [f"image {n}".encode()] for n in range(5)
    }


class Totals(Store):
    """The store, counting the readings of the queued images' total and holding each back until ``gate`` is set."""

    def __init__(self, store: Store) -> None:
        super().__init__(store.database)
        self.readings = 0
        self.gate = asyncio.Event()

    async def queued_input_bytes(self) -> int:
        self.readings += 1
        await self.gate.wait()
        return await super().queued_input_bytes()


async def test_only_the_first_request_waits_for_the_total_later_ones_are_answered_from_the_last_reading(
    store: Store,
) -> None:
    """Admission asks whether the images fill the cap on every request. The total is read at most once a
    second, and only the first asking waits for it: the request that finds it a second old was the first of
    its burst, and waited for a reading the others did not (at scale it was answered last). It is answered
    from the last reading, and the next one runs in the background."""
    totals = Totals(store)
    now = [0.0]
    scheduler = Scheduler("test")
    inputs = JobInputs(totals, cap_bytes=1000, clock=lambda: now[0], scheduler=scheduler)
    first = asyncio.ensure_future(inputs.full())
    await asyncio.sleep(0.05)
    assert not first.done()  # nothing read yet: the first asking waits
    totals.gate.set()
    async with asyncio.timeout(10):
        assert await first is False
    await inputs.save("a", [PreparedImage(b"x" * 1000, "image/png", 8, 8)])  # the cap reached
    totals.gate.clear()
    assert await inputs.full() is False and totals.readings == 1  # within the second: the last reading
    now[0] = 1.0
    async with asyncio.timeout(1):
        assert await inputs.full() is False  # a second on: answered at once, from the last reading
    async with asyncio.timeout(10):
        while totals.readings < 2:  # noqa: ASYNC110 - the reading it started in the background
            await asyncio.sleep(0.01)
    assert await inputs.full() is False and totals.readings == 2  # while it runs: no second one
    totals.gate.set()
    async with asyncio.timeout(10):
        while await inputs.full() is False:  # noqa: ASYNC110 - the background reading's end, seen as admission sees it
            await asyncio.sleep(0.01)
    assert totals.readings == 2
    await scheduler.cancel_all()


async def test_the_images_of_a_group_s_claimed_jobs_are_read_together_ahead_of_their_runs(store: Store) -> None:
    """The jobs a group of ended calls handed their slots to start one after another, as each predecessor's end
    is recorded. Asked one by one, the first was read alone and the rest after it, two readings in a row before
    the last call could go. Asked ahead, they are one reading, and each run's ``load`` takes its part. A reading
    asked ahead for a job that never starts is forgotten, not kept."""
    inputs = JobInputs(store, cap_bytes=1 << 30)
    for n in range(4):
        await add(store, make_job(f"j{n}", 1 + n, NOON + n))
        await inputs.save(f"j{n}", [PreparedImage(f"image {n}".encode(), "image/png", 8, 8)])
    readings = Readings(store)
    readings.gate.set()
    ahead = JobInputs(readings, cap_bytes=1 << 30)
    ahead.read_ahead(["j0", "j1", "j2", "j3"])
    async with asyncio.timeout(10):
        loaded = [await ahead.load(f"j{n}") for n in range(3)]
    assert readings.readings == [["j0", "j1", "j2", "j3"]]
    assert [[image.data for image in images or []] for images in loaded] == [[f"image {n}".encode()] for n in range(3)]
    ahead.forget("j3")  # claimed, but its run ended before it read anything
    assert ahead._ahead == {}
    async with asyncio.timeout(10):
        again = await ahead.load("j3")  # a later run of it reads again
    assert again is not None and readings.readings[-1] == ["j3"]
