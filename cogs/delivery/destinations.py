"""Where a job's status and result are shown, rebuilt from the ``Destination`` the job stored.

Two kinds, both usable after a restart because they hold only ids:
- ``interaction``: the acknowledged message, edited through the interaction token
  while it lives (15 minutes); a private job's is visible only to its requester;
- ``message``: a message the bot posted with its own token (refines in threads,
  "Edit images" replies).
A result is a card (``cogs.delivery.card``): the status message is edited into it.
When the token has expired, or Discord refuses it, the result goes out as a new
channel message that mentions the requester only, or, for a private job, as a
direct message (and if the member's DMs are closed, it is not delivered). A result
or failure that Discord keeps rate-limiting on the token (429), or a failure the token
has not taken within ``NOTICE_WAIT``, goes the same way.

A request on the token, once made, always runs to its end: discord.py sends a token's
requests one at a time under one lock, and when Discord says the bucket is spent it
sleeps before letting go of that lock. A task cancelled during that sleep keeps the lock
for good, and every later request on the token (the result, the failure) would wait forever.

A public status message outlives both of Discord's edit windows by moving: a little
before the token's 15 minutes, or before a bot message's first hour (after which Discord
refuses most edits with error 30046), the status is posted afresh as the bot's own
message and the old one is edited once to point to it.

A live preview turns the status message into a card (``cogs.delivery.preview``), and the
destination says so (``card``, stored before the first preview goes out): Discord never turns
a card back into text, so every later word on it (a failure, a pause, a pointer) goes as a card.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

import discord

from bot.core.job import Delivered, Destination
from bot.i18n import Text, _t
from cogs.core.language import render
from cogs.core.text import clip, message_link
from cogs.delivery.preview import PreviewCard, PreviewPicture, status_card

log = logging.getLogger(__name__)

MAX_CONTENT = 2000
TOKEN_LIFETIME = 15 * 60
# Stop using a token a little before Discord does, so a slow upload does not straddle expiry.
TOKEN_MARGIN = 60
_TOKEN_GONE = {401, 404}
_CANNOT_DM = 50007
# Discord refuses most edits of a message older than an hour (30046, sent as a 429);
# a status message moves to a fresh one a little before.
MOVE_AFTER = 55 * 60
_OLD_MESSAGE_EDITS = 30046
_RATE_LIMITED = 429
# A failure notice is one small edit: a token that has not taken it by then is stuck, and the channel is
# used. (A result is not timed: its upload may take long, and a second copy of it would be a second post.)
NOTICE_WAIT = 20.0

T = TypeVar("T")
# Requests on interaction tokens, kept until they end (asyncio holds tasks weakly; a caller may stop waiting).
_IN_FLIGHT: set[asyncio.Task[Any]] = set()

# A result's card and its files, where it is going (made afresh for each try: a file is read once).
Compose = Callable[[Delivered], tuple[discord.ui.LayoutView, list[discord.File]]]


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
        "guild_id": interaction.guild_id,
        "user_id": interaction.user.id,
        "private": private,
    }
    return Destination(upload_limit=interaction.filesize_limit, data=data)


def message_target(
    message: discord.Message,
    interaction: discord.Interaction | None,
    upload_limit: int,
    guild_id: int | None = None,
) -> Destination:
    """What to store to reach a bot-posted status message (and, for private notes, the interaction)."""
    data: dict[str, Any] = {"type": "message", "channel_id": message.channel.id, "message_id": message.id}
    data["guild_id"] = guild_id or (message.guild.id if message.guild else None)
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

    def __init__(self, bot: discord.Client, destination: Destination, user_id: int, language: str | None) -> None:
        target = destination.data
        self.destination = destination
        self.language = language  # its member's: what the status, result and failure are written in
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

    @property
    def is_card(self) -> bool:
        """Whether the status message is a card (a live preview made it one): it takes no plain text again."""
        return bool(self.target.get("card"))

    def as_card(self) -> Destination:
        """This destination, marked as a card (stored before a preview turns the message into one)."""
        return Destination(self.destination.upload_limit, {**self.target, "card": True})

    def _words(self, text: str, view: discord.ui.View | None = None) -> dict[str, Any]:
        """An edit that puts ``text`` (and ``view``'s buttons) in place of whatever the status showed: plain
        text, or the same words as a card on a message that is one (its preview image goes). The card's edit
        clears the text too: a message marked a card may not have become one (its preview never went out),
        and Discord takes the card only from an edit that clears what a card may not carry."""
        if self.is_card:
            return {"content": None, "embeds": [], "view": status_card(text, view), "attachments": []}
        return {"content": text, "attachments": [], "view": view}

    def _too_old(self) -> bool:
        """A bot message near the end of the hour in which Discord lets it be edited freely."""
        message_id = int(self.target.get("message_id") or 0)
        return bool(message_id) and time.time() - discord.utils.snowflake_time(message_id).timestamp() >= MOVE_AFTER

    @property
    def guild_id(self) -> int | None:
        """The server the status is in (``None`` in direct messages, or for targets stored before it was)."""
        value = self.target.get("guild_id")
        return int(value) if value else None

    @property
    def move_due(self) -> bool:
        """Whether a public status should move to a fresh message before its next edit."""
        if self.private:
            return False  # only the interaction token can show a private message; it ends by DM
        if self.on_interaction:
            return time.time() >= float(self.target.get("expires_at") or 0) - 2 * TOKEN_MARGIN
        return self._too_old()

    async def move(self, content: str, view: discord.ui.View | None) -> Destination:
        """Post the status afresh as the bot's own message and point the old one to it.

        Returns where the job is shown from now on; raises ``discord.HTTPException`` if the
        new message cannot be posted (the bot may not write in the channel).
        """
        kwargs: dict[str, Any] = {"content": clip(content, MAX_CONTENT)}
        if view is not None:
            kwargs["view"] = view
        message = await self.channel.send(**kwargs)
        await self._point_to(message, _t("➡️ This edit continues in a newer message, which I can keep updating:"))
        return message_target(message, None, self.destination.upload_limit, self.guild_id)

    async def _point_to(self, message: discord.Message, words: Text) -> None:
        """Edit the old status message, once, to link to ``message`` (best effort)."""
        link = message_link(self.guild_id, message.channel.id, message.id)
        with contextlib.suppress(_CannotEditError, discord.HTTPException):
            await self._edit(**self._words(f"{render(words, self.language)} {link}"))

    async def _edit(self, *, final: bool = False, wait: float | None = None, **fields: Any) -> tuple[int, int]:
        """Edit the status message, through the token or with the bot's own token; its (channel, message) ids.

        ``final`` and ``wait``: as for ``_on_token`` (a result or a failure that cannot wait for the token).
        """
        message_id = int(self.target.get("message_id") or 0)
        if self.on_interaction:
            if not self.token_alive or self.webhook is None or not message_id:
                raise _CannotEditError
            try:
                edited = await _on_token(self.webhook.edit_message(message_id, **fields), final=final, wait=wait)
            except discord.HTTPException as exc:
                if exc.status in _TOKEN_GONE:
                    raise _CannotEditError from None
                raise
            return edited.channel.id, edited.id
        try:
            message = await self.channel.get_partial_message(message_id).edit(**fields)
        except discord.HTTPException as exc:
            if exc.code == _OLD_MESSAGE_EDITS:
                raise _CannotEditError from None
            raise
        return message.channel.id, message.id

    async def status(self, content: str, view: discord.ui.View | None = None) -> bool:
        """Replace the status text (and its buttons); ``False`` if the message can no longer be edited."""
        content = clip(content, MAX_CONTENT)
        try:
            await self._edit(**(self._words(content, view) if self.is_card else {"content": content, "view": view}))
        except _CannotEditError:
            return False
        except discord.HTTPException as exc:
            log.info("could not update a status message (%s %s)", exc.status, exc.code)
        return True

    async def preview(self, content: str, picture: PreviewPicture) -> bool:
        """Show a running job's newest partial image with its status words, as a card (the destination must say
        it is one: ``as_card``); ``False`` if the message can no longer be edited."""
        card = PreviewCard(clip(content, MAX_CONTENT), picture)
        try:
            # As for a result: the edit that makes the message a card clears its text and its old files.
            await self._edit(content=None, embeds=[], attachments=[picture.file()], view=card)
        except _CannotEditError:
            return False
        except discord.HTTPException as exc:
            log.info("could not show a preview on a status message (%s %s)", exc.status, exc.code)
        return True

    async def result(self, compose: Compose) -> tuple[int, int, Delivered]:
        """Show the finished result's card where it belongs; its (channel, message) ids and how it went.

        Raises ``discord.HTTPException`` if Discord refuses it, ``DirectMessagesClosedError`` if a
        late private result cannot be sent to its member.
        """
        delivered = Delivered.PRIVATE if self.private else Delivered.POSTED
        if not self.on_interaction and self._too_old():
            # Past the hour in which Discord lets the status message be edited: a new message, linked from it.
            message = await self._late_card(*compose(delivered))
            await self._point_to(message, _t("➡️ The result:"))
            return message.channel.id, message.id, delivered
        card, files = compose(delivered)
        try:
            # The status message becomes the card. Discord lets an edit set IS_COMPONENTS_V2 (never unset it),
            # provided the same edit clears what a V2 message may not carry, the content and the embeds:
            # https://discord.com/developers/docs/resources/message#edit-message ("The SUPPRESS_EMBEDS flag can
            # be both set and unset, while the IS_COMPONENTS_V2 flag can only be set. When the IS_COMPONENTS_V2
            # flag is set, any of the used content, embeds, sticker_ids, files[n] or poll values in the initial
            # message must be set to null first"). A status never carries files, stickers or a poll, and once
            # it is a card nothing edits it back into text (a failure or a cancel only ever replaces a status).
            channel_id, message_id = await self._edit(content=None, embeds=[], attachments=files, view=card, final=True)
            return channel_id, message_id, delivered
        except _CannotEditError:
            return await self.elsewhere(compose)

    async def attachments(self) -> list[discord.Attachment] | None:
        """The status message's files as Discord has them now; ``None`` when it can no longer be edited (a group's
        card is rebuilt from them: the files it keeps are named by id in the edit)."""
        message_id = int(self.target.get("message_id") or 0)
        if not message_id or (not self.on_interaction and self._too_old()):
            return None
        message: discord.Message
        try:
            if self.on_interaction:
                if not self.token_alive or self.webhook is None:
                    return None
                message = await _on_token(self.webhook.fetch_message(message_id), final=True, wait=NOTICE_WAIT)
            else:
                message = await self.channel.fetch_message(message_id)
        except _CannotEditError:
            return None
        except discord.HTTPException as exc:
            if exc.status in _TOKEN_GONE:
                return None
            raise
        return list(message.attachments)

    async def card(
        self, view: discord.ui.LayoutView, files: list[discord.File], kept: list[discord.Attachment]
    ) -> tuple[int, int] | None:
        """Make the status message ``view``, with ``kept`` of its files and ``files`` added (Discord keeps the
        attachments an edit lists by id, and drops the others); its ids, or ``None`` if it can no longer be
        edited. As for a result, the edit clears the text a card may not carry."""
        try:
            return await self._edit(content=None, embeds=[], attachments=[*kept, *files], view=view, final=True)
        except _CannotEditError:
            return None

    async def elsewhere(self, compose: Compose) -> tuple[int, int, Delivered]:
        """A result that cannot go on its status message: a new channel message, or a direct message when private."""
        if self.private:
            message = await self._direct_card(*compose(Delivered.DIRECT_MESSAGE))
            return message.channel.id, message.id, Delivered.DIRECT_MESSAGE
        message = await self._late_card(*compose(Delivered.POSTED))
        return message.channel.id, message.id, Delivered.POSTED

    async def _direct_card(self, card: discord.ui.LayoutView, files: list[discord.File]) -> discord.Message:
        """After the token's 15 minutes, a private result goes to its member by direct message."""
        return await self._direct(view=card, files=files)

    async def _direct(self, **fields: Any) -> discord.Message:
        """After the token's 15 minutes, a private job's news goes to its member by direct message."""
        channel = await self.bot.create_dm(discord.Object(self.user_id))
        try:
            return await channel.send(**fields)
        except discord.Forbidden as exc:
            if exc.code == _CANNOT_DM:
                raise DirectMessagesClosedError from None
            raise

    async def _late_card(self, card: discord.ui.LayoutView, files: list[discord.File]) -> discord.Message:
        """After the token's 15 minutes: the card as a new channel message, which pings its requester only
        (the card names them)."""
        return await self.channel.send(view=card, files=files, allowed_mentions=self._requester_only)

    async def _late(self, text: str) -> discord.Message:
        """After the token's 15 minutes: a new channel message that pings the requester only."""
        content = clip(f"<@{self.user_id}> {text}", MAX_CONTENT)
        return await self.channel.send(content=content, allowed_mentions=self._requester_only)

    @property
    def _requester_only(self) -> discord.AllowedMentions:
        return discord.AllowedMentions(users=[discord.Object(self.user_id)])

    async def failure(self, text: str, private: bool) -> str:
        """Say the job failed and why (``private``: it concerns only its member); how it reached them.

        Raises ``discord.HTTPException`` when Discord refuses: the outbox tries again later, so
        each step can be repeated (a message already deleted is fine). A token that will not take
        it (still rate-limited, or stuck) is given up for a channel message, as an expired one is.
        """
        text = clip(text, MAX_CONTENT)
        if self.private:
            return await self._private_failure(text)
        try:
            if private and self.on_interaction and self.token_alive and self.webhook is not None:
                await self._only_to_requester(self.webhook, text)
                return "ephemeral"
            await self._edit(**self._words(text), final=True, wait=NOTICE_WAIT)
        except _CannotEditError:
            await self._late(text)
            return "channel"
        if private and self.token_alive and self.webhook is not None:
            with contextlib.suppress(_CannotEditError):  # the failure is shown on the status already
                await _on_token(self.webhook.send(text, ephemeral=True), final=True, wait=NOTICE_WAIT)
        return "edited"

    async def _only_to_requester(self, webhook: discord.Webhook, text: str) -> None:
        """Only the requester needs to know: the public "working" message goes away, a private note comes."""
        message_id = self.target.get("message_id")
        if message_id is not None:
            with contextlib.suppress(discord.NotFound):  # gone already: an earlier try deleted it
                await _on_token(webhook.delete_message(int(message_id)), final=True, wait=NOTICE_WAIT)
        await _on_token(webhook.send(text, ephemeral=True), final=True, wait=NOTICE_WAIT)

    async def final(self, text: str) -> str:
        """Show a final word (a cancel) in place of the status; how it reached the member."""
        text = clip(text, MAX_CONTENT)
        if self.private:
            return await self._private_failure(text)
        try:
            await self._edit(**self._words(text), final=True, wait=NOTICE_WAIT)
        except _CannotEditError:
            await self._late(text)
            return "channel"
        return "edited"

    async def _private_failure(self, text: str) -> str:
        """A private job's final word where only its member sees it (by DM once the token is gone)."""
        try:
            await self._edit(**self._words(text), final=True, wait=NOTICE_WAIT)
            return "edited"
        except _CannotEditError:
            pass
        try:
            await self._direct(content=text)
        except DirectMessagesClosedError:
            log.info("could not tell user=%s about a private edit's outcome: DMs closed", self.user_id)
            return "next_use"
        return "direct_message"


async def _on_token(request: Coroutine[Any, Any, T], *, final: bool = False, wait: float | None = None) -> T:
    """Make ``request`` on an interaction token and run it to its end, even if the caller is cancelled.

    A ``final`` request (a result, a failure) that Discord still rate-limits after discord.py's
    retries, or that has not ended within ``wait`` s, raises ``_CannotEditError``: it goes another
    way, as with an expired token (a request that did not end runs on, and may land later).
    """
    task = asyncio.create_task(request, name="atelier-token-request")
    _IN_FLIGHT.add(task)
    task.add_done_callback(_IN_FLIGHT.discard)
    try:
        # asyncio.wait, not wait_for or a bare await: neither a timeout nor a cancel reaches the request.
        await asyncio.wait({task}, timeout=wait)
    finally:
        if not task.done():
            task.add_done_callback(_unawaited_done)
    if not task.done():
        log.warning("a request on an interaction token has not ended after %.0f s", wait)
        raise _CannotEditError
    try:
        return task.result()
    except discord.HTTPException as exc:
        if final and exc.status == _RATE_LIMITED:
            log.warning("Discord kept rate-limiting a final message on an interaction token (%s)", exc.code)
            raise _CannotEditError from None
        raise


def _unawaited_done(task: asyncio.Task[Any]) -> None:
    """A request on a token ended after its caller stopped waiting: log it if it failed."""
    if not task.cancelled() and (exc := task.exception()) is not None:
        log.info("a request on an interaction token, no longer awaited, failed: %s", exc)


class _CannotEditError(Exception):
    """The status message can no longer be edited: its token lapsed, or Discord refuses edits of old messages."""


class DirectMessagesClosedError(Exception):
    """The member accepts no direct message from the bot (Discord error 50007)."""
