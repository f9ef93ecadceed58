"""The queue of several processes (PostgreSQL): claims, leases, take-overs, places in line, notices.

- A worker waits for a job with ``next_job``: it claims the next one in fair order from
  the database (``FOR UPDATE SKIP LOCKED``, the cap counted across all workers), and
  sleeps until a ``queued`` or ``slot`` notice wakes it (within milliseconds of an
  enqueue), with a slow poll only as a safety net.
- Every process renews the leases of the jobs it holds, and takes over jobs whose
  holder's lease ran out (a process killed with SIGKILL): through ``bot.recovery``, the
  same rules as a restart, so a job runs again at most once.
- A gateway announces places in line to the members of its own shards.
- ``settings:<guild>``, ``blocks:<guild>``, ``keys:<guild>`` and ``breaker:<model>``
  notices refresh what this process keeps in memory of them (everything, after a lost
  connection); ``cancel:<job>`` ones drop whatever this process still shows of that job.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable, Mapping

from bot.config import Config
from bot.errors import UnexpectedError
from bot.eta import RECENT_SECONDS, Estimator
from bot.inputs import JobInputs
from bot.jobs import Job, utc_day
from bot.lifecycle import Lifecycle
from bot.ports import Notifier
from bot.recovery import resume_unfinished
from bot.states import JobState
from bot.storage import ClaimMiss, SharedStore, SharedTotals

log = logging.getLogger(__name__)

# Notices are the way to wake up; this poll only covers one lost with a dropped connection.
SAFETY_POLL = 5.0
# How often a gateway refreshes places in line when nothing tells it to.
PLACES_EVERY = 5.0
PLACES_COALESCE = 0.2
# How often the shared totals behind the metrics are read, and (every so many rounds) the running
# times the estimates come from, which every worker's successes add to.
TOTALS_EVERY = 5.0
RUNS_EVERY_ROUNDS = 60


class SharedQueue:
    """One process's part in the shared queue."""

    def __init__(
        self,
        config: Config,
        store: SharedStore,
        lifecycle: Lifecycle,
        inputs: JobInputs,
        refreshers: Mapping[str, Callable[[str | None], Awaitable[None]]],
        estimator: Estimator,
    ) -> None:
        self._estimator = estimator
        self._config = config
        self._store = store
        self._lifecycle = lifecycle
        self._inputs = inputs
        self._refreshers = refreshers
        self._notifier: Notifier | None = None
        self._mine: Callable[[Job], bool] = lambda job: True
        # What a worker with nothing to start waits for: a slot freed, or a job queued.
        self._wakes = {ClaimMiss.NO_SLOT: asyncio.Event(), ClaimMiss.NO_JOB: asyncio.Event()}
        self._reordered = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self.places: dict[str, int] = {}  # this process's waiting jobs and their places, as last announced
        self.totals = SharedTotals()  # all processes' queue, calls and spend, as last read (for the metrics)

    def start(self, notifier: Notifier, *, announce: bool, mine: Callable[[Job], bool] | None = None) -> None:
        """Listen for notices, keep leases, take over abandoned jobs, and (``announce``) tell places."""
        self._notifier = notifier
        if mine is not None:
            self._mine = mine
        self._store.on_notice(self._on_notice)
        self._tasks = [
            asyncio.create_task(self._keep_leases(), name="atelier-leases"),
            asyncio.create_task(self._take_over_loop(), name="atelier-take-over"),
            asyncio.create_task(self._read_totals(), name="atelier-totals"),
        ]
        if announce:
            self._tasks.append(asyncio.create_task(self._announce_places(), name="atelier-places"))

    async def stop(self) -> None:
        tasks, self._tasks = self._tasks, []
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    async def next_job(self) -> Job:
        """Wait until a job can be claimed for this process, and claim it (it is then running)."""
        while True:
            for wake in self._wakes.values():
                wake.clear()  # before the claim: a notice that comes while it runs is not missed
            job = await self._lifecycle.claim_next(self._config.max_concurrent_jobs)
            if isinstance(job, Job):
                return job
            # Only what could change the answer wakes it: with every slot busy, the hundreds of
            # jobs queued in a burst don't each send every worker to the database for nothing.
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(SAFETY_POLL):
                    await self._wakes[job].wait()

    def _on_notice(self, payload: str) -> None:
        if payload in ("queued", "reconnected"):
            self._wakes[ClaimMiss.NO_JOB].set()
        if payload in ("slot", "reconnected"):
            self._wakes[ClaimMiss.NO_SLOT].set()
        if payload in ("queued", "slot", "claimed", "reconnected"):
            self._reordered.set()
        kind, _, subject = payload.partition(":")
        if payload == "reconnected":  # notices may have been missed: re-read what they would have said
            for name, refresh in self._refreshers.items():
                self._spawn(refresh(None), f"reloading {name}")
        elif kind in self._refreshers and subject:
            self._spawn(self._refreshers[kind](subject), f"reloading {kind} ({subject})")
        elif kind == "cancel":
            self.places.pop(payload[7:], None)
            self._reordered.set()

    def announce_breaker(self, model: str) -> None:
        """Tell every process that ``model``'s breaker opened here."""
        self._spawn(self._store.notify(f"breaker:{model}"), "announcing an open breaker")

    def _spawn(self, work: Awaitable[None], what: str) -> None:
        async def run() -> None:
            try:
                await work
            except Exception as exc:
                UnexpectedError.capture(exc, what)

        self._tasks.append(asyncio.create_task(run()))

    async def _keep_leases(self) -> None:
        """Renew, every third of a lease, the leases of the jobs this process holds."""
        every = self._config.job_lease_seconds / 3
        while True:
            await asyncio.sleep(every)
            held = [job.id for job in self._lifecycle.jobs()]
            if held:
                try:
                    await self._store.renew_leases(
                        self._lifecycle.holder, held, time.time() + self._config.job_lease_seconds
                    )
                except Exception as exc:  # the next round tries again; a lease outlives two misses
                    UnexpectedError.capture(exc, "renewing leases")

    async def take_over(self) -> None:
        """Resume or end the jobs whose holder's lease ran out, and the interrupted ones."""
        abandoned = await self._store.expired_jobs(time.time())
        mine = {job.id for job in self._lifecycle.jobs()}
        abandoned = [job for job in abandoned if job.id not in mine]
        if abandoned:
            log.info("taking over %d job(s) left by a stopped or lost process", len(abandoned))
            await resume_unfinished(self._lifecycle, self._inputs, abandoned)

    async def _take_over_loop(self) -> None:
        every = self._config.job_lease_seconds / 2
        while True:
            try:
                await self.take_over()
            except Exception as exc:
                UnexpectedError.capture(exc, "taking over abandoned jobs")
            await asyncio.sleep(every)

    async def _read_totals(self) -> None:
        """The totals behind the metrics, often; the recent running times of every worker, now and then."""
        rounds = 0
        while True:
            try:
                self.totals = await self._store.totals(utc_day(time.time()))
                if rounds % RUNS_EVERY_ROUNDS == 0 and rounds:
                    self._estimator.replace(await self._store.recent_runs(time.time() - RECENT_SECONDS))
            except Exception as exc:
                UnexpectedError.capture(exc, "reading the shared totals")
            rounds += 1
            await asyncio.sleep(TOTALS_EVERY)

    async def _announce_places(self) -> None:
        """Tell this gateway's waiting members their place whenever the queue moves."""
        while True:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(PLACES_EVERY):
                    await self._reordered.wait()
            self._reordered.clear()
            try:
                waiting = await self._store.queue_positions()
                places = {job.id: place for job, place in waiting if job.state is JobState.QUEUED and self._mine(job)}
                changed = [
                    (job, place) for job, place in waiting if job.id in places and self.places.get(job.id) != place
                ]
                self.places = places
                if changed and self._notifier is not None:
                    await self._notifier.queue_moved(changed)
            except Exception as exc:
                UnexpectedError.capture(exc, "announcing places in line")
            await asyncio.sleep(PLACES_COALESCE)
