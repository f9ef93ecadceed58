"""``/atelier …``: what admins see and change (Manage Server): stats with a chart, limits, settings
(audit channel, model), blocks, and the server's own API key.

Every answer is in the admin's language; the welcome line in a new audit channel is in the
server's, since the whole server reads it. The chart's own labels stay English (no font for
every script); the text around it is translated."""

from __future__ import annotations

import asyncio
import dataclasses
import io
import logging
import re
import statistics
import time
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any, Literal

import discord
from discord import app_commands
from discord.ext import commands

from bot.core.job import utc_day
from bot.core.models import ImageModel
from bot.core.money import format_price, format_usd
from bot.core.overrides import UNSET, GuildOverrides, PrivateResults, RoleLimits
from bot.errors import AtelierError, InputError
from bot.i18n import Text, _pt, _t
from bot.ops.charts import render_stats_chart
from bot.servers.guild_keys import NOT_ENABLED
from bot.servers.limits import GuildLimits
from cogs.admin.server_keys import HideKeyForm, ServerKeyModal
from cogs.core.answers import in_time, reply
from cogs.core.custom_ids import SERVER_KEY_FIELD, SERVER_KEY_MODAL
from cogs.core.errors import guarded
from cogs.core.language import _desc, _name, language_of, render, say, server_language
from cogs.core.requests import modal_values

log = logging.getLogger(__name__)

if TYPE_CHECKING:
    from cogs.core.host import AtelierClient

_CLEAR_WORDS = {"all", "any", "everyone", "none", "clear", "reset", "-"}
# For a list that names where something extra happens (spoiler channels), "all" would mean the opposite.
_NONE_WORDS = {"none", "clear", "reset", "-"}
CHART_DAYS = 30
DEFAULT_MODEL = "default"


def _no_channels(typed: str) -> Text:
    # Translators: {typed} is what the admin typed; `all` is a value to type as it is.
    return _t("I found no channels in `{typed}`. Mention them, paste their ids, or write `all`.", typed=typed)


def _no_roles(typed: str) -> Text:
    # Translators: {typed} is what the admin typed; `all` is a value to type as it is.
    return _t("I found no roles in `{typed}`. Mention them, paste their ids, or write `all`.", typed=typed)


def parse_ids(text: str, what: Literal["channels", "roles", "spoiler channels"]) -> list[int]:
    """Ids from mentions or raw ids (``<#1>``, ``<@&2>``, ``3``); an empty list for all/everyone/none (spoiler
    channels: for none only)."""
    cleaned = text.strip().lower()
    if cleaned in (_NONE_WORDS if what == "spoiler channels" else _CLEAR_WORDS):
        return []
    ids = [int(i) for i in re.findall(r"\d{15,20}", text)]
    if not ids:
        if what == "spoiler channels":
            raise InputError(
                # Translators: {typed} is what the admin typed; `none` is a value to type as it is.
                _t("I found no channels in `{typed}`. Mention them, paste their ids, or write `none`.", typed=text[:80])
            )
        raise InputError(_no_channels(text[:80]) if what == "channels" else _no_roles(text[:80]))
    return sorted(set(ids))


def percentile(values: list[float], fraction: float) -> float:
    """The value below which ``fraction`` of ``values`` fall (nearest rank)."""
    ordered = sorted(values)
    rank = max(1, round(fraction * len(ordered) + 0.5 - 1e-9))
    return ordered[min(rank, len(ordered)) - 1]


def set_here(line: Text) -> Text:
    """A setting's line, marked as changed in this server."""
    # Translators: {setting} is one line of the settings list, e.g. "• Roles: @artists".
    return _t("{setting} *(set here)*", setting=line)


PRIVATE_RESULTS_CHOICES = {
    # The same words as the choices of /atelier limits' "private" option.
    PrivateResults.ALLOWED: _pt("choice name", "allowed"),
    PrivateResults.NEVER: _pt("choice name", "never"),
    PrivateResults.ALWAYS: _pt("choice name", "always"),
}


def describe_limits(limits: GuildLimits, overrides: GuildOverrides, language: str | None) -> str:
    """The limits in force in ``language``, marking the ones this guild changed."""

    def count(value: int | None) -> Text | int:
        return _pt("limit", "unlimited") if value is None else value

    channels = ", ".join(f"<#{c}>" for c in sorted(limits.allowed_channel_ids)) or _t("every channel")
    # Translators: who may use the bot when no role is required.
    roles = ", ".join(f"<@&{r}>" for r in sorted(limits.allowed_role_ids)) or _t("everyone")
    exempt = ", ".join(f"<@&{r}>" for r in sorted(limits.exempt_role_ids)) or _t("none (Manage Server always is)")
    lines = [
        ("user_daily_limit", _t("• Edits per member per day: **{count}**", count=count(limits.user_daily_limit))),
        ("user_max_active", _t("• Jobs per member at once: **{count}**", count=limits.user_max_active)),
        (
            "guild_daily_limit",
            _t("• Edits for this server per day: **{count}**", count=count(limits.guild_daily_limit)),
        ),
        (
            "user_cooldown_seconds",
            _t("• Cooldown between a member's edits: **{seconds} s**", seconds=f"{limits.user_cooldown_seconds:g}"),
        ),
        # Translators: {channels} is a list of channel mentions, or "every channel".
        ("allowed_channel_ids", _t("• Channels: {channels}", channels=channels)),
        # Translators: {roles} is a list of role mentions, or "everyone".
        ("allowed_role_ids", _t("• Roles: {roles}", roles=roles)),
        # Translators: {roles} is a list of role mentions, or "none (Manage Server always is)".
        ("exempt_role_ids", _t("• Exempt roles: {roles}", roles=exempt)),
        (
            "private_results",
            # Translators: {choice} is one of the choices of the "private" option: allowed, never or always.
            _t("• Private results: **{choice}**", choice=PRIVATE_RESULTS_CHOICES[limits.private_results]),
        ),
    ]
    shown = [render(set_here(line) if overrides.is_set(name) else line, language) for name, line in lines]
    if limits.role_limits:
        shown.append(render(_t("Limits by role (a member gets the most generous of their roles'):"), language))
        shown += [render(describe_role_limits(role, rl), language) for role, rl in sorted(limits.role_limits.items())]
    return "\n".join(shown)


def describe_role_limits(role_id: int, limits: RoleLimits) -> Text:
    """One role's line: what it sets, and that the rest is the server's."""
    # Translators: what a role does not set is the server's limit.
    server = _t("the server's")
    daily: Text | int = server
    if limits.is_set("user_daily_limit"):
        daily = limits.pick("user_daily_limit", None) or _pt("limit", "unlimited")
    active: Text | int = limits.pick("user_max_active", 0) or server
    cooldown: Text | str = server
    if limits.is_set("user_cooldown_seconds"):
        cooldown = _t("{seconds} s", seconds=f"{limits.pick('user_cooldown_seconds', 0.0):g}")
    return _t(
        # Translators: {role} is a role mention; each value is a number, "unlimited" or "the server's".
        "• {role}: edits per day **{daily}**, at once **{active}**, cooldown **{cooldown}**",
        role=f"<@&{role_id}>",
        daily=daily,
        active=active,
        cooldown=cooldown,
    )


@app_commands.guild_only()
@app_commands.default_permissions(manage_guild=True)
class AdminCog(
    commands.GroupCog,
    group_name=_name("command name", "atelier"),
    group_description=_desc("Atelier settings and statistics"),
):
    """Admin commands; registered for Manage Server and checked again when run."""

    def __init__(self, bot: AtelierClient) -> None:
        self.bot = bot
        self.hide_key_form = HideKeyForm()
        super().__init__()

    @app_commands.command(
        name=_name("command name", "stats"),
        description=_desc("Jobs, success rate, timings, spend and the busiest members"),
    )
    @app_commands.checks.has_permissions(manage_guild=True)
    async def stats(self, interaction: discord.Interaction) -> None:
        assert interaction.guild_id is not None
        now = datetime.now(UTC)
        async with in_time(interaction):
            lines = await self.stats_lines(interaction, now)
            # The text at once; the chart (rendered in a worker thread) replaces the note a moment later.
            await reply(interaction, "\n".join(lines), ephemeral=True)
        days = [utc_day((now - timedelta(days=d)).timestamp()) for d in range(CHART_DAYS - 1, -1, -1)]
        daily = await self.bot.engine.daily_stats(interaction.guild_id, days)
        # The chart stays in English: its font has no glyphs for every script.
        title = f"{interaction.guild.name if interaction.guild else 'This server'} · last {CHART_DAYS} days (UTC)"
        png = await asyncio.to_thread(render_stats_chart, daily, title)
        lines[-1] = "-# " + say(
            interaction,
            _t("Jobs per day by outcome, spend per day, and p50/p95 time to result over the last 30 days:"),
        )
        await interaction.edit_original_response(
            content="\n".join(lines), attachments=[discord.File(io.BytesIO(png), filename="atelier-stats.png")]
        )

    async def stats_lines(self, interaction: discord.Interaction, now: datetime) -> list[str]:
        """The statistics' text: this server's jobs, success rate, timings, spend and busiest members."""
        assert interaction.guild_id is not None
        week = [utc_day((now - timedelta(days=d)).timestamp()) for d in range(7)]
        s = await self.bot.engine.stats(interaction.guild_id, week[0], week)
        finished = s.succeeded_week + s.failed_week
        # Translators: the success rate when no edit finished yet ("not available").
        rate: Text | str = f"{100 * s.succeeded_week / finished:.0f}%" if finished else _t("n/a")
        timing = (
            # Translators: how long edits took: the median and the 95th percentile, in seconds.
            _t(
                "median {median} s, p95 {p95} s",
                median=f"{statistics.median(s.durations_week):.1f}",
                p95=f"{percentile(s.durations_week, 0.95):.1f}",
            )
            if s.durations_week
            else _t("no finished edits yet")
        )
        budget = self.bot.config.daily_budget
        spend = (
            # Translators: dollars spent today, of the daily budget.
            _t("**${spend}** of ${budget}", spend=format_usd(s.spend_today), budget=format_usd(budget))
            if budget is not None
            else _t("**${spend}** (no budget set)", spend=format_usd(s.spend_today))
        )
        busiest = ", ".join(f"<@{user}> ({n})" for user, n in s.busiest) or _t("nobody yet")
        running = await self.bot.engine.in_flight()
        texts = [
            _t("📈 **Atelier statistics** (UTC days)"),
            _t(
                "Jobs here: **{today}** today, **{week}** in the last 7 days "
                "({succeeded} succeeded, {failed} failed, {cancelled} cancelled)",
                today=s.jobs_today,
                week=s.jobs_week,
                succeeded=s.succeeded_week,
                failed=s.failed_week,
                cancelled=s.cancelled_week,
            ),
            _t("Success rate (7 days): **{rate}**", rate=rate),
            # Translators: {timing} is e.g. "median 12.5 s, p95 30.1 s", or "no finished edits yet".
            _t("Time from request to result (7 days): {timing}", timing=timing),
            # Translators: {spend} is e.g. "**$1.20** of $10.00"; {week} is dollars, without the "$".
            _t("Spend today, all servers: {spend}; last 7 days: ${week}", spend=spend, week=format_usd(s.spend_week)),
            # Translators: {members} is a list of mentions, each with their number of edits, or "nobody yet".
            _t("Busiest members (7 days): {members}", members=busiest),
            _t(
                "API calls that may have been billed without a result (7 days): **{count}**",
                count=s.billed_without_result_week,
            ),
            # Translators: {running} edits are running now; at most {limit} may run at once.
            _t(
                "Right now: {running} running, limit {limit} at once",
                running=running,
                limit=self.bot.config.max_concurrent_jobs,
            ),
        ]
        if s.own_key_spend_week:
            texts.insert(
                5,
                _t(
                    "This server's own API key, last 7 days: ${spend} (not in the budget)",
                    spend=format_usd(s.own_key_spend_week),
                ),
            )
        if len(s.models_week) > 1 or len(self.bot.config.models) > 1:
            # Translators: the bot's default image model, in a list of models.
            default = say(interaction, _pt("model", "default"))
            made = ", ".join(f"{model or default} ({n})" for model, n in s.models_week) or _t("none yet")
            # Translators: {models} is a list of model names, each with its number of results.
            texts.insert(-1, _t("Results by model (7 days): {models}", models=made))
        lines = [say(interaction, text) for text in texts]
        lines.append("-# " + say(interaction, _t("The chart of the last 30 days follows.")))
        return lines

    @app_commands.command(
        name=_name("command name", "limits"),
        description=_desc("Show or change this server's limits, channels and roles"),
    )
    @app_commands.describe(
        user_daily=_desc("Edits per member per day (0 = unlimited)"),
        active=_desc("Jobs a member may have queued or running at once"),
        guild_daily=_desc("Edits for the whole server per day (0 = unlimited)"),
        cooldown=_desc("Seconds a member waits between edits (0 = none)"),
        role=_desc("Set user_daily, active and cooldown for members with this role (their most generous role wins)"),
        channels=_desc("Channels where the bot works: mentions or ids, or 'all'"),
        roles=_desc("Roles allowed to use the bot: mentions or ids, or 'everyone'"),
        exempt_roles=_desc("Roles that bypass member limits (not the budget): mentions or ids, or 'none'"),
        private=_desc("Results only their member sees: each member chooses, never, or always"),
        reset=_desc("Forget this server's changes (with role: that role's limits) and use the defaults"),
    )
    @app_commands.rename(
        user_daily=_name("option name", "user_daily"),
        active=_name("option name", "active"),
        guild_daily=_name("option name", "guild_daily"),
        cooldown=_name("option name", "cooldown"),
        role=_name("option name", "role"),
        channels=_name("option name", "channels"),
        roles=_name("option name", "roles"),
        exempt_roles=_name("option name", "exempt_roles"),
        private=_name("option name", "private"),
        reset=_name("option name", "reset"),
    )
    @app_commands.choices(
        private=[
            app_commands.Choice(name=_name("choice name", "allowed"), value=PrivateResults.ALLOWED.value),
            app_commands.Choice(name=_name("choice name", "never"), value=PrivateResults.NEVER.value),
            app_commands.Choice(name=_name("choice name", "always"), value=PrivateResults.ALWAYS.value),
        ]
    )
    @app_commands.checks.has_permissions(manage_guild=True)
    async def limits(
        self,
        interaction: discord.Interaction,
        user_daily: app_commands.Range[int, 0, 100000] | None = None,
        active: app_commands.Range[int, 1, 100] | None = None,
        guild_daily: app_commands.Range[int, 0, 1000000] | None = None,
        cooldown: app_commands.Range[int, 0, 86400] | None = None,
        role: discord.Role | None = None,
        channels: str | None = None,
        roles: str | None = None,
        exempt_roles: str | None = None,
        private: str | None = None,
        reset: bool = False,
    ) -> None:
        async with in_time(interaction):
            assert interaction.guild_id is not None
            engine = self.bot.engine
            overrides = await engine.guild_overrides(interaction.guild_id)
            member_values: dict[str, Any] = {}  # what a role may set as well as the server
            if user_daily is not None:
                member_values["user_daily_limit"] = user_daily or None
            if active is not None:
                member_values["user_max_active"] = active
            if cooldown is not None:
                member_values["user_cooldown_seconds"] = float(cooldown)
            if role is not None:
                server_wide = [
                    name
                    for name, value in (
                        ("guild_daily", guild_daily),
                        ("channels", channels),
                        ("roles", roles),
                        ("exempt_roles", exempt_roles),
                        ("private", private),
                    )
                    if value is not None
                ]
                if server_wide:
                    raise InputError(
                        # Translators: {options} are option names, as typed, e.g. `guild_daily`, `channels`.
                        _t(
                            "{options} apply to the whole server, not to one role; send them without `role`.",
                            options=", ".join(f"`{name}`" for name in server_wide),
                        )
                    )
                await self.change_role_limits(interaction, role, member_values, reset)
                return
            if reset:  # the limits only: the audit channel, the model, spoilers, previews are /atelier settings'
                overrides = GuildOverrides(
                    audit_channel_id=overrides.audit_channel_id,
                    model=overrides.model,
                    spoiler_channel_ids=overrides.spoiler_channel_ids,
                    preview=overrides.preview,
                )
            values: dict[str, Any] = dict(member_values)
            if guild_daily is not None:
                values["guild_daily_limit"] = guild_daily or None
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
            stamp = f"<t:{int(time.time())}:f>"
            title = (
                # Translators: {time} is a Discord timestamp, shown in the reader's own date and time format.
                _t("✅ **Limits updated** ({time})", time=stamp)
                if values or reset
                # Translators: {time} is a Discord timestamp, shown in the reader's own date and time format.
                else _t("⚙️ **Limits in this server** ({time})", time=stamp)
            )
            language = language_of(interaction)
            await reply(
                interaction,
                f"{render(title, language)}\n{describe_limits(limits, overrides, language)}",
                ephemeral=True,
            )

    async def change_role_limits(
        self, interaction: discord.Interaction, role: discord.Role, values: dict[str, Any], reset: bool
    ) -> None:
        """``/atelier limits role:@Role …``: set, forget or show one role's member limits."""
        async with in_time(interaction):
            assert interaction.guild_id is not None
            if role.is_default():
                raise InputError(_t("@everyone is every member: set the server's limits without `role`."))
            engine = self.bot.engine
            overrides = await engine.guild_overrides(interaction.guild_id)
            changed = bool(values) or reset
            if changed:
                if reset:
                    overrides = overrides.with_role_limits(role.id, None)
                if values:
                    overrides = overrides.with_role_limits(role.id, RoleLimits(**values))
                await engine.save_guild_overrides(interaction.guild_id, overrides, interaction.user.id)
                log.info(
                    "guild=%s role=%s limits changed by user=%s: %s%s",
                    interaction.guild_id, role.id, interaction.user.id, "reset; " if reset else "", values,
                )  # fmt: skip
            limits = GuildLimits.resolve(self.bot.config, overrides)
            stamp = f"<t:{int(time.time())}:f>"
            title = (
                # Translators: {role} is a role mention; {time} is a Discord timestamp.
                _t("✅ **Limits for {role} updated** ({time})", role=role.mention, time=stamp)
                if changed
                # Translators: {role} is a role mention; {time} is a Discord timestamp.
                else _t("⚙️ **Limits for {role}** ({time})", role=role.mention, time=stamp)
            )
            language = language_of(interaction)
            await reply(
                interaction,
                f"{render(title, language)}\n{describe_limits(limits, overrides, language)}",
                ephemeral=True,
            )

    # Settings: the audit channel and the model ----------------------------------------------------

    @app_commands.command(
        name=_name("command name", "settings"),
        description=_desc("The audit channel, the image model, spoiler channels, keys and blocks here"),
    )
    @app_commands.describe(
        audit_channel=_desc("Post every job's outcome here, with moderator buttons"),
        audit_off=_desc("Stop posting outcomes to an audit channel"),
        model=_desc("The image model this server uses"),
        spoiler_channels=_desc("Channels whose results are always spoilers: mentions or ids, or 'none'"),
        preview=_desc("Live previews: show a running edit's first looks (they cost a little more)"),
    )
    @app_commands.rename(
        audit_channel=_name("option name", "audit_channel"),
        audit_off=_name("option name", "audit_off"),
        model=_name("option name", "model"),
        spoiler_channels=_name("option name", "spoiler_channels"),
        preview=_name("option name", "preview"),
    )
    @app_commands.checks.has_permissions(manage_guild=True)
    async def settings(
        self,
        interaction: discord.Interaction,
        audit_channel: discord.TextChannel | None = None,
        audit_off: bool = False,
        model: str | None = None,
        spoiler_channels: str | None = None,
        preview: bool | None = None,
    ) -> None:
        async with in_time(interaction):
            assert interaction.guild_id is not None
            engine = self.bot.engine
            overrides = await engine.guild_overrides(interaction.guild_id)
            changes: dict[str, Any] = {}
            if audit_channel is not None and audit_off:
                raise InputError(_t("Pick an audit channel or turn it off, not both."))
            if model is not None:
                changes["model"] = self.pick_model(model)
            if spoiler_channels is not None:
                changes["spoiler_channel_ids"] = frozenset(parse_ids(spoiler_channels, "spoiler channels"))
            if preview is not None:
                changes["preview"] = preview
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
            title = _t("✅ **Settings updated**") if changed else _t("⚙️ **Atelier settings here**")
            language = language_of(interaction)
            await reply(
                interaction,
                f"{render(title, language)}\n{self.describe_settings(interaction.guild_id, language)}",
                ephemeral=True,
            )

    async def announce_audit_channel(self, interaction: discord.Interaction, channel: discord.TextChannel) -> None:
        """Say hello in the new audit channel (in the server's language), which also proves the bot may post there."""
        hello = _t(
            "📋 This is Atelier's audit channel now (set by {admin}): every edit's outcome "
            "is posted here, with buttons to delete a result or block a member.",
            admin=interaction.user.mention,
        )
        try:
            await channel.send(
                render(hello, server_language(interaction.guild)), allowed_mentions=discord.AllowedMentions.none()
            )
        except discord.HTTPException:
            raise AtelierError(
                _t(
                    "I can't post in {channel}; give me View Channel, Send Messages and Attach Files there, "
                    "then try again.",
                    channel=channel.mention,
                )
            ) from None

    def pick_model(self, typed: str) -> Any:
        """The model name an admin picked (``UNSET`` to go back to the default)."""
        if typed.strip().lower() == DEFAULT_MODEL:
            return UNSET
        if self.bot.config.model(typed.strip()) is None:
            names = ", ".join(f"`{m.name}`" for m in self.bot.config.models)
            raise InputError(
                # Translators: {typed} is what the admin typed; {models} is a list of model names.
                _t("`{typed}` is not a model this bot allows. Pick one of: {models}.", typed=typed[:60], models=names)
            )
        return typed.strip()

    @settings.autocomplete("model")
    async def model_autocomplete(
        self, interaction: discord.Interaction, current: str
    ) -> list[app_commands.Choice[str]]:
        default = self.bot.config.default_model
        options = [
            (
                # Translators: the choice that goes back to the bot's default image model ({model}); {price} is
                # its price, e.g. "$0.03 an image".
                _t("default ({model}, {price})", model=default.name, price=default.price_text()),
                DEFAULT_MODEL,
            )
        ] + [
            (
                # Translators: {price} is the model's price, e.g. "$0.03 an image"; {sizes} says which sizes it takes.
                _t("{model} · {price} · sizes: {sizes}", model=m.name, price=m.price_text(), sizes=m.sizes.value),
                m.name,
            )
            for m in self.bot.config.models
        ]
        labels = [(say(interaction, text), value) for text, value in options]
        return [
            app_commands.Choice(name=label[:100], value=value)
            for label, value in labels
            if current.lower() in label.lower()
        ][:25]

    def describe_settings(self, guild_id: int, language: str | None) -> str:
        """The server's settings in ``language``: audit channel, spoiler channels, model, API key, blocked
        members."""
        engine = self.bot.engine
        overrides = engine.cached_overrides(guild_id)
        channel = overrides.pick("audit_channel_id", None)
        model = engine.model_for(guild_id)
        # Translators: {price} is the model's price, e.g. "$0.03 an image".
        model_line = _t("• Image model: **{model}** ({price})", model=model.name, price=model.price_text())
        if overrides.is_set("model"):
            model_line = set_here(model_line)
        else:
            # Translators: {setting} is the image model's line of the settings list.
            model_line = _t("{setting} (the bot's default)", setting=model_line)
        if engine.has_guild_key(guild_id):
            key_line = _t(
                "• API key: this server's own key (set by <@{admin}>); its spend is outside the bot's budget",
                admin=engine.guild_key_set_by(guild_id),
            )
        elif engine.guild_keys_enabled:
            key_line = _t("• API key: the bot's key")
        else:
            key_line = _t("• API key: the bot's key (own keys are not enabled by the operator)")
        blocks = engine.blocks_of(guild_id)
        blocked = ", ".join(f"<@{b.user_id}>" for b in blocks[:20]) + (" …" if len(blocks) > 20 else "")
        # Translators: no audit channel, no blocked members.
        none = _pt("setting value", "none")
        spoiler_channels: frozenset[int] = overrides.pick("spoiler_channel_ids", frozenset())
        spoilers = ", ".join(f"<#{c}>" for c in sorted(spoiler_channels))
        lines = [
            # Translators: {channel} is a channel mention, or "none".
            _t("• Audit channel: {channel}", channel=f"<#{channel}>" if channel else none),
            # Translators: {channels} is a list of channel mentions, or "none".
            _t("• Spoiler channels (their threads too): {channels}", channels=spoilers or none),
            model_line,
            self.describe_preview(overrides, model),
            key_line,
            # Translators: {members} is a list of member mentions, or "none".
            _t("• Blocked members: {members}", members=blocked or none),
        ]
        role_limits: Mapping[int, RoleLimits] = overrides.pick("role_limits", {})
        if role_limits:
            lines.append(_t("Limits by role (a member gets the most generous of their roles'):"))
            lines += [describe_role_limits(role, rl) for role, rl in sorted(role_limits.items())]
        return "\n".join(render(line, language) for line in lines)

    @staticmethod
    def describe_preview(overrides: GuildOverrides, model: ImageModel) -> Text:
        """The live previews' line: on or off, and what they show and cost with the server's model."""
        on = bool(overrides.pick("preview", False))
        state = _pt("setting value", "on") if on else _pt("setting value", "off")
        if not model.streamed_partials:
            return _t(
                # Translators: {state} is "on" or "off"; {model} is the image model's name.
                "• Live previews: **{state}**; {model} does not stream partial images, so none are shown",
                state=state,
                model=model.name,
            )
        if on:
            line = _t(
                # Translators: {count} partial images of a running job; {price} is dollars, without the "$".
                "• Live previews: **on** (up to {count} partial images, at most ${price} more per edit)",
                count=model.streamed_partials,
                price=format_price(model.preview_cost()),
            )
        else:
            line = _t(
                # Translators: {count} partial images of a running job; {price} is dollars, without the "$".
                "• Live previews: **off** (on: up to {count} partial images, at most ${price} more per edit)",
                count=model.streamed_partials,
                price=format_price(model.preview_cost()),
            )
        return set_here(line) if overrides.is_set("preview") else line

    # Blocks ---------------------------------------------------------------------------------------

    @app_commands.command(
        name=_name("command name", "block"), description=_desc("Stop a member from using Atelier in this server")
    )
    @app_commands.describe(
        member=_desc("Who to block"), reason=_desc("A note for the moderators (not shown to the member)")
    )
    @app_commands.rename(member=_name("option name", "member"), reason=_name("option name", "reason"))
    @app_commands.checks.has_permissions(manage_guild=True)
    async def block(
        self,
        interaction: discord.Interaction,
        member: discord.Member,
        reason: app_commands.Range[str, 1, 200] | None = None,
    ) -> None:
        async with in_time(interaction):
            assert interaction.guild_id is not None
            if member.bot:
                raise InputError(_t("Bots can't use Atelier anyway."))
            if member.id == interaction.user.id:
                raise InputError(_t("You can't block yourself."))
            await self.bot.engine.block(interaction.guild_id, member.id, reason, interaction.user.id)
            text = (
                # Translators: {reason} is the moderators' note, as they typed it.
                _t(
                    "⛔ {member} can no longer start edits here; edits already accepted still run. Reason: {reason}",
                    member=member.mention,
                    reason=discord.utils.escape_mentions(reason),
                )
                if reason
                else _t(
                    "⛔ {member} can no longer start edits here; edits already accepted still run.",
                    member=member.mention,
                )
            )
            await reply(interaction, say(interaction, text), ephemeral=True)

    @app_commands.command(
        name=_name("command name", "unblock"),
        description=_desc("Let a blocked member use Atelier in this server again"),
    )
    @app_commands.describe(member=_desc("Who to unblock"))
    @app_commands.rename(member=_name("option name", "member"))
    @app_commands.checks.has_permissions(manage_guild=True)
    async def unblock(self, interaction: discord.Interaction, member: discord.User) -> None:
        async with in_time(interaction):
            assert interaction.guild_id is not None
            if not await self.bot.engine.unblock(interaction.guild_id, member.id, interaction.user.id):
                raise InputError(_t("{member} is not blocked here.", member=member.mention))
            await reply(
                interaction,
                say(interaction, _t("✅ {member} can use Atelier here again.", member=member.mention)),
                ephemeral=True,
            )

    # The server's own API key -------------------------------------------------------------------

    key = app_commands.Group(name=_name("command name", "key"), description=_desc("This server's own image API key"))

    @key.command(
        name=_name("command name", "set"),
        description=_desc("Use this server's own image API key (opens a private form)"),
    )
    @app_commands.checks.has_permissions(manage_guild=True)
    async def key_set(self, interaction: discord.Interaction) -> None:
        if not self.bot.engine.guild_keys_enabled:
            raise AtelierError(NOT_ENABLED)
        modal = ServerKeyModal(language_of(interaction))
        await interaction.response.send_modal(modal)
        modal.stop()  # the submission is routed by custom_id (see on_interaction), also after a restart

    @key.command(
        name=_name("command name", "clear"),
        description=_desc("Stop using this server's own API key (the bot's key is used again)"),
    )
    @app_commands.checks.has_permissions(manage_guild=True)
    async def key_clear(self, interaction: discord.Interaction) -> None:
        async with in_time(interaction):
            assert interaction.guild_id is not None
            removed = await self.bot.engine.clear_guild_key(interaction.guild_id, interaction.user.id)
            text = (
                _t("✅ This server's own API key was removed; new edits use the bot's key.")
                if removed
                else _t("This server has no API key of its own; it uses the bot's key.")
            )
            await reply(interaction, say(interaction, text), ephemeral=True)

    @commands.Cog.listener()
    async def on_interaction(self, interaction: discord.Interaction) -> None:
        """Route key-form submissions by custom_id, whether or not this process opened the form."""
        if interaction.type is not discord.InteractionType.modal_submit or not isinstance(interaction.data, dict):
            return
        if interaction.data.get("custom_id") == SERVER_KEY_MODAL:
            await guarded(interaction, self.save_key(interaction), "the server key form")

    async def save_key(self, interaction: discord.Interaction) -> None:
        async with in_time(interaction):
            if interaction.guild_id is None or not interaction.permissions.manage_guild:
                raise AtelierError(_t("You need the Manage Server permission for this."))
            value = modal_values(interaction.data).get(SERVER_KEY_FIELD, "")
            await self.bot.engine.set_guild_key(interaction.guild_id, value, interaction.user.id)
            del value
            saved = _t(
                "✅ This server's own API key is set (by {admin}) and stored encrypted. New edits here "
                "use it and don't count against the bot's budget; member and server limits still apply. If the image "
                "service refuses it, this server's audit channel (or you) will be told.",
                admin=interaction.user.mention,
            )
            await reply(interaction, say(interaction, saved), ephemeral=True)

    async def cog_load(self) -> None:
        for handler in logging.getLogger().handlers:
            handler.addFilter(self.hide_key_form)

    async def cog_unload(self) -> None:
        for handler in logging.getLogger().handlers:
            handler.removeFilter(self.hide_key_form)


async def setup(bot: AtelierClient) -> None:
    """Load the admin cog."""
    await bot.add_cog(AdminCog(bot))
