"""After a restart or a crash: put every unfinished job where it belongs, through the lifecycle.

- accepted or preparing: queued if its images were saved completely, else failed (refunded);
- queued: stays in line if its images are there, else failed;
- running or delivering (the process died mid-call): an interrupted attempt is recorded,
  since the call may have been billed, and the job goes back in line once;
- interrupted: back in line once (a second interruption failed it already).
"""

from __future__ import annotations

import logging
import time

from bot.dispatcher import INPUTS_LOST
from bot.errors import AtelierError
from bot.image_api import Attempt, AttemptOutcome
from bot.inputs import JobInputs
from bot.jobs import Job
from bot.lifecycle import Lifecycle
from bot.states import JobState

log = logging.getLogger(__name__)


async def resume_unfinished(lifecycle: Lifecycle, inputs: JobInputs, jobs: list[Job]) -> None:
    """Resume or end each of ``jobs`` (as the lifecycle loaded them)."""
    lost = AtelierError(INPUTS_LOST, log_detail="inputs missing on resume")
    for job in jobs:
        state = job.state
        if state in (JobState.RUNNING, JobState.DELIVERING):
            log.info("job=%s was %s when the bot stopped; retrying it once", job.id, state)
            since = job.started_at or job.created_at
            crashed = Attempt(
                number=job.attempts + 1,
                started_at=since,
                seconds=max(0.0, time.time() - since),
                outcome=AttemptOutcome.INTERRUPTED,
                may_be_billed=True,
            )
            moved = await lifecycle.interrupt(job.id, [crashed] if state is JobState.RUNNING else [])
            if moved is None or moved.state is not JobState.INTERRUPTED:
                continue
            state = JobState.INTERRUPTED
        has_inputs = await inputs.exists(job.id)
        if not has_inputs:
            await lifecycle.move(job.id, JobState.FAILED, error=lost)
        elif state is JobState.ACCEPTED:
            await lifecycle.move(job.id, JobState.PREPARING)
            await lifecycle.move(job.id, JobState.QUEUED)
        elif state in (JobState.PREPARING, JobState.INTERRUPTED):
            await lifecycle.move(job.id, JobState.QUEUED)
