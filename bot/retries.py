"""Asking again while the database does not answer (a dropped connection, a server restarting).

Used where a run has done what cannot be undone (an answer paid for, a result posted, a member told, a
status message moved) and only its record is missing: an error there must not undo the rest, so the
record is tried again after each pause, and only the last try's error is the caller's.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Generic, TypeVar

T = TypeVar("T")

# Doubling pauses, 7.5 s in all: within a notice's lease (30 s), and short for a status line.
SHORT_PAUSES = (0.5, 1.0, 2.0, 4.0)


@dataclass(frozen=True)
class Asked(Generic[T]):
    """What the try that answered gave, and whether a try before it failed: a refusal after a failed try may be
    that failed try's work, written after all (only its answer was lost with the connection)."""

    value: T
    failed_before: bool


async def asked_until_answered(
    attempt: Callable[[], Awaitable[T]],
    pauses: Sequence[float],
    what: str,
    log: logging.Logger,
    *,
    for_good: bool = False,
    not_again: tuple[type[Exception], ...] = (),
) -> Asked[T]:
    """``attempt()``, tried again after each of ``pauses`` while it raises (logged as ``what`` that failed); the
    last try's error is the caller's, unless ``for_good``: then it is tried again after the last pause for as long
    as it takes. An error of a ``not_again`` type is the caller's at once (an answer, not a database that failed)."""
    failed = 0
    while True:
        try:
            return Asked(await attempt(), failed > 0)
        except not_again:
            raise
        except Exception as exc:
            if failed == len(pauses) and not for_good:
                raise
            pause = pauses[min(failed, len(pauses) - 1)]
            log.warning("%s failed (%s); trying again in %.1f s", what, type(exc).__name__, pause)
            failed += 1
            await asyncio.sleep(pause)


async def asked_again(
    attempt: Callable[[], Awaitable[T]], pauses: Sequence[float], what: str, log: logging.Logger
) -> T:
    """``attempt()``, tried again after each of ``pauses`` while it raises (logged as ``what`` that failed);
    the last try's error is the caller's."""
    return (await asked_until_answered(attempt, pauses, what, log)).value
