"""``/atelier …``: what admins see and change (Manage Server): stats with a chart, limits, settings
(audit channel, model), blocks, and the server's own API key."""

from __future__ import annotations

import asyncio
import dataclasses
import io
import logging
import re
import statistics
import time
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any, Literal

import discord
from discord import app_commands
from discord.ext import commands

from bot.charts import render_stats_chart
from bot.errors import AtelierError, InputError
from bot.guild_keys import NOT_ENABLED
from bot.jobs import utc_day
from bot.limits import GuildLimits
from bot.settings import UNSET, GuildOverrides, PrivateResults
from cogs.custom_ids import SERVER_KEY_FIELD, SERVER_KEY_MODAL
from cogs.errors import guarded
from cogs.requests import modal_values
from cogs.server_keys import HideKeyForm, ServerKeyModal

log = logging.getLogger(__name__)

if TYPE_CHECKING:
    from cogs.client import AtelierBot

_CLEAR_WORDS = {"all", "any", "everyone", "none", "clear", "reset", "-"}
CHART_DAYS = 30
DEFAULT_MODEL = "default"


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
        self.hide_key_form = HideKeyForm()
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
        running = await self.bot.engine.in_flight()
        lines = [
            "📈 **Atelier statistics** (UTC days)",
            f"Jobs here: **{s.jobs_today}** today, **{s.jobs_week}** in the last 7 days "
            f"({s.succeeded_week} succeeded, {s.failed_week} failed, {s.cancelled_week} cancelled)",
            f"Success rate (7 days): **{rate}**",
            f"Time from request to result (7 days): {timing}",
            f"Spend today, all servers: {spend}; last 7 days: ${s.spend_week:.2f}",
            f"Busiest members (7 days): {busiest}",
            f"API calls that may have been billed without a result (7 days): **{s.billed_without_result_week}**",
            f"Right now: {running} running, limit {self.bot.config.max_concurrent_jobs} at once",
        ]
        if s.own_key_spend_week:
            lines.insert(5, f"This server's own API key, last 7 days: ${s.own_key_spend_week:.2f} (not in the budget)")
        if len(s.models_week) > 1 or len(self.bot.config.models) > 1:
            made = ", ".join(f"{model or 'default'} ({n})" for model, n in s.models_week) or "none yet"
            lines.insert(-1, f"Results by model (7 days): {made}")
        lines.append("-# The chart of the last 30 days follows.")
        # The text at once; the chart (rendered in a worker thread) replaces the note a moment later.
        await interaction.response.send_message("\n".join(lines), ephemeral=True)
        days = [utc_day((now - timedelta(days=d)).timestamp()) for d in range(CHART_DAYS - 1, -1, -1)]
        daily = await self.bot.engine.daily_stats(interaction.guild_id, days)
        title = f"{interaction.guild.name if interaction.guild else 'This server'} · last {CHART_DAYS} days (UTC)"
        png = await asyncio.to_thread(render_stats_chart, daily, title)
        lines[-1] = "-# Jobs per day by outcome, spend per day, and p50/p95 time to result over the last 30 days:"
        await interaction.edit_original_response(
            content="\n".join(lines), attachments=[discord.File(io.BytesIO(png), filename="atelier-stats.png")]
        )

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
        overrides = await engine.guild_overrides(interaction.guild_id)
        if reset:  # the limits only: the audit channel and the model are /atelier settings' business
            overrides = GuildOverrides(audit_channel_id=overrides.audit_channel_id, model=overrides.model)
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

    # Settings: the audit channel and the model ----------------------------------------------------

    @app_commands.command(name="settings", description="The audit channel, the image model, keys and blocks here")
    @app_commands.describe(
        audit_channel="Post every job's outcome here, with moderator buttons",
        audit_off="Stop posting outcomes to an audit channel",
        model="The image model this server uses",
    )
    @app_commands.checks.has_permissions(manage_guild=True)
    async def settings(
        self,
        interaction: discord.Interaction,
        audit_channel: discord.TextChannel | None = None,
        audit_off: bool = False,
        model: str | None = None,
    ) -> None:
        assert interaction.guild_id is not None
        engine = self.bot.engine
        overrides = await engine.guild_overrides(interaction.guild_id)
        changes: dict[str, Any] = {}
        if audit_channel is not None and audit_off:
            raise InputError("Pick an audit channel or turn it off, not both.")
        if model is not None:
            changes["model"] = self.pick_model(model)
        if audit_channel is not None:
            await self.announce_audit_channel(interaction, audit_channel)
            changes["audit_channel_id"] = audit_channel.id
        elif audit_off:
            changes["audit_channel_id"] = None
        changed = bool(changes)
        if changed:
            if changes.get("model") is UNSET:
                overrides = dataclasses.replace(overrides, model=UNSET)
                del changes["model"]
            overrides = overrides.merged(GuildOverrides(**changes))
            await engine.save_guild_overrides(interaction.guild_id, overrides, interaction.user.id)
            log.info("guild=%s settings changed by user=%s", interaction.guild_id, interaction.user.id)
        title = "✅ **Settings updated**" if changed else "⚙️ **Atelier settings here**"
        await interaction.response.send_message(
            f"{title}\n{self.describe_settings(interaction.guild_id)}", ephemeral=True
        )

    async def announce_audit_channel(self, interaction: discord.Interaction, channel: discord.TextChannel) -> None:
        """Say hello in the new audit channel, which also proves the bot may post there."""
        try:
            await channel.send(
                f"📋 This is Atelier's audit channel now (set by {interaction.user.mention}): every edit's outcome "
                "is posted here, with buttons to delete a result or block a member.",
                allowed_mentions=discord.AllowedMentions.none(),
            )
        except discord.HTTPException:
            raise AtelierError(
                f"I can't post in {channel.mention}; give me View Channel, Send Messages and Attach Files there, "
                "then try again."
            ) from None

    def pick_model(self, typed: str) -> Any:
        """The model name an admin picked (``UNSET`` to go back to the default)."""
        if typed.strip().lower() == DEFAULT_MODEL:
            return UNSET
        if self.bot.config.model(typed.strip()) is None:
            names = ", ".join(f"`{m.name}`" for m in self.bot.config.models)
            raise InputError(f"`{typed[:60]}` is not a model this bot allows. Pick one of: {names}.")
        return typed.strip()

    @settings.autocomplete("model")
    async def model_autocomplete(
        self, interaction: discord.Interaction, current: str
    ) -> list[app_commands.Choice[str]]:
        default = self.bot.config.default_model
        options = [(f"default ({default.name}, ${default.price_usd:.2f} an image)", DEFAULT_MODEL)] + [
            (f"{m.name} · ${m.price_usd:.2f} an image · sizes: {m.sizes.value}", m.name) for m in self.bot.config.models
        ]
        return [
            app_commands.Choice(name=label[:100], value=value)
            for label, value in options
            if current.lower() in label.lower()
        ][:25]

    def describe_settings(self, guild_id: int) -> str:
        engine = self.bot.engine
        overrides = engine.settings.cached(guild_id)
        channel = overrides.pick("audit_channel_id", None)
        model = engine.model_for(guild_id)
        chosen = " *(set here)*" if overrides.is_set("model") else " (the bot's default)"
        key_line = (
            f"this server's own key (set by <@{engine.keys.set_by(guild_id)}>); its spend is outside the bot's budget"
            if engine.keys.has_key(guild_id)
            else "the bot's key" + ("" if engine.keys.enabled else " (own keys are not enabled by the operator)")
        )
        blocks = engine.blocks.of_guild(guild_id)
        blocked = ", ".join(f"<@{b.user_id}>" for b in blocks[:20]) + (" …" if len(blocks) > 20 else "")
        return "\n".join(
            [
                f"• Audit channel: {f'<#{channel}>' if channel else 'none'}",
                f"• Image model: **{model.name}** (${model.price_usd:.2f} an image){chosen}",
                f"• API key: {key_line}",
                f"• Blocked members: {blocked or 'none'}",
            ]
        )

    # Blocks ---------------------------------------------------------------------------------------

    @app_commands.command(name="block", description="Stop a member from using Atelier in this server")
    @app_commands.describe(member="Who to block", reason="A note for the moderators (not shown to the member)")
    @app_commands.checks.has_permissions(manage_guild=True)
    async def block(
        self,
        interaction: discord.Interaction,
        member: discord.Member,
        reason: app_commands.Range[str, 1, 200] | None = None,
    ) -> None:
        assert interaction.guild_id is not None
        if member.bot:
            raise InputError("Bots can't use Atelier anyway.")
        if member.id == interaction.user.id:
            raise InputError("You can't block yourself.")
        await self.bot.engine.block(interaction.guild_id, member.id, reason, interaction.user.id)
        note = f" Reason: {discord.utils.escape_mentions(reason)}" if reason else ""
        await interaction.response.send_message(
            f"⛔ {member.mention} can no longer start edits here; edits already accepted still run.{note}",
            ephemeral=True,
        )

    @app_commands.command(name="unblock", description="Let a blocked member use Atelier in this server again")
    @app_commands.describe(member="Who to unblock")
    @app_commands.checks.has_permissions(manage_guild=True)
    async def unblock(self, interaction: discord.Interaction, member: discord.User) -> None:
        assert interaction.guild_id is not None
        if not await self.bot.engine.unblock(interaction.guild_id, member.id, interaction.user.id):
            raise InputError(f"{member.mention} is not blocked here.")
        await interaction.response.send_message(f"✅ {member.mention} can use Atelier here again.", ephemeral=True)

    # The server's own API key -------------------------------------------------------------------

    key = app_commands.Group(name="key", description="This server's own image API key")

    @key.command(name="set", description="Use this server's own image API key (opens a private form)")
    @app_commands.checks.has_permissions(manage_guild=True)
    async def key_set(self, interaction: discord.Interaction) -> None:
        if not self.bot.engine.keys.enabled:
            raise AtelierError(NOT_ENABLED)
        modal = ServerKeyModal()
        await interaction.response.send_modal(modal)
        modal.stop()  # the submission is routed by custom_id (see on_interaction), also after a restart

    @key.command(name="clear", description="Stop using this server's own API key (the bot's key is used again)")
    @app_commands.checks.has_permissions(manage_guild=True)
    async def key_clear(self, interaction: discord.Interaction) -> None:
        assert interaction.guild_id is not None
        removed = await self.bot.engine.clear_guild_key(interaction.guild_id, interaction.user.id)
        text = (
            "✅ This server's own API key was removed; new edits use the bot's key."
            if removed
            else ("This server has no API key of its own; it uses the bot's key.")
        )
        await interaction.response.send_message(text, ephemeral=True)

    @commands.Cog.listener()
    async def on_interaction(self, interaction: discord.Interaction) -> None:
        """Route key-form submissions by custom_id, whether or not this process opened the form."""
        if interaction.type is not discord.InteractionType.modal_submit or not isinstance(interaction.data, dict):
            return
        if interaction.data.get("custom_id") == SERVER_KEY_MODAL:
            await guarded(interaction, self.save_key(interaction), "the server key form")

    async def save_key(self, interaction: discord.Interaction) -> None:
        if interaction.guild_id is None or not interaction.permissions.manage_guild:
            raise AtelierError("You need the Manage Server permission for this.")
        value = modal_values(interaction.data).get(SERVER_KEY_FIELD, "")
        await self.bot.engine.set_guild_key(interaction.guild_id, value, interaction.user.id)
        del value
        await interaction.response.send_message(
            f"✅ This server's own API key is set (by {interaction.user.mention}) and stored encrypted. New edits here "
            "use it and don't count against the bot's budget; member and server limits still apply. If the image "
            "service refuses it, this server's audit channel (or you) will be told.",
            ephemeral=True,
        )

    async def cog_load(self) -> None:
        for handler in logging.getLogger().handlers:
            handler.addFilter(self.hide_key_form)

    async def cog_unload(self) -> None:
        for handler in logging.getLogger().handlers:
            handler.removeFilter(self.hide_key_form)


async def setup(bot: AtelierBot) -> None:
    """Load the admin cog."""
    await bot.add_cog(AdminCog(bot))
