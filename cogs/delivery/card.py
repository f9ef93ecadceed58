"""The result card: a finished result as one Components V2 message.

What it shows, top to bottom, in one container:
- the output, large (a media gallery: several outputs fill the same gallery);
- the prompt, as typed, and the details: size, style, who asked, how long it took, the model,
  what its kind adds, where it came from (a link to the result it refines or rerolls) and notes;
- the inputs, small: a thumbnail each beside its name and size, or one strip of them all
  when there are many (``bot.media.editor.THUMBNAILS_AT_MOST``);
- the buttons (``cogs.delivery.results``).

Every picture is a file of the same message, named by ``attachment://``: the members' own
upload links expire, the bot's copies live as long as the message. A spoiler result marks
every picture (output and inputs) as a spoiler. The card is built fresh for each attempt
to post it (a file can be read once).

A V2 message takes no ``content`` and no embeds, at most 40 components and 4,000 characters of
text (https://discord.com/developers/docs/components/reference); this card stays far inside.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass

import discord
from discord import ui

from bot.core.job import Job, Origin
from bot.i18n import Renderable, Text, _t
from bot.media.images import InputPreview, OutputImage
from bot.ports import ResultMedia
from cogs.core.language import for_job
from cogs.core.text import clip, message_link, quote_prompt
from cogs.core.uploads import ImageUpload

# The card's text stays well inside Discord's 4,000 characters for a whole V2 message.
DETAILS_MAX = 2500
NOTE_MAX = 300
ALT_TEXT_MAX = 256


def _refined_from(parent: str) -> Text:
    return _t("🪄 refined from {parent}", parent=parent)


def _reroll_of(parent: str) -> Text:
    return _t("🔁 reroll of {parent}", parent=parent)


_PARENT_WORDS = {Origin.REFINE: _refined_from, Origin.REROLL: _reroll_of}


def origin_of(job: Job, parent: Job | None) -> Text | None:
    """Where this result came from: "🔁 reroll of <link>" or "🪄 refined from <link>" (or ``None``)."""
    words = _PARENT_WORDS.get(job.request.origin)
    if words is None or job.request.parent_job_id is None:
        return None
    if parent is None or parent.request.private or parent.result_channel_id is None or not parent.result_message_id:
        # A private result has no link anyone could follow; /history knows it by its id.
        return words(f"`{job.request.parent_job_id}`")
    return words(message_link(parent.guild_id, parent.result_channel_id, parent.result_message_id))


def output_filename(job: Job, image: OutputImage) -> str:
    """The output's file name: what Refine looks for on a result message (``first_image``)."""
    return f"atelier-{job.id}.{image.extension}"


def input_filename(job: Job, preview: InputPreview) -> str:
    """An input's small copy (never ``atelier-…``, which names the output)."""
    return f"input-{job.id}-{preview.name}.jpg"


def strip_filename(job: Job) -> str:
    """Every input in one small picture."""
    return f"inputs-{job.id}.jpg"


@dataclass(frozen=True)
class CardText:
    """A card's words, in its member's language: the prompt, then the details under it."""

    prompt: str
    details: str


def card_text(
    job: Job, image: OutputImage, notes: Sequence[Renderable], origin: Text | None = None, kind: Text | None = None
) -> CardText:
    """The prompt (as typed) and the details: size, style, who asked, how long it took, the model, what its
    kind adds, where it came from, notes."""
    request = job.request
    elapsed = time.time() - job.created_at
    parts = [f"{image.width}×{image.height}"]
    if request.size is not None:
        parts[0] += " " + for_job(job, _t("(asked {size})", size=request.size))
    if request.style:
        parts.append(f"🎨 {request.style}")
    parts += [f"<@{request.user_id}>", for_job(job, _t("{seconds} s", seconds=f"{elapsed:.1f}"))]
    if job.model:
        parts.append(job.model)
    lines = ["-# " + " · ".join(parts)]
    if kind is not None:
        lines.append(f"-# {for_job(job, kind)}")
    if origin is not None:
        lines.append(f"-# {for_job(job, origin)}")
    lines += [f"-# ℹ️ {clip(for_job(job, note), NOTE_MAX)}" for note in notes if note]
    return CardText(quote_prompt(request.prompt), clip("\n".join(lines), DETAILS_MAX))


def _alt_text(job: Job) -> str:
    """What a screen reader says for the output: the prompt it was made from."""
    return clip(" ".join(job.request.prompt.split()), ALT_TEXT_MAX)


def _describe_input(preview: InputPreview) -> str:
    return f"**{preview.name}** · {preview.width}×{preview.height}"


def card_files(job: Job, media: ResultMedia) -> list[discord.File]:
    """The card's pictures as files of its message: the output(s) first, then the inputs' copies."""
    files = [discord.File(ImageUpload(image.data), filename=output_filename(job, image)) for image in media.outputs]
    files += [
        discord.File(ImageUpload(preview.thumbnail), filename=input_filename(job, preview))
        for preview in media.inputs
        if preview.thumbnail is not None
    ]
    if media.strip is not None:
        files.append(discord.File(ImageUpload(media.strip), filename=strip_filename(job)))
    return files


class ResultCard(ui.LayoutView):
    """One result's card (see the module's docstring); ``buttons`` go in its last rows, a row each (Discord takes
    at most five buttons in a row)."""

    def __init__(
        self,
        job: Job,
        media: ResultMedia,
        text: CardText,
        buttons: Sequence[Sequence[ui.Item[ui.LayoutView]]],
        footer: str | None = None,
    ) -> None:
        super().__init__(timeout=None)
        spoiler = job.request.spoiler
        card: ui.Container[ui.LayoutView] = ui.Container()
        gallery: ui.MediaGallery[ui.LayoutView] = ui.MediaGallery()
        for image in media.outputs:
            gallery.add_item(
                media=f"attachment://{output_filename(job, image)}", description=_alt_text(job), spoiler=spoiler
            )
        card.add_item(gallery)
        card.add_item(ui.TextDisplay(text.prompt))
        card.add_item(ui.TextDisplay(text.details))
        if media.inputs:
            card.add_item(ui.Separator())
            self._add_inputs(card, job, media, spoiler)
        if footer:
            card.add_item(ui.TextDisplay(footer))
        for items in buttons:
            if not items:
                continue
            row: ui.ActionRow[ui.LayoutView] = ui.ActionRow()
            for button in items:
                row.add_item(button)
            card.add_item(row)
        self.add_item(card)

    @staticmethod
    def _add_inputs(card: ui.Container[ui.LayoutView], job: Job, media: ResultMedia, spoiler: bool) -> None:
        if media.strip is not None:
            names = " · ".join(f"{p.name} {p.width}×{p.height}" for p in media.inputs)
            card.add_item(ui.TextDisplay(f"-# {names}"))
            strip: ui.MediaGallery[ui.LayoutView] = ui.MediaGallery()
            strip.add_item(
                media=f"attachment://{strip_filename(job)}",
                description=clip(" ".join(p.name for p in media.inputs), ALT_TEXT_MAX),
                spoiler=spoiler,
            )
            card.add_item(strip)
            return
        for preview in media.inputs:
            if preview.thumbnail is None:
                continue
            thumbnail: ui.Thumbnail[ui.LayoutView] = ui.Thumbnail(
                f"attachment://{input_filename(job, preview)}", description=preview.name, spoiler=spoiler
            )
            card.add_item(ui.Section(ui.TextDisplay(_describe_input(preview)), accessory=thumbnail))
