""" "Edit images" on any message (Apps menu): the images already in the chat become image1…imageN.

The message's image attachments come first, in the message's order, then the pictures
of its embeds (a pasted image link), then the files the member adds in the form; at most
``MAX_IMAGES`` in all. A form asks for the instruction, images to add, the size, a style
(when the server has any) and the options: "only me" (where the server lets members
choose), "spoiler", and the server's model's own (``cogs.core.model_options``). The
submission is routed by custom_id, re-reads the message (for fresh attachment links) and
goes through the same ``JobEngine.submit`` as ``/edit``: the status, then the result, is a
reply to the message that does not ping its author; a private one is the answer to the
form, seen only by the member. The form is in the member's language, and the job keeps it
for its status, result and failure.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import TYPE_CHECKING

import discord
from discord import app_commands
from discord.ext import commands

from bot.core.job import Destination, Job, JobRequest, Origin
from bot.core.overrides import PrivateResults
from bot.core.records import StylePreset
from bot.errors import InputError
from bot.i18n import Text, _nt, _t
from cogs.core.answers import before_form, within
from cogs.core.attachments import MAX_ATTACHMENT_BYTES, MAX_IMAGES, added_images, too_large
from cogs.core.custom_ids import (
    IMAGES_FIELD,
    ONLY_ME_OPTION,
    OPTIONS_FIELD,
    PRIVATE_FIELD,
    REFINE_PROMPT_FIELD,
    REFINE_SIZE_FIELD,
    SPOILER_OPTION,
    STYLE_FIELD,
    MessageModalId,
)
from cogs.core.downloads import LinkedImage, Readable, UploadedFile
from cogs.core.errors import guarded
from cogs.core.language import _name, language_of, render
from cogs.core.model_options import form_choices, picked_options
from cogs.core.requests import clean_prompt, form_answers, parse_size, parse_style, requester
from cogs.delivery.acknowledge import answer_in_place, post_status, private_note
from cogs.delivery.buttons import FORM_TEXT_MAX, images_field, options_field, prompt_field, size_field, style_field

if TYPE_CHECKING:
    from cogs.core.host import AtelierClient

log = logging.getLogger(__name__)

# Translators: the message command, in the Apps menu of a message (at most 32 characters).
COMMAND_NAME = _name("command name", "Edit images")
# Translators: **Edit images** is the message command's name: use its translation.
NO_IMAGES = _t(
    "That message has no image I can use: attach png, jpeg or webp images, or paste a link to one, "
    "then try **Edit images** again."
)
# Translators: View Channel and Read Message History are Discord permissions: use Discord's own names.
CANNOT_READ = _t(
    "I can't read this channel, so I can't use its images or reply here. "
    "A server admin can give me View Channel and Read Message History in it."
)
_IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".gif", ".bmp", ".tif", ".tiff")


def _is_image(attachment: discord.Attachment) -> bool:
    return (attachment.content_type or "").startswith("image/") or attachment.filename.lower().endswith(_IMAGE_SUFFIXES)


def message_images(message: discord.Message, http: discord.http.HTTPClient) -> list[Readable]:
    """The message's usable images in order: image attachments, then the pictures of its embeds."""
    found: list[Readable] = []
    for attachment in message.attachments:
        if _is_image(attachment):
            if attachment.size > MAX_ATTACHMENT_BYTES:
                raise too_large(attachment.filename, attachment.size)
            found.append(attachment)
    for embed in message.embeds:
        # A pasted image link is an "image" embed showing the picture as its thumbnail; a rich embed's
        # image is its picture (its thumbnail is decoration). Only Discord's proxy address is used.
        proxy = embed.image.proxy_url or (embed.thumbnail.proxy_url if embed.type == "image" else None)
        if proxy:
            found.append(LinkedImage(proxy, http))
    return found


def check_can_read(interaction: discord.Interaction) -> None:
    """Refuse a channel the bot cannot read (it could neither fetch the message nor reply to it)."""
    if interaction.guild_id is None:
        return
    permissions = interaction.app_permissions
    if not (permissions.view_channel and permissions.read_message_history):
        raise InputError(CANNOT_READ)


def images_description(count: int) -> Text:
    """How the form says which image is which (rendered, at most 100 characters are shown)."""
    used = min(count, MAX_IMAGES)
    if used == 1:
        return _t("The message's image is image1")
    if count > MAX_IMAGES:
        # Translators: only the first {used} of the message's {count} images are used.
        return _t(
            "The message's {used} images are image1 to image{used}, in order (the first {used} of {count})",
            used=used,
            count=count,
        )
    # Translators: {count} is at least 2 (one image has its own text), so the singular is never shown in English.
    return _nt(
        "The message's {count} image is image1 to image{count}, in order",
        "The message's {count} images are image1 to image{count}, in order",
        used,
    )


def shows_spoilers(message: discord.Message) -> bool:
    """Whether the message hides an image of its own as a spoiler (the form then suggests one for the result)."""
    return any(_is_image(attachment) and attachment.is_spoiler() for attachment in message.attachments)


class MessageEditModal(discord.ui.Modal):
    """Asks for the instruction, images to add and the size, as Refine does; a style and the options where they apply.

    Everything in it is in ``language``, the language of the member who opens it.
    """

    def __init__(
        self,
        ids: MessageModalId,
        count: int,
        presets: list[StylePreset],
        private: PrivateResults,
        language: str | None,
        *,
        spoiler: bool = False,
        model: Sequence[tuple[str, Text]] = (),
    ) -> None:
        title = (
            _t("Edit these images (only you will see it)")
            if private is PrivateResults.ALWAYS
            else _t("Edit these images")
        )
        super().__init__(title=render(title, language)[:FORM_TEXT_MAX], custom_id=ids.encode(), timeout=None)
        self.add_item(
            prompt_field(
                _t("What should the edit do?"),
                images_description(count),
                _t("e.g. put the cat from image1 into image2"),
                language,
            )
        )
        used = min(count, MAX_IMAGES)
        images = images_field(used + 1, MAX_IMAGES - used, language)
        if images is not None:
            self.add_item(images)
        self.add_item(size_field(_t("auto keeps the aspect ratio of the image the instruction edits"), language))
        style = style_field(presets, language)
        if style is not None:
            self.add_item(style)
        only_me = private is PrivateResults.ALLOWED
        self.add_item(options_field(only_me=only_me, spoiler=spoiler, language=language, model=model))


class MessageSource:
    """The images of one message; the status is a reply to it (or, private, the answer to the form)."""

    def __init__(
        self,
        bot: AtelierClient,
        interaction: discord.Interaction,
        message: discord.Message,
        images: list[Readable],
        uploads: Sequence[UploadedFile] = (),
    ) -> None:
        self.bot = bot
        self.interaction = interaction
        self.message = message
        self.images = images[:MAX_IMAGES]
        self.left_out = len(images) - len(self.images)
        # The files added in the form come after the message's images (checked here, before any charge).
        self.added: list[tuple[str, Readable]] = list(added_images(len(self.images), uploads))

    async def announce(self, job: Job, note: Text | None = None) -> Destination:
        state = _t("📥 Fetching the message's images…")
        if self.left_out:
            # Translators: {used} images of the message are used; {count} more were not (too many).
            state = _nt(
                "📥 Fetching the message's images… (the first {used}; {count} more was left out)",
                "📥 Fetching the message's images… (the first {used}; {count} more were left out)",
                self.left_out,
                used=MAX_IMAGES,
            )
        if job.request.private:
            return await answer_in_place(self.interaction, job, state)
        answered = await private_note(
            self.interaction,
            # Translators: {message} is a link to the message whose images are edited.
            _t("🎨 Editing the images of {message}…", message=self.message.jump_url),
        )
        # Translators: followed by a link to the status, a reply to the message whose images are edited.
        pointer = _t("🎨 Editing in")
        return await post_status(
            self.interaction, job, self.message.channel, state, pointer, reply_to=self.message, answered=answered
        )

    @property
    def input_count(self) -> int:
        return len(self.images) + len(self.added)

    async def fetch(self) -> list[tuple[str, bytes]]:
        named = [(f"image{n}", image) for n, image in enumerate(self.images, start=1)]
        return await self.bot.downloader.fetch([*named, *self.added])


class MessageEditCog(commands.Cog):
    """The "Edit images" message command and its form."""

    def __init__(self, bot: AtelierClient) -> None:
        self.bot = bot
        self.menu = app_commands.ContextMenu(name=COMMAND_NAME, callback=self.open_form)

    async def cog_load(self) -> None:
        self.bot.tree.add_command(self.menu)

    async def cog_unload(self) -> None:
        self.bot.tree.remove_command(self.menu.name, type=self.menu.type)

    async def open_form(self, interaction: discord.Interaction, message: discord.Message) -> None:
        """Check the channel and the message's images, then ask for the instruction."""
        check_can_read(interaction)
        async with before_form():
            limits = await self.bot.engine.may_start_here(requester(interaction))
        images = message_images(message, self.bot.http)
        if not images:
            raise InputError(NO_IMAGES)
        modal = MessageEditModal(
            MessageModalId(message.channel.id, message.id),
            len(images),
            self.bot.engine.presets_of(interaction.guild_id),
            limits.private_results if limits is not None else PrivateResults.ALLOWED,
            language_of(interaction),
            spoiler=shows_spoilers(message),
            model=form_choices(self.bot.engine.model_for(interaction.guild_id)),
        )
        await interaction.response.send_modal(modal)
        modal.stop()  # submissions are routed by custom_id (``on_interaction``), before and after a restart

    @commands.Cog.listener()
    async def on_interaction(self, interaction: discord.Interaction) -> None:
        """Route "Edit images" form submissions by custom_id."""
        if interaction.type is not discord.InteractionType.modal_submit or not isinstance(interaction.data, dict):
            return
        ids = MessageModalId.parse(str(interaction.data.get("custom_id", "")))
        if ids is not None:
            await guarded(interaction, within(interaction, self.submit(interaction, ids)), "the Edit images form")

    async def submit(self, interaction: discord.Interaction, ids: MessageModalId) -> None:
        """Edit the message's images as the form says, through the same admission as ``/edit``."""
        check_can_read(interaction)
        answers = form_answers(interaction.data)
        prompt = clean_prompt(answers.text(REFINE_PROMPT_FIELD))
        size = parse_size(answers.text(REFINE_SIZE_FIELD) or None)
        uploads = [UploadedFile(payload, self.bot.http) for payload in answers.files(IMAGES_FIELD)]
        options = answers.picked(OPTIONS_FIELD) or []
        # A form opened before the options field asked "who sees the result" with a select.
        private = ONLY_ME_OPTION in options or answers.text(PRIVATE_FIELD) == ONLY_ME_OPTION
        message = await self.source_message(interaction, ids)
        images = message_images(message, self.bot.http)
        if not images:
            raise InputError(NO_IMAGES)
        source = MessageSource(self.bot, interaction, message, images, uploads)
        request = JobRequest(
            kind="edit",
            origin=Origin.MESSAGE,
            user_id=interaction.user.id,
            guild_id=interaction.guild_id,
            channel_id=ids.channel_id,
            prompt=prompt,
            size=size,
            input_count=source.input_count,
            private=private,
            style=parse_style(answers.text(STYLE_FIELD)),
            language=language_of(interaction),
            spoiler=SPOILER_OPTION in options,
            options=picked_options(options),
        )
        await self.bot.engine.submit(request, requester(interaction, message.channel), source)

    async def source_message(self, interaction: discord.Interaction, ids: MessageModalId) -> discord.Message:
        """The message again, with fresh attachment links."""
        channel: object = interaction.channel
        if channel is None or getattr(channel, "id", None) != ids.channel_id:
            channel = self.bot.get_partial_messageable(ids.channel_id, guild_id=interaction.guild_id)
        if not isinstance(channel, discord.abc.Messageable):
            raise InputError(CANNOT_READ)
        try:
            return await channel.fetch_message(ids.message_id)
        except discord.NotFound:
            raise InputError(_t("That message was deleted, so its images can't be edited.")) from None
        except discord.Forbidden:
            raise InputError(CANNOT_READ) from None


async def setup(bot: AtelierClient) -> None:
    """Load the "Edit images" message command."""
    await bot.add_cog(MessageEditCog(bot))
