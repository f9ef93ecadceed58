"""``/edit`` and Refine: what members see of an edit.

The flow of one job reads top to bottom in ``EditCog.run_job``: download the
inputs, check them, call the API, post the image with its Refine button.
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import aiohttp
import discord
from discord import app_commands, ui
from discord.ext import commands

from bot.editor import MAX_IMAGES, new_job_id
from bot.errors import AtelierError, InputError
from bot.image_api import ImageEditRequest
from bot.sizes import AUTO, AUTO_LABEL, COMMON_SIZES, normalize_size, size_choices, size_of
from cogs.custom_ids import (
    REFINE_BUTTON_TEMPLATE,
    REFINE_PROMPT_FIELD,
    REFINE_SIZE_FIELD,
    RefineModalId,
    refine_button_id,
)
from cogs.delivery import Delivery, InteractionDelivery, MessageDelivery, clip, quote_prompt
from cogs.errors import UNEXPECTED, report_unexpected, send_error

if TYPE_CHECKING:
    from bot.client import AtelierBot

log = logging.getLogger(__name__)

# Refused before download: far beyond anything the API takes, even after re-encoding.
MAX_ATTACHMENT_BYTES = 50 * 1024 * 1024
DOWNLOAD_TIMEOUT = 60.0
PROMPT_MAX = 4000
THREAD_ARCHIVE_MINUTES = 10080  # 7 days
_DISCORD_UPLOAD_TOO_LARGE = 40005


@dataclass(frozen=True)
class EditJob:
    """One accepted edit, as the cog runs it."""

    job_id: str
    kind: str  # "edit" or "refine"
    requester: discord.abc.User
    prompt: str
    size: str | None
    sources: Sequence[tuple[str, discord.Attachment]]


def collect_images(options: Sequence[discord.Attachment | None]) -> list[tuple[str, discord.Attachment]]:
    """``(imageN, attachment)`` in order; refuse a gap, since renumbering would change the prompt."""
    last = max((i for i, a in enumerate(options, start=1) if a is not None), default=0)
    missing = [f"image{i}" for i in range(1, last + 1) if options[i - 1] is None]
    if missing:
        raise InputError(
            f"{', '.join(missing)} {'is' if len(missing) == 1 else 'are'} missing but a later image is set. "
            "Fill the images in order (image1, image2, …), because the prompt refers to them by number."
        )
    images = [(f"image{i}", a) for i, a in enumerate(options, start=1) if a is not None]
    for name, attachment in images:
        if attachment.size > MAX_ATTACHMENT_BYTES:
            raise InputError(
                f"{name} is {attachment.size / 1_000_000:.0f} MB; files up to "
                f"{MAX_ATTACHMENT_BYTES // 1_000_000} MB are accepted."
            )
    return images


def parse_size(text: str | None) -> str | None:
    """The API size for a submitted value, refusing anything off the provider's table."""
    try:
        return normalize_size(text)
    except ValueError:
        raise InputError(
            f"`{clip(text or '', 40)}` is not a size the image service supports. Pick one from the list "
            "(start typing, e.g. 2048 or 16:9), or leave size empty for auto."
        ) from None


def clean_prompt(text: str) -> str:
    """The prompt with surrounding space removed; refuse an empty one."""
    prompt = text.strip()
    if not prompt:
        raise InputError("The prompt is empty. Say what to do with the images, e.g. “put image1 in image2”.")
    return prompt


def describe_size(size: str | None) -> str:
    """How a requested size reads in a status line."""
    entry = size_of(size)
    return entry.label if entry else "auto"


def thread_name_from(message: discord.Message, fallback: str) -> str:
    """Name a refine thread after the prompt on the result it starts from."""
    first = message.content.split("\n", 1)[0]
    if first.startswith("> "):
        fallback = re.sub(r"\\(.)", r"\1", first[2:]).replace("\u200b", "")
    return clip(" ".join(fallback.split()) or "Refine", 100)


def modal_values(data: Any) -> dict[str, str]:
    """``custom_id -> value`` for every input in a modal submission (Label or action-row layout)."""
    values: dict[str, str] = {}

    def walk(node: Any) -> None:
        if isinstance(node, dict):
            if "custom_id" in node and ("value" in node or "values" in node):
                picked = node.get("values")
                values[node["custom_id"]] = (
                    (picked[0] if picked else "") if "values" in node else node["value"]
                )
            for key in ("components", "component"):
                walk(node.get(key))
        elif isinstance(node, list):
            for child in node:
                walk(child)

    walk(data.get("components") if isinstance(data, dict) else None)
    return values


def first_image(message: discord.Message) -> discord.Attachment | None:
    """The image attached to a result message, if it still has one."""
    for attachment in message.attachments:
        if (attachment.content_type or "").startswith("image/") or attachment.filename.lower().endswith(
            (".png", ".jpg", ".jpeg", ".webp")
        ):
            return attachment
    return None


class RefineButton(ui.DynamicItem[ui.Button[ui.View]], template=REFINE_BUTTON_TEMPLATE):
    """The Refine button under every result; works after restarts (matched by custom_id)."""

    def __init__(self, job_id: str) -> None:
        super().__init__(
            ui.Button(
                label="Refine",
                emoji="🪄",
                style=discord.ButtonStyle.primary,
                custom_id=refine_button_id(job_id),
            )
        )
        self.job_id = job_id

    @classmethod
    async def from_custom_id(
        cls, interaction: discord.Interaction, item: ui.Button[ui.View], match: re.Match[str], /
    ) -> RefineButton:
        return cls(match["job_id"])

    async def callback(self, interaction: discord.Interaction) -> None:
        try:
            message = interaction.message
            if message is None or first_image(message) is None:
                raise InputError("This message has no image to refine any more.")
            modal = RefineModal(RefineModalId(message.channel.id, message.id, self.job_id))
            await interaction.response.send_modal(modal)
            # Submissions are routed by custom_id in EditCog.on_interaction, the same way
            # before and after a restart, so discord.py need not keep this modal in memory.
            modal.stop()
        except AtelierError as error:
            await send_error(interaction, error)


def result_view(job_id: str) -> ui.View:
    """The components under a result: its Refine button."""
    view = ui.View(timeout=None)
    view.add_item(RefineButton(job_id))
    return view


class RefineModal(ui.Modal, title="Refine this image"):
    """Asks what to change and the output size. Only rendered here; see ``on_interaction``."""

    prompt: ui.Label[RefineModal] = ui.Label(
        text="What should change?",
        description="This image becomes image1; you can refer to it by that name.",
        component=ui.TextInput(
            custom_id=REFINE_PROMPT_FIELD,
            style=discord.TextStyle.paragraph,
            placeholder="e.g. make the sky stormy and add a lighthouse",
            max_length=PROMPT_MAX,
            required=True,
        ),
    )
    size: ui.Label[RefineModal] = ui.Label(
        text="Output size",
        description="auto keeps this image's aspect ratio",
        component=ui.Select(
            custom_id=REFINE_SIZE_FIELD,
            required=False,
            options=[discord.SelectOption(label=AUTO_LABEL[:100], value=AUTO, default=True)]
            + [discord.SelectOption(label=s.label, value=s.value) for s in COMMON_SIZES],
        ),
    )

    def __init__(self, ids: RefineModalId) -> None:
        super().__init__(custom_id=ids.encode(), timeout=None)


class EditCog(commands.Cog):
    """The /edit command and the Refine flow."""

    def __init__(self, bot: AtelierBot) -> None:
        self.bot = bot

    @app_commands.command(name="edit", description="Edit or combine images with an instruction")
    @app_commands.describe(
        prompt="What to do; call the images image1, image2, … e.g. “put the cat from image1 into image2”",
        image1="The first image (the one the prompt calls image1)",
        size="Output size; leave empty for auto (keeps the edited image's aspect ratio)",
        **{f"image{n}": f"Optional image{n}" for n in range(2, MAX_IMAGES + 1)},
    )
    async def edit(
        self,
        interaction: discord.Interaction,
        prompt: app_commands.Range[str, 1, PROMPT_MAX],
        image1: discord.Attachment,
        size: str | None = None,
        image2: discord.Attachment | None = None,
        image3: discord.Attachment | None = None,
        image4: discord.Attachment | None = None,
        image5: discord.Attachment | None = None,
        image6: discord.Attachment | None = None,
        image7: discord.Attachment | None = None,
        image8: discord.Attachment | None = None,
        image9: discord.Attachment | None = None,
        image10: discord.Attachment | None = None,
    ) -> None:
        sources = collect_images(
            [image1, image2, image3, image4, image5, image6, image7, image8, image9, image10]
        )
        size_value = parse_size(size)
        text = clean_prompt(prompt)
        job = EditJob(new_job_id(), "edit", interaction.user, text, size_value, sources)
        # Acknowledge first, well inside Discord's 3 s; everything slow happens after.
        await interaction.response.send_message(self.status_text(job, "Downloading the images…"))
        await self.run_job(job, InteractionDelivery(interaction))

    @edit.autocomplete("size")
    async def size_autocomplete(
        self, interaction: discord.Interaction, current: str
    ) -> list[app_commands.Choice[str]]:
        return [app_commands.Choice(name=label, value=value) for label, value in size_choices(current)]

    def status_text(self, job: EditJob, state: str) -> str:
        count = len(job.sources)
        images = f"{count} image{'s' if count != 1 else ''}"
        return (
            f"🎨 {state}\n{quote_prompt(job.prompt, 300)}\n"
            f"-# {job.requester.mention} · {images} · size {describe_size(job.size)}"
        )

    async def run_job(self, job: EditJob, delivery: Delivery) -> None:
        """Download, check, edit, post: the whole life of one job. Never raises."""
        started = time.monotonic()
        try:
            files = await self.download(job.sources)
            inputs = await self.bot.editor.prepare_inputs(files)
            await delivery.status(self.status_text(job, "Editing… this usually takes 30 to 90 seconds."))
            request = ImageEditRequest(job.prompt, inputs, job.size)
            outcome = await self.bot.editor.run(request, delivery.upload_limit)
            notes = [i.note for i in inputs if i.note] + (
                [outcome.upload.note] if outcome.upload.note else []
            )
            upload = await self.post_result(
                job, delivery, outcome.upload, outcome.result.image, notes, started
            )
        except AtelierError as error:
            log.info(
                "job=%s kind=%s user=%s outcome=failed error=%s reason=%r total=%.2fs",
                job.job_id, job.kind, job.requester.id, type(error).__name__, error.log_detail,
                time.monotonic() - started,
            )  # fmt: skip
            await delivery.failure(error)
            return
        except Exception as exc:  # unexpected: log it whole, tell the member, keep serving
            log.exception(
                "job=%s kind=%s outcome=failed unexpected error", job.job_id, job.kind, exc_info=exc
            )
            await delivery.failure(AtelierError(UNEXPECTED))
            return
        log.info(
            "job=%s kind=%s user=%s outcome=succeeded images=%d size=%s api=%.2fs attempts=%d total=%.2fs "
            "out=%dx%d bytes=%d",
            job.job_id, job.kind, job.requester.id, len(job.sources), job.size or AUTO,
            outcome.result.api_seconds, outcome.result.attempts, time.monotonic() - started,
            upload.width, upload.height, len(upload.data),
        )  # fmt: skip

    async def download(self, sources: Sequence[tuple[str, discord.Attachment]]) -> list[tuple[str, bytes]]:
        """Fetch every attachment now: option attachments are short-lived on Discord's side."""

        async def fetch(name: str, attachment: discord.Attachment) -> tuple[str, bytes]:
            try:
                async with asyncio.timeout(DOWNLOAD_TIMEOUT):
                    return name, await attachment.read()
            except (discord.HTTPException, aiohttp.ClientError, TimeoutError):
                raise InputError(f"{name} could not be downloaded from Discord; attach it again.") from None

        return list(await asyncio.gather(*(fetch(name, a) for name, a in sources)))

    async def post_result(
        self, job: EditJob, delivery: Delivery, upload: Any, original: Any, notes: list[str], started: float
    ) -> Any:
        """Post the image; if Discord still finds it too large, shrink once more and retry."""
        filename = f"atelier-{job.job_id}.{upload.extension}"
        try:
            await delivery.result(
                self.caption(job, upload, notes, started), upload, filename, result_view(job.job_id)
            )
            return upload
        except discord.HTTPException as exc:
            if exc.status != 413 and exc.code != _DISCORD_UPLOAD_TOO_LARGE:
                raise AtelierError(
                    f"Discord refused to post the result (HTTP {exc.status}). Please try again.",
                    log_detail=f"result upload refused: {exc.status} {exc.code} {exc.text[:200]}",
                ) from None
        smaller = await self.bot.editor.fit(original, int(len(upload.data) * 0.7))
        filename = f"atelier-{job.job_id}.{smaller.extension}"
        notes = [n for n in notes if n != upload.note] + [smaller.note or ""]
        try:
            await delivery.result(
                self.caption(job, smaller, notes, started), smaller, filename, result_view(job.job_id)
            )
        except discord.HTTPException as exc:
            raise AtelierError(
                "Discord refused the result even after shrinking it. Please try again.",
                log_detail=f"result upload refused twice: {exc.status} {exc.code}",
            ) from None
        return smaller

    def caption(self, job: EditJob, image: Any, notes: list[str], started: float) -> str:
        """The text under a result: prompt, size, who asked, how long it took, and any notes."""
        elapsed = time.monotonic() - started
        asked = "" if job.size is None else f" (asked {job.size})"
        lines = [
            quote_prompt(job.prompt),
            f"-# {image.width}×{image.height}{asked} · {job.requester.mention} · {elapsed:.1f} s",
        ]
        lines += [f"-# ℹ️ {clip(note, 300)}" for note in notes if note]
        return "\n".join(lines)

    # Refine ---------------------------------------------------------------------------------

    @commands.Cog.listener()
    async def on_interaction(self, interaction: discord.Interaction) -> None:
        """Route refine-modal submissions by custom_id, whether or not this process opened the modal."""
        if interaction.type is not discord.InteractionType.modal_submit or not isinstance(
            interaction.data, dict
        ):
            return
        ids = RefineModalId.parse(str(interaction.data.get("custom_id", "")))
        if ids is None:
            return
        try:
            await self.refine(interaction, ids)
        except AtelierError as error:
            await send_error(interaction, error)
        except Exception as exc:  # the member must hear of it, and the bot must keep serving
            await report_unexpected(interaction, exc, "refine")

    async def refine(self, interaction: discord.Interaction, ids: RefineModalId) -> None:
        """Turn the clicked result into image1 of a new edit, posted in a thread."""
        values = modal_values(interaction.data)
        prompt = clean_prompt(values.get(REFINE_PROMPT_FIELD, ""))
        size = parse_size(values.get(REFINE_SIZE_FIELD) or None)
        await interaction.response.send_message("🎨 Starting your refinement…", ephemeral=True)
        source = await self.source_message(interaction, ids)
        attachment = first_image(source)
        if attachment is None:
            raise InputError("That message has no image to refine any more.")
        job = EditJob(new_job_id(), "refine", interaction.user, prompt, size, [("image1", attachment)])
        destination = await self.thread_for(source, prompt)
        status = await destination.send(self.status_text(job, "Downloading the image…"))
        await interaction.edit_original_response(content=f"🎨 Refining in {status.jump_url}")
        await self.run_job(job, MessageDelivery(status, interaction))

    async def source_message(self, interaction: discord.Interaction, ids: RefineModalId) -> discord.Message:
        """The clicked result, with fresh attachment links: from the interaction, or fetched."""
        if interaction.message is not None and interaction.message.id == ids.message_id:
            return interaction.message
        channel = interaction.channel
        if channel is None or channel.id != ids.channel_id:
            channel = self.bot.get_channel(ids.channel_id) or await self.bot.fetch_channel(ids.channel_id)
        if not isinstance(channel, discord.abc.Messageable):
            raise InputError("That result is in a channel I can't read any more.")
        try:
            return await channel.fetch_message(ids.message_id)
        except discord.NotFound:
            raise InputError("That result was deleted, so it can't be refined.") from None
        except discord.Forbidden:
            raise InputError(
                "I can't read that channel's history (Read Message History is missing)."
            ) from None

    async def thread_for(self, source: discord.Message, prompt: str) -> discord.abc.Messageable:
        """The thread where refinements of ``source`` go: its own thread, or a new one."""
        channel = source.channel
        if isinstance(channel, discord.Thread) or not isinstance(channel, discord.TextChannel):
            return channel  # already in a thread (or forum post), or a DM: stay there
        if source.thread is not None:
            return source.thread
        try:
            return await source.create_thread(
                name=thread_name_from(source, prompt), auto_archive_duration=THREAD_ARCHIVE_MINUTES
            )
        except discord.Forbidden:
            raise InputError(
                "I can't create threads here (Create Public Threads is missing); ask a server admin."
            ) from None
        except discord.HTTPException as exc:
            if exc.code != 160004:  # "A thread has already been created for this message"
                raise
        existing = self.bot.get_channel(source.id) or await self.bot.fetch_channel(source.id)
        if not isinstance(existing, discord.Thread):
            raise InputError("I couldn't find the thread for that result.")
        return existing


async def setup(bot: AtelierBot) -> None:
    """Load the edit cog and the persistent Refine button."""
    bot.add_dynamic_items(RefineButton)
    await bot.add_cog(EditCog(bot))
