"""How a member is first answered about an accepted job, and the status line it shows from then on.

Two ways, used by every input source (``/edit``, Refine, Reroll, "Edit images"):
- ``answer_in_place``: the interaction's own answer is the status, then the result
  (ephemeral when the job is private);
- ``post_status``: a private "working on it" answer, and the status posted with the
  bot's token where the result belongs (a thread, the rerolled result's channel, a
  reply to the message whose images are used), which the answer then points to.
"""

from __future__ import annotations

import logging

import aiohttp
import discord

from bot.core.job import Destination, Job
from bot.core.sizes import size_of
from bot.errors import InputError
from bot.i18n import Text, _nt, _t
from cogs.core.answers import answer, edit_answer
from cogs.core.language import for_job, say
from cogs.core.text import quote_prompt
from cogs.delivery.buttons import cancel_view, group_cancel_view
from cogs.delivery.destinations import interaction_target, message_target

log = logging.getLogger(__name__)

POST_REFUSED = _t("Discord refused to let me post there; check my permissions (Send Messages, Read Message History).")


def describe_size(size: str | None) -> Text | str:
    """How a requested size reads in a status line."""
    entry = size_of(size)
    return entry.label if entry else _t("auto")


def status_text(job: Job, state: Text) -> str:
    """A status message in its member's language: what is happening, the prompt, who asked, what was asked.

    The prompt is shown as it was typed, never translated.
    """
    request = job.request
    # Translators: a job made from its instruction alone, with no image given.
    images = _nt("{count} image", "{count} images", request.input_count) if request.input_count else _t("text only")
    details = _t(
        "<@{user}> · {images} · size {size} · job `{job}`",
        user=request.user_id,
        images=images,
        size=describe_size(request.size),
        job=job.id,
    )
    if request.style:
        details = _t(
            "<@{user}> · {images} · size {size} · style {style} · job `{job}`",
            user=request.user_id,
            images=images,
            size=describe_size(request.size),
            style=request.style,
            job=job.id,
        )
    return f"{for_job(job, state)}\n{quote_prompt(request.prompt, 300)}\n-# {for_job(job, details)}"


def group_status_text(job: Job, state: Text, note: Text | None) -> str:
    """A request for variations' acknowledgement: its status, how many runs, and ``note`` when fewer run than asked."""
    runs = _nt(
        "🎲 {count} variation: each is one edit of your limit, and the card fills as they finish.",
        "🎲 {count} variations: each is one edit of your limit, and the card fills as they finish.",
        job.request.variants,
    )
    # When fewer run than asked, ``note`` says how many (and why), in place of the count asked.
    extra = f"⚠️ {for_job(job, note)}" if note is not None else for_job(job, runs)
    return f"{status_text(job, state)}\n{extra}"


def _status_of(job: Job, state: Text, note: Text | None) -> tuple[str, discord.ui.View | None]:
    """The words and buttons an acknowledgement shows: a group's Cancel stops every run not started yet."""
    if job.request.is_variation:
        assert job.request.group_id is not None
        return group_status_text(job, state, note), group_cancel_view(job.request.group_id, job.request.language)
    return status_text(job, state), cancel_view(job.id, job.request.language)


async def answer_in_place(
    interaction: discord.Interaction, job: Job, state: Text, note: Text | None = None
) -> Destination:
    """Answer ``interaction`` with the job's status (only the requester sees it when the job is private)."""
    # Well inside Discord's 3 s (or deferred in time by ``in_time``); everything slow happens after.
    text, view = _status_of(job, state, note)
    try:
        message_id = await answer(interaction, text, ephemeral=job.request.private, view=view)
    except discord.HTTPException as exc:
        raise InputError(
            _t("Discord did not accept my answer to this command; please try again."),
            log_detail=f"acknowledgement refused: {exc.status} {exc.code}",
        ) from None
    return interaction_target(interaction, message_id, private=job.request.private)


async def private_note(interaction: discord.Interaction, text: Text) -> int | None:
    """Answer privately that the job is starting (``post_status`` then points it to the status); its message."""
    return await answer(interaction, say(interaction, text), ephemeral=True)


async def post_status(
    interaction: discord.Interaction,
    job: Job,
    channel: discord.abc.Messageable,
    state: Text,
    pointer: Text,
    *,
    reply_to: discord.Message | None = None,
    refused: Text = POST_REFUSED,
    note: Text | None = None,
    answered: int | None = None,
) -> Destination:
    """Post the job's status in ``channel`` (replying to ``reply_to`` without pinging its author) and point
    the member's private answer at it (``private_note``'s message ``answered``)."""
    text, view = _status_of(job, state, note)
    quiet = discord.AllowedMentions.none()
    buttons = view or discord.utils.MISSING
    try:
        if reply_to is None:
            status = await channel.send(text, view=buttons, allowed_mentions=quiet)
        else:
            # A reply that still posts if the message is deleted meanwhile; its author is not pinged.
            reference = reply_to.to_reference(fail_if_not_exists=False)
            status = await channel.send(text, view=buttons, allowed_mentions=quiet, reference=reference)
    except discord.HTTPException as exc:
        raise InputError(refused, log_detail=f"status post refused: {exc.status} {exc.code}") from None
    try:
        await edit_answer(interaction, answered, f"{say(interaction, pointer)} {status.jump_url}")
    except discord.HTTPException as exc:  # only a pointer: the status is in the channel either way
        log.info("job=%s could not point the member to its status (%s %s)", job.id, exc.status, exc.code)
    except (aiohttp.ClientError, OSError) as exc:  # a connection lost on the way: the pointer alone is lost
        log.info("job=%s could not point the member to its status (%s)", job.id, type(exc).__name__)
    upload_limit = status.guild.filesize_limit if status.guild else interaction.filesize_limit
    return message_target(status, interaction, upload_limit)
