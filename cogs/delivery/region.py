"""The Edit region button and its form: repaint a part of a result, marked on a 3×3 grid or by the member's own mask.

The button is on a result's card only when the server's model takes a mask (``ImageModel.mask``),
and is a ``DynamicItem``, so it works on old results after a restart. Its form (within Discord's
five fields) asks for:

- the instruction;
- the grid: a checkbox group of the image's nine parts, "top left" … "bottom right";
- the member's own mask, optional: one PNG of the image's shape whose transparent pixels mark
  what to repaint (with cells ticked too, both are repainted);
- a style, when the server has presets;
- the options: "only me", "spoiler" and the server's model's own, the result's ticked.

The size is not asked: a region edit keeps the image's size (``cogs.members.region``). Its
submission is routed by custom_id in ``cogs.members.region``.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence, Set
from typing import Any

import discord
from discord import ui

from bot.core.overrides import PrivateResults
from bot.core.records import StylePreset
from bot.core.region import CELLS, same_shape
from bot.errors import InputError
from bot.i18n import Text, _pt, _t
from bot.media.masks import MASK_MAX_BYTES, NOT_PNG, too_large, wrong_shape
from cogs.core.answers import before_form
from cogs.core.custom_ids import (
    MASK_FIELD,
    REGION_BUTTON_TEMPLATE,
    REGION_CELLS_FIELD,
    RegionModalId,
    region_button_id,
)
from cogs.core.errors import guarded
from cogs.core.host import client_of
from cogs.core.language import language_of, render
from cogs.core.model_options import form_choices, form_defaults
from cogs.delivery.buttons import FORM_TEXT_MAX, first_image, options_field, prompt_field, style_field

REGION_LABEL = _pt("button", "Edit region")
# The grid's cells in the form, row by row (cell 0 is the top left): their values, and how they read.
CELL_VALUES = ("top-left", "top", "top-right", "left", "center", "right", "bottom-left", "bottom", "bottom-right")
CELL_LABELS = (
    _pt("grid cell", "top left"),
    _pt("grid cell", "top middle"),
    _pt("grid cell", "top right"),
    _pt("grid cell", "middle left"),
    _pt("grid cell", "center"),
    _pt("grid cell", "middle right"),
    _pt("grid cell", "bottom left"),
    _pt("grid cell", "bottom middle"),
    _pt("grid cell", "bottom right"),
)
NO_MASK_ANY_MORE = _t("This server's model can't repaint a region any more; use Refine instead.")


def grid_cells(values: Sequence[str]) -> frozenset[int]:
    """The cells ticked in the form's grid (0 top left … 8 bottom right); ``InputError`` for one it lacks."""
    try:
        return frozenset(CELL_VALUES.index(value) for value in values)
    except ValueError:
        raise InputError(_t("That part of the grid doesn't exist; open the form again.")) from None


def check_mask_file(payload: Mapping[str, Any], image_size: tuple[int, int] | None) -> None:
    """Refuse, before anything is charged, a mask file that cannot work by what Discord says of it: not a PNG, too
    large for the API, or of another shape than the image (``image_size``: image1's, when known). Its
    transparency is checked once it is fetched (``bot.media.masks``)."""
    declared = str(payload.get("content_type") or "").split(";")[0].strip().lower()
    if declared and declared != "image/png":
        raise InputError(NOT_PNG)
    size = int(payload.get("size") or 0)
    if size >= MASK_MAX_BYTES:
        raise InputError(too_large(size))
    width, height = payload.get("width"), payload.get("height")
    if not isinstance(width, int) or not isinstance(height, int) or image_size is None:
        return  # Discord did not say: the check of its bytes decides
    if not same_shape(width, height, *image_size):
        raise InputError(wrong_shape((width, height), image_size))


def grid_field(language: str | None) -> ui.Label[Any]:
    """The grid: the image's nine parts, tick those to repaint."""
    options = [
        discord.CheckboxGroupOption(label=render(label, language)[:100], value=value)
        for value, label in zip(CELL_VALUES, CELL_LABELS, strict=True)
    ]
    return ui.Label(
        text=render(_t("Parts to repaint"), language)[:FORM_TEXT_MAX],
        description=render(_t("The image cut in a 3×3 grid: tick the parts to repaint"), language)[:100],
        component=ui.CheckboxGroup(
            custom_id=REGION_CELLS_FIELD, required=False, min_values=0, max_values=CELLS, options=options
        ),
    )


def mask_field(language: str | None) -> ui.Label[Any]:
    """The member's own mask: one PNG, optional."""
    return ui.Label(
        text=render(_t("Or your own mask (optional)"), language)[:FORM_TEXT_MAX],
        description=render(_t("A PNG of the image's shape: its transparent pixels are repainted"), language)[:100],
        component=ui.FileUpload(custom_id=MASK_FIELD, required=False, min_values=0, max_values=1),
    )


class RegionModal(ui.Modal):
    """Asks what to paint, where (the grid, or a mask), a style (if the server has any) and the options.

    Everything in it is in ``language``, the language of the member who opens it.
    """

    def __init__(
        self,
        ids: RegionModalId,
        language: str | None,
        presets: Sequence[StylePreset] = (),
        *,
        only_me: bool = False,
        spoiler: bool = False,
        model: Sequence[tuple[str, Text]] = (),
        ticked: Set[str] = frozenset(),
    ) -> None:
        super().__init__(
            title=render(_t("Repaint part of this image"), language)[:FORM_TEXT_MAX],
            custom_id=ids.encode(),
            timeout=None,
        )
        self.add_item(
            prompt_field(
                _t("What should be there instead?"),
                _t("Only the parts you mark below are repainted; the rest is kept."),
                _t("e.g. a red umbrella over her head"),
                language,
            )
        )
        self.add_item(grid_field(language))
        self.add_item(mask_field(language))
        style = style_field(presets, language)
        if style is not None:
            self.add_item(style)
        self.add_item(options_field(only_me=only_me, spoiler=spoiler, language=language, model=model, ticked=ticked))


async def open_region_form(interaction: discord.Interaction, ids: RegionModalId) -> None:
    """Open the region form for the result ``ids`` names, if the member may build on it and the model can."""
    bot = client_of(interaction)
    async with before_form():
        parent = await bot.engine.result_for(ids.job_id, interaction.user.id)  # a private one: its requester's alone
        model = bot.engine.model_for(interaction.guild_id)
        if not model.mask:  # the server picked another model since the result was posted
            raise InputError(NO_MASK_ANY_MORE)
        limits = await bot.engine.limits_for(interaction.guild_id)
    policy = limits.private_results if limits is not None else PrivateResults.ALLOWED
    modal = RegionModal(
        ids,
        language_of(interaction),
        bot.engine.presets_of(interaction.guild_id),
        only_me=policy is PrivateResults.ALLOWED and not parent.request.private,
        spoiler=parent.request.spoiler,
        model=form_choices(model),
        ticked=form_defaults(parent.request.options),
    )
    await interaction.response.send_modal(modal)
    modal.stop()  # submissions are routed by custom_id, before and after a restart


class RegionButton(ui.DynamicItem[ui.Button[ui.View]], template=REGION_BUTTON_TEMPLATE):
    """🖌️ Edit region under a result, where the server's model takes a mask."""

    def __init__(self, job_id: str, language: str | None = None) -> None:
        super().__init__(
            ui.Button(
                label=render(REGION_LABEL, language),
                emoji="🖌️",
                style=discord.ButtonStyle.secondary,
                custom_id=region_button_id(job_id),
            )
        )
        self.job_id = job_id

    @classmethod
    async def from_custom_id(
        cls, interaction: discord.Interaction, item: ui.Item[Any], match: re.Match[str], /
    ) -> RegionButton:
        return cls(match["job_id"])

    async def callback(self, interaction: discord.Interaction) -> None:
        await guarded(interaction, self.open_form(interaction), "the Edit region button")

    async def open_form(self, interaction: discord.Interaction) -> None:
        message = interaction.message
        if message is None or first_image(message) is None:
            raise InputError(_t("This message has no image to repaint any more."))
        await open_region_form(interaction, RegionModalId(message.channel.id, message.id, self.job_id))
