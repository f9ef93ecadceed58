"""``/atelier stats`` and ``/atelier limits``: what admins see and change (Manage Server)."""

from __future__ import annotations

import logging
import re
import statistics
import time
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any, Literal

import discord
from discord import app_commands
from discord.ext import commands

from bot.errors import InputError
from bot.jobs import utc_day
from bot.limits import GuildLimits
from bot.settings import GuildOverrides, PrivateResults

log = logging.getLogger(__name__)

if TYPE_CHECKING:
    from cogs.client import AtelierBot

_CLEAR_WORDS = {"all", "any", "everyone", "none", "clear", "reset", "-"}


def parse_ids(text: str, what: str) -> list[int]:
    """Ids from mentions or raw ids (``<#1>``, ``<@&2>``, ``3``); an empty list for all/everyone/none."""
    cleaned = text.strip().lower()
    if cleaned in _CLEAR_WORDS:
        return []
    ids = [int(i) for i in re.findall(r"\d{15,20}", text)]
    if not ids:
        raise InputError(f"I found no {what} in `{text[:80]}`. Mention them, paste their ids, or write `all`.")
    return sorted(set(ids))


def percentile(values: list[float], fraction: float) -> float:
    """The value below which ``fraction`` of ``values`` fall (nearest rank)."""
    ordered = sorted(values)
    rank = max(1, round(fraction * len(ordered) + 0.5 - 1e-9))
    return ordered[min(rank, len(ordered)) - 1]


def describe_limits(limits: GuildLimits, overrides: GuildOverrides) -> str:
    """The limits in force, marking the ones this guild changed."""

    def mark(name: str) -> str:
        return " *(set here)*" if overrides.is_set(name) else ""

    def count(value: int | None) -> str:
        return "unlimited" if value is None else str(value)

    channels = ", ".join(f"<#{c}>" for c in sorted(limits.allowed_channel_ids)) or "every channel"
    roles = ", ".join(f"<@&{r}>" for r in sorted(limits.allowed_role_ids)) or "everyone"
    exempt = ", ".join(f"<@&{r}>" for r in sorted(limits.exempt_role_ids)) or "none (Manage Server always is)"
    return "\n".join(
        [
            f"• Edits per member per day: **{count(limits.user_daily_limit)}**{mark('user_daily_limit')}",
            f"• Edits for this server per day: **{count(limits.guild_daily_limit)}**{mark('guild_daily_limit')}",
            f"• Cooldown between a member's edits: **{limits.user_cooldown_seconds:g} s**"
            f"{mark('user_cooldown_seconds')}",
            f"• Channels: {channels}{mark('allowed_channel_ids')}",
            f"• Roles: {roles}{mark('allowed_role_ids')}",
            f"• Exempt roles: {exempt}{mark('exempt_role_ids')}",
            f"• Private results: **{limits.private_results}**{mark('private_results')}",
        ]
    )


@app_commands.guild_only()
@app_commands.default_permissions(manage_guild=True)
class AdminCog(commands.GroupCog, group_name="atelier", group_description="Atelier settings and statistics"):
    """Admin commands; registered for Manage Server and checked again when run."""

    def __init__(self, bot: AtelierBot) -> None:
        self.bot = bot
        super().__init__()

    @app_commands.command(name="stats", description="Jobs, success rate, timings, spend and the busiest members")
    @app_commands.checks.has_permissions(manage_guild=True)
    async def stats(self, interaction: discord.Interaction) -> None:
        assert interaction.guild_id is not None
        now = datetime.now(UTC)
        week = [utc_day((now - timedelta(days=d)).timestamp()) for d in range(7)]
        s = await self.bot.engine.store.stats(interaction.guild_id, week[0], week)
        finished = s.succeeded_week + s.failed_week
        rate = f"{100 * s.succeeded_week / finished:.0f}%" if finished else "n/a"
        timing = (
            f"median {statistics.median(s.durations_week):.1f} s, p95 {percentile(s.durations_week, 0.95):.1f} s"
            if s.durations_week
            else "no finished edits yet"
        )
        budget = self.bot.config.daily_budget_usd
        spend = f"**${s.spend_today:.2f}**" + (f" of ${budget:.2f}" if budget is not None else " (no budget set)")
        busiest = ", ".join(f"<@{user}> ({n})" for user, n in s.busiest) or "nobody yet"
        lines = [
            "📈 **Atelier statistics** (UTC days)",
            f"Jobs here: **{s.jobs_today}** today, **{s.jobs_week}** in the last 7 days "
            f"({s.succeeded_week} succeeded, {s.failed_week} failed, {s.cancelled_week} cancelled)",
            f"Success rate (7 days): **{rate}**",
            f"Time from request to result (7 days): {timing}",
            f"Spend today, all servers: {spend}; last 7 days: ${s.spend_week:.2f}",
            f"Busiest members (7 days): {busiest}",
            f"API calls that may have been billed without a result (7 days): **{s.billed_without_result_week}**",
            f"Right now: {self.bot.engine.in_flight()} running, limit {self.bot.config.max_concurrent_jobs} at once",
        ]
        await interaction.response.send_message("\n".join(lines), ephemeral=True)

    @app_commands.command(name="limits", description="Show or change this server's limits, channels and roles")
    @app_commands.describe(
        user_daily="Edits per member per day (0 = unlimited)",
        guild_daily="Edits for the whole server per day (0 = unlimited)",
        cooldown="Seconds a member waits between edits (0 = none)",
        channels="Channels where the bot works: mentions or ids, or 'all'",
        roles="Roles allowed to use the bot: mentions or ids, or 'everyone'",
        exempt_roles="Roles that bypass member limits (not the budget): mentions or ids, or 'none'",
        private="Results only their member sees: each member chooses, never, or always",
        reset="Forget this server's changes and use the bot's defaults",
    )
    @app_commands.checks.has_permissions(manage_guild=True)
    async def limits(
        self,
        interaction: discord.Interaction,
        user_daily: app_commands.Range[int, 0, 100000] | None = None,
        guild_daily: app_commands.Range[int, 0, 1000000] | None = None,
        cooldown: app_commands.Range[int, 0, 86400] | None = None,
        channels: str | None = None,
        roles: str | None = None,
        exempt_roles: str | None = None,
        private: Literal["allowed", "never", "always"] | None = None,
        reset: bool = False,
    ) -> None:
        assert interaction.guild_id is not None
        engine = self.bot.engine
        overrides = GuildOverrides() if reset else await engine.guild_overrides(interaction.guild_id)
        values: dict[str, Any] = {}
        if user_daily is not None:
            values["user_daily_limit"] = user_daily or None
        if guild_daily is not None:
            values["guild_daily_limit"] = guild_daily or None
        if cooldown is not None:
            values["user_cooldown_seconds"] = float(cooldown)
        if channels is not None:
            values["allowed_channel_ids"] = frozenset(parse_ids(channels, "channels"))
        if roles is not None:
            values["allowed_role_ids"] = frozenset(parse_ids(roles, "roles"))
        if exempt_roles is not None:
            values["exempt_role_ids"] = frozenset(parse_ids(exempt_roles, "roles"))
        if private is not None:
            values["private_results"] = PrivateResults(private)
        changes = GuildOverrides(**values)
        if values or reset:
            overrides = overrides.merged(changes)
            await engine.save_guild_overrides(interaction.guild_id, overrides, interaction.user.id)
            log.info(
                "guild=%s limits changed by user=%s: %s%s",
                interaction.guild_id, interaction.user.id, "reset; " if reset else "", changes.to_json(),
            )  # fmt: skip
        limits = GuildLimits.resolve(self.bot.config, overrides)
        title = "✅ **Limits updated**" if values or reset else "⚙️ **Limits in this server**"
        stamp = f"<t:{int(time.time())}:f>"
        await interaction.response.send_message(
            f"{title} ({stamp})\n{describe_limits(limits, overrides)}", ephemeral=True
        )


async def setup(bot: AtelierBot) -> None:
    """Load the admin cog."""
    await bot.add_cog(AdminCog(bot))
