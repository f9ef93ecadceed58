"""Delivery, the engine's half: fit the decoded answer to the destination, hand it over, record the end.

Data goes one way: the engine finishes the image (decoded, fitted under the upload limit the
destination gave) and small copies of the job's inputs (made during the call), and the
frontend posts them together and answers ``Posted`` or ``PostFailed``. The output is fitted to the
limit less what the inputs' copies take, so the whole message fits. When the frontend says the
file was still too large, the engine shrinks it once more and hands it over again. A run that no
longer holds its job posts nothing: the lease is checked (and extended) right before the result
goes out. The file keeps the format the job asked for (and a transparent background, whatever
the re-encoding). A job priced by tokens is settled to what its answer's ``usage`` says it cost,
in the move that records it succeeded.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from bot.core.job import Delivered, Job
from bot.core.models import OUTPUT_FORMAT, ImageModel
from bot.core.money import format_usd
from bot.core.records import NoticeDraft
from bot.core.states import JobState
from bot.errors import DeliveryError, UnexpectedError
from bot.jobs.inputs import JobInputs
from bot.jobs.kinds import kind_of
from bot.jobs.lifecycle import Lifecycle, record_pauses
from bot.jobs.outbox import NEXT_USE
from bot.media.editor import Editor
from bot.media.images import InputPreview, PreparedImage
from bot.ports import NotDelivered, PostFailed, Publisher, ResultMedia
from bot.provider.client import ImageEditResult
from bot.retries import asked_again

log = logging.getLogger(__name__)

# A result's copies of its inputs: a thumbnail each, or one strip of them all.
Copies = tuple[tuple[InputPreview, ...], bytes | None]

# When the destination refuses a fitted file as too large, aim this much smaller.
SHRINK_AGAIN = 0.7


class Deliverer:
    """Turns a job's API answer into a posted result and a succeeded job."""

    def __init__(
        self,
        lifecycle: Lifecycle,
        editor: Editor,
        publisher: Publisher,
        inputs: JobInputs,
        models: Callable[[str | None], ImageModel | None] = lambda name: None,
    ) -> None:
        self._lifecycle = lifecycle
        self._editor = editor
        self._publisher = publisher
        self._inputs = inputs
        self._models = models  # a job's model as the configuration describes it (for its price)

    async def deliver(
        self, job: Job, decoding: Awaitable[ImageEditResult], copies: Awaitable[Copies] | None = None
    ) -> None:
        """Fit and post the result (being decoded) with its inputs' copies (being made, or made here from the
        kept inputs), then record the job succeeded; raise ``AtelierError``."""
        result, (inputs, strip) = await asyncio.gather(decoding, copies or self._kept_copies(job))
        media = ResultMedia((), inputs, strip)
        # The copies are small (a few KB each): whatever they take, the output keeps at least half the limit.
        budget = max(job.upload_limit // 2, job.upload_limit - media.preview_bytes)
        fmt = job.request.options.get(OUTPUT_FORMAT)
        fmt = fmt if isinstance(fmt, str) else None
        image = await self._editor.fit(result.image, budget, fmt)
        if not await self._still_holds(job):
            log.warning("job=%s run=%d: not posting a result for a job this process lost", job.id, job.run)
            return
        outcome = await self._publisher.publish(job, ResultMedia((image,), inputs, strip))
        if isinstance(outcome, PostFailed) and outcome.too_large:
            log.info("job=%s result of %d bytes refused as too large; shrinking it", job.id, len(image.data))
            image = await self._editor.fit(result.image, int(len(image.data) * SHRINK_AGAIN), fmt)
            outcome = await self._publisher.publish(job, ResultMedia((image,), inputs, strip))
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
        # The result is posted: its end is recorded whatever the database does meanwhile (failed now, it would be
        # refunded under its result, or run again after its lease).
        await self._lifecycle.move_for_good(
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

    async def _still_holds(self, job: Job) -> bool:
        """Whether the run still holds its job, asked again while the database fails to answer (the answer was
        paid for: an error here must not discard it); the last try's error is the run's."""
        return await asked_again(
            lambda: self._lifecycle.still_holds(job), record_pauses(self._lifecycle.lease_seconds),
            f"job={job.id} run={job.run}: asking whether it still holds its job", log,
        )  # fmt: skip

    async def _kept_copies(self, job: Job) -> Copies:
        """``copies`` of the job's inputs as kept (none when its kind has none, or they are gone)."""
        if not kind_of(job.kind).needs_images:
            return (), None
        return await self.copies(job, await self._inputs.load(job.id) or [])

    async def copies(self, job: Job, kept: Sequence[PreparedImage]) -> Copies:
        """Small copies of the job's ``kept`` inputs for its result: the prompt's images (not a region's mask).

        The dispatcher makes them while the job's call runs, from the inputs it loaded for the call, so the
        work between an answer and its post is the answer's alone. A copy that cannot be made costs the
        result its inputs' pictures, never the result itself.
        """
        images = kept[: job.request.input_count]
        if not images:
            return (), None
        try:
            return await self._editor.previews(images)
        except (OSError, ValueError, SyntaxError) as exc:  # checked once already; Pillow may still refuse
            log.warning("job=%s result goes without its inputs' copies: %s", job.id, exc)
        except Exception as exc:  # a bug: logged under a reference, and the result still goes out
            UnexpectedError.capture(exc, f"the inputs' copies of job {job.id}")
        return (), None

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
