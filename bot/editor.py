"""Image work around a job, apart from Discord: prepare inputs, fit results for upload."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

from bot.images import OutputImage, PreparedImage, fit_for_upload, prepare_input

# The provider's gateway returns "Unknown error" for inputs above a few MB, although
# its page says 10 MB; larger inputs are re-encoded down to this.
INPUT_MAX_BYTES = 4 * 1024 * 1024


class Editor:
    """Pillow work, always off the event loop."""

    async def prepare_inputs(self, files: Sequence[tuple[str, bytes]]) -> list[PreparedImage]:
        """Check and prepare ``(option name, bytes)`` pairs, in order."""
        return list(
            await asyncio.gather(
                *(asyncio.to_thread(prepare_input, data, name, INPUT_MAX_BYTES) for name, data in files)
            )
        )

    async def fit(self, image: OutputImage, upload_limit: int) -> OutputImage:
        """``image`` itself if it fits ``upload_limit``, else a re-encoded copy (made in a thread)."""
        if len(image.data) <= upload_limit:
            return image
        return await asyncio.to_thread(fit_for_upload, image, upload_limit)
