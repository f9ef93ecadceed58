"""Live previews, the engine's half: a streaming call's partial images, shown on their job's status as they come.

The client hands each partial image over as it arrives (``on_partial``, which must return at
once); a run's previews then go one at a time, newest first: while one is being checked and
handed to the frontend, a newer one replaces any still waiting, and one older than what was
shown is dropped. Each is checked as an image (off the event loop), fitted under the job's
upload limit when it is larger, and shown only by the run that still holds the job, asked right
before (a run that lost its job shows nothing). A partial that cannot be shown is skipped with a
log line: a preview never fails a job. When the call ends, its previews stop; the frontend's
status line, closed by the job's next move, lets nothing land after the result.
"""

from __future__ import annotations

import asyncio
import logging

from bot.core.job import Job
from bot.core.models import PARTIAL_IMAGES
from bot.errors import InvalidResponseError, UnexpectedError
from bot.jobs.lifecycle import Lifecycle
from bot.media.editor import Editor
from bot.media.images import check_output
from bot.ports import Notifier
from bot.provider.stream import PartialImage
from bot.scheduler import Scheduler

log = logging.getLogger(__name__)


class Previews:
    """Shows the partial images of this process's streaming calls through the notifier."""

    def __init__(self, lifecycle: Lifecycle, editor: Editor, notifier: Notifier, scheduler: Scheduler) -> None:
        self._lifecycle = lifecycle
        self._editor = editor
        self._notifier = notifier
        self._scheduler = scheduler

    def for_run(self, job: Job) -> RunPreviews | None:
        """The previews of ``job``'s run (``None`` when it streams none)."""
        if not job.request.options.get(PARTIAL_IMAGES):
            return None
        return RunPreviews(job, self)


class RunPreviews:
    """One run's previews: the client's ``on_partial``, and a task that shows them one at a time."""

    def __init__(self, job: Job, previews: Previews) -> None:
        self._job = job
        self._previews = previews
        self._waiting: PartialImage | None = None
        self._newest = -1  # the index of the newest partial taken
        self._task: asyncio.Task[None] | None = None
        self._stopped = False

    def __call__(self, partial: PartialImage) -> None:
        """A partial image arrived: show it soon, unless a newer one came first."""
        if self._stopped or partial.index <= self._newest:
            return
        self._newest = partial.index
        self._waiting = partial  # any older one still waiting is dropped
        if self._task is None or self._task.done():
            self._task = self._previews._scheduler.spawn(f"preview-{self._job.id}", self._show())

    async def _show(self) -> None:
        previews, job = self._previews, self._job
        while (partial := self._waiting) is not None and not self._stopped:
            self._waiting = None
            try:
                image = await previews._editor.run(check_output, partial.data)
                image = await previews._editor.fit(image, job.upload_limit)
            except (InvalidResponseError, OSError, ValueError, SyntaxError) as exc:
                log.info("job=%s partial image %d not shown: %s", job.id, partial.index, exc)
                continue
            if self._stopped or not await previews._lifecycle.still_holds(job):
                return  # the call is over, or another process holds the job now
            try:
                await previews._notifier.job_preview(job, image, partial.index)
            except Exception as exc:  # a preview the member misses; never the job
                UnexpectedError.capture(exc, f"the preview of job {job.id}")

    def stop(self) -> None:
        """The call is over: show nothing more of it (a preview on its way is checked once more before it goes;
        a store call is never cancelled midway)."""
        self._stopped = True
        self._waiting = None
