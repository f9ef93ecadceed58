"""Which status line a job's news goes to, without Discord: the notifier's own bookkeeping.

A reading of the places made just before a job's claim can be told while the claim's own news (the job is
running) is being handled. It must not open a waiting line for the running job: that line, guarded by the
job's place rather than by its run, showed the run's first words and then stopped at the next reading, and
the member saw nothing more until the result (a run of ``test_status_texts_give_honest_estimates_from_the_
ledger`` on PostgreSQL failed this way once).
"""

from __future__ import annotations

import asyncio
import dataclasses
import time
from types import SimpleNamespace
from typing import Any, cast

import discord
import pytest

from bot.core.job import Destination, Job
from bot.core.states import JobState
from bot.engine import JobEngine
from cogs.delivery.destinations import Delivery
from cogs.delivery.pace import Pacer
from cogs.delivery.status import LINES_AT_A_TIME, DiscordNotifier, StatusLine
from tests.stores import make_job


class QuietEngine:
    """What the notifier asks of the engine, with no edit ever allowed (nothing is sent), and a reading of
    the job that waits until the test lets it go."""

    config = SimpleNamespace(status_update_seconds=0.2)

    def __init__(self) -> None:
        self.reading = asyncio.Event()
        self.asked = asyncio.Event()

    async def job(self, job_id: str) -> Job | None:
        self.asked.set()
        await self.reading.wait()
        return None

    async def redirect(self, job_id: str, destination: Destination) -> None:
        raise AssertionError("nothing moves here")

    async def still_running(self, job: Job) -> bool:
        return False

    def position(self, job_id: str) -> int | None:
        return None

    def usual_seconds(self, job: Job) -> float | None:
        return None

    async def answers_first(self) -> None:
        return None


def shown(state: JobState) -> Job:
    destination = Destination(25_000_000, {"type": "channel", "channel_id": 5, "message_id": 6})
    return dataclasses.replace(make_job("job1", 7), state=state, destination=destination, run=1)


async def test_a_reading_of_the_places_told_while_a_claim_is_handled_opens_no_waiting_line() -> None:
    engine = QuietEngine()
    notifier = DiscordNotifier(discord.Client(intents=discord.Intents.none()), cast(JobEngine, cast(Any, engine)))
    queued, running = shown(JobState.QUEUED), shown(JobState.RUNNING)
    await notifier.queue_moved([(queued, 1)])  # the job waits, with its line
    assert not notifier._lines["job1"].running

    claimed = asyncio.ensure_future(notifier.job_moved(running, JobState.QUEUED, None))
    async with asyncio.timeout(5):
        await engine.asked.wait()  # the claim's news is being handled: its waiting line closed, the job read
    await notifier.queue_moved([(queued, 1)])  # a reading made before the claim, told now
    engine.reading.set()
    async with asyncio.timeout(5):
        await claimed

    assert notifier._lines["job1"].running  # the run's own line, guarded by the run
    await notifier.queue_moved([(queued, 1)])  # and a late reading leaves the running line as it is
    assert notifier._lines["job1"].running
    await notifier.job_moved(dataclasses.replace(running, state=JobState.DELIVERING), JobState.RUNNING, None)
    assert "job1" not in notifier._lines
    await notifier.job_moved(dataclasses.replace(running, state=JobState.INTERRUPTED), JobState.DELIVERING, None)
    await notifier.queue_moved([(queued, 1)])  # back in line: its place is shown again
    assert not notifier._lines["job1"].running
    await notifier._lines["job1"].close()


class FailingEngine(QuietEngine):
    """The same, with a database that fails the reading of the job."""

    async def job(self, job_id: str) -> Job | None:
        raise ConnectionError("the database does not answer")


async def test_a_claim_whose_job_cannot_be_read_still_opens_the_running_line() -> None:
    """The claim's news re-reads where the job's status is (its waiting line may have moved it). A database that
    fails that reading costs the move, not the running line. Before, the error ended the news there: no running
    line opened, and the member saw "Queued" until the result."""
    engine = FailingEngine()
    notifier = DiscordNotifier(discord.Client(intents=discord.Intents.none()), cast(JobEngine, cast(Any, engine)))
    await notifier.queue_moved([(shown(JobState.QUEUED), 1)])
    await notifier.job_moved(shown(JobState.RUNNING), JobState.QUEUED, None)
    assert notifier._lines["job1"].running
    await notifier.job_moved(shown(JobState.DELIVERING), JobState.RUNNING, None)
    assert "job1" not in notifier._lines


class FailingOnceGuard:
    """Whether a run still holds its job, as a database that fails the first asking answers it."""

    def __init__(self) -> None:
        self.asked = 0
        self.again = asyncio.Event()

    async def __call__(self) -> bool:
        self.asked += 1
        if self.asked == 1:
            raise ConnectionError("the database does not answer")
        self.again.set()
        return False  # nothing is sent here: no Discord behind this line


async def test_a_status_update_whose_guard_the_database_fails_waits_for_its_next_turn() -> None:
    """Before each edit the line asks the database whether the run still holds its job. When that fails, the
    update waits for its next turn and is asked again. Before, the error ended the line's updater: with the
    ticks held back (a preview shown), the line froze until the result."""
    guard = FailingOnceGuard()
    destination = shown(JobState.RUNNING).destination
    assert destination is not None
    client = discord.Client(intents=discord.Intents.none())
    line = StatusLine(Delivery(client, destination, 7, "en-US"), _no_redirect, 0.2, guard)
    line.update(lambda: "🎨 Editing…", None)  # once: no later update restarts anything
    async with asyncio.timeout(5):
        await guard.again.wait()
    assert guard.asked == 2
    await line.close()


async def _no_redirect(destination: Destination) -> None:
    raise AssertionError("nothing moves here")


async def test_a_waiting_line_keeps_one_pending_update_whose_place_is_read_when_it_is_sent() -> None:
    """A long line's places change with every claim. A line with a place update pending keeps that update and
    changes only its number: new updates at every reading of 10,000 lines lived until their turn, and set off a
    full garbage collection of the gateway every second or two."""
    destination = shown(JobState.QUEUED).destination
    assert destination is not None
    client = discord.Client(intents=discord.Intents.none())
    line = StatusLine(Delivery(client, destination, 7, "en-US"), _no_redirect, 10.0, FailingOnceGuard())

    def text(place: int) -> str:
        return f"⏳ Queued — position {place}."

    line.wait_at(120, text, None, 20.0)
    pending = line._pending
    assert pending is not None
    line.wait_at(119, text, None, 20.0)
    line.wait_at(118, text, None, 20.0)
    assert line._pending is pending  # the same update: only its number changed
    assert pending[0]() == "⏳ Queued — position 118."
    line.wait_at(99, text, None, 10.0)  # nearer the front: shown sooner, so a new update with the shorter wait
    assert line._pending is not pending and line._pending is not None and line._pending[2] == 10.0
    assert line._pending[0]() == "⏳ Queued — position 99."
    line.update(lambda: "🎨 Editing…", None)  # any other update is not a place: the next place replaces it
    line.wait_at(98, text, None, 10.0)
    assert line._pending is not None and line._pending[0]() == "⏳ Queued — position 98."
    await line.close()


async def test_a_new_waiting_line_shows_its_first_place_at_its_own_point_of_its_interval() -> None:
    """The acknowledgement has just shown a place. Lines open when their place first changes, and every place
    changes when the first calls start: opened together, thousands of lines were edited at once. Past the first
    50 places, each first update now falls at the line's own point (its phase) of its interval."""
    destination = shown(JobState.QUEUED).destination
    assert destination is not None
    client = discord.Client(intents=discord.Intents.none())
    lines = [
        StatusLine(Delivery(client, destination, 7, "en-US"), _no_redirect, 10.0, FailingOnceGuard(), phase)
        for phase in (0.0, 0.25, 0.75)
    ]
    before = time.monotonic()
    for line in lines:
        line.wait_at(300, str, None, 40.0)
    after = time.monotonic()
    # Its first edit is due ``interval × (1 - phase)`` from now: 40, 30 and 10 s.
    for line, due in zip(lines, (40.0, 30.0, 10.0), strict=True):
        assert before + due - 0.001 <= line._last + 40.0 <= after + due + 0.001
    # Near the front (few lines), a member sees the first move at once, whatever the line's phase.
    near = StatusLine(Delivery(client, destination, 7, "en-US"), _no_redirect, 10.0, FailingOnceGuard(), 0.75)
    near.wait_at(50, str, None, 10.0)
    assert near._last == 0.0
    lines.append(near)
    for line in lines:
        await line.close()


class NotMine:
    """A guard that says the job is no longer this line's (nothing is sent), and when it was asked."""

    def __init__(self) -> None:
        self.asked = asyncio.Event()

    async def __call__(self) -> bool:
        self.asked.set()
        return False


async def test_place_updates_take_their_turn_before_they_are_sent_and_other_updates_do_not() -> None:
    destination = shown(JobState.QUEUED).destination
    assert destination is not None
    client = discord.Client(intents=discord.Intents.none())
    turns: list[str] = []

    def pace_of(name: str) -> Any:
        async def pace() -> None:
            turns.append(name)

        return pace

    waiting, other = NotMine(), NotMine()
    line = StatusLine(Delivery(client, destination, 7, "en-US"), _no_redirect, 10.0, waiting, 1.0, pace_of("place"))
    line.wait_at(3, str, None, 10.0)  # phase 1: due at once
    running = StatusLine(Delivery(client, destination, 7, "en-US"), _no_redirect, 10.0, other, 0.0, pace_of("other"))
    running.update(lambda: "🎨 Editing…", None)
    async with asyncio.timeout(5):
        await waiting.asked.wait()
        await other.asked.wait()
    assert turns == ["place"]
    await line.close()
    await running.close()


async def test_place_updates_take_turns_at_most_rate_a_second_in_the_order_they_fall_due() -> None:
    now = [100.0]
    slept: list[float] = []

    async def sleep(seconds: float) -> None:
        slept.append(seconds)

    pacer = Pacer(rate=10, clock=lambda: now[0], sleep=sleep)
    for _ in range(4):
        await pacer.turn()
    assert slept == pytest.approx([0.1, 0.2, 0.3])  # the first at once, then one every 0.1 s, in order
    now[0] = 101.0  # a second later, the turns booked are past: the next one is at once
    await pacer.turn()
    assert len(slept) == 3


async def test_a_place_update_s_turn_comes_after_the_answers_members_are_waiting_for() -> None:
    answered = asyncio.Event()

    async def quiet() -> None:
        await answered.wait()

    pacer = Pacer(rate=1000, quiet=quiet)
    turn = asyncio.create_task(pacer.turn())
    await asyncio.sleep(0.05)
    assert not turn.done()  # a command's answer is still out
    answered.set()
    async with asyncio.timeout(5):
        await turn


class AnsweringEngine(QuietEngine):
    """The same, with a burst of commands whose answers are still out until the test lets them go."""

    def __init__(self) -> None:
        super().__init__()
        self.answered = asyncio.Event()
        self.waited = asyncio.Event()

    async def answers_first(self) -> None:
        self.waited.set()
        await self.answered.wait()


async def test_a_long_line_s_new_places_wait_for_the_answers_of_a_burst_between_their_batches() -> None:
    engine = AnsweringEngine()
    notifier = DiscordNotifier(discord.Client(intents=discord.Intents.none()), cast(JobEngine, cast(Any, engine)))
    waiting = [(dataclasses.replace(shown(JobState.QUEUED), id=f"job{n}"), n) for n in range(1, LINES_AT_A_TIME + 2)]
    told = asyncio.create_task(notifier.queue_moved(waiting))
    try:
        async with asyncio.timeout(5):
            await engine.waited.wait()
        assert len(notifier._lines) == LINES_AT_A_TIME - 1 and not told.done()  # one batch, then the answers
        engine.answered.set()
        async with asyncio.timeout(5):
            await told
        assert len(notifier._lines) == LINES_AT_A_TIME + 1
    finally:
        told.cancel()
        for line in list(notifier._lines.values()):
            await line.close()
