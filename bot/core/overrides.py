"""A server's overrides of the defaults, as a typed value: what an admin changed, and nothing else.

An override that is not set falls back to the configuration; one that is set to ``None``
means "unlimited". The JSON stored holds only the settings an admin set.
"""

from __future__ import annotations

import dataclasses
import enum
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, TypeVar

T = TypeVar("T")


class _Unset(enum.Enum):
    UNSET = "unset"


UNSET = _Unset.UNSET


class PrivateResults(enum.StrEnum):
    """Whether members may ask for results only they can see (``/edit private:True``)."""

    ALLOWED = "allowed"  # each member chooses
    NEVER = "never"  # every result is posted for the channel
    ALWAYS = "always"  # every status and result is visible only to its requester


class _Overrides:
    """What every set of overrides can say about itself (its fields default to ``UNSET``)."""

    def is_set(self, name: str) -> bool:
        """Whether this server changed ``name``."""
        return getattr(self, name) is not UNSET

    def pick(self, name: str, default: T) -> T:
        """The server's value for ``name``, or ``default`` when it did not change it."""
        value = getattr(self, name)
        return default if value is UNSET else value


@dataclass(frozen=True)
class RoleLimits(_Overrides):
    """The member limits for members holding one role. What a role does not set, it leaves to the
    server; a member holding several roles gets, limit by limit, the most generous of theirs."""

    user_daily_limit: int | _Unset | None = UNSET  # None: unlimited
    user_max_active: int | _Unset = UNSET
    user_cooldown_seconds: float | _Unset = UNSET

    @property
    def empty(self) -> bool:
        return not any(self.is_set(f.name) for f in dataclasses.fields(self))

    def merged(self, changes: RoleLimits) -> RoleLimits:
        """These limits with every limit ``changes`` sets."""
        return dataclasses.replace(
            self, **{f.name: getattr(changes, f.name) for f in dataclasses.fields(self) if changes.is_set(f.name)}
        )

    def to_json(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if self.is_set(f.name)}

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> RoleLimits:
        values: dict[str, Any] = {}
        if "user_daily_limit" in data:
            daily = data["user_daily_limit"]
            values["user_daily_limit"] = None if daily is None else int(daily)
        if "user_max_active" in data:
            values["user_max_active"] = int(data["user_max_active"])
        if "user_cooldown_seconds" in data:
            values["user_cooldown_seconds"] = float(data["user_cooldown_seconds"])
        return cls(**values)


@dataclass(frozen=True)
class GuildOverrides(_Overrides):
    """The limits and settings one server changed from the defaults."""

    user_daily_limit: int | _Unset | None = UNSET
    guild_daily_limit: int | _Unset | None = UNSET
    user_cooldown_seconds: float | _Unset = UNSET
    user_max_active: int | _Unset = UNSET
    # role id -> that role's member limits (ImGen-style tiers: free, supporter, premium)
    role_limits: Mapping[int, RoleLimits] | _Unset = UNSET
    allowed_channel_ids: frozenset[int] | _Unset = UNSET
    allowed_role_ids: frozenset[int] | _Unset = UNSET
    exempt_role_ids: frozenset[int] | _Unset = UNSET
    audit_channel_id: int | _Unset | None = UNSET  # where every job's outcome is posted (None: nowhere)
    model: str | _Unset = UNSET  # the image model this server uses (one of IMAGE_MODELS)
    private_results: PrivateResults | _Unset = UNSET
    # Results started in these channels (or their threads) are spoilers, whatever their member chose.
    spoiler_channel_ids: frozenset[int] | _Unset = UNSET
    # Live previews: a running job's status shows the partial images its model streams (they cost output
    # tokens, so a server turns them on; off when unset).
    preview: bool | _Unset = UNSET

    def merged(self, changes: GuildOverrides) -> GuildOverrides:
        """These overrides with every setting ``changes`` sets."""
        return dataclasses.replace(
            self, **{f.name: getattr(changes, f.name) for f in dataclasses.fields(self) if changes.is_set(f.name)}
        )

    def with_role_limits(self, role_id: int, changes: RoleLimits | None) -> GuildOverrides:
        """These overrides with ``role_id``'s limits changed by ``changes`` (``None``: forgotten)."""
        roles: dict[int, RoleLimits] = dict(self.pick("role_limits", {}))
        limits = RoleLimits() if changes is None else roles.get(role_id, RoleLimits()).merged(changes)
        if limits.empty:
            roles.pop(role_id, None)
        else:
            roles[role_id] = limits
        return dataclasses.replace(self, role_limits=roles if roles else UNSET)

    def to_json(self) -> dict[str, Any]:
        """Only the settings that are set; id sets as sorted lists."""
        out: dict[str, Any] = {}
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if value is UNSET:
                continue
            if isinstance(value, frozenset):
                value = sorted(value)
            elif f.name == "role_limits":
                value = {str(role): limits.to_json() for role, limits in sorted(value.items())}
            out[f.name] = value
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
            elif f.name == "preview":
                value = bool(value)
            elif f.name == "role_limits":
                value = {int(role): RoleLimits.from_json(limits) for role, limits in value.items()}
            elif value is not None:
                value = int(value)
            values[f.name] = value
        return cls(**values)
