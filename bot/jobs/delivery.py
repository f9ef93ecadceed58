"""Delivery, the engine's half: fit the decoded answer to the destination, hand it over, record the end.

Data goes one way: the engine finishes the image (decoded, fitted under the upload limit the
destination gave) and the frontend posts it and answers ``Posted`` or ``PostFailed``. When the
frontend says the file was still too large, the engine shrinks it once more and hands it over
again. A run that no longer holds its job posts nothing: the lease is checked (and extended)
right before the result goes out. The file keeps the format the job asked for (and a transparent
background, whatever the re-encoding). A job priced by tokens is settled to what its answer's
``usage`` says it cost, in the move that records it succeeded.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any

from bot.core.job import Delivered, Job
from bot.core.models import OUTPUT_FORMAT, ImageModel
from bot.core.money import format_usd
from bot.core.records import NoticeDraft
from bot.core.states import JobState
from bot.errors import DeliveryError
from bot.jobs.lifecycle import Lifecycle
from bot.jobs.outbox import NEXT_USE
from bot.media.editor import Editor
from bot.ports import NotDelivered, PostFailed, Publisher
from bot.provider.client import ImageEditResult

log = logging.getLogger(__name__)

# When the destination refuses a fitted file as too large, aim this much smaller.
SHRINK_AGAIN = 0.7


class Deliverer:
    """Turns a job's API answer into a posted result and a succeeded job."""

    def __init__(
        self,
        lifecycle: Lifecycle,
        editor: Editor,
        publisher: Publisher,
        models: Callable[[str | None], ImageModel | None] = lambda name: None,
    ) -> None:
        self._lifecycle = lifecycle
        self._editor = editor
        self._publisher = publisher
        self._models = models  # a job's model as the configuration describes it (for its price)

    async def deliver(self, job: Job, decoding: Awaitable[ImageEditResult]) -> None:
        """Fit and post the result (being decoded), then record the job succeeded; raise ``AtelierError``."""
        result = await decoding
        fmt = job.request.options.get(OUTPUT_FORMAT)
        fmt = fmt if isinstance(fmt, str) else None
        image = await self._editor.fit(result.image, job.upload_limit, fmt)
        if not await self._lifecycle.still_holds(job):
            log.warning("job=%s run=%d: not posting a result for a job this process lost", job.id, job.run)
            return
        outcome = await self._publisher.publish(job, image)
        if isinstance(outcome, PostFailed) and outcome.too_large:
            log.info("job=%s result of %d bytes refused as too large; shrinking it", job.id, len(image.data))
            image = await self._editor.fit(result.image, int(len(image.data) * SHRINK_AGAIN), fmt)
            outcome = await self._publisher.publish(job, image)
        if isinstance(outcome, PostFailed):
            raise DeliveryError(outcome.user_message, log_detail=outcome.log_detail)
        where: dict[str, Any]
        if isinstance(outcome, NotDelivered):
            # Made and paid for, so it succeeded; its member is told the next time they use the bot.
            log.info("job=%s result not delivered: %s", job.id, outcome.log_detail)
            where = {"delivered": Delivered.UNDELIVERED}
            told = NEXT_USE
        else:
            where = {
                "delivered": outcome.delivered,
                "result_channel_id": outcome.channel_id,
                "result_message_id": outcome.message_id,
            }
            told = outcome.delivered.value
        usage = result.usage
        await self._lifecycle.move(
            job,
            JobState.SUCCEEDED,
            result=image,
            notice=NoticeDraft(done_how=told),
            settle=self._settlement(job, result),
            input_tokens=usage.input_tokens if usage else None,
            output_tokens=usage.output_tokens if usage else None,
            total_tokens=usage.total_tokens if usage else None,
            output_width=image.width,
            output_height=image.height,
            output_bytes=len(image.data),
            **where,
        )

    def _settlement(self, job: Job, result: ImageEditResult) -> int | None:
        """The signed difference that settles a job priced by tokens (``None``: a flat price), logged once."""
        model = self._models(job.model)
        if model is None:
            return None  # a model the configuration no longer knows: its charge stands
        settled = model.settle(job.cost, result.usage, job.request.input_count)
        if settled is None:
            return None
        log.info(
            "job=%s settling by tokens: charged $%s, cost $%s, difference $%s (%s)",
            job.id, format_usd(job.cost, 6), format_usd(settled.real, 6), format_usd(settled.amount, 6),
            settled.reason,
        )  # fmt: skip
        return settled.amount
