"""The garbage collector, set for a long-lived process that must answer within milliseconds.

CPython's cyclic collector stops the event loop while it runs, and a full collection walks every
object the process tracks. Measured in the benchmark's 10,000-job row (``gc.callbacks``): a
worker's full collections took about 40 ms each, almost all of it walking the objects start-up
made (modules, classes, the command tree), which live as long as the process and are never
garbage. After start-up they are moved out of every later collection (``gc.freeze``, as CPython's
documentation suggests for this), so a collection walks only what came later: jobs, messages,
requests. Objects frozen are still freed by reference counting when their last reference goes;
only a cycle among them would outlive its use, and start-up leaves none worth keeping track of.
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
