"""How long a job's inputs stay after it ends, so Reroll can send them again.

- An unfinished job always keeps its inputs (it needs them to run, even after a restart).
- A succeeded job's inputs are kept for ``INPUT_RETENTION_HOURS`` after it ended, as long
  as all kept inputs fit in ``INPUT_RETENTION_MB``: when they do not, the oldest go first.
- A failed or cancelled job's inputs are deleted at once: there is no result to reroll,
  and its member sends it again.

The rules are the store's (a kept row carries the time its job ended), so every process sees
the same kept inputs and any of them can sweep. A sweep every ``SWEEP_EVERY`` seconds drops
what outlived the window, and the rows of jobs that ended but were never marked kept (their
process died as they ended, or the marking failed), once they ended ``ORPHAN_GRACE`` ago: a job's
end is written before its process marks its inputs, so a younger one may be on its way. A start
sweeps at once.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable

from bot.core.job import Job
from bot.core.states import JobState
from bot.errors import UnexpectedError
from bot.scheduler import Scheduler
from bot.store.store import Store

log = logging.getLogger(__name__)

SWEEP_EVERY = 300.0
ORPHAN_GRACE = 60.0


class Retention:
    """Keeps and drops ended jobs' inputs; ``job_ended`` is the lifecycle's hook."""

    def __init__(
        self, store: Store, hours: float, cap_bytes: int, scheduler: Scheduler, clock: Callable[[], float] = time.time
    ) -> None:
        self._store = store
        self.window = max(0.0, hours) * 3600
        self.cap_bytes = cap_bytes
        self.clock = clock
        self._scheduler = scheduler

    async def job_ended(self, job: Job) -> None:
        """Keep a succeeded job's inputs (oldest kept ones go first past the cap); delete anyone else's."""
        keep = job.state is JobState.SUCCEEDED and self.window > 0
        if keep and await self._store.keep_inputs(job.id, self.clock(), self.cap_bytes):
            return
        await self._store.delete_inputs(job.id)

    async def kept_now(self, job_id: str, *, ended: bool = False) -> bool:
        """Whether a job's inputs are there: unfinished, or ended within the window. With no window, an
        ``ended`` job keeps nothing, even in the moment between its end and its inputs' deletion."""
        if ended and not self.window:
            return False
        return await self._store.inputs_kept(job_id, self.clock() - self.window)

    async def sweep(self) -> int:
        """Delete what outlived the window or does not fit the cap, and what ended unkept; how many jobs' inputs
        went."""
        now = self.clock()
        orphans = await self._store.drop_orphan_inputs(now - ORPHAN_GRACE)
        if orphans:
            log.info("dropped the inputs of %d job(s) that ended but were never kept for Reroll", orphans)
        return orphans + await self._store.drop_kept_inputs(now - self.window, self.cap_bytes)

    def start(self) -> None:
        self._scheduler.schedule("retention", self._sweep_forever())

    async def _sweep_forever(self) -> None:
        while True:
            await asyncio.sleep(SWEEP_EVERY)
            try:
                dropped = await self.sweep()
            except Exception as exc:  # a database that does not answer: the next sweep tries again
                UnexpectedError.capture(exc, "sweeping kept inputs")
                continue
            if dropped:
                log.info("dropped the kept inputs of %d ended job(s)", dropped)
