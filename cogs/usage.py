"""``/usage``: a member's own edits today, what is left, and their jobs in the queue."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

import discord
from discord import app_commands
from discord.ext import commands

from bot.jobs import JobStatus
from bot.limits import describe_wait, resets_text
from cogs.edit import requester

if TYPE_CHECKING:
    from bot.client import AtelierBot


class UsageCog(commands.Cog):
    """The /usage command."""

    def __init__(self, bot: AtelierBot) -> None:
        self.bot = bot

    @app_commands.command(name="usage", description="Your edits today, what is left, and your jobs in the queue")
    async def usage(self, interaction: discord.Interaction) -> None:
        who = requester(interaction)
        now = time.time()
        usage = self.bot.jobs.usage(who.user_id, who.guild_id)
        limits = await self.bot.jobs.limits_for(who.guild_id)
        config = self.bot.config
        daily = limits.user_daily_limit if limits else config.user_daily_limit
        exempt = who.is_manager or bool(limits and limits.exempt_role_ids & who.role_ids)
        lines = ["📊 **Your Atelier usage** (days run on UTC)"]
        if exempt:
            lines.append(f"Today: {usage.user_today} edits. You are exempt from member limits.")
        elif daily is None:
            lines.append(f"Today: {usage.user_today} edits (no daily limit).")
        else:
            left = max(0, daily - usage.user_today)
            lines.append(
                f"Today: {usage.user_today} of {daily} edits used, **{left} left**; the limit {resets_text(now)}."
            )
        cooldown = limits.user_cooldown_seconds if limits else config.user_cooldown_seconds
        if cooldown and not exempt and usage.user_last_accepted is not None:
            wait = usage.user_last_accepted + cooldown - now
            if wait > 0:
                lines.append(f"Next edit possible in {describe_wait(wait)}.")
        active = await self.bot.store.active_jobs_for_user(who.user_id)
        if active:
            lines.append(f"In progress ({len(active)} of at most {config.user_max_active}):")
            for job in active:
                if job.status is JobStatus.RUNNING:
                    state = "running"
                else:
                    place = self.bot.jobs.position(job.id)
                    state = f"queued, position {place}" if place else "queued"
                prompt = discord.utils.escape_mentions(job.prompt[:60])
                lines.append(f"• `{job.id}` {state}: {prompt}")
        else:
            lines.append("Nothing of yours is queued or running.")
        await interaction.response.send_message("\n".join(lines), ephemeral=True)


async def setup(bot: AtelierBot) -> None:
    """Load the usage cog."""
    await bot.add_cog(UsageCog(bot))
