"""The estimator: medians of similar recent runs, silence with too little history, waits in line."""

from __future__ import annotations

import dataclasses

from bot.core.job import Job, JobKind, JobRequest
from bot.core.states import JobState
from bot.jobs.eta import MIN_SAMPLES, RECENT_SECONDS, Estimator, Run

NOW = 1_800_000_000.0
MODEL = "gpt-image-2-vip"


def job(inputs: int = 1, size: str | None = None) -> Job:
    request = JobRequest(JobKind.EDIT, 1, 10, 100, "p", size, inputs)
    return Job(id="j", request=request, state=JobState.RUNNING, created_at=NOW, charge_day="d", cost_usd=0.03)


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
