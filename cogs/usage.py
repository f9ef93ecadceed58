"""``/usage``: a member's own edits today, what is left, and their jobs in the queue."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

import discord
from discord import app_commands
from discord.ext import commands

from bot.limits import describe_wait, resets_text
from bot.states import JobState
from cogs.requests import requester

STATE_WORDS = {
    JobState.ACCEPTED: "starting",
    JobState.PREPARING: "fetching images",
    JobState.RUNNING: "running",
    JobState.DELIVERING: "posting the result",
    JobState.INTERRUPTED: "resuming after a restart",
}

if TYPE_CHECKING:
    from cogs.client import AtelierBot


class UsageCog(commands.Cog):
    """The /usage command."""

    def __init__(self, bot: AtelierBot) -> None:
        self.bot = bot

    @app_commands.command(name="usage", description="Your edits today, what is left, and your jobs in the queue")
    async def usage(self, interaction: discord.Interaction) -> None:
        who = requester(interaction)
        now = time.time()
        standing, _ = await self.bot.engine.standing(who)
        lines = ["📊 **Your Atelier usage** (days run on UTC)"]
        if standing.exempt:
            lines.append(f"Today: {standing.used_today} edits. You are exempt from member limits.")
        elif standing.daily_limit is None:
            lines.append(f"Today: {standing.used_today} edits (no daily limit).")
        else:
            lines.append(
                f"Today: {standing.used_today} of {standing.daily_limit} edits used, "
                f"**{standing.left_today} left**; the limit {resets_text(now)}."
            )
        if standing.cooldown_wait > 0 and not standing.exempt:
            lines.append(f"Next edit possible in {describe_wait(standing.cooldown_wait)}.")
        active = await self.bot.engine.unfinished_of(who.user_id)
        if active:
            lines.append(f"In progress ({len(active)} of at most {standing.max_active}):")
            for job in active:
                if job.state is JobState.QUEUED:
                    place = self.bot.engine.position(job.id)
                    state = f"queued, position {place}" if place else "queued"
                else:
                    state = STATE_WORDS.get(job.state, job.state.value)
                prompt = discord.utils.escape_mentions(job.request.prompt[:60])
                lines.append(f"• `{job.id}` {state}: {prompt}")
        else:
            lines.append("Nothing of yours is queued or running.")
        await interaction.response.send_message("\n".join(lines), ephemeral=True)


async def setup(bot: AtelierBot) -> None:
    """Load the usage cog."""
    await bot.add_cog(UsageCog(bot))
