"""``/usage``: a member's own edits today, what is left, and their jobs in the queue, in their language."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

import discord
from discord import app_commands
from discord.ext import commands

from bot.core.quota import describe_wait, resets_text
from bot.core.states import JobState
from bot.i18n import Text, _nt, _pt, _t
from cogs.core.answers import in_time, reply
from cogs.core.language import _desc, _name, say
from cogs.core.requests import requester

STATE_WORDS: dict[JobState, Text] = {
    JobState.ACCEPTED: _pt("job state", "starting"),
    JobState.PREPARING: _pt("job state", "fetching images"),
    JobState.RUNNING: _pt("job state", "running"),
    JobState.DELIVERING: _pt("job state", "posting the result"),
    JobState.INTERRUPTED: _pt("job state", "resuming after a restart"),
}

if TYPE_CHECKING:
    from cogs.core.host import AtelierClient


def queued(place: int | None) -> Text:
    """A queued job's state, with its place in line when known."""
    return _pt("job state", "queued, position {place}", place=place) if place else _pt("job state", "queued")


class UsageCog(commands.Cog):
    """The /usage command."""

    def __init__(self, bot: AtelierClient) -> None:
        self.bot = bot

    @app_commands.command(
        name=_name("command name", "usage"),
        description=_desc("Your edits today, what is left, and your jobs in the queue"),
    )
    async def usage(self, interaction: discord.Interaction) -> None:
        async with in_time(interaction):
            lines = await self.usage_lines(interaction)
            await reply(interaction, "\n".join(lines), ephemeral=True)

    async def usage_lines(self, interaction: discord.Interaction) -> list[str]:
        """The answer's lines: today's use, the limits and where they come from, the member's jobs in progress."""
        who = requester(interaction)
        now = time.time()
        standing, _ = await self.bot.engine.standing(who)
        texts = [_t("📊 **Your Atelier usage** (days run on UTC)")]
        # The English singulars are the plurals on purpose (the English answer is unchanged for every count);
        # languages whose words agree with the number get their own forms from the catalog.
        if standing.exempt:
            texts.append(
                _nt(
                    "Today: {count} edit. You are exempt from member limits.",
                    "Today: {count} edits. You are exempt from member limits.",
                    standing.used_today,
                )
            )
        elif standing.daily_limit is None:
            texts.append(
                _nt(
                    "Today: {count} edit (no daily limit).",
                    "Today: {count} edits (no daily limit).",
                    standing.used_today,
                )
            )
        else:
            texts.append(
                # Translators: {used} of the member's {count} edits today; {resets} is e.g. "resets at 00:00 UTC
                # (in 5 h 10 min)".
                _nt(
                    "Today: {used} of {count} edit used, **{left} left**; the limit {resets}.",
                    "Today: {used} of {count} edits used, **{left} left**; the limit {resets}.",
                    standing.daily_limit,
                    used=standing.used_today,
                    left=standing.left_today,
                    resets=resets_text(now),
                )
            )
        mine = standing.limits
        if mine is not None and mine.from_roles and not standing.exempt:
            roles = ", ".join(f"<@&{role}>" for role in mine.from_roles)
            texts.append(
                # Translators: {roles} is one or more role mentions.
                _t("Your limits come from {roles}.", roles=roles)
                if mine.all_from_roles
                # Translators: {roles} is one or more role mentions; the member's other limits are the server's.
                else _t("Your limits come from {roles}; the others are this server's.", roles=roles)
            )
        if standing.cooldown_wait > 0 and not standing.exempt:
            # Translators: {wait} is a duration, e.g. "40 s" or "2 min".
            texts.append(_t("Next edit possible in {wait}.", wait=describe_wait(standing.cooldown_wait)))
        active = await self.bot.engine.unfinished_of(who.user_id)
        lines = [say(interaction, text) for text in texts]
        if active:
            # Translators: the member has {count} jobs in progress; at most {most} at once.
            heading = _t("In progress ({count} of at most {most}):", count=len(active), most=standing.max_active)
            lines.append(say(interaction, heading))
            for job in active:
                state: Text | str = (
                    queued(self.bot.engine.position(job.id))
                    if job.state is JobState.QUEUED
                    else STATE_WORDS.get(job.state, job.state.value)
                )
                prompt = discord.utils.escape_mentions(job.request.prompt[:60])  # as typed, never translated
                lines.append(f"• `{job.id}` {say(interaction, state)}: {prompt}")
        else:
            lines.append(say(interaction, _t("Nothing of yours is queued or running.")))
        return lines


async def setup(bot: AtelierClient) -> None:
    """Load the usage cog."""
    await bot.add_cog(UsageCog(bot))
