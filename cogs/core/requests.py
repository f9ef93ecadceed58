"""What a member typed or clicked, turned into what the engine takes: prompt, size, requester, form values.

What was typed is refused with a ``Text`` (shown in the member's language); the prompt and
the server's style names and texts are never translated.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
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


@dataclass(frozen=True)
class FormAnswers:
    """What a member submitted in a form (a modal), by each field's custom_id, as Discord sends it.

    Text inputs and radio groups send a ``value``; selects, checkbox groups and file uploads a
    list of ``values`` (a file upload's are attachment ids, resolved in ``data.resolved.attachments``);
    a checkbox sends a boolean ``value``.
    """

    texts: Mapping[str, str] = field(default_factory=dict)
    picks: Mapping[str, list[str]] = field(default_factory=dict)
    checks: Mapping[str, bool] = field(default_factory=dict)
    attachments: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)

    def text(self, custom_id: str) -> str:
        """A field's value: a text input's text, or a select's first choice ("" when none)."""
        if custom_id in self.texts:
            return self.texts[custom_id]
        picked = self.picks.get(custom_id)
        return picked[0] if picked else ""

    def picked(self, custom_id: str) -> list[str] | None:
        """Every value a select or checkbox group sent, in order; ``None`` when the form had no such field."""
        return self.picks.get(custom_id)

    def files(self, custom_id: str) -> list[Mapping[str, Any]]:
        """The files added in a file upload, in the order the member added them (none when the form had none)."""
        found: list[Mapping[str, Any]] = []
        for attachment_id in self.picks.get(custom_id) or []:
            payload = self.attachments.get(attachment_id)
            if payload is None or not payload.get("url"):
                # Discord resolves every file it sends; without it there is nothing to fetch.
                raise InputError(_t("Discord did not pass on a file you added; add it again."))
            found.append(payload)
        return found


def form_answers(data: Any) -> FormAnswers:
    """The answers of a modal submission (``interaction.data``), Label or action-row layout."""
    texts: dict[str, str] = {}
    picks: dict[str, list[str]] = {}
    checks: dict[str, bool] = {}

    def walk(node: Any) -> None:
        if isinstance(node, dict):
            custom_id = node.get("custom_id")
            if isinstance(custom_id, str):
                if isinstance(node.get("values"), list):
                    picks[custom_id] = [str(value) for value in node["values"]]
                elif isinstance(node.get("value"), bool):
                    checks[custom_id] = node["value"]
                elif "value" in node:
                    texts[custom_id] = str(node["value"] or "")
            for key in ("components", "component"):
                walk(node.get(key))
        elif isinstance(node, list):
            for child in node:
                walk(child)

    if not isinstance(data, dict):
        return FormAnswers()
    walk(data.get("components"))
    resolved = data.get("resolved")
    attachments = resolved.get("attachments") if isinstance(resolved, dict) else None
    return FormAnswers(texts, picks, checks, attachments if isinstance(attachments, dict) else {})


def modal_values(data: Any) -> dict[str, str]:
    """``custom_id -> value`` for every text input and select in a modal submission (a select's first choice)."""
    answers = form_answers(data)
    return {custom_id: answers.text(custom_id) for custom_id in {**answers.picks, **answers.texts}}
