"""What a member typed or clicked, turned into what the engine takes: prompt, size, requester, form values.

What was typed is refused with a ``Text`` (shown in the member's language); the prompt and
the server's style names and texts are never translated.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import discord
from discord import app_commands

from bot.core.records import StylePreset
from bot.core.sizes import parse_size_text
from bot.errors import InputError
from bot.i18n import _t
from bot.servers.limits import Requester
from cogs.core.text import clip


def parse_size(text: str | None) -> str | None:
    """The wire size for a submitted value (whether the server's model takes it is the engine's check)."""
    try:
        return parse_size_text(text)
    except ValueError:
        raise InputError(
            # Translators: {size} is what the member typed as the size; "auto" is the automatic size.
            _t(
                "`{size}` is not a size the image service supports. Pick one from the list "
                "(start typing, e.g. 2048 or 16:9), or leave size empty for auto.",
                size=clip(text or "", 40),
            )
        ) from None


def clean_prompt(text: str) -> str:
    """The prompt with surrounding space removed; refuse an empty one."""
    prompt = text.strip()
    if not prompt:
        raise InputError(_t("The prompt is empty. Say what to do with the images, e.g. “put image1 in image2”."))
    return prompt


def parse_style(text: str | None) -> str | None:
    """A chosen style's name (the engine checks the server has it), or ``None`` for none."""
    name = " ".join((text or "").split())
    return name or None


def style_choices(presets: Sequence[StylePreset]) -> list[app_commands.Choice[str]]:
    """Autocomplete for ``style``: the server's presets that match what was typed."""
    return [app_commands.Choice(name=clip(f"{p.name} — {p.text}", 100), value=p.name) for p in presets]


def requester(interaction: discord.Interaction, channel: object | None = None) -> Requester:
    """Who is asking and from where, as the limits need it; ``channel`` when the job goes elsewhere."""
    channel = channel if channel is not None else interaction.channel
    member = interaction.user if isinstance(interaction.user, discord.Member) else None
    channel_id = getattr(channel, "id", None) or interaction.channel_id or 0
    return Requester(
        user_id=interaction.user.id,
        guild_id=interaction.guild_id,
        channel_id=channel_id,
        parent_channel_id=channel.parent_id if isinstance(channel, discord.Thread) else None,
        role_ids=frozenset(r.id for r in member.roles) if member else frozenset(),
        is_manager=interaction.guild_id is not None and interaction.permissions.manage_guild,
    )


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
