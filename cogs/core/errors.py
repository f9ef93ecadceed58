"""The one error path: every slash command, button, select and form ends here when it fails.

``AtelierTree`` (installed with ``tree_cls=``) sends command errors to ``answer_error``;
component and form callbacks run inside ``guarded``, which does the same. An
``AtelierError`` becomes its member text (private when it concerns only them);
anything else is a bug: the member gets the one apology with an error reference
(``bot.errors.unexpected_text``) and the log gets the traceback under it.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable

import discord
from discord import app_commands

from bot.errors import AtelierError, UnexpectedError
from bot.i18n import Text, _t
from cogs.core.answers import reply
from cogs.core.language import language_of, render

log = logging.getLogger(__name__)


def error_text(error: AtelierError, language: str | None) -> str:
    """How an error reads in Discord, in ``language``."""
    return failure_text(error.user_message, language)


def failure_text(reason: Text, language: str | None) -> str:
    """How a failure's reason reads in Discord, in ``language``."""
    return f"❌ {render(reason, language)}"


def as_atelier_error(error: BaseException, where: str) -> AtelierError:
    """The member-facing error for whatever went wrong (a bug is logged under a reference)."""
    original = error.original if isinstance(error, app_commands.CommandInvokeError) else error
    if isinstance(original, AtelierError):
        return original
    if isinstance(original, app_commands.MissingPermissions):
        return AtelierError(_t("You need the Manage Server permission for this."))
    if isinstance(original, app_commands.NoPrivateMessage):
        return AtelierError(_t("This command works only in a server."))
    if isinstance(original, app_commands.CheckFailure):
        return AtelierError(_t("You can't use this command here."))
    if isinstance(original, app_commands.TransformerError):
        return AtelierError(_t("That value for {option} is not valid.", option=original.type.name))
    return UnexpectedError.capture(original, where)


async def send_error(interaction: discord.Interaction, error: AtelierError) -> None:
    """Answer ``interaction`` with ``error``: a reply if not yet answered, else a follow-up.

    Never answers an interaction twice, and never lets a Discord failure here escape.
    """
    text = error_text(error, language_of(interaction))
    try:
        await reply(interaction, text, ephemeral=error.private)
    except discord.HTTPException as exc:
        log.warning("could not tell the member about an error (%s): %s", exc.status, error.log_detail)


async def answer_error(interaction: discord.Interaction, error: BaseException, where: str) -> None:
    """Tell the member what went wrong with ``interaction``."""
    await send_error(interaction, as_atelier_error(error, where))


async def guarded(interaction: discord.Interaction, work: Awaitable[None], where: str) -> None:
    """Run a component or form callback; any failure takes the one error path."""
    try:
        await work
    except Exception as exc:
        await answer_error(interaction, exc, where)


class AtelierTree(app_commands.CommandTree):
    """A command tree whose errors all take the one error path."""

    async def on_error(self, interaction: discord.Interaction, error: app_commands.AppCommandError) -> None:
        name = interaction.command.qualified_name if interaction.command else "?"
        await answer_error(interaction, error, f"/{name}")


class AtelierView(discord.ui.View):
    """A view whose item callbacks' errors take the one error path."""

    async def on_error(
        self, interaction: discord.Interaction, error: Exception, item: discord.ui.Item[discord.ui.View]
    ) -> None:
        await answer_error(interaction, error, f"component {getattr(item, 'custom_id', item)}")
