"""Asking again while the database does not answer (a dropped connection, a server restarting).

Used where a run has done what cannot be undone (an answer paid for, a result posted, a member told, a
status message moved) and only its record is missing: an error there must not undo the rest, so the
record is tried again after each pause, and only the last try's error is the caller's.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Sequence
from typing import TypeVar

T = TypeVar("T")

# Doubling pauses, 7.5 s in all: within a notice's lease (30 s), and short for a status line.
SHORT_PAUSES = (0.5, 1.0, 2.0, 4.0)


async def asked_again(
    attempt: Callable[[], Awaitable[T]], pauses: Sequence[float], what: str, log: logging.Logger
) -> T:
    """``attempt()``, tried again after each of ``pauses`` while it raises (logged as ``what`` that failed);
    the last try's error is the caller's."""
    for pause in pauses:
        try:
            return await attempt()
        except Exception as exc:
            log.warning("%s failed (%s); trying again in %.1f s", what, type(exc).__name__, pause)
            await asyncio.sleep(pause)
    return await attempt()
