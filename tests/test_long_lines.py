"""A long line stays cheap for the gateway: reading places and editing status lines do not grow with it.

With ten thousand waiting jobs a reading of every place takes a good part of a second, and every
job that starts moves every place. The benchmark's 10,000-job row (``bench/scale.py``) found the
gateway spending all its time on both, so that an ``/edit`` waited a minute for its answer.
"""

from __future__ import annotations

import pytest

from bot.jobs.places import COALESCE, READ_SPACING, pause_after
from cogs.delivery.status import FULL_PACE_PLACES, place_interval


def test_a_short_reading_of_the_places_is_followed_by_the_usual_short_pause() -> None:
    assert pause_after(0.002) == COALESCE


def test_a_long_reading_of_the_places_is_followed_by_a_pause_in_proportion() -> None:
    assert pause_after(0.5) == pytest.approx(0.5 * READ_SPACING)
    # Reading never takes more than this share of the process, however long the line.
    assert 0.5 / (0.5 + pause_after(0.5)) <= 1 / (1 + READ_SPACING)


def test_places_near_the_front_are_shown_at_the_full_pace() -> None:
    assert {place_interval(10.0, place) for place in range(1, FULL_PACE_PLACES + 1)} == {10.0}


def test_places_further_back_are_edited_less_often_in_proportion() -> None:
    assert place_interval(10.0, 10 * FULL_PACE_PLACES) == pytest.approx(100.0)


@pytest.mark.parametrize(("waiting", "most"), [(100, 9), (1_000, 21), (10_000, 32)])
def test_the_edits_of_a_whole_line_grow_with_the_log_of_its_length(waiting: int, most: float) -> None:
    per_second = sum(1 / place_interval(10.0, place) for place in range(1, waiting + 1))
    assert per_second <= most  # at one edit per line every 10 s it would be waiting / 10
