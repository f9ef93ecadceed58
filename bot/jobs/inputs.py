"""A job's input images, kept in the store while it is unfinished (and a while after, for Reroll).

Every process can run any job from them, on either database. Their total for unfinished
jobs is capped by ``MAX_QUEUED_INPUT_MB``: the cap is enforced exactly when inputs are saved,
and whether it is reached is read at most once a second for admission, which asks on every
request. Only the first asking waits for that reading: later, a request that finds the last one
a second old is answered from it, and the next reading runs in the background (with a
``scheduler``), so no member's admission waits for a total that only guards the disk. What was
done to an image (its note) is kept with the job, not with the image.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Sequence

from bot.batches import Batches
from bot.core.records import StoredImage
from bot.media.images import PreparedImage
from bot.scheduler import Scheduler
from bot.store.store import Store

log = logging.getLogger(__name__)

FULL_CHECK_EVERY = 1.0
TOTAL_READING = "inputs-total"  # the background reading's task name


class JobInputs:
    """The store's ``job_inputs``, as prepared images, within ``cap_bytes`` for all unfinished jobs."""

    def __init__(
        self,
        store: Store,
        cap_bytes: int,
        clock: Callable[[], float] = time.monotonic,
        scheduler: Scheduler | None = None,
    ) -> None:
        self._store = store
        self.cap_bytes = cap_bytes
        self._clock = clock
        self._scheduler = scheduler  # the readings after the first run in it (none: each is waited for)
        self._full = False
        self._checked: float | None = None
        self._readings: Batches[str, list[StoredImage] | None] = Batches("inputs", self._read)
        # Readings asked ahead of their run (``read_ahead``), until the run's ``load`` takes them (or ``forget``).
        self._ahead: dict[str, asyncio.Future[list[StoredImage] | None]] = {}

    async def save(self, job_id: str, images: Sequence[PreparedImage]) -> None:
        """Keep a job's images; ``QueueFullError`` (nothing kept) past the cap."""
        stored = [StoredImage(image.data, image.mime, image.width, image.height) for image in images]
        await self._store.save_inputs(job_id, stored, self.cap_bytes)

    def read_ahead(self, job_ids: Sequence[str]) -> None:
        """Start reading these jobs' images now, together: the jobs a group of ended calls handed their slots
        to. Each run starts a little later (its predecessor's end is recorded first), and asked one by one the
        first would be read alone and the others after it; its ``load`` takes the reading asked here."""
        for job_id in job_ids:
            if job_id not in self._ahead:
                self._ahead[job_id] = self._readings.ask(job_id)

    def forget(self, job_id: str) -> None:
        """Drop a reading asked ahead that no run will take (the job did not start)."""
        asked = self._ahead.pop(job_id, None)
        if asked is not None and not self._readings.withdraw(asked):
            asked.cancel()  # read already, or being read: its images are let go

    async def load(self, job_id: str) -> list[PreparedImage] | None:
        """The images in prompt order, or ``None`` if they are not there.

        Loads asked while another reading is under way are read together, in one query, when it ends:
        the jobs a group of ended calls handed their slots to start together, and each would otherwise
        wait for a connection of its own.
        """
        asked = self._ahead.pop(job_id, None) or self._readings.ask(job_id)
        stored = await asyncio.shield(asked)
        if stored is None:
            return None
        return [PreparedImage(image.data, image.mime, image.width, image.height) for image in stored]

    async def _read(self, job_ids: list[str]) -> list[list[StoredImage] | None]:
        found = await self._store.load_inputs_of(job_ids)
        return [found.get(job_id) for job_id in job_ids]

    async def exists(self, job_id: str) -> bool:
        return await self._store.inputs_exist(job_id)

    async def delete(self, job_id: str) -> None:
        await self._store.delete_inputs(job_id)

    async def full(self) -> bool:
        """Whether the unfinished jobs' images fill the cap (read at most once a second)."""
        now = self._clock()
        if self._checked is None or now - self._checked >= FULL_CHECK_EVERY:
            first = self._checked is None
            self._checked = now
            if first or self._scheduler is None:
                await self._read_total()
            elif TOTAL_READING not in self._scheduler:
                self._scheduler.schedule(TOTAL_READING, self._read_total(in_background=True))
        return self._full

    async def _read_total(self, *, in_background: bool = False) -> None:
        try:
            self._full = await self._store.queued_input_bytes() >= self.cap_bytes
        except Exception as exc:
            if not in_background:
                raise
            # The last reading stands; the next request a second on asks again.
            log.warning("reading the queued images' total failed (%s)", type(exc).__name__)
