"""Discord's three seconds: answering an interaction whose handler reads the database first.

Discord forgets an interaction that is not answered within 3 s: the member sees "The application
did not respond", and every later word is refused, the error path's apology included. Cancel,
Info, Delete, ``/history``, ``/usage`` and the moderators' ``/atelier`` commands ask the engine
before they answer, and a database that is slow to answer, or slow to fail, can take longer than
that. ``reply`` is also the one way every handler and the error path send a new message.

Such a handler runs under ``in_time``. If it has not answered ``ANSWER_WITHIN`` seconds in, the
interaction is deferred for it: a button's message is left as it is (a deferred update), a
command shows Discord's "thinking…" (private when its answer will be). ``reply`` and ``update``
then answer through whatever is still open: the interaction's response, or after a deferral a
follow-up or an edit of the original response. A deferral and an answer never cross: they take
turns through one lock per interaction (kept in ``interaction.extras``).

A job's first answer (its status, or the private note that points to it) is a message the bot
edits later, so ``answer`` also returns its id. Its visibility follows the job, which the
engine settles only as it admits it (a server can make results private, or forbid that): a
"thinking…" deferral shown to others than the answer's readers is replaced by a line that says
where the answer went, and the answer becomes a follow-up (Discord's first follow-up would take
the deferral's place, and its visibility). A click's deferral leaves the clicked message alone:
its answer is a follow-up of its own.

A form cannot wait that way: it must be the first answer, and nothing can answer before it. So
what a handler reads before it opens one runs under ``before_form``: past ``ANSWER_WITHIN`` it
gives up, and the member is told in time that the form could not open (``TooSlowError``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Awaitable
from typing import Any, TypeVar

import discord

from bot.errors import TooSlowError
from bot.i18n import _t
from cogs.core.language import say

log = logging.getLogger(__name__)

T = TypeVar("T")

ANSWER_WITHIN = 1.5  # seconds: Discord allows 3 from the interaction's creation; half is for its way to us and back
_TURNS = "atelier.answer_turns"  # the key of the interaction's lock in ``interaction.extras``
# While a "thinking…" deferral stands, whether it is private (its key in ``interaction.extras``).
_THINKING = "atelier.thinking_private"

# Where an answer went, in place of a "thinking…" that others than its readers see.
WENT_PRIVATELY = _t("🔒 The answer to this went to its author only.")
POSTED_BELOW = _t("📣 The answer to this is posted below, for everyone.")


@contextlib.asynccontextmanager
async def in_time(interaction: discord.Interaction, *, private: bool = True) -> AsyncIterator[None]:
    """Defer ``interaction`` if what runs inside has not answered it within ``ANSWER_WITHIN`` seconds.

    ``private``: a command's deferral shows "thinking…" to its member only (its answer will be private too;
    the first follow-up takes the place of the "thinking…" and keeps its visibility).
    """
    if isinstance(interaction.extras.get(_TURNS), asyncio.Lock):
        yield  # an outer ``in_time`` (a command that hands over to another of its handlers) watches already
        return
    turns = asyncio.Lock()
    interaction.extras[_TURNS] = turns
    late = asyncio.create_task(_defer_when_late(interaction, turns, private), name="atelier-answer-in-time")
    try:
        yield
    finally:
        async with turns:  # a deferral under way ends first: the error path must see it done
            late.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await late
        del interaction.extras[_TURNS]


async def _defer_when_late(interaction: discord.Interaction, turns: asyncio.Lock, private: bool) -> None:
    await asyncio.sleep(ANSWER_WITHIN)
    async with turns:
        if interaction.response.is_done():
            return
        try:
            if interaction.type is discord.InteractionType.component:
                await interaction.response.defer()
            else:
                await interaction.response.defer(ephemeral=private, thinking=True)
                interaction.extras[_THINKING] = private
        except discord.HTTPException as exc:  # the answer that follows says what it can
            log.warning("could not defer a slow interaction (%s %s)", exc.status, exc.code)


async def within(interaction: discord.Interaction, work: Awaitable[T], *, private: bool = True) -> T:
    """``work`` under ``in_time``: a handler whose first answer may come after the database has answered."""
    async with in_time(interaction, private=private):
        return await work


@contextlib.asynccontextmanager
async def before_form() -> AsyncIterator[None]:
    """Give up on what runs inside (reads before a form opens) after ``ANSWER_WITHIN`` seconds: ``TooSlowError``."""
    try:
        async with asyncio.timeout(ANSWER_WITHIN):
            yield
    except TimeoutError as exc:
        raise TooSlowError() from exc


def _turns(interaction: discord.Interaction) -> asyncio.Lock | contextlib.nullcontext[None]:
    turns = interaction.extras.get(_TURNS)
    return turns if isinstance(turns, asyncio.Lock) else contextlib.nullcontext()


async def reply(interaction: discord.Interaction, content: str | None = None, **fields: Any) -> None:
    """Answer with a new message (``fields``: ``ephemeral``, ``embed``, ``view``…): the response, or a follow-up."""
    async with _turns(interaction):
        if not interaction.response.is_done():
            await interaction.response.send_message(content, **fields)
        else:
            await _clear_thinking(interaction, bool(fields.get("ephemeral")))
            await interaction.followup.send(content or discord.utils.MISSING, **fields)


async def answer(
    interaction: discord.Interaction, content: str, *, ephemeral: bool, view: discord.ui.View | None = None
) -> int | None:
    """Answer with a new message the bot edits later; its id (``None`` if Discord did not say). The response;
    after a "thinking…" deferral of the same visibility, that message; else a follow-up."""
    async with _turns(interaction):
        if not interaction.response.is_done():
            response = await interaction.response.send_message(
                content, view=view or discord.utils.MISSING, ephemeral=ephemeral
            )
            return response.message_id if isinstance(response.message_id, int) else None
        if interaction.extras.get(_THINKING) is ephemeral:
            del interaction.extras[_THINKING]
            return (await interaction.edit_original_response(content=content, view=view)).id
        await _clear_thinking(interaction, ephemeral)
        message = await interaction.followup.send(
            content, view=view or discord.utils.MISSING, ephemeral=ephemeral, wait=True
        )
        return message.id


async def edit_answer(interaction: discord.Interaction, message_id: int | None, content: str) -> None:
    """Edit a message ``answer`` sent (``None``: the original response)."""
    if message_id is None:
        await interaction.edit_original_response(content=content)
    else:
        await interaction.followup.edit_message(message_id, content=content)


async def _clear_thinking(interaction: discord.Interaction, ephemeral: bool) -> None:
    """Before a follow-up: a standing "thinking…" says where the answer went, unless the follow-up takes its
    place with the same visibility (Discord's first follow-up after it does)."""
    thinking = interaction.extras.pop(_THINKING, None)
    if thinking is not None and thinking is not ephemeral:
        where = WENT_PRIVATELY if ephemeral else POSTED_BELOW
        await interaction.edit_original_response(content=say(interaction, where))


async def update(interaction: discord.Interaction, **fields: Any) -> None:
    """Edit the clicked message (``fields``: ``content``, ``embed``, ``view``, ``attachments``…): the response,
    or after a deferral an edit of the original response (which a deferred update makes the clicked message)."""
    async with _turns(interaction):
        if not interaction.response.is_done():
            await interaction.response.edit_message(**fields)
        else:
            await interaction.edit_original_response(**fields)


async def acknowledge(interaction: discord.Interaction) -> None:
    """Defer the click, unless that is done already."""
    async with _turns(interaction):
        if not interaction.response.is_done():
            await interaction.response.defer()
