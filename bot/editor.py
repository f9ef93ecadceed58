"""What happens to an edit, start to finish, apart from Discord.

Inputs are checked and prepared, the API is called once (with its own narrow
retries), and the result is made to fit the upload limit it will be posted under.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
from collections.abc import Sequence
from dataclasses import dataclass

from bot.config import Config
from bot.image_api import ImageAPIClient, ImageEditRequest, ImageEditResult
from bot.images import OutputImage, PreparedImage, fit_for_upload, prepare_input

log = logging.getLogger(__name__)

# The provider's gateway returns "Unknown error" for inputs above a few MB, although
# its page says 10 MB; larger inputs are re-encoded down to this.
INPUT_MAX_BYTES = 4 * 1024 * 1024
MAX_IMAGES = 10


def new_job_id() -> str:
    """A short random id for a job, safe in custom ids and log lines."""
    return secrets.token_hex(6)


@dataclass(frozen=True)
class EditOutcome:
    """A finished edit: the API result and the image to upload (maybe re-encoded)."""

    result: ImageEditResult
    upload: OutputImage


class Editor:
    """Runs edits against the image API; owns no Discord object."""

    def __init__(self, api: ImageAPIClient, config: Config) -> None:
        self.api = api
        self.config = config

    async def prepare_inputs(self, files: Sequence[tuple[str, bytes]]) -> list[PreparedImage]:
        """Check and prepare ``(option name, bytes)`` pairs, in order, off the event loop."""
        return list(
            await asyncio.gather(
                *(asyncio.to_thread(prepare_input, data, name, INPUT_MAX_BYTES) for name, data in files)
            )
        )

    async def run(self, request: ImageEditRequest, upload_limit: int) -> EditOutcome:
        """Call the API and fit the result under ``upload_limit`` bytes."""
        result = await self.api.edit(request)
        upload = await self.fit(result.image, upload_limit)
        return EditOutcome(result, upload)

    async def fit(self, image: OutputImage, upload_limit: int) -> OutputImage:
        """Re-encode ``image`` off the event loop only when it is over ``upload_limit``."""
        if len(image.data) <= upload_limit:
            return image
        return await asyncio.to_thread(fit_for_upload, image, upload_limit)
