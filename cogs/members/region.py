"""Edit region: a part of a result is repainted, where the grid's ticked cells or the member's own mask say.

The Edit region button (``cogs.delivery.region``) opens a form; its submission is routed here
by custom_id. Before anything is charged: a form that marks nothing (no cell, no mask) is
refused, and so is a mask file that cannot work by what Discord says of it (not a PNG, 4 MB
or more, another shape than the image); the engine then refuses a model that takes no mask.
The job is a ``region`` job (``bot.jobs.kinds.region``) that chains as a Refine does: the
clicked result is image1, the job is its refinement (its parent), and it is posted in the
result's thread, privately when the result was private or "only me" was ticked, and as a
spoiler as Refine decides. It keeps the image's size when the model takes that size (else
auto, which keeps its shape).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import discord
from discord.ext import commands

from bot.core.job import Job, JobRequest, Origin
from bot.core.region import Region
from bot.errors import InputError
from bot.i18n import _t
from cogs.core.answers import within
from cogs.core.custom_ids import (
    MASK_FIELD,
    ONLY_ME_OPTION,
    OPTIONS_FIELD,
    REFINE_PROMPT_FIELD,
    REGION_CELLS_FIELD,
    SPOILER_OPTION,
    STYLE_FIELD,
    RegionModalId,
)
from cogs.core.downloads import Readable, UploadedFile
from cogs.core.errors import guarded
from cogs.core.language import language_of
from cogs.core.model_options import picked_options
from cogs.core.requests import clean_prompt, form_answers, parse_style, requester
from cogs.delivery.buttons import first_image
from cogs.delivery.region import RegionButton, check_mask_file, grid_cells
from cogs.members.refine import RefineSource

if TYPE_CHECKING:
    from cogs.core.host import AtelierClient


def image1_size(interaction: discord.Interaction, ids: RegionModalId, parent: Job) -> tuple[int, int] | None:
    """image1's size in pixels: the clicked result's file as Discord describes it, else as its job recorded it
    (which may lag a moment behind the post)."""
    message = interaction.message
    attachment = first_image(message) if message is not None and message.id == ids.message_id else None
    if attachment is not None and attachment.width and attachment.height:
        return attachment.width, attachment.height
    if parent.output_width and parent.output_height:
        return parent.output_width, parent.output_height
    return None


class RegionCog(commands.Cog):
    """Region form submissions."""

    def __init__(self, bot: AtelierClient) -> None:
        self.bot = bot

    @commands.Cog.listener()
    async def on_interaction(self, interaction: discord.Interaction) -> None:
        """Route region-form submissions by custom_id, whether or not this process opened the form."""
        if interaction.type is not discord.InteractionType.modal_submit or not isinstance(interaction.data, dict):
            return
        ids = RegionModalId.parse(str(interaction.data.get("custom_id", "")))
        if ids is not None:
            await guarded(interaction, within(interaction, self.repaint(interaction, ids)), "the region form")

    async def repaint(self, interaction: discord.Interaction, ids: RegionModalId) -> None:
        """Repaint the marked part of the clicked result, as its refinement."""
        parent = await self.bot.engine.result_for(ids.job_id, interaction.user.id)
        answers = form_answers(interaction.data)
        picked = answers.picked(OPTIONS_FIELD) or []
        masks = answers.files(MASK_FIELD)
        if len(masks) > 1:  # the form takes one: only a tampered client sends more
            raise InputError(_t("Add one mask at most."))
        image_size = image1_size(interaction, ids, parent)
        for payload in masks:
            check_mask_file(payload, image_size)
        region = Region(grid_cells(answers.picked(REGION_CELLS_FIELD) or []), mask=bool(masks))
        region.check()  # before anything is charged (the engine checks again)
        added: list[tuple[str, Readable]] = [("mask", UploadedFile(p, self.bot.http)) for p in masks]
        # A private result's region edit stays private, whatever was ticked.
        private = parent.request.private or ONLY_ME_OPTION in picked
        where = None if private else self.bot.get_channel(ids.channel_id)
        who = requester(interaction, where)
        request = JobRequest(
            kind="region",
            origin=Origin.REFINE,
            user_id=interaction.user.id,
            guild_id=interaction.guild_id,
            channel_id=who.channel_id or ids.channel_id,
            prompt=clean_prompt(answers.text(REFINE_PROMPT_FIELD)),
            size=self.kept_size(image_size, interaction.guild_id),
            input_count=1,
            parent_job_id=ids.job_id,
            private=private,
            style=parse_style(answers.text(STYLE_FIELD)),
            language=language_of(interaction),
            spoiler=SPOILER_OPTION in picked,
            options=picked_options(picked),
            region=region,
        )
        await self.bot.engine.submit(request, who, RefineSource(self.bot, interaction, ids, added))

    def kept_size(self, image_size: tuple[int, int] | None, guild_id: int | None) -> str | None:
        """The image's own size, when the server's model makes that size; else auto (which keeps its shape)."""
        if image_size is None:
            return None
        size = f"{image_size[0]}x{image_size[1]}"
        return size if self.bot.engine.model_for(guild_id).accepts(size) else None


async def setup(bot: AtelierClient) -> None:
    """Load the region cog and its button."""
    await bot.add_cog(RegionCog(bot))
    bot.add_dynamic_items(RegionButton)
