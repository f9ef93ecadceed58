"""What members see while a job waits and runs, and when it ends: the service's Notifier.

Status edits are throttled per job (Discord rate-limits message edits): the
first is sent at once, later ones at most every ``STATUS_MIN_INTERVAL`` seconds,
always with the newest text, and never after the result.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

import discord

from bot.errors import AtelierError
from bot.image_api import ImageEditResult
from bot.images import OutputImage
from bot.jobs import Job
from bot.sizes import size_of
from cogs.buttons import cancel_view, result_view
from cogs.delivery import Delivery, clip, quote_prompt

if TYPE_CHECKING:
    from bot.client import AtelierBot

log = logging.getLogger(__name__)

ViewFactory = Callable[[], discord.ui.View]

STATUS_MIN_INTERVAL = 3.0
# Queue positions change with every job that starts; with hundreds waiting, showing each
# step would be a flood of edits. Members see their place at least this often.
QUEUE_UPDATE_INTERVAL = 10.0
PROGRESS_INTERVAL = 10.0
_DISCORD_UPLOAD_TOO_LARGE = 40005


def describe_size(size: str | None) -> str:
    """How a requested size reads in a status line."""
    entry = size_of(size)
    return entry.label if entry else "auto"


def status_text(job: Job, state: str) -> str:
    """A status message: what is happening, the prompt, who asked, what was asked."""
    images = f"{job.input_count} image{'s' if job.input_count != 1 else ''}"
    return (
        f"{state}\n{quote_prompt(job.prompt, 300)}\n"
        f"-# <@{job.user_id}> · {images} · size {describe_size(job.size)} · job `{job.id}`"
    )


def caption(job: Job, image: OutputImage, notes: list[str]) -> str:
    """The text under a result: prompt, size, who asked, how long it took, and any notes."""
    elapsed = time.time() - job.created_at
    asked = "" if job.size is None else f" (asked {job.size})"
    lines = [
        quote_prompt(job.prompt),
        f"-# {image.width}×{image.height}{asked} · <@{job.user_id}> · {elapsed:.1f} s",
    ]
    lines += [f"-# ℹ️ {clip(note, 300)}" for note in notes if note]
    return "\n".join(lines)


class StatusLine:
    """One job's status message, edited no more often than every few seconds."""

    def __init__(self, delivery: Delivery) -> None:
        self.delivery = delivery
        self._last = 0.0
        self._pending: tuple[str, ViewFactory | None, float] | None = None
        self._flusher: asyncio.Task[None] | None = None
        self._sending = False
        self._ticker: asyncio.Task[None] | None = None

    def update(self, content: str, view: ViewFactory | None, interval: float = STATUS_MIN_INTERVAL) -> None:
        """Show ``content`` soon: at once if nothing was shown in the last ``interval`` seconds."""
        sooner = self._pending is not None and interval < self._pending[2]
        self._pending = (content, view, interval)
        if self._flusher is not None and not self._flusher.done() and sooner and not self._sending:
            self._flusher.cancel()  # it sleeps for a longer interval; this news is more urgent
            self._flusher = None
        if self._flusher is None or self._flusher.done():
            self._flusher = asyncio.create_task(self._flush())

    async def _flush(self) -> None:
        while self._pending is not None:
            wait = self._last + self._pending[2] - time.monotonic()
            if wait > 0:
                await asyncio.sleep(wait)
                if self._pending is None:
                    break
            content, view, _ = self._pending
            self._pending = None
            self._last = time.monotonic()
            self._sending = True
            try:
                # Views are built only for edits actually sent: most queued updates are superseded.
                await self.delivery.status(content, view() if view is not None else None)
            finally:
                self._sending = False

    def tick(self, job: Job) -> None:
        """While the API works, show the elapsed time every ``PROGRESS_INTERVAL`` seconds."""

        async def run() -> None:
            started = time.monotonic()
            while True:
                await asyncio.sleep(PROGRESS_INTERVAL)
                elapsed = time.monotonic() - started
                self.update(status_text(job, f"🎨 Editing… {elapsed:.0f} s so far"), None)

        self._ticker = asyncio.create_task(run())

    async def close(self) -> None:
        """Stop all status edits for good (the result or the failure comes next)."""
        for task in (self._ticker, self._flusher):
            if task is not None and not task.done():
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        self._pending = None


class DiscordNotifier:
    """Implements the job service's Notifier with Discord messages."""

    def __init__(self, bot: AtelierBot) -> None:
        self.bot = bot
        self._lines: dict[str, StatusLine] = {}

    def delivery(self, job: Job) -> Delivery:
        """Where this job is shown, rebuilt from what it stored."""
        return Delivery(self.bot, job.delivery, job.user_id)

    def _line(self, job: Job) -> StatusLine:
        line = self._lines.get(job.id)
        if line is None:
            line = self._lines[job.id] = StatusLine(self.delivery(job))
        return line

    async def _close(self, job: Job) -> None:
        line = self._lines.pop(job.id, None)
        if line is not None:
            await line.close()

    async def job_queued(self, job: Job, position: int) -> None:
        ahead = "next in line" if position == 1 else f"position {position} in the queue"
        self._line(job).update(
            status_text(job, f"⏳ Queued — {ahead}."), functools.partial(cancel_view, job.id), QUEUE_UPDATE_INTERVAL
        )

    async def job_started(self, job: Job) -> None:
        line = self._line(job)
        line.update(status_text(job, "🎨 Editing… this usually takes 30 to 90 seconds."), None)
        line.tick(job)

    async def job_paused(self, job: Job) -> None:
        await self._close(job)
        await self.delivery(job).status(
            status_text(job, "⏸️ The bot is restarting; this edit will resume automatically."),
            cancel_view(job.id),
        )

    async def job_cancelled(self, job: Job) -> None:
        # A throttled "queued" update must not overwrite the "cancelled" reply.
        await self._close(job)

    async def job_failed(self, job: Job, error: AtelierError) -> None:
        await self._close(job)
        await self.delivery(job).failure(error)

    async def job_succeeded(self, job: Job, result: ImageEditResult) -> dict[str, int]:
        """Fit the image under the destination's upload limit and post it with its Refine button."""
        await self._close(job)
        delivery = self.delivery(job)
        notes = [str(n) for n in job.delivery.get("notes", [])]
        upload = await self.bot.editor.fit(result.image, delivery.upload_limit)
        try:
            await self._post(job, delivery, upload, notes)
        except discord.HTTPException as exc:
            if exc.status != 413 and exc.code != _DISCORD_UPLOAD_TOO_LARGE:
                raise AtelierError(
                    f"Discord refused to post the result (HTTP {exc.status}). You were not charged; please try again.",
                    log_detail=f"result upload refused: {exc.status} {exc.code} {exc.text[:200]}",
                ) from None
            # Discord's limit was lower than it said: shrink once more and retry.
            upload = await self.bot.editor.fit(result.image, int(len(upload.data) * 0.7))
            try:
                await self._post(job, delivery, upload, notes)
            except discord.HTTPException as again:
                raise AtelierError(
                    "Discord refused the result even after shrinking it. You were not charged; please try again.",
                    log_detail=f"result upload refused twice: {again.status} {again.code}",
                ) from None
        return {"width": upload.width, "height": upload.height, "bytes": len(upload.data)}

    async def _post(self, job: Job, delivery: Delivery, upload: OutputImage, notes: list[str]) -> None:
        filename = f"atelier-{job.id}.{upload.extension}"
        await delivery.result(caption(job, upload, [*notes, upload.note or ""]), upload, filename, result_view(job.id))
