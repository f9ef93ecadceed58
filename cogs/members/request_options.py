"""What ``/edit`` and ``/imagine`` share: the options after the prompt (their descriptions and names, one
translated text each), the request they make, and the size suggestions as the member types."""

from __future__ import annotations

import discord
from discord import app_commands

from bot.core.job import JobRequest
from bot.core.sizes import size_choices
from cogs.core.language import _desc, _name, language_of
from cogs.core.model_options import asked_options
from cogs.core.requests import clean_prompt, parse_size, parse_style

# Spelt out, one text each, so that pybabel finds them.
DESCRIPTIONS: dict[str, str | app_commands.locale_str] = {
    "style": _desc("One of this server's styles, added to your instruction"),
    "private": _desc("Only you see the progress and the result"),
    "spoiler": _desc("Show the result and its images as spoilers, hidden until clicked"),
    "quality": _desc("Image quality, if this server's model offers a choice"),
    "format": _desc("The result's file format: png, jpeg or webp"),
    "background": _desc("A transparent background (a sticker, as png or webp) or an opaque one"),
    "variations": _desc("Run it 2 to 4 times, each one edit of your limit, and pick the best"),
}
NAMES: dict[str, str | app_commands.locale_str] = {
    "prompt": _name("option name", "prompt"),
    "size": _name("option name", "size"),
    "style": _name("option name", "style"),
    "private": _name("option name", "private"),
    "spoiler": _name("option name", "spoiler"),
    "quality": _name("option name", "quality"),
    "format": _name("option name", "format"),
    "background": _name("option name", "background"),
    "variations": _name("option name", "variations"),
}


def command_request(
    interaction: discord.Interaction,
    kind: str,
    *,
    prompt: str,
    input_count: int,
    size: str | None,
    style: str | None,
    private: bool,
    spoiler: bool,
    quality: str | None,
    format: str | None,
    background: str | None,
    variations: int | None,
) -> JobRequest:
    """The request a slash command makes of its options, checked (a bad value raises ``InputError``)."""
    return JobRequest(
        kind=kind,
        user_id=interaction.user.id,
        guild_id=interaction.guild_id,
        channel_id=interaction.channel_id or 0,
        prompt=clean_prompt(prompt),
        size=parse_size(size),
        input_count=input_count,
        private=private,
        spoiler=spoiler,
        style=parse_style(style),
        language=language_of(interaction),
        options=asked_options(quality=quality, format=format, background=background),
        variants=variations or 1,
    )


def size_suggestions(interaction: discord.Interaction, current: str) -> list[app_commands.Choice[str]]:
    """The sizes that match what the member typed, in their language."""
    choices = size_choices(current, language_of(interaction))
    return [app_commands.Choice(name=label[:100], value=value) for label, value in choices]
