"""The shape the code must keep: the engine knows no Discord, and data flows cogs → engine only."""

from __future__ import annotations

import ast
from pathlib import Path

from tests.harness import ROOT


def imported_modules(path: Path) -> set[str]:
    """Every module a file imports, at any depth (``TYPE_CHECKING`` blocks included)."""
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
    return names


def test_the_engine_imports_nothing_from_cogs_and_nothing_of_discord() -> None:
    offenders = {
        path.name: sorted(m for m in imported_modules(path) if m.split(".")[0] in ("cogs", "discord"))
        for path in sorted((ROOT / "bot").glob("*.py"))
    }
    assert {name: mods for name, mods in offenders.items() if mods} == {}


def test_the_check_sees_an_import_when_there_is_one(tmp_path: Path) -> None:
    sample = tmp_path / "sample.py"
    sample.write_text(
        "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from cogs.core.client import AtelierBot\n"
    )
    assert "cogs.core.client" in imported_modules(sample)


def test_only_the_lifecycle_moves_jobs_and_charges_money() -> None:
    """No other module writes a job's state or the money ledger: they go through ``Lifecycle``."""
    writers = {}
    for path in sorted((ROOT / "bot").glob("*.py")) + sorted((ROOT / "cogs").glob("*.py")):
        text = path.read_text()
        calls = [
            c for c in ("move_job(", "create_job(", "ledger.charge(", "ledger.refund(", "ledger.release(") if c in text
        ]
        if calls:
            writers[path.name] = calls
    # The stores define them; the lifecycle is their only caller.
    assert set(writers) == {"storage.py", "sqlite_store.py", "postgres_store.py", "lifecycle.py"}, writers
