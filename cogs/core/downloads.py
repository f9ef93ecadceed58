"""Downloading members' images from Discord: attachments and files added in forms from its CDN, linked images
through its media proxy."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence
from typing import Any, Protocol

import aiohttp
import discord

from bot.errors import InputError
from bot.i18n import _t

DOWNLOAD_TIMEOUT = 60.0
DOWNLOADS_AT_ONCE = 16


class Readable(Protocol):
    """Something whose bytes can be fetched: a ``discord.Attachment`` or a ``LinkedImage``."""

    async def read(self) -> bytes: ...


class LinkedImage:
    """The picture of an embed (a pasted image link), read through Discord's media proxy.

    Only the proxy's address is used, never the link itself, so a member cannot make the
    bot fetch an arbitrary address (an internal one included).
    """

    def __init__(self, proxy_url: str, http: discord.http.HTTPClient) -> None:
        self.proxy_url = proxy_url
        self._http = http

    async def read(self) -> bytes:
        return await self._http.get_from_cdn(self.proxy_url)


class UploadedFile:
    """A file a member added in a form (a modal's file upload), as Discord resolved it in the submission.

    Read from Discord's CDN as an attachment is; what it declares (size, type) is checked
    before anything is charged (``cogs.core.attachments``).
    """

    def __init__(self, payload: Mapping[str, Any], http: discord.http.HTTPClient) -> None:
        self.filename = str(payload.get("filename") or "")
        self.size = int(payload.get("size") or 0)
        content_type = payload.get("content_type")
        self.content_type = str(content_type) if content_type else None
        self.url = str(payload["url"])
        self._http = http

    async def read(self) -> bytes:
        return await self._http.get_from_cdn(self.url)


class Downloader:
    """Fetches Discord attachments, first come first fetched.

    In a burst of commands the earliest get their images (and their place in the queue)
    first, instead of all crawling along together.
    """

    def __init__(self) -> None:
        self._slots = asyncio.Semaphore(DOWNLOADS_AT_ONCE)

    async def fetch(self, sources: Sequence[tuple[str, Readable]]) -> list[tuple[str, bytes]]:
        """Every image's bytes, in order; an ``InputError`` naming the one that failed."""

        async def one(name: str, attachment: Readable) -> tuple[str, bytes]:
            try:
                async with self._slots, asyncio.timeout(DOWNLOAD_TIMEOUT):
                    return name, await attachment.read()
            except (discord.HTTPException, aiohttp.ClientError, TimeoutError):
                raise InputError(
                    # Translators: {name} is the image's name in the prompt: image1, image2, …
                    _t("{name} could not be downloaded from Discord; attach it again.", name=name)
                ) from None

        return list(await asyncio.gather(*(one(name, a) for name, a in sources)))
