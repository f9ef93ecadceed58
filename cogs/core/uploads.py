"""Result images uploaded to Discord without being copied.

``discord.File`` wants a file object, and aiohttp sends an ``io.BytesIO`` through its
``BytesIOPayload``, which measures the buffer with ``getbuffer()``: for a ``BytesIO``
made from bytes, that un-shares (copies) the whole image, 12 MB more per 4K result in
flight. ``ImageUpload`` is a ``BytesIO`` whose reads, seeks and ``getbuffer`` all work
on a memoryview of the image's bytes, so aiohttp's own payload streams it in slices
and nothing is copied whole. No aiohttp registry is touched.
"""

from __future__ import annotations

import io

import discord

from bot.media.images import OutputImage


class ImageUpload(io.BytesIO):
    """A read-only, seekable in-memory file over bytes that are never copied whole."""

    def __init__(self, data: bytes) -> None:
        super().__init__()
        self._view = memoryview(data)
        self._pos = 0

    def getbuffer(self) -> memoryview:
        return self._view[:]

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def writable(self) -> bool:
        return False

    def tell(self) -> int:
        return self._pos

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self._pos, io.SEEK_END: len(self._view)}[whence]
        self._pos = max(0, min(len(self._view), base + offset))
        return self._pos

    def read(self, size: int | None = -1) -> bytes:
        end = len(self._view) if size is None or size < 0 else min(len(self._view), self._pos + size)
        chunk = bytes(self._view[self._pos : end])
        self._pos = end
        return chunk

    def read1(self, size: int | None = -1) -> bytes:
        return self.read(size)

    def getvalue(self) -> bytes:
        return bytes(self._view)


def image_file(image: OutputImage, filename: str) -> discord.File:
    """A ``discord.File`` for a result image that uploads without a copy."""
    return discord.File(ImageUpload(image.data), filename=filename)
