"""Who may start a job, where, and how many: permissions, quotas and the budget.

Pure functions over plain ids and counts, so every rule is unit-testable and
the same for every way to start a job. Whether a request's totals are within its
quota is decided by the store, under its locks (``bot.core.quota``).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field

from bot.config import Config
from bot.core.job import Job, JobRequest
from bot.core.overrides import GuildOverrides, PrivateResults, RoleLimits
from bot.core.quota import DayUsage, Quota
from bot.errors import AtelierError
from bot.i18n import _t


class AccessDeniedError(AtelierError):
    """The member may not use the bot here (channel, role, DMs)."""


class ShuttingDownError(AtelierError):
    """The bot is restarting and takes no new work."""

    def __init__(self) -> None:
        super().__init__(_t("The bot is restarting and not taking new edits; try again in a minute."))


@dataclass(frozen=True)
class GuildLimits:
    """The limits in force in one guild: the config's defaults with the guild's overrides."""

    user_daily_limit: int | None
    guild_daily_limit: int | None
    user_cooldown_seconds: float
    allowed_channel_ids: frozenset[int]
    allowed_role_ids: frozenset[int]
    exempt_role_ids: frozenset[int]
    private_results: PrivateResults = PrivateResults.ALLOWED
    user_max_active: int = 2
    role_limits: Mapping[int, RoleLimits] = field(default_factory=dict)
    spoiler_channel_ids: frozenset[int] = frozenset()

    @classmethod
    def resolve(cls, config: Config, overrides: GuildOverrides) -> GuildLimits:
        """Apply a guild's overrides (what it did not set keeps the config's value)."""
        return cls(
            user_daily_limit=overrides.pick("user_daily_limit", config.user_daily_limit),
            guild_daily_limit=overrides.pick("guild_daily_limit", config.guild_daily_limit),
            user_cooldown_seconds=overrides.pick("user_cooldown_seconds", config.user_cooldown_seconds),
            allowed_channel_ids=overrides.pick("allowed_channel_ids", config.allowed_channel_ids),
            allowed_role_ids=overrides.pick("allowed_role_ids", config.allowed_role_ids),
            exempt_role_ids=overrides.pick("exempt_role_ids", config.exempt_role_ids),
            private_results=overrides.pick("private_results", config.private_results),
            user_max_active=overrides.pick("user_max_active", config.user_max_active),
            role_limits=overrides.pick("role_limits", {}),
            spoiler_channel_ids=overrides.pick("spoiler_channel_ids", frozenset()),
        )


@dataclass(frozen=True)
class Requester:
    """Who is asking and from where, in plain ids."""

    user_id: int
    guild_id: int | None
    channel_id: int
    parent_channel_id: int | None  # a thread's parent, so threads of an allowed channel are allowed
    role_ids: frozenset[int]
    is_manager: bool  # Manage Server

    @property
    def in_dm(self) -> bool:
        return self.guild_id is None


def check_access(config: Config, limits: GuildLimits | None, who: Requester) -> None:
    """Refuse a member who may not use the bot where they asked, saying where they can."""
    if who.in_dm:
        if not config.allow_dms:
            raise AccessDeniedError(_t("Atelier works in servers only, not in direct messages."))
        return
    assert limits is not None
    if who.is_manager:
        return
    channels = limits.allowed_channel_ids
    if channels and who.channel_id not in channels and who.parent_channel_id not in channels:
        where = ", ".join(f"<#{c}>" for c in sorted(channels))
        raise AccessDeniedError(_t("Atelier can't be used in this channel. Use it in {channels}.", channels=where))
    roles = limits.allowed_role_ids
    if roles and not roles & who.role_ids:
        names = ", ".join(f"<@&{r}>" for r in sorted(roles))
        raise AccessDeniedError(_t("Atelier is open to members with one of these roles: {roles}.", roles=names))


@dataclass(frozen=True)
class MemberLimits:
    """The member limits one member gets where they asked, and where each came from.

    A limit that one of the member's roles sets is the most generous among those roles
    (unlimited beats any number, more beats fewer, a shorter cooldown beats a longer one), even
    when that is tighter than the server's: a "newcomers" role may get fewer edits than everyone.
    A limit none of their roles sets is the server's.
    """

    daily: int | None
    max_active: int
    cooldown: float
    daily_from: int | None = None  # the role that gave it (None: the server's)
    max_active_from: int | None = None
    cooldown_from: int | None = None

    @property
    def from_roles(self) -> list[int]:
        """The roles that gave any of these limits, each once, in the order daily, active, cooldown."""
        found = (self.daily_from, self.max_active_from, self.cooldown_from)
        return list(dict.fromkeys(role for role in found if role is not None))

    @property
    def all_from_roles(self) -> bool:
        return None not in (self.daily_from, self.max_active_from, self.cooldown_from)


def _daily_rank(value: int | None) -> float:
    return float("inf") if value is None else value


def member_limits(config: Config, limits: GuildLimits | None, who: Requester) -> MemberLimits:
    """The daily limit, the most active jobs and the cooldown for ``who`` (see ``MemberLimits``)."""
    if limits is None:  # a direct message: the bot's defaults
        return MemberLimits(config.user_daily_limit, config.user_max_active, config.user_cooldown_seconds)
    mine = sorted((role, rl) for role, rl in limits.role_limits.items() if role in who.role_ids)
    daily_roles = [(role, rl.pick("user_daily_limit", None)) for role, rl in mine if rl.is_set("user_daily_limit")]
    active_roles = [(role, rl.pick("user_max_active", 0)) for role, rl in mine if rl.is_set("user_max_active")]
    cooldown_roles = [
        (role, rl.pick("user_cooldown_seconds", 0.0)) for role, rl in mine if rl.is_set("user_cooldown_seconds")
    ]
    daily, daily_from = limits.user_daily_limit, None
    if daily_roles:
        daily_from, daily = max(daily_roles, key=lambda pair: _daily_rank(pair[1]))
    max_active, active_from = limits.user_max_active, None
    if active_roles:
        active_from, max_active = max(active_roles, key=lambda pair: pair[1])
    cooldown, cooldown_from = limits.user_cooldown_seconds, None
    if cooldown_roles:
        cooldown_from, cooldown = min(cooldown_roles, key=lambda pair: pair[1])
    return MemberLimits(daily, max_active, cooldown, daily_from, active_from, cooldown_from)


@dataclass(frozen=True)
class MemberStanding:
    """A member's place against the member limits, as admission and ``/usage`` both see it."""

    exempt: bool  # Manage Server or an exempt role: no member limits (never the server's or the budget)
    daily_limit: int | None
    used_today: int
    active: int
    max_active: int
    cooldown_wait: float  # seconds until the cooldown allows another edit (0 = now)
    limits: MemberLimits | None = None  # the limits and the roles they come from

    @property
    def left_today(self) -> int | None:
        return None if self.daily_limit is None else max(0, self.daily_limit - self.used_today)


def is_exempt(limits: GuildLimits | None, who: Requester) -> bool:
    """Manage Server or an exempt role: no member limits (never the server's or the budget)."""
    return who.is_manager or bool(limits and limits.exempt_role_ids & who.role_ids)


def member_standing(
    config: Config, limits: GuildLimits | None, who: Requester, usage: DayUsage, now: float
) -> MemberStanding:
    """Where ``who`` stands against the member limits in force where they asked."""
    exempt = is_exempt(limits, who)
    mine = member_limits(config, limits, who)
    wait = 0.0
    if mine.cooldown and usage.user_last_accepted is not None:
        wait = max(0.0, usage.user_last_accepted + mine.cooldown - now)
    return MemberStanding(
        exempt=exempt,
        daily_limit=mine.daily,
        used_today=usage.user_today,
        active=usage.user_active,
        max_active=mine.max_active,
        cooldown_wait=wait,
        limits=mine,
    )


def quota_for(
    config: Config,
    limits: GuildLimits | None,
    who: Requester,
    now: float,
    *,
    price: int | None = None,
    own_key: bool = False,
) -> Quota:
    """The limits ``who`` must pass to start one more edit now.

    ``price`` is what the job would cost in micro-dollars (its model's price); a job on its
    server's own key (``own_key``) is outside the operator's daily budget, never outside the
    other limits. Each bound is the most a total may be for one more job to fit.
    """
    price = config.price_per_image if price is None else price
    budget = config.daily_budget
    guild_limit = limits.guild_daily_limit if limits is not None else None
    mine = member_limits(config, limits, who)
    daily, cooldown = mine.daily, mine.cooldown
    member = not is_exempt(limits, who)
    return Quota(
        now,
        spend_today=budget - price if budget is not None and not own_key else None,
        guild_today=guild_limit - 1 if guild_limit is not None else None,
        user_active=mine.max_active - 1 if member else None,
        user_today=daily - 1 if member and daily is not None else None,
        user_last_accepted=now - cooldown if member and cooldown else None,
        budget=budget or 0,
        guild_limit=guild_limit or 0,
        daily_limit=daily or 0,
        max_active=mine.max_active,
        cooldown=float(cooldown or 0),
    )


def apply_privacy(limits: GuildLimits | None, request: JobRequest) -> JobRequest:
    """The request as the server's private-results setting has it: refused, forced private, or as asked."""
    policy = limits.private_results if limits is not None else PrivateResults.ALLOWED
    if policy is PrivateResults.NEVER and request.private:
        raise AccessDeniedError(
            _t(
                "This server doesn't allow private results: every result is posted in the channel. "
                "Send it again without the private choice."
            )
        )
    if policy is PrivateResults.ALWAYS and not request.private:
        return dataclasses.replace(request, private=True)
    return request


def apply_spoilers(limits: GuildLimits | None, request: JobRequest, who: Requester) -> JobRequest:
    """The request as the server's spoiler channels have it: a spoiler when started in one (or in a thread of
    one), else as asked (a member may always ask for a spoiler; a channel never takes it away)."""
    channels = limits.spoiler_channel_ids if limits is not None else frozenset()
    if request.spoiler or not channels:
        return request
    if who.channel_id in channels or who.parent_channel_id in channels:
        return dataclasses.replace(request, spoiler=True)
    return request


def check_can_reuse(job: Job, user_id: int) -> None:
    """Refuse to show the details of, refine or reroll a private result for anyone but the member who asked."""
    if job.request.private and job.user_id != user_id:
        raise AccessDeniedError(_t("That result is private to the member who asked for it."))


def check_can_delete(job: Job, user_id: int, is_moderator: bool) -> None:
    """Only a result's requester, or a member who may manage messages, deletes it."""
    if job.user_id != user_id and not is_moderator:
        raise AccessDeniedError(
            _t("Only the member who asked for this edit, or a moderator (Manage Messages), can delete it.")
        )
