"""Image work around a job, apart from Discord: prepare inputs, fit results for upload."""

from __future__ import annotations

import asyncio
import os
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

from bot.media.images import OutputImage, PreparedImage, fit_for_upload, prepare_input

# The provider's gateway returns "Unknown error" for inputs above a few MB, although
# its page says 10 MB; larger inputs are re-encoded down to this.
INPUT_MAX_BYTES = 4 * 1024 * 1024

T = TypeVar("T")


class Editor:
    """Pillow work, always off the event loop, and never more at once than there are cores.

    Re-encoding a 4K result decodes ~25 MB of pixels; sixteen at once would only queue
    for the CPU and multiply the memory held.
    """

    def __init__(self) -> None:
        self._cpu = asyncio.Semaphore(os.cpu_count() or 2)

    async def run(self, func: Callable[..., T], *args: Any) -> T:
        """Run CPU-bound ``func`` in a worker thread, at most one per core at a time."""
        async with self._cpu:
            return await asyncio.to_thread(func, *args)

    async def prepare_inputs(self, files: Sequence[tuple[str, bytes]]) -> list[PreparedImage]:
        """Check and prepare ``(option name, bytes)`` pairs, in order."""
        return list(
            await asyncio.gather(*(self.run(prepare_input, data, name, INPUT_MAX_BYTES) for name, data in files))
        )

    async def fit(self, image: OutputImage, upload_limit: int, fmt: str | None = None) -> OutputImage:
        """``image`` itself if it fits ``upload_limit`` (in the format ``fmt`` asked, if any), else a re-encoded
        copy (made in a thread)."""
        if len(image.data) <= upload_limit and (fmt is None or image.extension == {"jpeg": "jpg"}.get(fmt, fmt)):
            return image
        return await self.run(fit_for_upload, image, upload_limit, fmt)
