"""Leases and take-overs: this process keeps what it holds, and takes over what nobody holds any more.

- Every third of a lease, the leases of the jobs this process holds are renewed. A renewal
  that does not come back for a job means another process took it over (this one stalled
  past its lease): that run is abandoned (``bot.jobs.dispatcher``): it never moves, posts or
  refunds anything of the job again.
- Every ``TAKE_OVER_EVERY`` seconds (and once at start-up, then again once the database can
  call gone what that look found missing), the jobs no live process holds are resumed or
  ended by the rules of ``bot.jobs.recovery``: jobs of a process that is gone (its database
  session ended and did not come back, so it died: seconds, not a lease), jobs whose lease
  lapsed (a stalled process), and interrupted ones.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

from bot.core.job import Job
from bot.errors import UnexpectedError
from bot.jobs.inputs import JobInputs
from bot.jobs.lifecycle import Lifecycle
from bot.jobs.recovery import resume
from bot.scheduler import Scheduler
from bot.store.store import Store

log = logging.getLogger(__name__)

TAKE_OVER_EVERY = 2.0


class Keeper:
    """Renews this process's leases and takes over abandoned jobs."""

    def __init__(
        self,
        lifecycle: Lifecycle,
        store: Store,
        inputs: JobInputs,
        scheduler: Scheduler,
        on_lost: Callable[[Job], Awaitable[None]],
    ) -> None:
        self._lifecycle = lifecycle
        self._store = store
        self._inputs = inputs
        self._scheduler = scheduler
        self._on_lost = on_lost

    def start(self) -> None:
        """Renew and take over from now on (the start-up's own take-over has just looked)."""
        self._scheduler.schedule("leases", self._keep_leases())
        # A process found missing at that look counts as gone only at a look ``gone_after`` later: made then,
        # not a whole round later, a crash's jobs resume within seconds of the restart.
        self._scheduler.schedule("take-over", self._take_over_forever(first=self._store.database.gone_after))

    async def renew(self) -> None:
        """Renew the leases; abandon the runs whose job another process holds now."""
        for job in await self._lifecycle.renew():
            await self._on_lost(job)

    async def gone(self, holders: set[str]) -> set[str]:
        """Which of ``holders`` belong to processes that are gone."""
        return await self._store.database.gone(holders)

    async def take_over(self) -> int:
        """Resume or end the jobs no live process holds; how many."""
        gone = await self.gone(await self._store.holders())
        mine = {job.id for job in self._lifecycle.held()}
        abandoned = [job for job in await self._store.abandoned(self._lifecycle.clock(), gone) if job.id not in mine]
        if abandoned:
            log.info("taking over %d job(s) that no running process holds", len(abandoned))
            await resume(self._lifecycle, self._inputs, abandoned, gone)
        return len(abandoned)

    async def _keep_leases(self) -> None:
        every = self._lifecycle.lease_seconds / 3
        while True:
            await asyncio.sleep(every)
            try:
                await self.renew()
            except Exception as exc:  # the next round tries again; a lease outlives two misses
                UnexpectedError.capture(exc, "renewing leases")

    async def _take_over_forever(self, first: float) -> None:
        every = min(TAKE_OVER_EVERY, self._lifecycle.lease_seconds / 2)
        pause = min(first, every) or every
        while True:
            await asyncio.sleep(pause)
            pause = every
            try:
                await self.take_over()
            except Exception as exc:
                UnexpectedError.capture(exc, "taking over abandoned jobs")
