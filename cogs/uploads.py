"""Result images uploaded to Discord without being copied.

``discord.File`` wants a file object, and aiohttp turns an ``io.BytesIO`` into a
payload that copies the whole buffer (``getbuffer()`` un-shares it): 12 MB more per
4K result in flight. ``ImageUpload`` reads straight from the image's bytes, and its
payload streams memoryview slices of them.
"""

from __future__ import annotations

import io
from typing import Any

import discord
from aiohttp.abc import AbstractStreamWriter
from aiohttp.payload import Order, Payload, register_payload

from bot.images import OutputImage

CHUNK = 256 * 1024


class ImageUpload(io.BufferedIOBase):
    """A read-only, seekable file over bytes that are never copied whole."""

    def __init__(self, data: bytes) -> None:
        super().__init__()
        self.view = memoryview(data)
        self._pos = 0

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._pos

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self._pos, io.SEEK_END: len(self.view)}[whence]
        self._pos = max(0, min(len(self.view), base + offset))
        return self._pos

    def read(self, size: int | None = -1) -> bytes:
        end = len(self.view) if size is None or size < 0 else min(len(self.view), self._pos + size)
        chunk = bytes(self.view[self._pos : end])
        self._pos = end
        return chunk


class ImageUploadPayload(Payload):
    """Streams an ``ImageUpload`` from its current position in slices."""

    _value: ImageUpload

    def __init__(self, value: ImageUpload, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("content_type", "application/octet-stream")
        super().__init__(value, *args, **kwargs)
        self._size = len(value.view) - value.tell()

    def decode(self, encoding: str = "utf-8", errors: str = "strict") -> str:
        return bytes(self._value.view[self._value.tell() :]).decode(encoding, errors)

    async def as_bytes(self, encoding: str = "utf-8", errors: str = "strict") -> bytes:
        return bytes(self._value.view[self._value.tell() :])

    async def write(self, writer: AbstractStreamWriter) -> None:
        await self.write_with_length(writer, None)

    async def write_with_length(self, writer: AbstractStreamWriter, content_length: int | None) -> None:
        view = self._value.view[self._value.tell() :]
        if content_length is not None:
            view = view[:content_length]
        for start in range(0, len(view), CHUNK):
            await writer.write(view[start : start + CHUNK])


# aiohttp picks a payload class by the value's type; this one serves only ImageUpload.
register_payload(ImageUploadPayload, ImageUpload, order=Order.try_first)


def image_file(image: OutputImage, filename: str) -> discord.File:
    """A ``discord.File`` for a result image that uploads without a copy."""
    return discord.File(ImageUpload(image.data), filename=filename)
