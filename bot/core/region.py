"""A region edit's region: which part of image1 is repainted, as a member asked for it.

The member ticks cells of a 3×3 grid over the image (0 is the top left, 8 the bottom right,
row by row), uploads a mask of their own (a PNG whose transparent pixels mark what to repaint),
or both: what is repainted is then everything either marks. The mask the API gets is made from
this at image1's exact size (``bot.media.masks``) and kept with the job's inputs, so a restart or
a Reroll sends the very same one.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

from bot.errors import InputError
from bot.i18n import _t

GRID = 3  # cells on a side
CELLS = GRID * GRID
# An uploaded mask may differ in size from image1 (it is then scaled) if its shape is the same within this.
SHAPE_TOLERANCE = 0.01

NO_REGION = _t(
    "Tick at least one part of the grid, or add a mask (a PNG whose transparent pixels mark what to repaint). "
    "Nothing was charged."
)


@dataclass(frozen=True)
class Region:
    """The ticked cells of the grid, and whether the member's own mask comes with the job's inputs."""

    cells: frozenset[int] = frozenset()
    mask: bool = False  # an uploaded mask follows the images in the inputs

    def __post_init__(self) -> None:
        if not all(0 <= cell < CELLS for cell in self.cells):
            raise ValueError(f"grid cells are 0 to {CELLS - 1}, not {sorted(self.cells)}")

    @property
    def empty(self) -> bool:
        """Nothing marked: no cell and no mask (refused before anything is charged)."""
        return not self.cells and not self.mask

    def check(self) -> None:
        """Refuse (``InputError``) a region that marks nothing."""
        if self.empty:
            raise InputError(NO_REGION)

    def to_json(self) -> str:
        return json.dumps({"cells": sorted(self.cells), "mask": self.mask})

    @classmethod
    def from_json(cls, raw: str | None) -> Region | None:
        """What ``to_json`` wrote; ``None`` (not a region edit) for nothing."""
        if not raw:
            return None
        value = json.loads(raw)
        return cls(frozenset(int(cell) for cell in value.get("cells") or ()), bool(value.get("mask")))


def same_shape(width: int, height: int, other_width: int, other_height: int) -> bool:
    """Whether a ``width``×``height`` mask has the shape of an ``other_width``×``other_height`` image (then it is
    scaled to the image's size; a mask of another shape would repaint the wrong place, so it is refused)."""
    if min(width, height, other_width, other_height) <= 0:
        return False
    return abs(width * other_height - other_width * height) <= SHAPE_TOLERANCE * other_width * height
