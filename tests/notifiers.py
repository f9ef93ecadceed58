"""A notifier that shows nothing, for tests that drive the engine without Discord: subclass it and keep what
the test looks at (``bot.ports.Notifier``)."""

from __future__ import annotations

from collections.abc import Sequence

from bot.core.job import Job
from bot.core.states import JobState
from bot.errors import AtelierError
from bot.media.images import OutputImage


class QuietNotifier:
    """Every ``Notifier`` call, doing nothing."""

    async def job_moved(self, job: Job, before: JobState, error: AtelierError | None) -> None:
        pass

    async def queue_moved(self, places: Sequence[tuple[Job, int]]) -> None:
        pass

    async def queue_left(self, job_ids: Sequence[str]) -> None:
        pass

    async def job_paused(self, job: Job) -> None:
        pass

    async def run_lost(self, job: Job) -> None:
        pass

    async def job_preview(self, job: Job, image: OutputImage, index: int) -> None:
        pass
