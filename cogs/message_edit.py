""" "Edit images" on any message (Apps menu): the images already in the chat become image1…imageN.

The message's image attachments come first, in the message's order, then the pictures
of its embeds (a pasted image link); at most ``MAX_IMAGES``. A form asks for the
instruction, the size and, where the server allows it, who sees the result, and (when
the server has any) a style. The submission is routed by custom_id, re-reads the message
(for fresh attachment links) and goes through the same ``JobEngine.submit`` as ``/edit``:
the status, then the result, is a reply to the message that does not ping its author;
a private one is the answer to the form, seen only by the member.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

import discord
from discord import app_commands, ui
from discord.ext import commands

from bot.errors import InputError
from bot.jobs import Destination, Job, JobKind, JobRequest
from bot.presets import StylePreset
from bot.settings import PrivateResults
from cogs.acknowledge import answer_in_place, post_status
from cogs.buttons import PROMPT_MAX, size_select, style_field
from cogs.custom_ids import PRIVATE_FIELD, REFINE_PROMPT_FIELD, REFINE_SIZE_FIELD, STYLE_FIELD, MessageModalId
from cogs.downloads import LinkedImage, Readable
from cogs.edit import MAX_ATTACHMENT_BYTES, MAX_IMAGES
from cogs.errors import guarded
from cogs.requests import clean_prompt, modal_values, parse_size, parse_style, requester

if TYPE_CHECKING:
    from cogs.client import AtelierBot

log = logging.getLogger(__name__)

COMMAND_NAME = "Edit images"
NO_IMAGES = (
    "That message has no image I can use: attach png, jpeg or webp images, or paste a link to one, "
    "then try **Edit images** again."
)
CANNOT_READ = (
    "I can't read this channel, so I can't use its images or reply here. "
    "A server admin can give me View Channel and Read Message History in it."
)
_IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".gif", ".bmp", ".tif", ".tiff")
_EVERYONE, _ONLY_ME = "everyone", "only-me"


def _is_image(attachment: discord.Attachment) -> bool:
    return (attachment.content_type or "").startswith("image/") or attachment.filename.lower().endswith(_IMAGE_SUFFIXES)


def message_images(message: discord.Message, http: discord.http.HTTPClient) -> list[Readable]:
    """The message's usable images in order: image attachments, then the pictures of its embeds."""
    found: list[Readable] = []
    for attachment in message.attachments:
        if _is_image(attachment):
            if attachment.size > MAX_ATTACHMENT_BYTES:
                raise InputError(
                    f"{attachment.filename} is {attachment.size / 1_000_000:.0f} MB; files up to "
                    f"{MAX_ATTACHMENT_BYTES // 1_000_000} MB are accepted."
                )
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


def images_description(count: int) -> str:
    """How the form says which image is which (at most 100 characters)."""
    used = min(count, MAX_IMAGES)
    if used == 1:
        text = "The message's image is image1"
    else:
        text = f"The message's {used} images are image1 to image{used}, in order"
    if count > MAX_IMAGES:
        text += f" (the first {MAX_IMAGES} of {count})"
    return text


class MessageEditModal(ui.Modal, title="Edit these images"):
    """Asks for the instruction and the size, as Refine does; who sees it and a style where they apply."""

    prompt: ui.Label[MessageEditModal] = ui.Label(
        text="What should the edit do?",
        component=ui.TextInput(
            custom_id=REFINE_PROMPT_FIELD,
            style=discord.TextStyle.paragraph,
            placeholder="e.g. put the cat from image1 into image2",
            max_length=PROMPT_MAX,
            required=True,
        ),
    )
    size: ui.Label[MessageEditModal] = ui.Label(
        text="Output size",
        description="auto keeps the aspect ratio of the image the instruction edits",
        component=size_select(),
    )

    def __init__(self, ids: MessageModalId, count: int, presets: list[StylePreset], private: PrivateResults) -> None:
        super().__init__(custom_id=ids.encode(), timeout=None)
        self.prompt.description = images_description(count)
        if private is PrivateResults.ALLOWED:
            self.add_item(
                ui.Label(
                    text="Who sees the result",
                    component=ui.Select(
                        custom_id=PRIVATE_FIELD,
                        required=False,
                        options=[
                            discord.SelectOption(label="Everyone in this channel", value=_EVERYONE, default=True),
                            discord.SelectOption(label="Only me", value=_ONLY_ME),
                        ],
                    ),
                )
            )
        elif private is PrivateResults.ALWAYS:
            self.title = "Edit these images (only you will see it)"
        style = style_field(presets)
        if style is not None:
            self.add_item(style)


class MessageSource:
    """The images of one message; the status is a reply to it (or, private, the answer to the form)."""

    def __init__(
        self, bot: AtelierBot, interaction: discord.Interaction, message: discord.Message, images: list[Readable]
    ) -> None:
        self.bot = bot
        self.interaction = interaction
        self.message = message
        self.images = images[:MAX_IMAGES]
        self.left_out = len(images) - len(self.images)

    async def announce(self, job: Job) -> Destination:
        state = "📥 Fetching the message's images…"
        if self.left_out:
            state += f" (the first {MAX_IMAGES}; {self.left_out} more were left out)"
        if job.request.private:
            return await answer_in_place(self.interaction, job, state)
        await self.interaction.response.send_message(
            f"🎨 Editing the images of {self.message.jump_url}…", ephemeral=True
        )
        return await post_status(
            self.interaction, job, self.message.channel, state, "🎨 Editing in", reply_to=self.message
        )

    async def fetch(self) -> list[tuple[str, bytes]]:
        named = [(f"image{n}", image) for n, image in enumerate(self.images, start=1)]
        return await self.bot.downloader.fetch(named)


class MessageEditCog(commands.Cog):
    """The "Edit images" message command and its form."""

    def __init__(self, bot: AtelierBot) -> None:
        self.bot = bot
        self.menu = app_commands.ContextMenu(name=COMMAND_NAME, callback=self.open_form)

    async def cog_load(self) -> None:
        self.bot.tree.add_command(self.menu)

    async def cog_unload(self) -> None:
        self.bot.tree.remove_command(self.menu.name, type=self.menu.type)

    async def open_form(self, interaction: discord.Interaction, message: discord.Message) -> None:
        """Check the channel and the message's images, then ask for the instruction."""
        check_can_read(interaction)
        limits = await self.bot.engine.may_start_here(requester(interaction))
        images = message_images(message, self.bot.http)
        if not images:
            raise InputError(NO_IMAGES)
        modal = MessageEditModal(
            MessageModalId(message.channel.id, message.id),
            len(images),
            self.bot.engine.presets.of(interaction.guild_id),
            limits.private_results if limits is not None else PrivateResults.ALLOWED,
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
            await guarded(interaction, self.submit(interaction, ids), "the Edit images form")

    async def submit(self, interaction: discord.Interaction, ids: MessageModalId) -> None:
        """Edit the message's images as the form says, through the same admission as ``/edit``."""
        check_can_read(interaction)
        values = modal_values(interaction.data)
        prompt = clean_prompt(values.get(REFINE_PROMPT_FIELD, ""))
        size = parse_size(values.get(REFINE_SIZE_FIELD) or None)
        message = await self.source_message(interaction, ids)
        images = message_images(message, self.bot.http)
        if not images:
            raise InputError(NO_IMAGES)
        source = MessageSource(self.bot, interaction, message, images)
        request = JobRequest(
            kind=JobKind.MESSAGE,
            user_id=interaction.user.id,
            guild_id=interaction.guild_id,
            channel_id=ids.channel_id,
            prompt=prompt,
            size=size,
            input_count=len(source.images),
            private=values.get(PRIVATE_FIELD) == _ONLY_ME,
            style=parse_style(values.get(STYLE_FIELD)),
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
            raise InputError("That message was deleted, so its images can't be edited.") from None
        except discord.Forbidden:
            raise InputError(CANNOT_READ) from None


async def setup(bot: AtelierBot) -> None:
    """Load the "Edit images" message command."""
    await bot.add_cog(MessageEditCog(bot))
