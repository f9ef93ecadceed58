"""The model's options on a slash command (``quality``, ``format``, ``background``), shaped by the catalog at sync.

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
from collections.abc import Mapping
from typing import Any

from discord import app_commands

from bot.core.models import BACKGROUND, OUTPUT_FORMAT, QUALITY
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
