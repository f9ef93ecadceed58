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
