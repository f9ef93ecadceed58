"""The guard that keeps each test on one UTC day (``tests.utc_day``)."""

from __future__ import annotations

from datetime import UTC, datetime

from tests.utc_day import AFTER_MIDNIGHT, wait_before


def at(hour: int, minute: int, second: int) -> float:
    return datetime(2026, 12, 7, hour, minute, second, tzinfo=UTC).timestamp()


def test_a_test_that_could_run_past_midnight_waits_for_the_new_day() -> None:
    assert wait_before(at(23, 59, 0), longest=120) == 60 + AFTER_MIDNIGHT
    assert wait_before(at(23, 58, 1), longest=120) == 119 + AFTER_MIDNIGHT


def test_a_test_that_ends_before_midnight_starts_at_once() -> None:
    assert wait_before(at(23, 58, 0), longest=120) == 0.0
    assert wait_before(at(0, 0, 1), longest=120) == 0.0
    assert wait_before(at(12, 0, 0), longest=300) == 0.0
