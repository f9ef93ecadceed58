"""Downloading members' attachments from Discord's CDN."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

import aiohttp
import discord

from bot.errors import InputError

DOWNLOAD_TIMEOUT = 60.0
DOWNLOADS_AT_ONCE = 16


class Downloader:
    """Fetches Discord attachments, first come first fetched.

    In a burst of commands the earliest get their images (and their place in the queue)
    first, instead of all crawling along together.
    """

    def __init__(self) -> None:
        self._slots = asyncio.Semaphore(DOWNLOADS_AT_ONCE)

    async def fetch(self, sources: Sequence[tuple[str, discord.Attachment]]) -> list[tuple[str, bytes]]:
        """Every attachment's bytes, in order; an ``InputError`` naming the one that failed."""

        async def one(name: str, attachment: discord.Attachment) -> tuple[str, bytes]:
            try:
                async with self._slots, asyncio.timeout(DOWNLOAD_TIMEOUT):
                    return name, await attachment.read()
            except (discord.HTTPException, aiohttp.ClientError, TimeoutError):
                raise InputError(f"{name} could not be downloaded from Discord; attach it again.") from None

        return list(await asyncio.gather(*(one(name, a) for name, a in sources)))
