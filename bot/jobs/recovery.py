"""Jobs nobody runs any more: put each where it belongs, through the lifecycle, by the same rules whatever
happened (a restart, a crash, another process killed or stalled past its lease).

- running or delivering (its process died or lost it mid-call): an interrupted attempt is
  recorded, since the call may have been billed, and the job goes back in line once;
- accepted or preparing: queued if its kind has what it needs (its images saved whole), else
  failed (refunded);
- interrupted: back in line once (a second interruption failed it already).

Nobody is told "will resume" here: only a process that stops says so, of its own jobs.
"""

from __future__ import annotations

import logging
from collections.abc import Collection, Sequence

from bot.core.attempts import Attempt, AttemptOutcome
from bot.core.job import Job
from bot.core.states import JobState
from bot.jobs.inputs import JobInputs
from bot.jobs.kinds import UnknownKindError, kind_of
from bot.jobs.lifecycle import Lifecycle

log = logging.getLogger(__name__)


async def resume(lifecycle: Lifecycle, inputs: JobInputs, jobs: Sequence[Job], gone: Collection[str] = ()) -> None:
    """Resume or end each of ``jobs`` (as the store last held them, found abandoned with the holders in ``gone``
    gone). Each move is fenced by that reading: it happens only if the job is still abandoned as it is written
    (``Fence.gone``), so a holder that wakes from a stall in between keeps its job and posts its result once."""
    for job in jobs:
        try:
            kind = kind_of(job.kind)
        except UnknownKindError as error:
            await lifecycle.move(job, JobState.FAILED, error=error, gone=gone)
            continue
        current: Job | None = job
        if job.state in (JobState.RUNNING, JobState.DELIVERING):
            log.info("job=%s was %s under %s (run %d); putting it back in line once", job.id, job.state,
                     job.holder, job.run)  # fmt: skip
            since = job.started_at or job.created_at
            # The lost call's first attempt, as its run numbers it: if that run comes back (its process only
            # stalled), its own account of the call replaces this one, so the call is on record once.
            crashed = Attempt(
                number=1,
                started_at=since,
                seconds=max(0.0, lifecycle.clock() - since),
                outcome=AttemptOutcome.INTERRUPTED,
                may_be_billed=True,
            )
            current = await lifecycle.interrupt(job, [crashed] if job.state is JobState.RUNNING else [], gone=gone)
            if current is None or current.state is not JobState.INTERRUPTED:
                continue
        assert current is not None
        kept = await inputs.exists(job.id) if kind.needs_images else True
        problem = kind.after_restart(current, kept)
        if problem is not None:
            await lifecycle.move(current, JobState.FAILED, error=problem, gone=gone)
        elif current.state is JobState.ACCEPTED:
            preparing = await lifecycle.move(current, JobState.PREPARING, gone=gone)
            if preparing is not None:
                await lifecycle.move(preparing, JobState.QUEUED, gone=gone)
        elif current.state in (JobState.PREPARING, JobState.INTERRUPTED):
            await lifecycle.move(current, JobState.QUEUED, gone=gone)
