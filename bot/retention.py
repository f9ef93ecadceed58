"""How long a job's inputs stay on disk after it ends, so Reroll can send them again.

- An unfinished job always keeps its inputs (it needs them to run, even after a restart).
- A succeeded job's inputs are kept for ``INPUT_RETENTION_HOURS`` after it ended, as long
  as all kept inputs fit in ``INPUT_RETENTION_MB``: when they do not, the oldest go first.
- A failed or cancelled job's inputs are deleted at once: there is no result to reroll,
  and its member sends it again.

A sweep every ``SWEEP_EVERY`` seconds deletes what outlived the window. The index is
rebuilt from disk at start-up: each kept folder holds the time its job ended.
``Lifecycle.move`` hands every job that ends to ``job_ended``.

With PostgreSQL the inputs are rows, and so is the index: ``DatabaseRetention`` applies the
same rules in SQL (a kept row carries the time its job ended), so every process sees the
same kept inputs and any of them can sweep.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable, Collection
from typing import Protocol

from bot.inputs import InputStore
from bot.jobs import Job
from bot.states import JobState

log = logging.getLogger(__name__)

SWEEP_EVERY = 300.0
MARK_BYTES = 32  # room for the "ended at" file a kept folder gets


class Sweeper:
    """Runs a retention's ``sweep`` every ``SWEEP_EVERY`` seconds, from ``start`` until ``stop``."""

    def __init__(self, sweep: Callable[[], Awaitable[int]], survivable: type[Exception]) -> None:
        self._sweep = sweep
        self._survivable = survivable  # a failure the next sweep may not have; anything else is a bug
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._sweep_forever(), name="atelier-retention")

    async def stop(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def _sweep_forever(self) -> None:
        while True:
            await asyncio.sleep(SWEEP_EVERY)
            try:
                dropped = await self._sweep()
            except self._survivable as exc:
                log.warning("could not sweep kept inputs: %s", type(exc).__name__)
                continue
            if dropped:
                log.info("dropped the kept inputs of %d ended job(s)", dropped)


class Retention:
    """The inputs of ended jobs that are kept, oldest first, and the rules that drop them."""

    def __init__(
        self, inputs: InputStore, hours: float, cap_bytes: int, clock: Callable[[], float] = time.time
    ) -> None:
        self._inputs = inputs
        self.window = max(0.0, hours) * 3600
        self.cap_bytes = cap_bytes
        self.clock = clock
        self._kept: dict[str, tuple[float, int]] = {}  # job id -> (ended at, bytes), in the order they ended
        self._bytes = 0
        # Succeeded jobs whose end is being recorded: their inputs are still there (a member may
        # click Reroll on a result the moment it is posted).
        self._ending: set[str] = set()
        # Keeping one job's inputs (making room, then marking them kept) is one step, so the
        # kept inputs on disk never exceed the cap, even for a moment, however many jobs end at once.
        self._lock = asyncio.Lock()
        # A full or read-only disk: the next sweep tries again.
        self._sweeper = Sweeper(self.sweep, OSError)

    @property
    def kept_bytes(self) -> int:
        """Bytes of the kept inputs of ended jobs."""
        return self._bytes

    def is_kept(self, job_id: str) -> bool:
        """Whether an ended job's inputs are still kept (and within the window right now)."""
        if job_id in self._ending:
            return True
        entry = self._kept.get(job_id)
        return entry is not None and entry[0] > self.clock() - self.window

    def kept(self) -> list[str]:
        """The ended jobs whose inputs are kept, oldest first."""
        return list(self._kept)

    async def kept_now(self, job_id: str) -> bool:
        """``is_kept``, as the engine asks it of either kind of retention."""
        return self.is_kept(job_id)

    async def load(self, unfinished: Collection[str]) -> None:
        """Rebuild the index from disk; drop folders of ended jobs that were never marked (a crash as they ended)."""
        found = sorted(await self._inputs.scan(), key=lambda f: f[1] or 0.0)
        self._kept, self._bytes = {}, 0
        for job_id, ended_at, size in found:
            if job_id in unfinished:
                continue
            if ended_at is None:
                await self._inputs.delete(job_id)
            else:
                self._keep(job_id, ended_at, size)
        await self.sweep()

    async def job_ended(self, job: Job) -> None:
        """Keep a succeeded job's inputs within the window and the cap; delete anyone else's at once."""
        if job.state is JobState.SUCCEEDED and self.window > 0:
            # Marked before the first await: ``Lifecycle.move`` has just forgotten the job as unfinished.
            self._ending.add(job.id)
            try:
                async with self._lock:
                    if await self._keep_ended(job):
                        return
            finally:
                self._ending.discard(job.id)
        await self._inputs.delete(job.id)

    async def _keep_ended(self, job: Job) -> bool:
        try:
            size = await self._inputs.size(job.id)
            if size is None or size + MARK_BYTES > self.cap_bytes:
                return False
            await self._drop_until(self.cap_bytes - size - MARK_BYTES)  # room first, then it counts
            now = self.clock()
            marked = await self._inputs.mark_ended(job.id, now)
        except OSError as exc:  # a full disk: the inputs go, the job's end must not fail
            log.warning("job=%s could not keep its inputs: %s", job.id, exc)
            return False
        if marked is None:
            return False
        self._keep(job.id, now, marked)
        return True

    async def sweep(self) -> int:
        """Delete what outlived the window or does not fit the cap; return how many jobs' inputs went."""
        async with self._lock:
            oldest = self.clock() - self.window
            expired = [job_id for job_id, (ended_at, _) in self._kept.items() if ended_at <= oldest]
            for job_id in expired:
                self._forget(job_id)
            for job_id in expired:
                await self._inputs.delete(job_id)
            return len(expired) + await self._drop_until(self.cap_bytes)

    def _keep(self, job_id: str, ended_at: float, size: int) -> None:
        self._forget(job_id)
        self._kept[job_id] = (ended_at, size)
        self._bytes += size

    def _forget(self, job_id: str) -> None:
        entry = self._kept.pop(job_id, None)
        if entry is not None:
            self._bytes -= entry[1]

    async def _drop_until(self, most: int) -> int:
        """Delete the oldest kept inputs until at most ``most`` bytes are kept; how many went."""
        dropped = []
        while self._bytes > most and self._kept:
            job_id = next(iter(self._kept))
            self._forget(job_id)
            dropped.append(job_id)
        for job_id in dropped:
            await self._inputs.delete(job_id)
        return len(dropped)

    # The schedule --------------------------------------------------------------------------------

    def start(self) -> None:
        """Sweep every ``SWEEP_EVERY`` seconds until ``stop``."""
        self._sweeper.start()

    async def stop(self) -> None:
        await self._sweeper.stop()


class InputRetention(Protocol):
    """What ``Lifecycle.move`` hands an ended job to (``Retention`` or ``DatabaseRetention``)."""

    async def job_ended(self, job: Job) -> None: ...


class KeptRows(Protocol):
    """The database side of ``DatabaseRetention`` (``bot.postgres_store.PostgresJobStore``)."""

    async def keep_inputs(self, job_id: str, ended_at: float, cap_bytes: int) -> bool: ...
    async def inputs_kept(self, job_id: str, since: float) -> bool: ...
    async def drop_kept_inputs(self, ended_before: float, cap_bytes: int) -> int: ...
    async def drop_orphan_inputs(self) -> int: ...
    async def delete_inputs(self, job_id: str) -> None: ...


class DatabaseRetention:
    """The same rules as ``Retention`` for inputs kept as rows in the shared database."""

    def __init__(self, rows: KeptRows, hours: float, cap_bytes: int, clock: Callable[[], float] = time.time) -> None:
        self._rows = rows
        self.window = max(0.0, hours) * 3600
        self.cap_bytes = cap_bytes
        self.clock = clock
        # A database that does not answer: the next sweep tries again.
        self._sweeper = Sweeper(self.sweep, Exception)

    async def load(self, unfinished: Collection[str]) -> None:
        """Drop the rows of jobs that ended without being kept (their process died as they ended)."""
        await self._rows.drop_orphan_inputs()
        await self.sweep()

    async def job_ended(self, job: Job) -> None:
        """Keep a succeeded job's inputs (oldest kept ones go first past the cap); delete anyone else's."""
        keep = job.state is JobState.SUCCEEDED and self.window > 0
        if keep and await self._rows.keep_inputs(job.id, self.clock(), self.cap_bytes):
            return
        await self._rows.delete_inputs(job.id)

    async def kept_now(self, job_id: str) -> bool:
        """Whether a job's inputs are there: unfinished, or ended within the window."""
        return await self._rows.inputs_kept(job_id, self.clock() - self.window)

    async def sweep(self) -> int:
        return await self._rows.drop_kept_inputs(self.clock() - self.window, self.cap_bytes)

    def start(self) -> None:
        self._sweeper.start()

    async def stop(self) -> None:
        await self._sweeper.stop()
