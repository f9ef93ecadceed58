"""One burst against the store alone, run as a script in a code's own tree (``bench.store``):
``python bench/store_burst.py sqlite|postgres COUNT`` prints how long ``COUNT`` admissions at once
took, each with the move a job makes once its member is answered (to preparing), in ms.

It imports the tree's own ``tests.stores`` (on ``PYTHONPATH``), so it measures that code's store.
"""

from __future__ import annotations

import asyncio
import sys
import tempfile
import time
from pathlib import Path

from bot.core.states import JobState
from tests.stores import NOON, add, make_job, open_store

WARM_UP = 20


async def burst(database: str, count: int) -> float:
    with tempfile.TemporaryDirectory(prefix="atelier-bench-store-") as scratch:
        async with open_store(database, Path(scratch)) as store:
            # Connections opened and statements prepared before the clock starts.
            for n in range(WARM_UP):
                await add(store, make_job(f"warm{n}", 900_000 + n, NOON), JobState.PREPARING)
            started = time.perf_counter()
            await asyncio.gather(
                *(add(store, make_job(f"job{n}", n, NOON + n / 1000), JobState.PREPARING) for n in range(count))
            )
            return time.perf_counter() - started


if __name__ == "__main__":
    print(f"{asyncio.run(burst(sys.argv[1], int(sys.argv[2]))) * 1000:.1f}")
