"""Members a server's moderators blocked: refused at admission, privately, before any charge or API call."""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Protocol

from bot.core.records import Block
from bot.errors import AtelierError
from bot.i18n import _t

log = logging.getLogger(__name__)


class BlockedError(AtelierError):
    """The member is blocked in this server."""

    def __init__(self) -> None:
        super().__init__(
            _t(
                "You can't use Atelier in this server: its moderators have blocked you. "
                "Ask them if you think it's a mistake."
            )
        )


class BlockStore(Protocol):
    async def all_blocks(self) -> list[Block]: ...
    async def save_block(self, block: Block) -> None: ...
    async def delete_block(self, guild_id: int, user_id: int) -> bool: ...


class Blocklist:
    """Every block, read from the store at start-up, and again when any process announces a change."""

    def __init__(self, store: BlockStore) -> None:
        self._store = store
        self._blocks: dict[tuple[int, int], Block] = {}
        # A reading must not interleave with a change here: it could read the store before the change and
        # swap the old blocks back in after it (a member just blocked could start one more edit).
        self._changing = asyncio.Lock()

    async def load(self) -> None:
        async with self._changing:
            self._blocks = {(b.guild_id, b.user_id): b for b in await self._store.all_blocks()}

    def check(self, guild_id: int | None, user_id: int) -> None:
        """Refuse a blocked member (``BlockedError``); a dictionary lookup, no I/O."""
        if guild_id is not None and (guild_id, user_id) in self._blocks:
            raise BlockedError()

    def get(self, guild_id: int, user_id: int) -> Block | None:
        return self._blocks.get((guild_id, user_id))

    def of_guild(self, guild_id: int) -> list[Block]:
        """A server's blocks, oldest first."""
        return sorted((b for (g, _), b in self._blocks.items() if g == guild_id), key=lambda b: b.blocked_at)

    async def block(self, guild_id: int, user_id: int, reason: str | None, by: int) -> Block:
        """Block (or re-block with a new reason) a member in a server."""
        block = Block(guild_id, user_id, reason, by, time.time())
        async with self._changing:
            await self._store.save_block(block)
            self._blocks[(guild_id, user_id)] = block
        log.info("guild=%s user=%s blocked by user=%s", guild_id, user_id, by)
        return block

    async def unblock(self, guild_id: int, user_id: int, by: int) -> bool:
        """Lift a block; whether there was one."""
        async with self._changing:
            removed = await self._store.delete_block(guild_id, user_id)
            had = self._blocks.pop((guild_id, user_id), None) is not None
        if removed or had:
            log.info("guild=%s user=%s unblocked by user=%s", guild_id, user_id, by)
        return removed or had
