"""Servers' own API keys: encrypted at rest with ``ATELIER_SECRET_KEY`` (Fernet), clear only in memory.

A server whose admins set a key has its jobs made with that key: their spend is
counted apart and never against the operator's ``DAILY_BUDGET_USD`` (member and
server limits still apply). A key is never echoed, logged or put into an error: it
is handed to the log filter as soon as it is known, and kept out of every ``repr``.
Several comma-separated Fernet keys rotate: the first encrypts, any of them decrypts.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from typing import Protocol

from cryptography.fernet import Fernet, InvalidToken, MultiFernet

from bot.core.records import StoredKey
from bot.errors import AtelierError
from bot.i18n import _t

log = logging.getLogger(__name__)

NOT_ENABLED = _t(
    "The bot's operator hasn't enabled servers' own API keys (it needs ATELIER_SECRET_KEY in the bot's settings), "
    "so this server uses the operator's key."
)
MIN_KEY_LENGTH = 8
MAX_KEY_LENGTH = 300


class KeyStore(Protocol):
    async def all_guild_keys(self) -> list[StoredKey]: ...
    async def save_guild_key(self, key: StoredKey) -> None: ...
    async def delete_guild_key(self, guild_id: int) -> bool: ...


class GuildKeys:
    """Each server's own key, decrypted at start-up, and again when any process announces a change."""

    def __init__(self, store: KeyStore, secret_key: str | None, redact: Callable[[str], None]) -> None:
        self._store = store
        self._fernet = (
            MultiFernet([Fernet(k.strip().encode()) for k in secret_key.split(",") if k.strip()])
            if secret_key
            else None
        )
        self._redact = redact
        self._keys: dict[int, str] = {}
        self._set_by: dict[int, int] = {}
        # A reading must not interleave with a change here: it could read the store before the change and put
        # a key just cleared back after it.
        self._changing = asyncio.Lock()

    def __repr__(self) -> str:
        return f"<GuildKeys {len(self._keys)} server(s)>"

    @property
    def enabled(self) -> bool:
        """Whether the operator allows servers' own keys (``ATELIER_SECRET_KEY`` is set)."""
        return self._fernet is not None

    async def load(self) -> None:
        """Decrypt every stored key, in place of those known (a key another process cleared is forgotten); one
        that no longer decrypts is left unused (and said so)."""
        async with self._changing:
            keys: dict[int, str] = {}
            set_by: dict[int, int] = {}
            for stored in await self._store.all_guild_keys():
                if self._fernet is None:
                    log.warning("guild=%s has its own API key stored, but ATELIER_SECRET_KEY is not set",
                                stored.guild_id)  # fmt: skip
                    continue
                try:
                    key = self._fernet.decrypt(stored.encrypted.encode()).decode()
                except InvalidToken:
                    log.warning(
                        "guild=%s: its stored API key does not decrypt with ATELIER_SECRET_KEY; its jobs use the "
                        "operator's key until an admin sets it again",
                        stored.guild_id,
                    )
                    continue
                self._redact(key)
                keys[stored.guild_id] = key
                set_by[stored.guild_id] = stored.set_by
            self._keys, self._set_by = keys, set_by

    def key_for(self, guild_id: int | None) -> str | None:
        """The server's own key, if it set one."""
        return self._keys.get(guild_id) if guild_id is not None else None

    def has_key(self, guild_id: int) -> bool:
        return guild_id in self._keys

    def set_by(self, guild_id: int) -> int | None:
        """Who set the server's key (to tell when it is refused and there is no audit channel)."""
        return self._set_by.get(guild_id)

    async def set(self, guild_id: int, key: str, by: int) -> None:
        """Store a server's key, encrypted; raise ``AtelierError`` when it is off or the key looks wrong."""
        if self._fernet is None:
            raise AtelierError(NOT_ENABLED)
        key = key.strip()
        if not MIN_KEY_LENGTH <= len(key) <= MAX_KEY_LENGTH or any(c.isspace() for c in key):
            raise AtelierError(
                _t(
                    "That doesn't look like an API key ({least} to {most} characters, no spaces). Nothing was saved.",
                    least=MIN_KEY_LENGTH,
                    most=MAX_KEY_LENGTH,
                )
            )
        self._redact(key)  # from now on no log line can carry it, whatever prints it
        encrypted = self._fernet.encrypt(key.encode()).decode()
        async with self._changing:
            await self._store.save_guild_key(StoredKey(guild_id, encrypted, by, time.time()))
            self._remember(guild_id, key, by)
        log.info("guild=%s: its own API key was set by user=%s", guild_id, by)

    async def clear(self, guild_id: int, by: int) -> bool:
        """Forget a server's key (works even when the feature is off); whether there was one."""
        async with self._changing:
            removed = await self._store.delete_guild_key(guild_id)
            had = self._keys.pop(guild_id, None) is not None
            self._set_by.pop(guild_id, None)
        if removed or had:
            log.info("guild=%s: its own API key was removed by user=%s", guild_id, by)
        return removed or had

    def _remember(self, guild_id: int, key: str, by: int) -> None:
        self._redact(key)
        self._keys[guild_id] = key
        self._set_by[guild_id] = by
