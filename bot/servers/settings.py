"""Per-server settings: what an admin changed, as a typed structure, and a cache over the store.

An override that is not set falls back to the configuration; one that is set to
``None`` means "unlimited". The JSON stored holds only the settings an admin set.
"""

from __future__ import annotations

import dataclasses
import enum
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar

T = TypeVar("T")


class _Unset(enum.Enum):
    UNSET = "unset"


UNSET = _Unset.UNSET


class PrivateResults(enum.StrEnum):
    """Whether members may ask for results only they can see (``/edit private:True``)."""

    ALLOWED = "allowed"  # each member chooses
    NEVER = "never"  # every result is posted for the channel
    ALWAYS = "always"  # every status and result is visible only to its requester


@dataclass(frozen=True)
class GuildOverrides:
    """The limits and settings one server changed from the defaults."""

    user_daily_limit: int | _Unset | None = UNSET
    guild_daily_limit: int | _Unset | None = UNSET
    user_cooldown_seconds: float | _Unset = UNSET
    allowed_channel_ids: frozenset[int] | _Unset = UNSET
    allowed_role_ids: frozenset[int] | _Unset = UNSET
    exempt_role_ids: frozenset[int] | _Unset = UNSET
    audit_channel_id: int | _Unset | None = UNSET  # where every job's outcome is posted (None: nowhere)
    model: str | _Unset = UNSET  # the image model this server uses (one of IMAGE_MODELS)
    private_results: PrivateResults | _Unset = UNSET

    def is_set(self, name: str) -> bool:
        """Whether this server changed ``name``."""
        return getattr(self, name) is not UNSET

    def pick(self, name: str, default: T) -> T:
        """The server's value for ``name``, or ``default`` when it did not change it."""
        value = getattr(self, name)
        return default if value is UNSET else value

    def merged(self, changes: GuildOverrides) -> GuildOverrides:
        """These overrides with every setting ``changes`` sets."""
        return dataclasses.replace(
            self, **{f.name: getattr(changes, f.name) for f in dataclasses.fields(self) if changes.is_set(f.name)}
        )

    def to_json(self) -> dict[str, Any]:
        """Only the settings that are set; id sets as sorted lists."""
        out: dict[str, Any] = {}
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if value is UNSET:
                continue
            out[f.name] = sorted(value) if isinstance(value, frozenset) else value
        return out

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> GuildOverrides:
        """Read what ``to_json`` wrote; unknown keys (from a newer version) are ignored."""
        values: dict[str, Any] = {}
        for f in dataclasses.fields(cls):
            if f.name not in data:
                continue
            value = data[f.name]
            if f.name.endswith("_ids"):
                value = frozenset(int(v) for v in value)
            elif f.name == "user_cooldown_seconds":
                value = float(value)
            elif f.name == "model":
                value = str(value)
            elif f.name == "private_results":
                value = PrivateResults(value)
            elif value is not None:
                value = int(value)
            values[f.name] = value
        return cls(**values)


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

    async def load(self) -> None:
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
        await self._store.save_settings(guild_id, overrides.to_json(), by)
        self._cache[guild_id] = overrides
