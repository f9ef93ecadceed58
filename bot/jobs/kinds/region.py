"""The region edit: repaint a part of image1 (a result) as the instruction says, through ``POST {base}/images/edits``
with a ``mask``.

Its inputs are image1, then the mask (``bot.media.masks``), made at image1's size once image1 is
prepared, from the ticked cells and the member's own mask (fetched after the images), and kept
with the job: a restart or a Reroll sends the same mask (a Reroll's kept mask comes back after
image1, and is used as the member's own would be: the same cells again change nothing). Only a
model that takes a mask makes one (checked at admission, with the fallback's); the client never
sends a mask to one that does not.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from bot.core.job import Job
from bot.core.region import GRID, Region
from bot.errors import AtelierError
from bot.i18n import Text, _t
from bot.media.editor import Editor
from bot.media.images import PreparedImage
from bot.media.masks import region_mask
from bot.provider.client import Endpoint, ProviderRequest

INPUTS_LOST = _t(
    "This region edit's images were lost while the bot restarted. You were not charged; please send it again."
)
# The card's line: the grid as the member ticked it (language-neutral), and whether their own mask was used.
TICKED, UNTICKED = "🟦", "⬜"


def grid_picture(cells: frozenset[int]) -> str:
    """The ticked cells as three rows of squares, e.g. ``⬜🟦⬜ ⬜🟦⬜ ⬜⬜⬜``."""
    rows = ("".join(TICKED if row * GRID + col in cells else UNTICKED for col in range(GRID)) for row in range(GRID))
    return " ".join(rows)


@dataclass(frozen=True)
class RegionKind:
    """image1 and its mask: the part the mask leaves transparent is repainted, the rest kept."""

    name: str = "region"
    endpoint: str = "edits"
    needs_images: bool = True

    async def prepare(self, job: Job, files: Sequence[tuple[str, bytes]], editor: Editor) -> list[PreparedImage]:
        count = job.request.input_count
        images = await editor.prepare_inputs(files[:count])
        extra = files[count:]
        if not images or len(extra) > 1:  # a bug in its source: admission logs it and refunds the job
            raise ValueError(f"a region edit got {len(images)} image(s) and {len(extra)} mask(s)")
        region = job.request.region or Region()
        first = images[0]
        uploaded = extra[0][1] if extra else None
        mask = await editor.run(region_mask, first.width, first.height, region.cells, uploaded)
        return [*images, mask]

    def request(self, job: Job, images: Sequence[PreparedImage], api_key: str | None) -> ProviderRequest:
        *pictures, mask = images
        return ProviderRequest(
            Endpoint.EDITS,
            job.request.api_prompt,
            pictures,
            job.request.size,
            model=job.model or "",
            api_key=api_key,
            options=job.request.options,
            mask=mask,
        )

    def explain(self, error: AtelierError) -> AtelierError:
        return error

    def caption(self, job: Job) -> Text | None:
        region = job.request.region or Region()
        if not region.cells:
            return _t("🖌️ repainted where your mask is transparent")
        if region.mask:
            # Translators: {grid} is a picture of the 3×3 grid, the repainted parts in blue.
            return _t("🖌️ repainted {grid} and where your mask is transparent", grid=grid_picture(region.cells))
        # Translators: {grid} is a picture of the 3×3 grid, the repainted parts in blue.
        return _t("🖌️ repainted {grid}", grid=grid_picture(region.cells))

    def after_restart(self, job: Job, inputs_kept: bool) -> AtelierError | None:
        return None if inputs_kept else AtelierError(INPUTS_LOST, log_detail="inputs missing on resume")


REGION = RegionKind()
