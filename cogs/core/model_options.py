"""The model's options (``quality``, ``format``, ``background``) on the slash commands, shaped by the catalog at sync,
and in the Refine, "Edit images" and region forms, shaped by the server's model when the form opens.

Discord's command schema is one for every server, while each server may use another model. So the
commands offer the **union** of what the models in use take (``bot.core.models.offered_options``),
with their values as choices, and an option no model in use takes is not in the schema at all. A
server whose model lacks an option a member picked is refused by the engine, before anything is
charged, with a message naming the option and the model. The schema is built when the cog loads,
from the configuration, so the sync hash (``cogs.core.command_sync``) covers it: a catalog that
changes what is offered syncs the commands again.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from typing import Any

from discord import app_commands

from bot.core.models import BACKGROUND, OPTION_LABELS, OUTPUT_FORMAT, QUALITY, TRANSPARENT, ImageModel
from bot.errors import InputError
from bot.i18n import Text, _t
from cogs.core.custom_ids import MODEL_OPTION_SEPARATOR
from cogs.core.language import _name

#: Each option's parameter name in the commands' callbacks, by its name on the wire.
PARAMETERS = {QUALITY: "quality", OUTPUT_FORMAT: "format", BACKGROUND: "background"}
# How the values members see read (a value the catalog adds that is not here shows as it is).
LABELS: Mapping[str, Mapping[str, app_commands.locale_str | str]] = {
    QUALITY: {
        "low": _name("choice name", "low"),
        "medium": _name("choice name", "medium"),
        "high": _name("choice name", "high"),
        "auto": _name("choice name", "auto"),
    },
    OUTPUT_FORMAT: {"png": "PNG", "jpeg": "JPEG", "webp": "WebP"},
    BACKGROUND: {
        "transparent": _name("choice name", "transparent (a sticker)"),
        "opaque": _name("choice name", "opaque"),
        "auto": _name("choice name", "auto"),
    },
}


def shape_model_options(command: app_commands.Command[Any, ..., Any], offered: Mapping[str, tuple[str, ...]]) -> None:
    """Give ``command``'s model options the choices ``offered`` (wire name -> values), and drop the others.

    ``command`` is a cog's own copy (``Cog.__new__`` copies each command and its parameter table), and each
    parameter is replaced, not changed, so no other copy is touched. discord.py has no public way to drop a
    parameter from a command built by its decorators; its table is ``_params``, read by ``to_dict`` (the
    schema) and by the argument transform (a dropped one is never filled: the callback's default).
    """
    params = command._params
    for wire, name in PARAMETERS.items():
        values = offered.get(wire)
        if not values:
            params.pop(name, None)
            continue
        labels = LABELS.get(wire, {})
        choices: list[app_commands.Choice[str | int | float]] = [
            app_commands.Choice(name=labels.get(value, value), value=value) for value in values
        ]
        params[name] = dataclasses.replace(params[name], choices=choices)


def asked_options(**given: str | None) -> dict[str, str | int]:
    """What a member picked, by wire name (``quality=…, format=…, background=…``; ``None``: not picked)."""
    wire_of = {name: wire for wire, name in PARAMETERS.items()}
    return {wire_of[name]: value for name, value in given.items() if value is not None}


# The forms -----------------------------------------------------------------------------------------------------
#
# A form holds at most five fields, and Refine's and "Edit images"' are all taken when the server has styles
# (instruction, Add images, size, style, options). So the model's options are choices in the form's one options
# group (a checkbox group: ten choices at most), beside "only me" and "spoiler": "transparent background", then
# one choice per quality and per format the model takes, e.g. "quality:high" and "format:webp". Leaving a kind
# unticked is the model's own default (auto), so "auto" is not a choice, nor are the other backgrounds; ticking
# two of one kind is refused before anything is charged, and what is ticked goes through the same checks as the
# slash commands' options (``ImageModel.check_options``: a transparent background forces png or webp).


def form_value(wire: str, value: str) -> str:
    """The options group's value for ``value`` of the option ``wire`` (e.g. ``quality:high``)."""
    return f"{PARAMETERS[wire]}{MODEL_OPTION_SEPARATOR}{value}"


def value_label(wire: str, value: str) -> Text | str:
    """How a value of an option reads, in any language (the commands' choice names; a new value as it is)."""
    label = LABELS.get(wire, {}).get(value, value)
    if isinstance(label, app_commands.locale_str):
        return Text(label.message, context=label.extras.get("context"))
    return label


def form_choices(model: ImageModel) -> list[tuple[str, Text]]:
    """The model's options a form offers, as (value, label), in the order the form shows them."""
    choices: list[tuple[str, Text]] = []
    if TRANSPARENT in model.options.choices(BACKGROUND):
        choices.append((form_value(BACKGROUND, TRANSPARENT), _t("Transparent background")))
    for quality in model.options.choices(QUALITY):
        if quality != "auto":
            # Translators: {quality} is a quality's name: low, medium, high.
            choices.append(
                (form_value(QUALITY, quality), _t("Quality: {quality}", quality=value_label(QUALITY, quality)))
            )
    for fmt in model.options.choices(OUTPUT_FORMAT):
        # Translators: {format} is a file format: PNG, JPEG, WebP.
        choices.append((form_value(OUTPUT_FORMAT, fmt), _t("Format: {format}", format=value_label(OUTPUT_FORMAT, fmt))))
    return choices


def form_defaults(options: Mapping[str, str | int]) -> set[str]:
    """The options group's values for ``options`` (a parent's, which a refinement starts from)."""
    return {form_value(wire, value) for wire, value in options.items() if wire in PARAMETERS and isinstance(value, str)}


def picked_options(values: Sequence[str]) -> dict[str, str | int]:
    """The model's options ticked in a form's options group, by wire name (the group's other choices ignored).

    Refuses (``InputError``) two values of one option; whether the model takes them is the engine's check.
    """
    wire_of = {name: wire for wire, name in PARAMETERS.items()}
    picked: dict[str, str | int] = {}
    for value in values:
        name, separator, choice = value.partition(MODEL_OPTION_SEPARATOR)
        wire = wire_of.get(name)
        if not separator or wire is None:
            continue
        if wire in picked:
            # Translators: {option} is an option's name: quality, format or background.
            raise InputError(_t("Tick at most one {option}.", option=OPTION_LABELS[wire]))
        picked[wire] = choice
    return picked
