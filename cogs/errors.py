"""The one place where errors become Discord replies.

``AtelierTree`` is installed with ``tree_cls=`` so every slash-command error
arrives here; components and modals call ``send_error`` themselves.
"""

from __future__ import annotations

import logging

import discord
from discord import app_commands

from bot.errors import AtelierError

log = logging.getLogger(__name__)

UNEXPECTED = "Something went wrong on our side; it has been logged. Please try again."


def error_text(error: AtelierError) -> str:
    """How an error reads in Discord."""
    return f"❌ {error.user_message}"


async def send_error(interaction: discord.Interaction, error: AtelierError) -> None:
    """Answer ``interaction`` with ``error``: a reply if not yet answered, else a follow-up.

    Never answers an interaction twice, and never lets a Discord failure here escape.
    """
    text = error_text(error)
    try:
        if not interaction.response.is_done():
            await interaction.response.send_message(text, ephemeral=error.private)
        else:
            await interaction.followup.send(text, ephemeral=error.private)
    except discord.HTTPException as exc:
        log.warning("could not tell the member about an error (%s): %s", exc.status, error.log_detail)


async def report_unexpected(interaction: discord.Interaction, exc: BaseException, where: str) -> None:
    """Log an unexpected exception with its context and tell the member, privately."""
    log.error("unexpected error in %s (interaction %s)", where, interaction.id, exc_info=exc)
    await send_error(interaction, AtelierError(UNEXPECTED))


class AtelierTree(app_commands.CommandTree):
    """A command tree whose errors all reach ``send_error``."""

    async def on_error(self, interaction: discord.Interaction, error: app_commands.AppCommandError) -> None:
        original = error.original if isinstance(error, app_commands.CommandInvokeError) else error
        if isinstance(original, AtelierError):
            await send_error(interaction, original)
        elif isinstance(original, app_commands.MissingPermissions):
            await send_error(interaction, AtelierError("You need the Manage Server permission for this."))
        elif isinstance(original, app_commands.NoPrivateMessage):
            await send_error(interaction, AtelierError("This command works only in a server."))
        elif isinstance(original, app_commands.CheckFailure):
            await send_error(interaction, AtelierError("You can't use this command here."))
        elif isinstance(original, app_commands.TransformerError):
            await send_error(interaction, AtelierError(f"That value for {original.type.name} is not valid."))
        else:
            name = interaction.command.qualified_name if interaction.command else "?"
            await report_unexpected(interaction, original, f"/{name}")
