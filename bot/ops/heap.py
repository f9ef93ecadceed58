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
"""

from __future__ import annotations

import gc
import logging
import time

log = logging.getLogger(__name__)


def settle() -> None:
    """Collect what start-up left, then keep every object alive now out of later collections."""
    started = time.perf_counter()
    gc.collect()
    gc.freeze()
    log.info(
        "heap settled: %d objects set aside in %.0f ms", gc.get_freeze_count(), (time.perf_counter() - started) * 1000
    )
