"""``/edit``: how a member starts a job with uploaded images.

Check what the member typed, then hand the engine the request with an input
source: the engine admits and charges the job, the source acknowledges it at once
(the status message, only the member's with ``private:True``) and downloads the
attachments, and the engine checks them, keeps them and queues the job. What happens
next is in ``cogs.status``.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import TYPE_CHECKING

import discord
from discord import app_commands
from discord.ext import commands

from bot.errors import InputError
from bot.jobs import Destination, Job, JobKind, JobRequest
from bot.sizes import size_choices
from cogs.acknowledge import answer_in_place
from cogs.buttons import PROMPT_MAX, CancelButton, RefineButton
from cogs.downloads import Downloader
from cogs.requests import clean_prompt, parse_size, parse_style, requester, style_choices

if TYPE_CHECKING:
    from cogs.client import AtelierBot

log = logging.getLogger(__name__)

MAX_IMAGES = 10
# Refused before download: far beyond anything the API takes, even after re-encoding.
MAX_ATTACHMENT_BYTES = 50 * 1024 * 1024


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


class SlashCommandSource:
    """The inputs of one ``/edit``: acknowledged as the command's public response."""

    def __init__(
        self,
        interaction: discord.Interaction,
        sources: Sequence[tuple[str, discord.Attachment]],
        downloader: Downloader,
    ) -> None:
        self.interaction = interaction
        self.sources = sources
        self.downloader = downloader

    async def announce(self, job: Job) -> Destination:
        return await answer_in_place(self.interaction, job, "📥 Fetching your images…")

    async def fetch(self) -> list[tuple[str, bytes]]:
        return await self.downloader.fetch(self.sources)


class EditCog(commands.Cog):
    """The /edit command."""

    def __init__(self, bot: AtelierBot) -> None:
        self.bot = bot

    @app_commands.command(name="edit", description="Edit or combine images with an instruction")
    @app_commands.describe(
        prompt="What to do; call the images image1, image2, … e.g. “put the cat from image1 into image2”",
        image1="The first image (the one the prompt calls image1)",
        size="Output size; leave empty for auto (keeps the edited image's aspect ratio)",
        style="One of this server's styles, added to your instruction",
        private="Only you see the progress and the result",
        **{f"image{n}": f"Optional image{n}" for n in range(2, MAX_IMAGES + 1)},
    )
    async def edit(
        self,
        interaction: discord.Interaction,
        prompt: app_commands.Range[str, 1, PROMPT_MAX],
        image1: discord.Attachment,
        size: str | None = None,
        style: str | None = None,
        private: bool = False,
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
            kind=JobKind.EDIT,
            user_id=interaction.user.id,
            guild_id=interaction.guild_id,
            channel_id=interaction.channel_id or 0,
            prompt=clean_prompt(prompt),
            size=parse_size(size),
            input_count=len(sources),
            private=private,
            style=parse_style(style),
        )
        source = SlashCommandSource(interaction, sources, self.bot.downloader)
        await self.bot.engine.submit(request, requester(interaction), source)

    @edit.autocomplete("size")
    async def size_autocomplete(self, interaction: discord.Interaction, current: str) -> list[app_commands.Choice[str]]:
        return [app_commands.Choice(name=label, value=value) for label, value in size_choices(current)]

    @edit.autocomplete("style")
    async def style_autocomplete(
        self, interaction: discord.Interaction, current: str
    ) -> list[app_commands.Choice[str]]:
        return style_choices(self.bot.engine.presets, interaction.guild_id, current)


async def setup(bot: AtelierBot) -> None:
    """Load the edit cog and the persistent buttons."""
    bot.add_dynamic_items(RefineButton, CancelButton)
    await bot.add_cog(EditCog(bot))
