"""The garbage collector, set for a long-lived process that must answer within milliseconds.

CPython's cyclic collector stops the event loop while it runs, and a full collection walks every
object the process tracks. Measured in the benchmark's 10,000-job row (``gc.callbacks``): a
worker's full collections took 33-41 ms each, and importing the bot and its cogs alone makes
about 70,000 tracked objects (modules, classes, functions, the command tree) that a full
collection walks in 26-32 ms on the benchmark's machine. They live as long as the process and
are never garbage, so once the process is set up they are moved out of every later collection
(``gc.freeze``, after a collection, so that no garbage is frozen with them): a collection walks
only what came later (jobs, messages, requests). Frozen objects are still freed by reference
counting when their last reference goes; only a cycle among them would outlive its use.

What a process holds while it works grows too: a gateway with 10,000 members waiting holds their
jobs and status lines, 300,000 to 400,000 objects, and each full collection walked them all in
0.2-0.7 s while 50 members waited for the answers to their commands (the benchmark's 10,000-job
row). So the process settles again every ``SETTLE_EVERY`` seconds, at a moment when no member waits
for an answer (``keep_settled``): the whole heap is collected, its cycles freed, and what lives is
set aside again. Between two settlings, a full collection walks only what came since; a cycle
among objects set aside waits for the next settling (at most a minute's worth of ended jobs).
"""

from __future__ import annotations

import asyncio
import gc
import logging
import time
from collections.abc import Awaitable, Callable

log = logging.getLogger(__name__)

SETTLE_EVERY = 60.0


def settle() -> None:
    """Collect what start-up left, then keep every object alive now out of later collections."""
    started = time.perf_counter()
    gc.collect()
    gc.freeze()
    log.info(
        "heap settled: %d objects set aside in %.0f ms", gc.get_freeze_count(), (time.perf_counter() - started) * 1000
    )


async def keep_settled(
    quiet: Callable[[], Awaitable[None]],
    every: float = SETTLE_EVERY,
    sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
) -> None:
    """Settle the heap again every ``every`` seconds, once ``quiet()`` returns (no member waits for an answer)."""
    while True:
        await sleep(every)
        await quiet()
        resettle()


def resettle() -> None:
    """Collect the whole heap, the objects set aside included, then set aside what still lives."""
    started = time.perf_counter()
    gc.unfreeze()
    gc.collect()
    gc.freeze()
    log.debug(
        "heap settled again: %d objects in %.0f ms", gc.get_freeze_count(), (time.perf_counter() - started) * 1000
    )
