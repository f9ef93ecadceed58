"""Turns for the edits of waiting members' status lines: at most a few dozen a second per process.

Each line paces itself (``STATUS_UPDATE_SECONDS``, less often far back in a long line), which keeps
the whole line's edits to about 43 a second with 10,000 waiting. But lines can fall due together:
after the process stalled, or when many open at once. Then hundreds of edits went out in the same
second: the process did little else until they were sent (its admissions waited behind them), the
requests in flight made the garbage collector walk the heap, and Discord counts a bot's requests
against 50 a second. So the place updates take turns, in the order they fall due, at most
``PLACE_EDITS_PER_SECOND``, and after the answers of a burst of commands (at most a second
later): a member waiting for the answer to a command comes before another's new place. A running
job's line does not wait for them.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable

PLACE_EDITS_PER_SECOND = 40.0


class Pacer:
    """At most ``rate`` turns a second, in the order they are asked (each caller books the next free time)."""

    def __init__(
        self,
        rate: float = PLACE_EDITS_PER_SECOND,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        quiet: Callable[[], Awaitable[None]] | None = None,
    ) -> None:
        self._spacing = 1.0 / rate
        self._quiet = quiet  # returns once the members' answers are out (``JobEngine.answers_first``)
        self._clock = clock
        self._sleep = sleep
        self._next = 0.0  # the earliest time of the next turn not yet booked

    async def turn(self) -> None:
        """Wait for this caller's turn. (Cancelled while waiting, the turn goes unused: the pace only slows.)"""
        now = self._clock()
        at = max(now, self._next)
        self._next = at + self._spacing
        if at > now:
            await self._sleep(at - now)
        if self._quiet is not None:
            await self._quiet()
