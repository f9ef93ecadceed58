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
from types import SimpleNamespace
from typing import Any, cast

import discord

from bot.core.job import Destination, Job
from bot.core.states import JobState
from bot.engine import JobEngine
from cogs.delivery.destinations import Delivery
from cogs.delivery.status import DiscordNotifier, StatusLine
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
