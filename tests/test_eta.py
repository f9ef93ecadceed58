"""The estimator: medians of similar recent runs, silence with too little history, waits in line."""

from __future__ import annotations

import dataclasses

from bot.core.job import Job, JobRequest
from bot.core.records import RecentRun as Run
from bot.core.states import JobState
from bot.jobs.eta import KEEP, MIN_SAMPLES, RECENT_SECONDS, Estimator
from bot.ports import Move

NOW = 1_800_000_000.0
MODEL = "gpt-image-2-vip"


def job(inputs: int = 1, size: str | None = None) -> Job:
    request = JobRequest("edit", 1, 10, 100, "p", size, inputs)
    return Job(id="j", request=request, state=JobState.RUNNING, created_at=NOW, charge_day="d", cost=30_000)


def runs(seconds: list[float], inputs: int = 1, size: str | None = None, ago: float = 60.0) -> list[Run]:
    return [Run(MODEL, inputs, size, s, NOW - ago - n) for n, s in enumerate(seconds)]


def test_the_usual_time_is_the_median_of_similar_recent_runs() -> None:
    estimator = Estimator(MODEL)
    estimator.load(runs([90, 100, 95, 300, 80]))
    assert estimator.usual(job(), NOW) == 95


def test_with_too_little_history_there_is_no_estimate() -> None:
    estimator = Estimator(MODEL)
    estimator.load(runs([90] * (MIN_SAMPLES - 1)))
    assert estimator.usual(job(), NOW) is None
    assert estimator.wait(job(), 3, 2, NOW) is None
    estimator.load(runs([90]))
    assert estimator.usual(job(), NOW) == 90


def test_only_similar_jobs_count() -> None:
    estimator = Estimator(MODEL)
    estimator.load(runs([200] * 5, inputs=4, size="3840x2160"))  # four inputs, 4K
    estimator.load(runs([60] * 5, inputs=2, size="1280x720"))  # two inputs, 1K
    assert estimator.usual(job(), NOW) is None  # one input, auto: no history of its own
    assert estimator.usual(job(5, "2160x3840"), NOW) == 200  # 4+ inputs and 4K, like the first
    assert estimator.usual(job(3, "1280x1280"), NOW) == 60  # 2-3 inputs and 1K, like the second
    other = dataclasses.replace(runs([10] * 5)[0], model="gpt-image-2-all")
    estimator.load([other] * 5)
    assert estimator.usual(job(), NOW) is None  # another model's times do not count


def test_old_runs_stop_counting() -> None:
    estimator = Estimator(MODEL)
    estimator.load(runs([100] * 5, ago=RECENT_SECONDS + 10))
    assert estimator.usual(job(), NOW) is None


def test_a_success_is_recorded_from_the_job() -> None:
    estimator = Estimator(MODEL)
    done = dataclasses.replace(job(), state=JobState.SUCCEEDED, started_at=NOW - 50, finished_at=NOW - 10)
    for _ in range(MIN_SAMPLES):
        estimator.record(done)
    assert estimator.usual(job(), NOW) == 40


def test_as_an_observer_only_successes_count() -> None:
    estimator = Estimator(MODEL)
    timed = dataclasses.replace(job(), started_at=NOW - 70, finished_at=NOW - 10)
    for state in (JobState.FAILED, JobState.CANCELLED, JobState.DELIVERING):
        for _ in range(MIN_SAMPLES):
            estimator.job_moved(Move(dataclasses.replace(timed, state=state), JobState.RUNNING))
    assert estimator.usual(job(), NOW) is None
    for _ in range(MIN_SAMPLES):
        estimator.job_moved(Move(dataclasses.replace(timed, state=JobState.SUCCEEDED), JobState.DELIVERING))
    assert estimator.usual(job(), NOW) == 60
    # A job from before models were recorded counts as the default model's.
    estimator.job_moved(Move(dataclasses.replace(timed, state=JobState.SUCCEEDED, model=None), JobState.DELIVERING))
    assert estimator.usual(dataclasses.replace(job(), model=MODEL), NOW) == 60


def test_only_the_most_recent_runs_count_and_a_reload_starts_again() -> None:
    estimator = Estimator(MODEL)
    estimator.load(runs([500] * KEEP, ago=3600))
    estimator.load(runs([60] * KEEP))  # newer: the older ones fall out
    assert estimator.usual(job(), NOW) == 60
    estimator.replace(runs([30] * MIN_SAMPLES))  # every process's successes, read again from the store
    assert estimator.usual(job(), NOW) == 30
    estimator.replace([])
    assert estimator.usual(job(), NOW) is None


def test_a_wait_in_line_counts_the_rounds_of_the_slots() -> None:
    estimator = Estimator(MODEL)
    estimator.load(runs([60] * 5))
    # The busy slots free in about half a run; the job then runs one more.
    assert estimator.wait(job(), 1, 4, NOW) == 90
    assert estimator.wait(job(), 4, 4, NOW) == 90
    assert estimator.wait(job(), 5, 4, NOW) == 150  # a round later
    assert estimator.wait(job(), 3, 1, NOW) == 210


def test_longer_than_usual_is_half_again_the_usual_time() -> None:
    assert not Estimator.longer_than_usual(140, 95) and Estimator.longer_than_usual(143, 95)
    assert not Estimator.longer_than_usual(1000, None)
