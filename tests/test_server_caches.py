"""The servers' caches (settings, blocks, keys) against a reading that is under way as they change.

Every change is announced to every process, this one included, and each announcement reads the
store again. A reading that began before a change here must not put the old state back after it:
a moderator who made results private, blocked a member or cleared a key would see the next request
ignore it (seen once as a flaky end-to-end test: the edit right after "private results: always"
came back public). The stores below hold their readings until the test lets them go.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from typing import Any

from cryptography.fernet import Fernet

from bot.core.overrides import GuildOverrides, PrivateResults
from bot.core.records import Block, StoredKey
from bot.servers.blocks import Blocklist
from bot.servers.guild_keys import GuildKeys
from bot.servers.settings import GuildSettings

GUILD = 10
KEY = "sk-" + "a" * 40


class HeldReads:
    """Readings that wait until ``release``, answering with the state as it was when they began."""

    def __init__(self) -> None:
        self.released = asyncio.Event()
        self.reading = asyncio.Event()

    async def hold(self, state: Any) -> Any:
        self.reading.set()
        await self.released.wait()
        return state


class Settings(HeldReads):
    def __init__(self) -> None:
        super().__init__()
        self.rows: dict[int, dict[str, Any]] = {}

    async def all_settings(self) -> dict[int, dict[str, Any]]:
        return dict(await self.hold(dict(self.rows)))

    async def guild_settings(self, guild_id: int) -> dict[str, Any]:
        return dict(await self.hold(dict(self.rows.get(guild_id, {}))))

    async def save_settings(self, guild_id: int, settings: Mapping[str, Any], by: int) -> None:
        self.rows[guild_id] = dict(settings)


class Blocks(HeldReads):
    def __init__(self) -> None:
        super().__init__()
        self.rows: dict[tuple[int, int], Block] = {}

    async def all_blocks(self) -> list[Block]:
        return list(await self.hold(list(self.rows.values())))

    async def save_block(self, block: Block) -> None:
        self.rows[(block.guild_id, block.user_id)] = block

    async def delete_block(self, guild_id: int, user_id: int) -> bool:
        return self.rows.pop((guild_id, user_id), None) is not None


class Keys(HeldReads):
    def __init__(self) -> None:
        super().__init__()
        self.rows: dict[int, StoredKey] = {}

    async def all_guild_keys(self) -> list[StoredKey]:
        return list(await self.hold(list(self.rows.values())))

    async def save_guild_key(self, key: StoredKey) -> None:
        self.rows[key.guild_id] = key

    async def delete_guild_key(self, guild_id: int) -> bool:
        return self.rows.pop(guild_id, None) is not None


async def across_a_reading(store: HeldReads, reading: Any, change: Any) -> None:
    """Start ``reading``, let it read, make ``change`` meanwhile, then let the reading answer."""
    read = asyncio.create_task(reading)
    await asyncio.wait_for(store.reading.wait(), timeout=5)
    changed = asyncio.create_task(change)
    await asyncio.sleep(0.05)  # the change, if it does not wait for the reading, is done by now
    store.released.set()
    await asyncio.wait_for(asyncio.gather(read, changed), timeout=5)


async def test_a_setting_saved_while_a_reading_is_under_way_stands() -> None:
    store = Settings()
    settings = GuildSettings(store)
    store.released.set()
    await settings.load()
    store.released.clear()
    always = GuildOverrides(private_results=PrivateResults.ALWAYS)
    await across_a_reading(store, settings.refresh(str(GUILD)), settings.save(GUILD, always, by=1))
    assert settings.cached(GUILD).private_results is PrivateResults.ALWAYS


async def test_a_block_made_while_a_reading_is_under_way_stands() -> None:
    store = Blocks()
    blocks = Blocklist(store)
    await across_a_reading(store, blocks.load(), blocks.block(GUILD, 7, None, by=1))
    assert blocks.get(GUILD, 7) is not None


async def test_a_key_cleared_while_a_reading_is_under_way_stays_cleared_and_one_cleared_elsewhere_goes() -> None:
    store = Keys()
    keys = GuildKeys(store, Fernet.generate_key().decode(), redact=lambda _secret: None)
    store.released.set()
    await keys.set(GUILD, KEY, by=1)
    await keys.set(GUILD + 1, KEY, by=1)
    store.released.clear()
    await across_a_reading(store, keys.load(), keys.clear(GUILD, by=1))
    assert keys.key_for(GUILD) is None and keys.key_for(GUILD + 1) == KEY
    # Another process cleared the other server's key: the reading its announcement asks for forgets it.
    del store.rows[GUILD + 1]
    store.released.set()
    await keys.load()
    assert keys.key_for(GUILD + 1) is None
