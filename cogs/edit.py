"""``/edit`` and Refine: how a member starts a job.

Both read top to bottom the same way: check what the member typed, admit the
job (permissions, limits, charge), acknowledge, fetch and check the images, and
hand the job to the queue. What happens next is in ``cogs.progress``.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, Literal

import aiohttp
import discord
from discord import app_commands
from discord.ext import commands

from bot.errors import AtelierError, InputError
from bot.jobs import Job, JobRequest
from bot.limits import Requester
from bot.sizes import normalize_size, size_choices
from cogs.buttons import PROMPT_MAX, RefineButton, cancel_view, first_image
from cogs.custom_ids import REFINE_PROMPT_FIELD, REFINE_SIZE_FIELD, RefineModalId
from cogs.delivery import Delivery, clip, interaction_target, message_target
from cogs.errors import report_unexpected, send_error
from cogs.progress import status_text

if TYPE_CHECKING:
    from bot.client import AtelierBot

log = logging.getLogger(__name__)

MAX_IMAGES = 10
# Refused before download: far beyond anything the API takes, even after re-encoding.
MAX_ATTACHMENT_BYTES = 50 * 1024 * 1024
DOWNLOAD_TIMEOUT = 60.0
DOWNLOADS_AT_ONCE = 16
THREAD_ARCHIVE_MINUTES: Literal[10080] = 10080  # 7 days
_THREAD_EXISTS = 160004


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


def modal_values(data: Any) -> dict[str, str]:
    """``custom_id -> value`` for every input in a modal submission (Label or action-row layout)."""
    values: dict[str, str] = {}

    def walk(node: Any) -> None:
        if isinstance(node, dict):
            if "custom_id" in node and ("value" in node or "values" in node):
                picked = node.get("values")
                values[node["custom_id"]] = (picked[0] if picked else "") if "values" in node else node["value"]
            for key in ("components", "component"):
                walk(node.get(key))
        elif isinstance(node, list):
            for child in node:
                walk(child)

    walk(data.get("components") if isinstance(data, dict) else None)
    return values


def requester(interaction: discord.Interaction) -> Requester:
    """Who is asking and from where, as the limits need it."""
    channel = interaction.channel
    member = interaction.user if isinstance(interaction.user, discord.Member) else None
    return Requester(
        user_id=interaction.user.id,
        guild_id=interaction.guild_id,
        channel_id=interaction.channel_id or 0,
        parent_channel_id=channel.parent_id if isinstance(channel, discord.Thread) else None,
        role_ids=frozenset(r.id for r in member.roles) if member else frozenset(),
        is_manager=interaction.guild_id is not None and interaction.permissions.manage_guild,
    )


class EditCog(commands.Cog):
    """The /edit command and the Refine flow."""

    def __init__(self, bot: AtelierBot) -> None:
        self.bot = bot
        # First come, first fetched: in a burst of commands the earliest get their images
        # (and their place in the queue) first, instead of all crawling along together.
        self._downloads = asyncio.Semaphore(DOWNLOADS_AT_ONCE)

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
        sources = collect_images([image1, image2, image3, image4, image5, image6, image7, image8, image9, image10])
        request = JobRequest(
            kind="edit",
            user_id=interaction.user.id,
            guild_id=interaction.guild_id,
            channel_id=interaction.channel_id or 0,
            prompt=clean_prompt(prompt),
            size=parse_size(size),
            input_count=len(sources),
        )
        job = await self.bot.jobs.admit(request, requester(interaction))
        # Acknowledge at once, well inside Discord's 3 s; everything slow happens after.
        try:
            response = await interaction.response.send_message(
                status_text(job, "📥 Fetching your images…"), view=cancel_view(job.id)
            )
        except discord.HTTPException:
            await self.bot.jobs.abandon(job, AtelierError("acknowledgement failed"))
            raise
        message_id = response.message_id if isinstance(response.message_id, int) else None
        job = await self.bot.jobs.set_delivery(job, interaction_target(interaction, message_id))
        await self.prepare_and_enqueue(job, sources)

    @edit.autocomplete("size")
    async def size_autocomplete(self, interaction: discord.Interaction, current: str) -> list[app_commands.Choice[str]]:
        return [app_commands.Choice(name=label, value=value) for label, value in size_choices(current)]

    async def prepare_and_enqueue(self, job: Job, sources: Sequence[tuple[str, discord.Attachment]]) -> None:
        """Download and check the images now (option attachments are short-lived), then queue the job."""
        try:
            files = await self.download(sources)
            images = await self.bot.editor.prepare_inputs(files)
        except AtelierError as error:
            await self.bot.jobs.abandon(job, error)
            await Delivery(self.bot, job.delivery, job.user_id).failure(error)
            return
        notes = [image.note for image in images if image.note]
        if notes:
            job = await self.bot.jobs.set_delivery(job, {"notes": notes})
        await self.bot.jobs.enqueue(job, images)

    async def download(self, sources: Sequence[tuple[str, discord.Attachment]]) -> list[tuple[str, bytes]]:
        """Fetch every attachment, in order."""

        async def fetch(name: str, attachment: discord.Attachment) -> tuple[str, bytes]:
            try:
                async with self._downloads, asyncio.timeout(DOWNLOAD_TIMEOUT):
                    return name, await attachment.read()
            except (discord.HTTPException, aiohttp.ClientError, TimeoutError):
                raise InputError(f"{name} could not be downloaded from Discord; attach it again.") from None

        return list(await asyncio.gather(*(fetch(name, a) for name, a in sources)))

    # Refine ---------------------------------------------------------------------------------

    @commands.Cog.listener()
    async def on_interaction(self, interaction: discord.Interaction) -> None:
        """Route refine-modal submissions by custom_id, whether or not this process opened the modal."""
        if interaction.type is not discord.InteractionType.modal_submit or not isinstance(interaction.data, dict):
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
        request = JobRequest(
            kind="refine",
            user_id=interaction.user.id,
            guild_id=interaction.guild_id,
            channel_id=interaction.channel_id or ids.channel_id,
            prompt=clean_prompt(values.get(REFINE_PROMPT_FIELD, "")),
            size=parse_size(values.get(REFINE_SIZE_FIELD) or None),
            input_count=1,
            parent_job_id=ids.job_id,
        )
        job = await self.bot.jobs.admit(request, requester(interaction))
        await interaction.response.send_message("🎨 Starting your refinement…", ephemeral=True)
        try:
            source = await self.source_message(interaction, ids)
            attachment = first_image(source)
            if attachment is None:
                raise InputError("That message has no image to refine any more.")
            destination = await self.thread_for(source, ids.job_id, job.prompt)
            status = await destination.send(status_text(job, "📥 Fetching the image…"), view=cancel_view(job.id))
        except AtelierError as error:
            await self.bot.jobs.abandon(job, error)
            raise
        except discord.HTTPException as exc:
            await self.bot.jobs.abandon(job, AtelierError("could not start the refine", log_detail=str(exc.status)))
            raise AtelierError("Discord refused to start the refinement here; check my permissions.") from None
        upload_limit = status.guild.filesize_limit if status.guild else interaction.filesize_limit
        job = await self.bot.jobs.set_delivery(job, message_target(status, interaction, upload_limit))
        await interaction.edit_original_response(content=f"🎨 Refining in {status.jump_url}")
        await self.prepare_and_enqueue(job, [("image1", attachment)])

    async def source_message(self, interaction: discord.Interaction, ids: RefineModalId) -> discord.Message:
        """The clicked result, with fresh attachment links: from the interaction, or fetched."""
        if interaction.message is not None and interaction.message.id == ids.message_id:
            return interaction.message
        channel: object = interaction.channel
        if channel is None or getattr(channel, "id", None) != ids.channel_id:
            channel = self.bot.get_channel(ids.channel_id) or await self.bot.fetch_channel(ids.channel_id)
        if not isinstance(channel, discord.abc.Messageable):
            raise InputError("That result is in a channel I can't read any more.")
        try:
            return await channel.fetch_message(ids.message_id)
        except discord.NotFound:
            raise InputError("That result was deleted, so it can't be refined.") from None
        except discord.Forbidden:
            raise InputError("I can't read that channel's history (Read Message History is missing).") from None

    async def thread_for(self, source: discord.Message, parent_job_id: str, prompt: str) -> discord.abc.Messageable:
        """The thread where refinements of ``source`` go: its own thread, or a new one."""
        channel = source.channel
        if isinstance(channel, discord.Thread) or not isinstance(channel, discord.TextChannel):
            return channel  # already in a thread (or forum post), or a DM: stay there
        if source.thread is not None:
            return source.thread
        parent = await self.bot.jobs.store.get_job(parent_job_id)
        name = clip(" ".join((parent.prompt if parent else prompt).split()), 100)
        try:
            return await source.create_thread(name=name, auto_archive_duration=THREAD_ARCHIVE_MINUTES)
        except discord.Forbidden:
            raise InputError(
                "I can't create threads here (Create Public Threads is missing); ask a server admin."
            ) from None
        except discord.HTTPException as exc:
            if exc.code != _THREAD_EXISTS:
                raise
        existing = self.bot.get_channel(source.id) or await self.bot.fetch_channel(source.id)
        if not isinstance(existing, discord.Thread):
            raise InputError("I couldn't find the thread for that result.")
        return existing


async def setup(bot: AtelierBot) -> None:
    """Load the edit cog and the persistent buttons."""
    from cogs.buttons import CancelButton

    bot.add_dynamic_items(RefineButton, CancelButton)
    await bot.add_cog(EditCog(bot))
