"""Per-server settings: every server's overrides (``bot.core.overrides``), cached over the store.

An override that is not set falls back to the configuration; one that is set to
``None`` means "unlimited". The JSON stored holds only the settings an admin set.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from typing import Any, Protocol

from bot.core.overrides import GuildOverrides


class SettingsStore(Protocol):
    async def all_settings(self) -> dict[int, dict[str, Any]]: ...
    async def guild_settings(self, guild_id: int) -> dict[str, Any]: ...
    async def save_settings(self, guild_id: int, settings: Mapping[str, Any], by: int) -> None: ...


class GuildSettings:
    """Each server's overrides, all read from the store at start-up, so admission never waits on the
    database for them. A change made here updates the cache; with PostgreSQL, a change made by
    another process arrives as a notice (``reload``)."""

    def __init__(self, store: SettingsStore) -> None:
        self._store = store
        self._cache: dict[int, GuildOverrides] = {}
        self._loaded = False
        # Every change is announced, this process's own too, and read again: a reading must not interleave with
        # a change here (it would read the store before the change and put the old overrides back after it).
        self._changing = asyncio.Lock()

    async def load(self) -> None:
        async with self._changing:
            self._cache = {
                guild_id: GuildOverrides.from_json(raw) for guild_id, raw in (await self._store.all_settings()).items()
            }
            self._loaded = True

    async def overrides(self, guild_id: int) -> GuildOverrides:
        if guild_id not in self._cache:
            self._cache[guild_id] = (
                GuildOverrides()
                if self._loaded
                else GuildOverrides.from_json(await self._store.guild_settings(guild_id))
            )
        return self._cache[guild_id]

    async def refresh(self, guild_id: str | None) -> None:
        """Read a server's overrides again (``None``: every server's), another process changed them."""
        if guild_id is None:
            await self.load()
        elif guild_id.isdigit():
            async with self._changing:
                self._cache[int(guild_id)] = GuildOverrides.from_json(await self._store.guild_settings(int(guild_id)))

    def cached(self, guild_id: int) -> GuildOverrides:
        """A server's overrides without waiting (all are loaded at start-up)."""
        return self._cache.get(guild_id) or GuildOverrides()

    def audit_channels(self) -> dict[int, int]:
        """server -> its audit channel, for every server that set one."""
        channels: dict[int, int] = {}
        for guild_id, overrides in self._cache.items():
            channel = overrides.audit_channel_id
            if isinstance(channel, int):
                channels[guild_id] = channel
        return channels

    async def save(self, guild_id: int, overrides: GuildOverrides, by: int) -> None:
        """Persist a server's overrides; they apply to the next request."""
        async with self._changing:
            await self._store.save_settings(guild_id, overrides.to_json(), by)
            self._cache[guild_id] = overrides
