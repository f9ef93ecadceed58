"""Places in line: waiting members hear their new place whenever the queue moves.

The places are the store's (``Store.positions``: the order the claims would serve every
waiting job in), read when a notice says the queue moved (a job queued, claimed, ended or
cancelled, from any process), and at least every ``PLACES_EVERY`` seconds. A burst of moves
is read once. A process tells only the members it serves (its shards').

Reading every place costs in proportion to the line: a few milliseconds for a short one, a
good part of a second for ten thousand waiting jobs. So the order is read as ids and places
only (``Store.places``), the jobs themselves once, when they join the line (a waiting job's
request does not change); and a read is followed by a pause of at least ``READ_SPACING``
times its own length: however long the line, reading it never takes more than a twentieth of the
process, and admissions and claims keep their pace. (Ten thousand waiting: a reading every two
or three seconds, where a member's line shows a new place at most every ``STATUS_UPDATE_SECONDS``
anyway; a short line is still read within ``COALESCE`` of a move.) A reading also waits for the
answers of a burst of commands (``Admission.answers_first``, at most a second): members waiting
for the answer to a command come before everyone's new place.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable

from bot.core.job import Job
from bot.core.states import JobState
from bot.errors import UnexpectedError
from bot.ports import Notifier
from bot.scheduler import Scheduler
from bot.store.store import Store

PLACES_EVERY = 5.0
COALESCE = 0.1
READ_SPACING = 19.0
# Notices after which places may have changed.
REORDERING = ("queued", "slot", "claimed", "reconnected")


def pause_after(read_seconds: float) -> float:
    """How long to wait after a reading of the places that took ``read_seconds`` before the next one."""
    return max(COALESCE, READ_SPACING * read_seconds)


class Places:
    """This process's waiting members' places, as last told."""

    def __init__(
        self,
        store: Store,
        scheduler: Scheduler,
        mine: Callable[[Job], bool] = lambda job: True,
        quiet: Callable[[], Awaitable[None]] | None = None,
    ) -> None:
        self._store = store
        self._scheduler = scheduler
        self._mine = mine
        self._quiet = quiet  # returns once the members' answers are out (``Admission.answers_first``)
        self._notifier: Notifier | None = None
        self._reordered = asyncio.Event()
        self.places: dict[str, int] = {}  # waiting job -> place, as last told
        self._jobs: dict[str, Job] = {}  # every queued job, as read when it joined the line

    def start(self, notifier: Notifier) -> None:
        self._notifier = notifier
        self._reordered.set()
        self._scheduler.schedule("places", self._announce_forever())

    def heard(self, payload: str) -> None:
        """A notice: re-read the places if it says the queue may have moved."""
        if payload in REORDERING:
            self._reordered.set()
        elif payload.startswith("cancel:"):
            self.places.pop(payload.removeprefix("cancel:"), None)
            self._reordered.set()

    def place(self, job_id: str) -> int | None:
        return self.places.get(job_id)

    async def _announce_forever(self) -> None:
        while True:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(PLACES_EVERY):
                    await self._reordered.wait()
            self._reordered.clear()
            if self._quiet is not None:
                # A reading, and the new places of everyone behind the jobs that joined, go after the answers of
                # a burst of commands: with thousands waiting they take a good part of the process for a while.
                await self._quiet()
            started = time.monotonic()
            try:
                await self.announce()
            except Exception as exc:
                UnexpectedError.capture(exc, "announcing places in line")
            await asyncio.sleep(pause_after(time.monotonic() - started))

    async def announce(self) -> None:
        """Read the places and tell the members whose place changed."""
        queued = await self._store.places()
        new = [job_id for job_id, _ in queued if job_id not in self._jobs]
        joined = [job for job in await self._store.jobs(new) if job.state is JobState.QUEUED] if new else []
        known = {**self._jobs, **{job.id: job for job in joined}}
        self._jobs = {job_id: known[job_id] for job_id, _ in queued if job_id in known}
        places = {job_id: place for job_id, place in queued if job_id in self._jobs and self._mine(self._jobs[job_id])}
        changed = [(self._jobs[job_id], place) for job_id, place in places.items() if self.places.get(job_id) != place]
        left = [job_id for job_id in self.places if job_id not in places]
        self.places = places
        if self._notifier is None:
            return
        if left:
            await self._notifier.queue_left(left)
        if changed:
            await self._notifier.queue_moved(changed)
