"""Text as Discord shows it: cut to a length, a member's prompt quoted safely, a link to a message."""

from __future__ import annotations

import discord


def clip(text: str, limit: int) -> str:
    """Shorten ``text`` to ``limit`` characters, marking the cut."""
    return text if len(text) <= limit else text[: limit - 1] + "…"


def quote_prompt(prompt: str, limit: int = 600) -> str:
    """A prompt as a block quote, shortened, with @everyone/@here/role/user pings neutralised."""
    flat = " ".join(discord.utils.escape_mentions(prompt).split())
    return "> " + discord.utils.escape_markdown(clip(flat, limit), as_needed=True)


def message_link(guild_id: int | None, channel_id: int, message_id: int) -> str:
    """A jump link to a message (``@me`` for a direct message)."""
    return f"https://discord.com/channels/{guild_id or '@me'}/{channel_id}/{message_id}"
