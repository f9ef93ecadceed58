"""The store alone: a burst of admissions, each followed by the move to preparing, on SQLite and on
PostgreSQL, with no bot, Discord or fakes around it. What the database layer of one admission costs,
away from the noise of the other processes sharing the machine; with ``--baseline`` the older code's
store runs too, alternating with this one's, when it has one (the one engine's ``tests/stores.py``).
"""

from __future__ import annotations

import asyncio
import os
import statistics
import sys
from pathlib import Path

from bench.common import Code, Report, Row, Settings, note
from tests.harness import ROOT

SCRIPT = Path(__file__).with_name("store_burst.py")
DATABASES = ("sqlite", "postgres")


def tree_of(code: Code) -> Path:
    return Path(code.pythonpath.split(os.pathsep)[0]) if code.pythonpath else ROOT


async def one_burst(code: Code, database: str, count: int) -> float:
    """Milliseconds one burst took, in ``code``'s own tree."""
    tree = tree_of(code)
    env = {**os.environ, "PYTHONPATH": code.pythonpath or str(ROOT)}
    proc = await asyncio.create_subprocess_exec(
        sys.executable, str(SCRIPT), database, str(count), cwd=tree, env=env,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    async with asyncio.timeout(120):
        out, err = await proc.communicate()
    if proc.returncode != 0:
        raise RuntimeError(f"store burst failed in {tree}: {err.decode()[-500:]}")
    return float(out.decode().strip().splitlines()[-1])


async def measure_store(s: Settings, report: Report) -> None:
    """Each database: ``store_jobs`` admissions at once, ``store_repeats`` times per code, the codes alternating."""
    codes = [code for code in s.codes if (tree_of(code) / "tests" / "stores.py").is_file()]
    for code in s.codes:
        if code not in codes:
            note(f"store: {code.label or 'this code'} has no one-engine store (tests/stores.py); not measured")
    for database in DATABASES:
        times: dict[Code, list[float]] = {code: [] for code in codes}
        for _ in range(s.store_repeats):
            for code in codes:
                times[code].append(await one_burst(code, database, s.store_jobs))
        for code in codes:
            label = f" [{code.label}]" if code.label else ""
            runs = ", ".join(f"{t:.0f}" for t in times[code])
            report.details[f"store_{database}_ms{label}"] = times[code]
            report.rows.append(
                Row(
                    f"Store alone{label}, {database}: {s.store_jobs} admissions at once, each moved to preparing "
                    f"(median of {s.store_repeats}: {runs} ms)",
                    f"{statistics.median(times[code]):.0f} ms",
                    "(no target)",
                )
            )
