"""The benchmark still runs: a quick pass with tiny sizes and a few jobs. No timing assertions.

It runs every measure, and the single-process ack and throughput measures also on the code from
before the engine's refactor (``--baseline``, a ``git archive`` of ``BASELINE``), as the
published table does.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest

from tests.harness import ROOT

BASELINE = "60c95fa"  # the last commit before the one engine (issue 17): the table's "before"
MEASURES = (
    "Ack latency",
    "Overhead per job",
    "Throughput",
    "Peak RSS",
    "PostgreSQL: admission",
    "PostgreSQL: from enqueue to claim",
    "PostgreSQL: throughput",
    "PostgreSQL: peak RSS",
    "PostgreSQL at scale, 200 queued from 20 members, a gateway and 4 workers: from a slot freeing",
    "PostgreSQL at scale, 200 queued from 20 members, a gateway and 4 workers: admission",
    "PostgreSQL at scale, 200 queued from 20 members, a gateway and 4 workers: most connections",
)
# Each code's own rows, when a baseline runs beside this code.
SIDE_BY_SIDE = (f"Ack latency [baseline, {BASELINE}]", f"Throughput [baseline, {BASELINE}]",
                "Ack latency [this code, ", "Throughput [this code, ")  # fmt: skip


def checkout(commit: str, where: Path) -> Path:
    """The tree of ``commit`` (from this repository's history) under ``where``, named after it."""
    tree = where / commit
    tree.mkdir()
    archive = where / f"{commit}.tar"
    subprocess.run(["git", "-C", str(ROOT), "archive", "-o", str(archive), commit], check=True, timeout=60)
    with tarfile.open(archive) as tar:
        tar.extractall(tree, filter="data")
    return tree


def test_quick_benchmark_prints_every_measure_with_numbers(tmp_path: Path) -> None:
    out = tmp_path / "bench.json"
    old = checkout(BASELINE, tmp_path)
    done = subprocess.run(
        [sys.executable, "-m", "bench.run", "--quick", "--json", str(out), "--baseline", str(old)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=240,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    rows = [line for line in done.stdout.splitlines() if line.startswith("| ") and "---" not in line]
    assert rows[0].startswith("| measure | value | target | ratio | pass/miss |")
    for measure in MEASURES + SIDE_BY_SIDE:
        lines = [r for r in rows if r.startswith(f"| {measure}")]
        assert lines, f"{measure} missing from:\n{done.stdout}"
        for line in lines:
            value, ratio = line.split(" | ")[1], line.split(" | ")[3]
            assert re.search(r"\d", value) and re.fullmatch(r"\d+\.\d\d", ratio), line
    # The store alone, on each database (this code's store: the baseline's predates it); figures without a target.
    store = [r for r in rows if r.startswith("| Store alone [this code, ")]
    assert [" sqlite: " in store[0], " postgres: " in store[1]] == [True, True], store
    assert all(re.search(r"\| \d+ ms \| \(no target\) \|", line) for line in store), store
    assert "did not complete" not in done.stdout
    data = json.loads(out.read_text())
    assert all(isinstance(r["ratio"], float) or r["target"] == "(no target)" for r in data["rows"])


def test_a_claim_is_timed_from_the_end_of_its_own_worker_s_latest_call_even_one_stamped_sent_after_it() -> None:
    from bench.fakes import Span
    from bench.scale import Claimed, slot_gaps

    base = 1_800_000_000.0  # the claims are in wall time, the spans in perf_counter

    def to_perf(wall: float) -> float:
        return wall - base

    spans = {
        "a1": Span("a1", 0.0, 2.000, 2.001),  # w1's call: answered at 2.000, the write returned at 2.001
        "b1": Span("b1", 0.0, 2.100, 2.150),  # w1's next call: answered at 2.100, the write returned late
        "a2": Span("a2", 2.010, 4.0, 4.0),  # claimed at 2.005, after a1 was sent: 4 ms
        "b2": Span("b2", 2.130, 4.0, 4.0),  # claimed at 2.120, before b1's write returned: 20 ms from its end
        "c1": Span("c1", 2.300, 4.0, 4.0),  # w2's first call: no earlier end of w2, not timed
    }
    claimed = [Claimed(p, h, base + at) for p, h, at in [("a1", "w1", -1.0), ("b1", "w1", -1.0), ("a2", "w1", 2.005),
                                                       ("b2", "w1", 2.120), ("c1", "w2", 2.290)]]  # fmt: skip
    gaps = slot_gaps(spans, claimed, (1.0, 3.0), to_perf)
    assert [round(gap.asked * 1000) for gap in gaps] == [4, 20]
    assert [round(gap.started * 1000) for gap in gaps] == [5, 10]
    # From any worker's end, c1 is timed too: from b1's, the latest before its claim (2.290 - 2.150).
    assert [round(gap.asked * 1000) for gap in slot_gaps(spans, claimed, (1.0, 3.0), to_perf, any_worker=True)] == [
        4,
        20,
        140,
    ]


def test_wall_stamps_are_placed_by_the_clock_reading_nearest_to_them() -> None:
    """The wall clock was seen to step ahead of the monotonic one mid-run: a stamp is placed by the offset read
    nearest to it, not by one read at the end."""
    from bench.scale import Clocks

    clock = Clocks(walls=[100.0, 101.0, 102.0], offsets=[90.0, 90.0, 90.5])  # stepped by 0.5 s before 102
    assert clock.to_perf(100.4) == pytest.approx(10.4)
    assert clock.to_perf(101.2) == pytest.approx(11.2)
    assert clock.to_perf(101.9) == pytest.approx(11.4)  # nearer the reading after the step
    assert clock.to_perf(105.0) == pytest.approx(14.5)
