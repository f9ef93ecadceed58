"""Where a job's status and result are shown, rebuilt from the ``Destination`` the job stored.

Two kinds, both usable after a restart because they hold only ids:
- ``interaction``: the acknowledged message, edited through the interaction token
  while it lives (15 minutes); a private job's is visible only to its requester;
- ``message``: a message the bot posted with its own token (refines in threads,
  "Edit images" replies).
When the token has expired, or Discord refuses it, the result goes out as a new
channel message that mentions the requester only, or, for a private job, as a
direct message (and if the member's DMs are closed, it is not delivered).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

import discord

from bot.errors import AtelierError
from bot.images import OutputImage
from bot.jobs import Delivered, Destination
from cogs.errors import error_text
from cogs.uploads import image_file

log = logging.getLogger(__name__)

MAX_CONTENT = 2000
TOKEN_LIFETIME = 15 * 60
# Stop using a token a little before Discord does, so a slow upload does not straddle expiry.
TOKEN_MARGIN = 60
_TOKEN_GONE = {401, 404}
_CANNOT_DM = 50007

# What a result reads like and which buttons it has, where it is going.
Compose = Callable[[Delivered], tuple[str, discord.ui.View]]


def clip(text: str, limit: int) -> str:
    """Shorten ``text`` to ``limit`` characters, marking the cut."""
    return text if len(text) <= limit else text[: limit - 1] + "…"


def quote_prompt(prompt: str, limit: int = 600) -> str:
    """A prompt as a block quote, shortened, with @everyone/@here/role/user pings neutralised."""
    flat = " ".join(discord.utils.escape_mentions(prompt).split())
    return "> " + discord.utils.escape_markdown(clip(flat, limit), as_needed=True)


def message_link(guild_id: int | None, channel_id: int, message_id: int) -> str:
    """A jump link to a message (``@me`` for a direct message)."""
    return f"https://discord.com/channels/{guild_id or '@me'}/{channel_id}/{message_id}"


def interaction_target(
    interaction: discord.Interaction, message_id: int | None, *, private: bool = False
) -> Destination:
    """What to store to reach an interaction's original response later (``private``: it is ephemeral)."""
    data = {
        "type": "interaction",
        "app_id": interaction.application_id,
        "token": interaction.token,
        "expires_at": interaction.created_at.timestamp() + TOKEN_LIFETIME,
        "message_id": message_id,
        "channel_id": interaction.channel_id,
        "user_id": interaction.user.id,
        "private": private,
    }
    return Destination(upload_limit=interaction.filesize_limit, data=data)


def message_target(message: discord.Message, interaction: discord.Interaction | None, upload_limit: int) -> Destination:
    """What to store to reach a bot-posted status message (and, for private notes, the interaction)."""
    data: dict[str, Any] = {"type": "message", "channel_id": message.channel.id, "message_id": message.id}
    if interaction is not None:
        data |= {
            "app_id": interaction.application_id,
            "token": interaction.token,
            "expires_at": interaction.created_at.timestamp() + TOKEN_LIFETIME,
            "user_id": interaction.user.id,
        }
    return Destination(upload_limit=upload_limit, data=data)


class Delivery:
    """Shows one job's status, result or failure; built from the job's stored target."""

    def __init__(self, bot: discord.Client, destination: Destination, user_id: int) -> None:
        target = destination.data
        self.bot = bot
        self.target = target
        self.user_id = user_id
        self.private = bool(target.get("private"))
        self.channel = bot.get_partial_messageable(int(target["channel_id"]))
        token = target.get("token")
        self.webhook: discord.Webhook | None = None
        if token and target.get("app_id"):
            # The same application webhook discord.py builds for ``Interaction.followup``: it may
            # send ephemeral messages, which a plain partial webhook may not.
            payload = {"id": int(target["app_id"]), "type": 3, "token": token}
            self.webhook = discord.Webhook.from_state(payload, bot._connection)  # type: ignore[arg-type]

    @property
    def token_alive(self) -> bool:
        return self.webhook is not None and time.time() < float(self.target.get("expires_at") or 0) - TOKEN_MARGIN

    @property
    def on_interaction(self) -> bool:
        return bool(self.target["type"] == "interaction")

    async def _edit(self, **fields: Any) -> tuple[int, int]:
        """Edit the status message, through the token or with the bot's own token; its (channel, message) ids."""
        message_id = int(self.target.get("message_id") or 0)
        if self.on_interaction:
            if not self.token_alive or self.webhook is None or not message_id:
                raise _TokenExpiredError
            try:
                edited = await self.webhook.edit_message(message_id, **fields)
            except discord.HTTPException as exc:
                if exc.status in _TOKEN_GONE:
                    raise _TokenExpiredError from None
                raise
            return edited.channel.id, edited.id
        message = await self.channel.get_partial_message(message_id).edit(**fields)
        return message.channel.id, message.id

    async def status(self, content: str, view: discord.ui.View | None = None) -> None:
        """Replace the status text (and its buttons); quietly skipped once the token is gone."""
        try:
            await self._edit(content=clip(content, MAX_CONTENT), view=view)
        except _TokenExpiredError:
            pass
        except discord.HTTPException as exc:
            log.info("could not update a status message (%s %s)", exc.status, exc.code)

    async def result(self, image: OutputImage, filename: str, compose: Compose) -> tuple[int, int, Delivered]:
        """Show the finished image where it belongs; its (channel, message) ids and how it went.

        Raises ``discord.HTTPException`` if Discord refuses it, ``DirectMessagesClosedError`` if a
        late private result cannot be sent to its member.
        """
        delivered = Delivered.PRIVATE if self.private else Delivered.POSTED
        content, view = compose(delivered)
        try:
            channel_id, message_id = await self._edit(
                content=clip(content, MAX_CONTENT), attachments=[image_file(image, filename)], view=view
            )
            return channel_id, message_id, delivered
        except _TokenExpiredError:
            pass
        if self.private:
            content, view = compose(Delivered.DIRECT_MESSAGE)
            message = await self._direct(content, image_file(image, filename), view)
            return message.channel.id, message.id, Delivered.DIRECT_MESSAGE
        message = await self._late(content, image_file(image, filename), view)
        return message.channel.id, message.id, Delivered.POSTED

    async def _direct(self, content: str, file: discord.File | None, view: discord.ui.View | None) -> discord.Message:
        """After the token's 15 minutes, a private job's news goes to its member by direct message."""
        channel = await self.bot.create_dm(discord.Object(self.user_id))
        kwargs: dict[str, Any] = {"content": clip(content, MAX_CONTENT)}
        if file is not None:
            kwargs["file"] = file
        if view is not None:
            kwargs["view"] = view
        try:
            return await channel.send(**kwargs)
        except discord.Forbidden as exc:
            if exc.code == _CANNOT_DM:
                raise DirectMessagesClosedError from None
            raise

    async def _late(self, content: str, file: discord.File | None, view: discord.ui.View | None) -> discord.Message:
        """After the token's 15 minutes: a new channel message that pings the requester only."""
        kwargs: dict[str, Any] = {
            "content": clip(f"<@{self.user_id}> {content}", MAX_CONTENT),
            "allowed_mentions": discord.AllowedMentions(users=[discord.Object(self.user_id)]),
        }
        if file is not None:
            kwargs["file"] = file
        if view is not None:
            kwargs["view"] = view
        return await self.channel.send(**kwargs)

    async def failure(self, error: AtelierError) -> None:
        """Say the job failed and why; never raises."""
        text = clip(error_text(error), MAX_CONTENT)
        try:
            if self.private:
                await self._private_failure(text)
                return
            if error.private and self.on_interaction and self.token_alive and self.webhook is not None:
                # Only the requester needs to know; the public "working" message goes away.
                message_id = self.target.get("message_id")
                if message_id is not None:
                    await self.webhook.delete_message(int(message_id))
                await self.webhook.send(text, ephemeral=True)
                return
            try:
                await self._edit(content=text, attachments=[], view=None)
            except _TokenExpiredError:
                await self._late(text, None, None)
                return
            if error.private and self.token_alive and self.webhook is not None:
                await self.webhook.send(text, ephemeral=True)
        except discord.HTTPException as exc:
            log.warning("could not report a failure (%s %s): %s", exc.status, exc.code, error.log_detail)

    async def _private_failure(self, text: str) -> None:
        """A private job failed: say so where only its member sees it (by DM once the token is gone)."""
        try:
            await self._edit(content=text, attachments=[], view=None)
        except _TokenExpiredError:
            try:
                await self._direct(text, None, None)
            except DirectMessagesClosedError:
                log.info("could not tell user=%s about a failed private edit: DMs closed", self.user_id)


class _TokenExpiredError(Exception):
    """The interaction token can no longer be used."""


class DirectMessagesClosedError(Exception):
    """The member accepts no direct message from the bot (Discord error 50007)."""
