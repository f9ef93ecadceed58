"""The benchmark still runs: a quick pass with tiny sizes and a few jobs. No timing assertions."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

from tests.harness import ROOT

MEASURES = (
    "Ack latency",
    "Overhead per job",
    "Throughput",
    "Peak RSS",
    "PostgreSQL: admission",
    "PostgreSQL: from enqueue to claim",
    "PostgreSQL: throughput",
    "PostgreSQL: peak RSS",
)


def test_quick_benchmark_prints_every_measure_with_numbers(tmp_path: Path) -> None:
    out = tmp_path / "bench.json"
    done = subprocess.run(
        [sys.executable, "-m", "bench.run", "--quick", "--json", str(out)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=90,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    rows = [line for line in done.stdout.splitlines() if line.startswith("| ") and "---" not in line]
    assert rows[0].startswith("| measure | value | target | ratio | pass/miss |")
    for measure in MEASURES:
        lines = [r for r in rows if r.startswith(f"| {measure}")]
        assert lines, f"{measure} missing from:\n{done.stdout}"
        for line in lines:
            value, ratio = line.split(" | ")[1], line.split(" | ")[3]
            assert re.search(r"\d", value) and re.fullmatch(r"\d+\.\d\d", ratio), line
    assert "did not complete" not in done.stdout
    data = json.loads(out.read_text())
    assert all(isinstance(r["ratio"], float) for r in data["rows"])
