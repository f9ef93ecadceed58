"""No test runs across 00:00 UTC.

Daily quotas, budgets and ``/usage`` count per UTC day (``bot.core.quota.next_reset``), and many
tests charge a job and then read the day's totals through the real bot. A test that started at
23:59:50 and read its totals at 00:00:05 saw the new day's zero: right for the bot, wrong for the
test. So before a test starts, if fewer seconds remain in the UTC day than the test may run for
(its timeout), the run waits for the new day. That happens at most once a day per worker.
"""

from __future__ import annotations

import time

from bot.core.quota import next_reset

AFTER_MIDNIGHT = 1.0  # seconds past 00:00 to start at, so that no clock skew puts "now" before it
DEFAULT_LONGEST = 120.0  # a test's longest run when no timeout says it (the project's own is 120 s)


def wait_before(now: float, longest: float) -> float:
    """Seconds to wait at ``now`` before a test that may run ``longest`` seconds, so it ends the day it began."""
    left = next_reset(now) - now
    return left + AFTER_MIDNIGHT if left < longest else 0.0


def wait_for_whole_day(longest: float) -> None:
    """Sleep, if needed, so that a test of at most ``longest`` seconds starts and ends on one UTC day."""
    pause = wait_before(time.time(), longest)
    if pause:
        time.sleep(pause)
