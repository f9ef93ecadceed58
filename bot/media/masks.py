"""A region edit's mask: made from the grid's ticked cells, or checked from the member's own, at image1's size.

The image API takes a mask as OpenAI's ``images/edits`` defines it: a PNG with an alpha channel,
under 4 MB, the same size as the first image, whose fully transparent pixels (alpha 0) mark where
to edit. Here:

- a ticked cell is fully transparent, and the rest fully opaque, except a feather of ``FEATHER``
  pixels just outside the ticked cells, where alpha rises evenly to opaque (at a distance of ``d``
  pixels from the nearest ticked cell, counted as the larger of the horizontal and vertical gaps,
  alpha is ``255 * d // FEATHER``), so the repainted part blends into what is kept;
- the cells split the image at ``width * i // 3`` and ``height * j // 3``: every pixel is in
  exactly one cell, whatever the size;
- a member's own mask must be a PNG with transparency, the same shape as image1 (scaled to its
  size, nearest neighbour, so a transparent pixel stays fully transparent), and mark something;
  with cells ticked too, both are repainted.

CPU work: called through ``Editor.run``, off the event loop.
"""

from __future__ import annotations

import io

from PIL import Image, ImageChops, ImageDraw

from bot.core.region import CELLS, GRID, NO_REGION, same_shape
from bot.errors import InputError
from bot.i18n import Text, _t
from bot.media.images import PreparedImage, decode_image, sniff_format

FEATHER = 8  # pixels of soft edge around the ticked cells
MASK_MAX_BYTES = 4_000_000  # the API takes a mask "under 4 MB"
OPAQUE = 255
MASK_NAME = "mask"  # how errors name it

NOT_PNG = _t("The mask must be a PNG file with transparency: its transparent pixels mark what to repaint.")
NO_ALPHA = _t(
    "The mask has no transparency. Erase the part to repaint (leave it transparent) and save the mask as PNG."
)
NOTHING_MARKED = _t(
    "Nothing in the mask is fully transparent, so nothing would be repainted. Erase the part to repaint."
)


def too_large(size: int) -> Text:
    """The refusal of a mask of ``size`` bytes (the API takes less than 4 MB)."""
    # Translators: {size} and {limit} are in megabytes, e.g. "5.2 MB".
    return _t("The mask is {size}; a mask must be under {limit}.", size=_mb(size), limit=_mb(MASK_MAX_BYTES))


def wrong_shape(mask: tuple[int, int], image: tuple[int, int]) -> Text:
    """The refusal of a mask whose shape is not image1's."""
    return _t(
        # Translators: {mask} and {image} are sizes in pixels, e.g. 512×512 and 1024×1536.
        "The mask is {mask} and image1 is {image}. Draw the mask over the image itself, at its size or its shape.",
        mask=_pixels(*mask),
        image=_pixels(*image),
    )


def cell_box(cell: int, width: int, height: int) -> tuple[int, int, int, int]:
    """The pixels of ``cell`` (0 top left … 8 bottom right) in a ``width``×``height`` image: ``(x0, y0, x1, y1)``,
    with ``x0 <= x < x1`` and ``y0 <= y < y1``."""
    row, column = divmod(cell, GRID)
    return (width * column // GRID, height * row // GRID, width * (column + 1) // GRID, height * (row + 1) // GRID)


def grid_alpha(width: int, height: int, cells: frozenset[int], feather: int = FEATHER) -> Image.Image:
    """The alpha of the grid's mask (mode ``L``): 0 in the ticked cells, ``255 * d // feather`` at ``d`` pixels
    from them (the nearest, by the larger gap), opaque from ``feather`` pixels away."""
    alpha = Image.new("L", (width, height), OPAQUE)
    draw = ImageDraw.Draw(alpha)
    boxes = [box for box in (cell_box(c, width, height) for c in sorted(cells) if 0 <= c < CELLS) if _has_area(box)]
    # Rings from the outermost in: a pixel keeps the value of the nearest ring that covers it, for any cell.
    for distance in range(feather - 1, -1, -1):
        value = OPAQUE * distance // feather
        for x0, y0, x1, y1 in boxes:
            draw.rectangle((x0 - distance, y0 - distance, x1 - 1 + distance, y1 - 1 + distance), fill=value)
    return alpha


def region_mask(width: int, height: int, cells: frozenset[int], uploaded: bytes | None) -> PreparedImage:
    """The mask to send with a ``width``×``height`` image1: the ticked ``cells`` and the ``uploaded`` mask's
    transparent pixels repainted; ``InputError`` for a mask that cannot be used or a region that marks nothing."""
    alpha = grid_alpha(width, height, cells) if cells else None
    note: Text | None = None
    if uploaded is not None:
        theirs, note = uploaded_alpha(uploaded, width, height)
        alpha = theirs if alpha is None else ImageChops.darker(alpha, theirs)
    if alpha is None:
        raise InputError(NO_REGION)
    if alpha.getextrema()[0] != 0:
        raise InputError(NOTHING_MARKED)
    mask = Image.new("RGBA", (width, height), (0, 0, 0, OPAQUE))
    mask.putalpha(alpha)
    buffer = io.BytesIO()
    mask.save(buffer, format="PNG", optimize=True)
    data = buffer.getvalue()
    if len(data) >= MASK_MAX_BYTES:  # a grid's mask is a few KB; only a member's noisy one could be this large
        raise InputError(too_large(len(data)))
    return PreparedImage(data, "image/png", width, height, note)


def uploaded_alpha(data: bytes, width: int, height: int) -> tuple[Image.Image, Text | None]:
    """The alpha of a member's mask at image1's size (mode ``L``), and a note when it was scaled to it."""
    if len(data) >= MASK_MAX_BYTES:
        raise InputError(too_large(len(data)))
    if sniff_format(data) != "PNG":
        raise InputError(NOT_PNG)
    image = decode_image(data, MASK_NAME)
    if not _has_alpha(image):
        raise InputError(NO_ALPHA)
    alpha = image.convert("RGBA").getchannel("A")
    if alpha.size == (width, height):
        return alpha, None
    if not same_shape(alpha.width, alpha.height, width, height):
        raise InputError(wrong_shape(alpha.size, (width, height)))
    note = _t(
        # Translators: {mask} and {image} are sizes in pixels.
        "the mask was scaled from {mask} to image1's {image}",
        mask=_pixels(*alpha.size),
        image=_pixels(width, height),
    )
    return alpha.resize((width, height), Image.Resampling.NEAREST), note


def _has_alpha(image: Image.Image) -> bool:
    return image.mode in ("RGBA", "LA", "PA", "RGBa", "La") or "transparency" in image.info


def _has_area(box: tuple[int, int, int, int]) -> bool:
    x0, y0, x1, y1 = box
    return x1 > x0 and y1 > y0


def _pixels(width: int, height: int) -> str:
    return f"{width}×{height}"


def _mb(size: int) -> str:
    return f"{size / 1_000_000:.1f} MB"
