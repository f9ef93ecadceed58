"""Image work around a job, apart from Discord: prepare inputs, fit results for upload."""

from __future__ import annotations

import asyncio
import hashlib
import os
import threading
from collections import OrderedDict
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

from bot.media.images import (
    InputPreview,
    OutputImage,
    PreparedImage,
    fit_for_upload,
    make_strip,
    make_thumbnail,
    prepare_input,
)

# The provider's gateway returns "Unknown error" for inputs above a few MB, although
# its page says 10 MB; larger inputs are re-encoded down to this.
INPUT_MAX_BYTES = 4 * 1024 * 1024
# A result shows up to this many inputs with a small copy each; more go together in one strip, so the
# message stays well inside Discord's ten files with room for several outputs (variations).
THUMBNAILS_AT_MOST = 4
# The small copies made last, by their input's digest: variations, a reroll and Refine of a result use the
# same inputs again, and each copy of a PNG is a full decode of it (a PNG cannot be decoded smaller). A few
# kilobytes each.
THUMBNAILS_KEPT = 256

T = TypeVar("T")


class Editor:
    """Pillow work, always off the event loop, and never more at once than there are cores.

    Re-encoding a 4K result decodes ~25 MB of pixels; sixteen at once would only queue
    for the CPU and multiply the memory held.
    """

    def __init__(self) -> None:
        self._cpu = asyncio.Semaphore(os.cpu_count() or 2)
        self._thumbnails: OrderedDict[bytes, bytes] = OrderedDict()  # digest -> thumbnail, the latest used last
        self._thumbnails_lock = threading.Lock()  # the worker threads share them

    async def run(self, func: Callable[..., T], *args: Any) -> T:
        """Run CPU-bound ``func`` in a worker thread, at most one per core at a time."""
        async with self._cpu:
            return await asyncio.to_thread(func, *args)

    async def prepare_inputs(self, files: Sequence[tuple[str, bytes]]) -> list[PreparedImage]:
        """Check and prepare ``(option name, bytes)`` pairs, in order."""
        return list(
            await asyncio.gather(*(self.run(prepare_input, data, name, INPUT_MAX_BYTES) for name, data in files))
        )

    async def thumbnail(self, data: bytes) -> bytes:
        """A small JPEG of the input ``data``, made once for as long as it is among the latest kept."""
        return await self.run(self._thumbnail, data)

    def _thumbnail(self, data: bytes) -> bytes:
        # In a worker thread: the digest of a large input stays off the event loop too.
        key = hashlib.blake2b(data, digest_size=16).digest()
        with self._thumbnails_lock:
            kept = self._thumbnails.get(key)
            if kept is not None:
                self._thumbnails.move_to_end(key)
                return kept
        made = make_thumbnail(data)
        with self._thumbnails_lock:
            self._thumbnails[key] = made
            while len(self._thumbnails) > THUMBNAILS_KEPT:
                self._thumbnails.popitem(last=False)
        return made

    async def fit(self, image: OutputImage, upload_limit: int, fmt: str | None = None) -> OutputImage:
        """``image`` itself if it fits ``upload_limit`` (in the format ``fmt`` asked, if any), else a re-encoded
        copy (made in a thread)."""
        if len(image.data) <= upload_limit and (fmt is None or image.extension == {"jpeg": "jpg"}.get(fmt, fmt)):
            return image
        return await self.run(fit_for_upload, image, upload_limit, fmt)

    async def previews(self, images: Sequence[PreparedImage]) -> tuple[tuple[InputPreview, ...], bytes | None]:
        """Small copies of a job's inputs for its result: a thumbnail each, or one strip of them all."""
        named = [(f"image{n}", image) for n, image in enumerate(images, start=1)]
        if len(images) > THUMBNAILS_AT_MOST:
            strip = await self.run(make_strip, [image.data for image in images])
            return tuple(InputPreview(name, i.width, i.height, len(i.data)) for name, i in named), strip
        thumbnails = await asyncio.gather(*(self.thumbnail(image.data) for image in images))
        return (
            tuple(
                InputPreview(name, i.width, i.height, len(i.data), thumb)
                for (name, i), thumb in zip(named, thumbnails, strict=True)
            ),
            None,
        )
