"""Refine: a result becomes image1 of a new edit, the files added in the form image2…, posted in the result's thread.

The Refine button (``cogs.delivery.buttons``) opens a form; its submission is routed here by
custom_id, so it works whether or not this process opened the form. The added files pass the
same checks as ``/edit``'s attachments before anything is charged. The engine admits and
charges the job; the input source answers the member privately, finds or makes the thread,
posts the status there, and downloads the clicked image and the added files, in that order.
The refinement of a private result stays private: its status and result are the answer to
the form, seen only by the member (and only that member may refine it); "only me" makes a
public result's refinement private the same way. The job keeps the member's language, which
its status, result and failure speak.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import TYPE_CHECKING, Literal

import discord
from discord.ext import commands

from bot.core.job import Destination, Job, JobRequest, Origin
from bot.errors import InputError
from bot.i18n import Text, _t
from cogs.core.answers import within
from cogs.core.attachments import added_images
from cogs.core.custom_ids import (
    IMAGES_FIELD,
    ONLY_ME_OPTION,
    OPTIONS_FIELD,
    REFINE_PROMPT_FIELD,
    REFINE_SIZE_FIELD,
    SPOILER_OPTION,
    STYLE_FIELD,
    RefineModalId,
)
from cogs.core.downloads import Downloader, Readable, UploadedFile
from cogs.core.errors import guarded
from cogs.core.language import language_of
from cogs.core.model_options import picked_options
from cogs.core.requests import clean_prompt, form_answers, parse_size, parse_style, requester
from cogs.core.text import clip
from cogs.delivery.acknowledge import answer_in_place, post_status, private_note
from cogs.delivery.buttons import first_image

if TYPE_CHECKING:
    from cogs.core.host import AtelierClient

log = logging.getLogger(__name__)

THREAD_ARCHIVE_MINUTES: Literal[10080] = 10080  # 7 days
_THREAD_EXISTS = 160004
NO_IMAGE = _t("That message has no image to refine any more.")
FETCHING = _t("📥 Fetching the image…")
FETCHING_ALL = _t("📥 Fetching the images…")
REFUSED = _t("Discord refused to start the refinement here; check my permissions.")


class RefineSource:
    """The inputs of one refine: the clicked result's image, then the files added in the form; the status goes
    into the result's thread (or, private, is the answer to the form)."""

    def __init__(
        self,
        bot: AtelierClient,
        interaction: discord.Interaction,
        ids: RefineModalId,
        added: Sequence[tuple[str, Readable]] = (),
    ) -> None:
        self.bot = bot
        self.interaction = interaction
        self.ids = ids
        self.added = added
        self.attachment: discord.Attachment | None = None

    async def announce(self, job: Job, note: Text | None = None) -> Destination:
        interaction = self.interaction
        fetching = FETCHING_ALL if self.added else FETCHING
        if job.request.private:
            # The clicked result is on the interaction (or fetched: a private one sent by DM, or a public one
            # refined privately from elsewhere).
            self.attachment = first_image(await self.source_message(), self.ids.job_id)
            if self.attachment is None:
                raise InputError(NO_IMAGE)
            return await answer_in_place(interaction, job, fetching)
        answered = await private_note(interaction, _t("🎨 Starting your refinement…"))
        source = await self.source_message()
        self.attachment = first_image(source, self.ids.job_id)
        if self.attachment is None:
            raise InputError(NO_IMAGE)
        try:
            thread = await self.thread_for(source, job)
        except discord.HTTPException as exc:
            raise InputError(REFUSED, log_detail=f"refine thread refused: {exc.status} {exc.code}") from None
        # Translators: followed by a link to the thread where the refinement's status is.
        pointer = _t("🎨 Refining in")
        return await post_status(interaction, job, thread, fetching, pointer, refused=REFUSED, answered=answered)

    async def fetch(self) -> list[tuple[str, bytes]]:
        assert self.attachment is not None
        downloader: Downloader = self.bot.downloader
        return await downloader.fetch([("image1", self.attachment), *self.added])

    async def source_message(self) -> discord.Message:
        """The clicked result, with fresh attachment links: from the interaction, or fetched."""
        interaction, ids = self.interaction, self.ids
        if interaction.message is not None and interaction.message.id == ids.message_id:
            return interaction.message
        channel: object = interaction.channel
        if channel is None or getattr(channel, "id", None) != ids.channel_id:
            channel = self.bot.get_channel(ids.channel_id) or await self.bot.fetch_channel(ids.channel_id)
        if not isinstance(channel, discord.abc.Messageable):
            raise InputError(_t("That result is in a channel I can't read any more."))
        try:
            return await channel.fetch_message(ids.message_id)
        except discord.NotFound:
            raise InputError(_t("That result was deleted, so it can't be refined.")) from None
        except discord.Forbidden:
            raise InputError(
                # Translators: "Read Message History" is a Discord permission: use Discord's own name for it.
                _t("I can't read that channel's history (Read Message History is missing).")
            ) from None

    async def thread_for(self, source: discord.Message, job: Job) -> discord.abc.Messageable:
        """The thread where refinements of ``source`` go: its own thread, or a new one."""
        channel = source.channel
        if isinstance(channel, discord.Thread) or not isinstance(channel, discord.TextChannel):
            return channel  # already in a thread (or forum post), or a DM: stay there
        if source.thread is not None:
            return source.thread
        parent = await self.bot.engine.job(self.ids.job_id)
        name = clip(" ".join((parent.request.prompt if parent else job.request.prompt).split()), 100)
        try:
            return await source.create_thread(name=name, auto_archive_duration=THREAD_ARCHIVE_MINUTES)
        except discord.Forbidden:
            raise InputError(
                # Translators: "Create Public Threads" is a Discord permission: use Discord's own name for it.
                _t("I can't create threads here (Create Public Threads is missing); ask a server admin.")
            ) from None
        except discord.HTTPException as exc:
            if exc.code != _THREAD_EXISTS:
                raise
        existing = self.bot.get_channel(source.id) or await self.bot.fetch_channel(source.id)
        if not isinstance(existing, discord.Thread):
            raise InputError(_t("I couldn't find the thread for that result."))
        return existing


class RefineCog(commands.Cog):
    """Refine form submissions."""

    def __init__(self, bot: AtelierClient) -> None:
        self.bot = bot

    @commands.Cog.listener()
    async def on_interaction(self, interaction: discord.Interaction) -> None:
        """Route refine-form submissions by custom_id, whether or not this process opened the form."""
        if interaction.type is not discord.InteractionType.modal_submit or not isinstance(interaction.data, dict):
            return
        ids = RefineModalId.parse(str(interaction.data.get("custom_id", "")))
        if ids is not None:
            await guarded(interaction, within(interaction, self.refine(interaction, ids)), "the refine form")

    async def refine(self, interaction: discord.Interaction, ids: RefineModalId) -> None:
        """Turn the clicked result into image1 of a new edit, the added files after it, posted in a thread
        (privately, if it was private or "only me" was ticked)."""
        parent = await self.bot.engine.result_for(ids.job_id, interaction.user.id)
        answers = form_answers(interaction.data)
        options = answers.picked(OPTIONS_FIELD)
        # A private result's refinement stays private, whatever was ticked.
        private = parent.request.private or ONLY_ME_OPTION in (options or ())
        # A form opened before it had options keeps the result's spoiler, and the model's options it was made with.
        spoiler = parent.request.spoiler if options is None else SPOILER_OPTION in options
        model_options = inherited_options(self.bot, parent, interaction.guild_id) if options is None else None
        model_options = model_options if model_options is not None else picked_options(options or [])
        uploads = [UploadedFile(payload, self.bot.http) for payload in answers.files(IMAGES_FIELD)]
        added = added_images(1, uploads)
        # A public refinement is made where the result is (a form opened from /history may be elsewhere), so
        # that channel's rules apply; a private one is answered here, privately.
        where = None if private else self.bot.get_channel(ids.channel_id)
        who = requester(interaction, where)
        request = JobRequest(
            kind="edit",
            origin=Origin.REFINE,
            user_id=interaction.user.id,
            guild_id=interaction.guild_id,
            channel_id=who.channel_id or ids.channel_id,
            prompt=clean_prompt(answers.text(REFINE_PROMPT_FIELD)),
            size=parse_size(answers.text(REFINE_SIZE_FIELD) or None),
            input_count=1 + len(added),
            parent_job_id=ids.job_id,
            private=private,
            style=parse_style(answers.text(STYLE_FIELD)),
            language=language_of(interaction),
            spoiler=spoiler,
            options=model_options,
        )
        await self.bot.engine.submit(request, who, RefineSource(self.bot, interaction, ids, added))


def inherited_options(bot: AtelierClient, parent: Job, guild_id: int | None) -> dict[str, str | int]:
    """The model's options ``parent`` was made with that the server's model still takes (a refinement asked
    without choosing starts from them)."""
    takes = bot.engine.model_for(guild_id).options
    return {name: value for name, value in parent.request.options.items() if value in takes.choices(name)}


async def setup(bot: AtelierClient) -> None:
    """Load the refine cog."""
    await bot.add_cog(RefineCog(bot))
