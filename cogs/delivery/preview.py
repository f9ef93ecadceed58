"""A live preview on a job's status: the newest partial image its model streamed, as a card.

The status message becomes a Components V2 card (the partial image, large, and the status words
under it), with the image as a file of the same message. Discord never turns a card back into
plain text (IS_COMPONENTS_V2 "can only be set"), so once a status was a preview, every later
word on that message (a failure, a pause, a place in line, a pointer to a newer message) is
written as a card too: ``StatusCard``. The result's card replaces either.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import discord
from discord import ui

from cogs.core.text import clip
from cogs.core.uploads import ImageUpload

ALT_TEXT_MAX = 256


@dataclass(frozen=True)
class PreviewPicture:
    """One partial image as a status shows it."""

    index: int  # 0-based, as the API numbers them: a newer one has a higher index
    data: bytes
    filename: str  # a file of the status message (``attachment://``)
    description: str  # alt text: what it is a preview of
    spoiler: bool = False

    def file(self) -> discord.File:
        return discord.File(ImageUpload(self.data), filename=self.filename)


class PreviewCard(ui.LayoutView):
    """A running job's status with its newest partial image, large, above the status words."""

    def __init__(self, text: str, picture: PreviewPicture) -> None:
        super().__init__(timeout=None)
        card: ui.Container[ui.LayoutView] = ui.Container()
        gallery: ui.MediaGallery[ui.LayoutView] = ui.MediaGallery()
        gallery.add_item(
            media=f"attachment://{picture.filename}",
            description=clip(picture.description, ALT_TEXT_MAX),
            spoiler=picture.spoiler,
        )
        card.add_item(gallery)
        card.add_item(ui.TextDisplay(text))
        self.add_item(card)


class StatusCard(ui.LayoutView):
    """Status words (and their buttons) on a message that is a card already."""

    def __init__(self, text: str, buttons: Sequence[ui.Item[Any]] = ()) -> None:
        super().__init__(timeout=None)
        self.add_item(ui.TextDisplay(text))
        if buttons:
            row: ui.ActionRow[ui.LayoutView] = ui.ActionRow()
            for button in buttons:
                row.add_item(button)
            self.add_item(row)


def status_card(text: str, view: discord.ui.View | None) -> StatusCard:
    """``text`` and ``view``'s buttons (a waiting job's Cancel) as a card."""
    return StatusCard(text, list(view.children) if view is not None else [])
