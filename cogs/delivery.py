"""Where a job's status and result are shown: the acknowledged interaction message, or a
message the bot posted itself (threads, where interaction follow-ups cannot go).
"""

from __future__ import annotations

import io
import logging
from typing import Protocol

import discord

from bot.errors import AtelierError
from bot.images import OutputImage
from cogs.errors import error_text

log = logging.getLogger(__name__)

DEFAULT_UPLOAD_LIMIT = 10 * 1024 * 1024
MAX_CONTENT = 2000


def clip(text: str, limit: int) -> str:
    """Shorten ``text`` to ``limit`` characters, marking the cut."""
    return text if len(text) <= limit else text[: limit - 1] + "…"


def quote_prompt(prompt: str, limit: int = 600) -> str:
    """A prompt as a block quote, shortened, with @everyone/@here/role/user pings neutralised."""
    flat = " ".join(discord.utils.escape_mentions(prompt).split())
    return "> " + discord.utils.escape_markdown(clip(flat, limit), as_needed=True)


class Delivery(Protocol):
    """What a running job needs to show its progress and its outcome."""

    @property
    def upload_limit(self) -> int:
        """Largest file, in bytes, this destination accepts."""
        ...

    async def status(self, content: str) -> None:
        """Replace the status text (queue position, progress)."""

    async def result(self, content: str, image: OutputImage, filename: str, view: discord.ui.View) -> None:
        """Show the finished image; raises ``discord.HTTPException`` if Discord refuses it."""

    async def failure(self, error: AtelierError) -> None:
        """Say the job failed and why; never raises."""


def _file(image: OutputImage, filename: str) -> discord.File:
    return discord.File(io.BytesIO(image.data), filename=filename)


class InteractionDelivery:
    """Edits the original response of a slash command (valid for 15 minutes)."""

    def __init__(self, interaction: discord.Interaction) -> None:
        self.interaction = interaction

    @property
    def upload_limit(self) -> int:
        return self.interaction.filesize_limit or DEFAULT_UPLOAD_LIMIT

    async def status(self, content: str) -> None:
        try:
            await self.interaction.edit_original_response(content=clip(content, MAX_CONTENT))
        except discord.HTTPException as exc:
            log.info("could not update status (%s %s)", exc.status, exc.code)

    async def result(self, content: str, image: OutputImage, filename: str, view: discord.ui.View) -> None:
        await self.interaction.edit_original_response(
            content=clip(content, MAX_CONTENT), attachments=[_file(image, filename)], view=view
        )

    async def failure(self, error: AtelierError) -> None:
        try:
            if error.private:
                # Only the requester needs to know; the public "working" message goes away.
                await self.interaction.delete_original_response()
                await self.interaction.followup.send(error_text(error), ephemeral=True)
            else:
                await self.interaction.edit_original_response(
                    content=clip(error_text(error), MAX_CONTENT), attachments=[], view=None
                )
        except discord.HTTPException as exc:
            log.warning("could not report a failure (%s %s): %s", exc.status, exc.code, error.log_detail)


class MessageDelivery:
    """Edits a message the bot posted with its own token (in a thread, or after 15 minutes).

    ``interaction``, when given, receives private errors as an ephemeral follow-up.
    """

    def __init__(self, message: discord.Message, interaction: discord.Interaction | None = None) -> None:
        self.message = message
        self.interaction = interaction

    @property
    def upload_limit(self) -> int:
        guild = self.message.guild
        return guild.filesize_limit if guild is not None else DEFAULT_UPLOAD_LIMIT

    async def status(self, content: str) -> None:
        try:
            await self.message.edit(content=clip(content, MAX_CONTENT))
        except discord.HTTPException as exc:
            log.info("could not update status (%s %s)", exc.status, exc.code)

    async def result(self, content: str, image: OutputImage, filename: str, view: discord.ui.View) -> None:
        await self.message.edit(
            content=clip(content, MAX_CONTENT), attachments=[_file(image, filename)], view=view
        )

    async def failure(self, error: AtelierError) -> None:
        try:
            await self.message.edit(content=clip(error_text(error), MAX_CONTENT), attachments=[], view=None)
            if error.private and self.interaction is not None:
                await self.interaction.followup.send(error_text(error), ephemeral=True)
        except discord.HTTPException as exc:
            log.warning("could not report a failure (%s %s): %s", exc.status, exc.code, error.log_detail)
