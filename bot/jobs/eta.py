"""Honest estimates of time: how long an edit like this one usually takes, and how long a wait is.

"Usually" is the median running time (from the API call starting to the result being
posted) of recent successful jobs that are similar: the same model, a similar number of
inputs (1, 2–3, 4 or more) and the same output size class (auto, 1K, 2K, 4K). With fewer
than ``MIN_SAMPLES`` of them, there is no estimate: better to say nothing than to guess.

A place in line becomes an estimate too. A job waits only while every one of the ``k``
slots is busy, and the jobs in them are, on average, half-way through: the first slot
frees in about half a typical run. The jobs ahead then take the slots as they free, so
the job at place ``p`` starts after about ``ceil(p / k) - 0.5`` typical runs and is done
one run later.
"""

from __future__ import annotations

import math
import statistics
import time
from collections import deque
from collections.abc import Iterable

from bot.core.job import Job
from bot.core.records import RecentRun as Run
from bot.core.sizes import size_of
from bot.core.states import JobState
from bot.ports import Move

MIN_SAMPLES = 5
KEEP = 50  # the most recent similar runs that count
RECENT_SECONDS = 7 * 86400
LONGER_THAN_USUAL = 1.5


def similarity(model: str, input_count: int, size: str | None) -> tuple[str, str, str]:
    """The class of jobs considered alike."""
    inputs = "1" if input_count <= 1 else "2-3" if input_count <= 3 else "4+"
    entry = size_of(size)
    return model, inputs, entry.tier if entry else "auto"


class Estimator:
    """Recent running times by class; fed from the ledger at start-up and by every success."""

    def __init__(self, default_model: str) -> None:
        self._default_model = default_model
        self._runs: dict[tuple[str, str, str], deque[Run]] = {}

    def load(self, runs: Iterable[Run]) -> None:
        """Count the ledger's recent successful runs (oldest first)."""
        for run in sorted(runs, key=lambda r: r.finished_at):
            self.add(run)

    def replace(self, runs: Iterable[Run]) -> None:
        """Start again from the ledger (several processes: each one's successes count for all)."""
        self._runs = {}
        self.load(runs)

    def add(self, run: Run) -> None:
        key = similarity(run.model or self._default_model, run.input_count, run.size)
        self._runs.setdefault(key, deque(maxlen=KEEP)).append(run)

    def job_moved(self, move: Move) -> None:
        """A lifecycle observer: every success counts."""
        if move.job.state is JobState.SUCCEEDED:
            self.record(move.job)

    def record(self, job: Job) -> None:
        """A job succeeded: its running time now counts."""
        if job.started_at is None or job.finished_at is None:
            return
        request = job.request
        self.add(
            Run(self._model(job), request.input_count, request.size, job.finished_at - job.started_at, job.finished_at)
        )

    def _model(self, job: Job) -> str:
        return job.model or self._default_model

    def usual(self, job: Job, now: float | None = None) -> float | None:
        """The median running time of recent similar jobs, or ``None`` with too little history."""
        now = time.time() if now is None else now
        request = job.request
        runs = self._runs.get(similarity(self._model(job), request.input_count, request.size), ())
        recent = [run.seconds for run in runs if now - run.finished_at <= RECENT_SECONDS]
        if len(recent) < MIN_SAMPLES:
            return None
        return float(statistics.median(recent))

    def wait(self, job: Job, place: int, slots: int, now: float | None = None) -> float | None:
        """About how long until the result of a job waiting at ``place`` (1 = next), or ``None``."""
        usual = self.usual(job, now)
        if usual is None:
            return None
        rounds = math.ceil(max(1, place) / max(1, slots))
        return (rounds + 0.5) * usual

    @staticmethod
    def longer_than_usual(elapsed: float, usual: float | None) -> bool:
        """Whether a running job has taken clearly longer than usual (says so, without alarm)."""
        return usual is not None and elapsed > LONGER_THAN_USUAL * usual
