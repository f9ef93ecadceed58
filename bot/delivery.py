"""Delivery, the engine's half: fit the decoded answer to the destination, hand it over, record the end.

Data goes one way: the engine finishes the image (decoded, fitted under the upload
limit the destination gave) and the frontend posts it and answers ``Posted`` or
``PostFailed``. When the frontend says the file was still too large, the engine
shrinks it once more and hands it over again.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable
from typing import TYPE_CHECKING, Any

from bot.editor import Editor
from bot.errors import DeliveryError
from bot.jobs import Delivered, Job
from bot.lifecycle import Lifecycle
from bot.notices import UndeliveredNotices
from bot.ports import NotDelivered, PostFailed, Publisher
from bot.states import JobState

if TYPE_CHECKING:
    from bot.image_api import ImageEditResult

log = logging.getLogger(__name__)

# When the destination refuses a fitted file as too large, aim this much smaller.
SHRINK_AGAIN = 0.7


class Deliverer:
    """Turns a job's API answer into a posted result and a succeeded job."""

    def __init__(self, lifecycle: Lifecycle, editor: Editor, publisher: Publisher, notices: UndeliveredNotices) -> None:
        self._lifecycle = lifecycle
        self._editor = editor
        self._publisher = publisher
        self._notices = notices

    async def deliver(self, job: Job, decoding: Awaitable[ImageEditResult]) -> None:
        """Fit and post the result (being decoded), then record the job succeeded; raise ``AtelierError``."""
        result = await decoding
        image = await self._editor.fit(result.image, job.upload_limit)
        outcome = await self._publisher.publish(job, image)
        if isinstance(outcome, PostFailed) and outcome.too_large:
            log.info("job=%s result of %d bytes refused as too large; shrinking it", job.id, len(image.data))
            image = await self._editor.fit(result.image, int(len(image.data) * SHRINK_AGAIN))
            outcome = await self._publisher.publish(job, image)
        if isinstance(outcome, PostFailed):
            raise DeliveryError(outcome.user_message, log_detail=outcome.log_detail)
        if isinstance(outcome, NotDelivered):
            # Made and paid for, so it succeeded; its member is told the next time they use the bot
            # (remembered before the end is recorded, so no interaction in between can miss it).
            log.info("job=%s result not delivered: %s", job.id, outcome.log_detail)
            self._notices.add(job)
            where: dict[str, Any] = {"delivered": Delivered.UNDELIVERED}
        else:
            where = {
                "delivered": outcome.delivered,
                "result_channel_id": outcome.channel_id,
                "result_message_id": outcome.message_id,
            }
        usage = result.usage
        await self._lifecycle.move(
            job,
            JobState.SUCCEEDED,
            result=image,
            input_tokens=usage.input_tokens if usage else None,
            output_tokens=usage.output_tokens if usage else None,
            total_tokens=usage.total_tokens if usage else None,
            output_width=image.width,
            output_height=image.height,
            output_bytes=len(image.data),
            **where,
        )
