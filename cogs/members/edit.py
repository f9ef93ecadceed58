"""``/edit``: how a member starts a job with uploaded images.

Check what the member typed, then hand the engine the request with an input
source: the engine admits and charges the job, the source acknowledges it at once
(the status message, only the member's with ``private:True``) and downloads the
attachments, and the engine checks them, keeps them and queues the job. What happens
next is in ``cogs.delivery.status``. The job keeps the member's language, which its status,
result and failure speak; the command itself is translated by Discord (``cogs.core.translator``).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import TYPE_CHECKING

import discord
from discord import app_commands
from discord.ext import commands

from bot.core.job import MOST_VARIANTS, Destination, Job
from bot.core.models import offered_options
from bot.errors import InputError
from bot.i18n import Text, _nt, _t
from cogs.core.answers import within
from cogs.core.attachments import check_file
from cogs.core.downloads import Downloader
from cogs.core.language import _desc, _name
from cogs.core.model_options import shape_model_options
from cogs.core.requests import requester, style_choices
from cogs.delivery.acknowledge import answer_in_place
from cogs.delivery.buttons import PROMPT_MAX, CancelButton, GroupCancelButton, RefineButton
from cogs.members.request_options import DESCRIPTIONS, NAMES, command_request, size_suggestions

if TYPE_CHECKING:
    from cogs.core.host import AtelierClient

log = logging.getLogger(__name__)


def collect_images(options: Sequence[discord.Attachment | None]) -> list[tuple[str, discord.Attachment]]:
    """``(imageN, attachment)`` in order; refuse a gap, since renumbering would change the prompt."""
    last = max((i for i, a in enumerate(options, start=1) if a is not None), default=0)
    missing = [f"image{i}" for i in range(1, last + 1) if options[i - 1] is None]
    if missing:
        raise InputError(
            # Translators: {images} lists the images left empty, e.g. "image1, image3".
            _nt(
                "{images} is missing but a later image is set. "
                "Fill the images in order (image1, image2, …), because the prompt refers to them by number.",
                "{images} are missing but a later image is set. "
                "Fill the images in order (image1, image2, …), because the prompt refers to them by number.",
                len(missing),
                images=", ".join(missing),
            )
        )
    images = [(f"image{i}", a) for i, a in enumerate(options, start=1) if a is not None]
    for name, attachment in images:
        check_file(name, attachment)
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

    async def announce(self, job: Job, note: Text | None = None) -> Destination:
        return await answer_in_place(self.interaction, job, _t("📥 Fetching your images…"), note)

    async def fetch(self) -> list[tuple[str, bytes]]:
        return await self.downloader.fetch(self.sources)


class EditCog(commands.Cog):
    """The /edit command."""

    def __init__(self, bot: AtelierClient) -> None:
        self.bot = bot
        # The options the models in use take, with their values: the schema follows the catalog.
        shape_model_options(self.edit, offered_options(bot.config.models))

    @app_commands.command(
        name=_name("command name", "edit"), description=_desc("Edit or combine images with an instruction")
    )
    @app_commands.describe(
        prompt=_desc("What to do; call the images image1, image2, … e.g. “put the cat from image1 into image2”"),
        image1=_desc("The first image (the one the prompt calls image1)"),
        size=_desc("Output size; leave empty for auto (keeps the edited image's aspect ratio)"),
        **DESCRIPTIONS,
        # Spelt out, one text each, so that pybabel finds them.
        image2=_desc("Optional image2"),
        image3=_desc("Optional image3"),
        image4=_desc("Optional image4"),
        image5=_desc("Optional image5"),
        image6=_desc("Optional image6"),
        image7=_desc("Optional image7"),
        image8=_desc("Optional image8"),
        image9=_desc("Optional image9"),
        image10=_desc("Optional image10"),
    )
    @app_commands.rename(
        **NAMES,
        # Translators: the prompt calls the images by these names (image1 … image10): keep them recognisable.
        image1=_name("option name", "image1"),
        image2=_name("option name", "image2"),
        image3=_name("option name", "image3"),
        image4=_name("option name", "image4"),
        image5=_name("option name", "image5"),
        image6=_name("option name", "image6"),
        image7=_name("option name", "image7"),
        image8=_name("option name", "image8"),
        image9=_name("option name", "image9"),
        image10=_name("option name", "image10"),
    )
    async def edit(
        self,
        interaction: discord.Interaction,
        prompt: app_commands.Range[str, 1, PROMPT_MAX],
        image1: discord.Attachment,
        size: str | None = None,
        style: str | None = None,
        private: bool = False,
        spoiler: bool = False,
        quality: str | None = None,
        format: str | None = None,
        background: str | None = None,
        variations: app_commands.Range[int, 2, MOST_VARIANTS] | None = None,
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
        request = command_request(
            interaction, "edit", prompt=prompt, input_count=len(sources), size=size, style=style, private=private,
            spoiler=spoiler, quality=quality, format=format, background=background, variations=variations,
        )  # fmt: skip
        source = SlashCommandSource(interaction, sources, self.bot.downloader)
        # Admitted before the first answer (the status): a slow database is answered in time by a deferral.
        submitted = self.bot.engine.submit(request, requester(interaction), source)
        await within(interaction, submitted, private=request.private)

    @edit.autocomplete("size")
    async def size_autocomplete(self, interaction: discord.Interaction, current: str) -> list[app_commands.Choice[str]]:
        return size_suggestions(interaction, current)

    @edit.autocomplete("style")
    async def style_autocomplete(
        self, interaction: discord.Interaction, current: str
    ) -> list[app_commands.Choice[str]]:
        return style_choices(self.bot.engine.presets_matching(interaction.guild_id, current))


async def setup(bot: AtelierClient) -> None:
    """Load the edit cog and the persistent buttons."""
    bot.add_dynamic_items(RefineButton, CancelButton, GroupCancelButton)
    await bot.add_cog(EditCog(bot))
