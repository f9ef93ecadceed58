"""Style presets: a server's named texts that are added to a member's instruction.

An admin adds ``watercolour`` = ``as a loose watercolour painting on textured paper``;
a member picks ``style: watercolour`` and the API is asked "make the sky purple, as a
loose watercolour painting on textured paper". The job keeps the name (for the caption
and the ledger) and the text as it was (so a reroll asks the same thing even if the
preset changed since; ``bot.core.job.styled_prompt`` joins them). Every server's presets
are read at start-up and cached here; a change another process makes is announced.
"""

from __future__ import annotations

import asyncio
import re
import time
from typing import Protocol

from bot.core.records import StylePreset
from bot.errors import InputError
from bot.i18n import _t

MAX_PRESETS = 25  # also the most choices a Discord select or autocomplete shows
MAX_TEXT = 500
MAX_NAME = 32
_NAME = re.compile(r"^\w[\w' -]*$")
# An admin may write the text as "…, as a watercolour" or "..., as a watercolour".
_PLACEHOLDER = ("…", "...")


def preset_name(raw: str) -> str:
    """A preset name as stored and compared: trimmed, single-spaced, lower case; refuse a bad one."""
    name = " ".join(raw.split()).lower()
    if not name:
        raise InputError(_t("A style needs a name, e.g. `watercolour`."))
    if len(name) > MAX_NAME or not _NAME.match(name):
        raise InputError(
            _t(
                "`{name}` can't be a style name: use up to {most} letters, digits, spaces, "
                "`-`, `_` or `'`, starting with a letter or digit.",
                name=name[:40],
                most=MAX_NAME,
            )
        )
    return name


def preset_text(raw: str) -> str:
    """A preset's text, single-spaced; refuse an empty or over-long one."""
    text = " ".join(raw.split())
    for placeholder in _PLACEHOLDER:
        text = text.removeprefix(placeholder).lstrip()
    if not text.strip(" ,;:"):
        raise InputError(_t("A style needs a text to add to the instruction, e.g. `as a loose watercolour painting`."))
    if len(text) > MAX_TEXT:
        raise InputError(
            _t(
                "A style's text can be at most {most} characters; this one has {length}.",
                most=MAX_TEXT,
                length=len(text),
            )
        )
    return text


class PresetStore(Protocol):
    async def all_presets(self) -> list[StylePreset]: ...
    async def save_preset(self, preset: StylePreset) -> None: ...
    async def delete_preset(self, guild_id: int, name: str) -> None: ...


class StylePresets:
    """Every server's presets, cached; changed only through ``add`` and ``remove``."""

    def __init__(self, store: PresetStore) -> None:
        self._store = store
        self._by_guild: dict[int, dict[str, StylePreset]] = {}
        # Every change is announced, this process's own too, and reloads the cache: a reload must not
        # interleave with a change here (it would read the store before the change and swap it out).
        self._changing = asyncio.Lock()

    async def load(self) -> None:
        async with self._changing:
            # Built aside and swapped in whole: commands meanwhile see the previous presets, not none.
            by_guild: dict[int, dict[str, StylePreset]] = {}
            for preset in await self._store.all_presets():
                by_guild.setdefault(preset.guild_id, {})[preset.name] = preset
            self._by_guild = by_guild

    def of(self, guild_id: int | None) -> list[StylePreset]:
        """A server's presets, by name."""
        if guild_id is None:
            return []
        return sorted(self._by_guild.get(guild_id, {}).values(), key=lambda p: p.name)

    def get(self, guild_id: int | None, name: str) -> StylePreset:
        """The preset called ``name`` (any case); refuse a name the server does not have."""
        preset = self._by_guild.get(guild_id or 0, {}).get(" ".join(name.split()).lower())
        if preset is None:
            known = ", ".join(f"`{p.name}`" for p in self.of(guild_id))
            raise InputError(
                _t("This server has no style called `{name}`. Its styles: {styles}.", name=name[:40], styles=known)
                if known
                else _t("This server has no style called `{name}`, and no styles yet.", name=name[:40])
            )
        return preset

    def matching(self, guild_id: int | None, typed: str) -> list[StylePreset]:
        """Presets whose name contains what the member typed so far (for autocomplete)."""
        query = " ".join(typed.split()).lower()
        return [p for p in self.of(guild_id) if query in p.name]

    async def add(self, guild_id: int, name: str, text: str, by: int) -> tuple[StylePreset, StylePreset | None]:
        """Add or replace a preset; return it and the one it replaced. At most ``MAX_PRESETS`` per server."""
        preset = StylePreset(guild_id, preset_name(name), preset_text(text), by, time.time())
        async with self._changing:
            presets = self._by_guild.setdefault(guild_id, {})
            replaced = presets.get(preset.name)
            if replaced is None and len(presets) >= MAX_PRESETS:
                raise InputError(
                    _t(
                        "This server already has {most} styles, the most it can have; remove one first.",
                        most=MAX_PRESETS,
                    )
                )
            # Cached before the write so two quick adds cannot both take the last place; undone if it fails.
            presets[preset.name] = preset
            try:
                await self._store.save_preset(preset)
            except BaseException:
                if replaced is None:
                    presets.pop(preset.name, None)
                else:
                    presets[preset.name] = replaced
                raise
            return preset, replaced

    async def remove(self, guild_id: int, name: str) -> StylePreset:
        """Remove a preset; refuse a name the server does not have. Jobs that used it keep its text."""
        async with self._changing:
            preset = self.get(guild_id, name)
            await self._store.delete_preset(guild_id, preset.name)
            self._by_guild.get(guild_id, {}).pop(preset.name, None)
            return preset
