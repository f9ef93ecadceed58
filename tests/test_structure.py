"""The shape the code must keep: the engine knows no Discord, the layers hold, and only the store writes a job's
state or money, with state names that come from ``JobState``.

The layers themselves are import-linter contracts in ``pyproject.toml`` (``lint-imports``, run by the
README's test command); these tests check what import-linter cannot: what the SQL in the code does.
"""

from __future__ import annotations

import ast
import re
import subprocess
import sys
from pathlib import Path

from bot.core.states import JobState
from tests.harness import ROOT

SOURCES = sorted((ROOT / "bot").rglob("*.py")) + sorted((ROOT / "cogs").rglob("*.py"))
# A status name quoted as an SQL literal: the way a hand-typed state sneaks into a query.
STATE_LITERAL = re.compile(r"'(" + "|".join(state.value for state in JobState) + r")'")
# ``UPDATE jobs SET``, with or without an alias (``UPDATE jobs j SET``, ``UPDATE jobs AS j SET``).
_UPDATE = r"UPDATE\s+jobs(?:\s+(?:AS\s+)?\w+)?\s+SET\b"
UPDATES_JOBS = re.compile(_UPDATE, re.IGNORECASE)
# ``status`` assigned in an UPDATE's SET clause (before its WHERE), or a SET item built on its own.
SETS_STATUS = re.compile(_UPDATE + r"\s+(?:(?!\bWHERE\b).)*\b(?:\w+\.)?status\s*=|^\s*status\s*=", re.I | re.S | re.M)
MIGRATIONS = sorted((ROOT / "bot" / "store" / "migrations").glob("*.sql"))
# What tells the databases apart; only the store (its dialects) and the start-up that picks one may read it.
DATABASE_ATTRIBUTES = {"dialect", "shared"}
DATABASE_CLASSES = {"SQLiteDatabase", "PostgresDatabase"}
PICKS_THE_DATABASE = {"bot/__main__.py", "bot/config.py"}
WRITES_MONEY = re.compile(r"INSERT\s+INTO\s+money\b", re.IGNORECASE)


def imported_modules(path: Path) -> set[str]:
    """Every module a file imports, at any depth (``TYPE_CHECKING`` blocks included)."""
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
    return names


def strings(path: Path) -> list[tuple[str, str]]:
    """Every string constant of a module (f-strings' literal parts included), with the function it is in."""
    tree = ast.parse(path.read_text(), filename=str(path))
    found: list[tuple[str, str]] = []

    def visit(node: ast.AST, where: str) -> None:
        for child in ast.iter_child_nodes(node):
            inner = child.name if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef)) else where
            if isinstance(child, ast.Constant) and isinstance(child.value, str):
                found.append((where, child.value))
            visit(child, inner)

    visit(tree, "<module>")
    return found


def branches_on_the_database(path: Path) -> list[str]:
    """Where a module reads what tells the databases apart: ``.dialect``, ``.shared``, a dialect's class."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Attribute) and node.attr in DATABASE_ATTRIBUTES:
            found.append(f"{path.name}:{node.lineno} .{node.attr}")
        elif isinstance(node, ast.Name) and node.id in DATABASE_CLASSES:
            found.append(f"{path.name}:{node.lineno} {node.id}")
    return found


def status_writers(path: Path) -> set[str]:
    """The functions (``<module>`` for the top level) whose SQL can set a job's status: a string that updates
    ``jobs`` and a string that assigns ``status`` (one statement may be built from several strings)."""
    updates, assigns = set(), set()
    for where, text in strings(path):
        if UPDATES_JOBS.search(text):
            updates.add(where)
        for match in SETS_STATUS.finditer(text):
            assigns.add(where)
            if match.group(0).upper().startswith("UPDATE"):
                updates.add(where)
    return updates & assigns


def test_the_engine_imports_nothing_from_cogs_and_nothing_of_discord() -> None:
    offenders = {
        str(path.relative_to(ROOT)): sorted(m for m in imported_modules(path) if m.split(".")[0] in ("cogs", "discord"))
        for path in sorted((ROOT / "bot").rglob("*.py"))
    }
    assert {name: mods for name, mods in offenders.items() if mods} == {}


def test_the_check_sees_an_import_when_there_is_one(tmp_path: Path) -> None:
    sample = tmp_path / "sample.py"
    sample.write_text(
        "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from cogs.frontends import AtelierBot\n"
    )
    assert "cogs.frontends" in imported_modules(sample)


def test_one_statement_writes_a_jobs_state_and_only_the_store_writes_money() -> None:
    """``move_sql`` builds every ``UPDATE jobs SET status``; the lifecycle is its only caller (via the store),
    with its hand-overs (the moves of calls that end together, written in one transaction)."""
    writers = {(str(path.relative_to(ROOT)), where) for path in SOURCES for where in status_writers(path)}
    assert writers == {("bot/store/queries.py", "move_sql")}
    money_writers = {
        str(path.relative_to(ROOT)) for path in SOURCES for _, text in strings(path) if WRITES_MONEY.search(text)
    }
    assert money_writers == {"bot/store/queries.py"}
    callers = {str(p.relative_to(ROOT)) for p in SOURCES if re.search(r"store\.move(_all)?\(", p.read_text())}
    assert callers == {"bot/jobs/lifecycle.py", "bot/jobs/handovers.py"}
    # Nor does a migration or a trigger (their SQL is in ``.sql`` files, not Python strings).
    assert MIGRATIONS and [p.name for p in MIGRATIONS if SETS_STATUS.search(p.read_text())] == []


def test_nothing_outside_the_store_branches_on_the_database() -> None:
    """One engine for both databases: what differs between them is the store's (its dialects'); only the
    start-up reads which one it is, to open it and to refuse roles that need PostgreSQL."""
    branches = [
        where
        for path in SOURCES
        if not str(path.relative_to(ROOT)).startswith("bot/store/")
        and str(path.relative_to(ROOT)) not in PICKS_THE_DATABASE
        for where in branches_on_the_database(path)
    ]
    assert branches == []


def test_sql_takes_state_names_from_job_state_never_typed_by_hand() -> None:
    typed = [
        (str(path.relative_to(ROOT)), text[:80])
        for path in SOURCES
        if path.name != "states.py"
        for _, text in strings(path)
        if STATE_LITERAL.search(text)
    ]
    assert typed == []


def test_the_checks_see_what_they_look_for(tmp_path: Path) -> None:
    """Not vacuous: a hand-typed state and a second status writer are found."""
    sample = tmp_path / "sample.py"
    sample.write_text("def sneaky():\n    return \"UPDATE jobs SET status = :target WHERE status = 'queued'\"\n")
    assert [STATE_LITERAL.search(t) is not None for _, t in strings(sample)] == [True]
    assert status_writers(sample) == {"sneaky"}
    sample.write_text('def renew():\n    return "UPDATE jobs SET lease_until = :until WHERE status = :state"\n')
    assert status_writers(sample) == set()  # reading the status is not writing it
    sample.write_text('def aliased():\n    return "UPDATE jobs AS j SET j.status = :target WHERE j.id = :id"\n')
    assert status_writers(sample) == {"aliased"}
    assert SETS_STATUS.search("UPDATE jobs j\nSET error = NULL,\n    status = 'queued'\nWHERE id = 1;")
    sample.write_text("def engine(store):\n    if store.dialect == 'sqlite' or store.config.shared:\n        pass\n")
    assert len(branches_on_the_database(sample)) == 2


def test_the_layers_hold() -> None:
    """import-linter's contracts (pyproject.toml): no circle anywhere, the engine knows no Discord, the store
    never imports the jobs layer, and cogs never import the store."""
    linter = Path(sys.executable).with_name("lint-imports")
    result = subprocess.run([str(linter), "--no-cache"], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-2000:]
    assert "0 broken" in result.stdout


def test_cogs_type_their_client_instead_of_ignoring_types() -> None:
    ignores = [
        f"{path.relative_to(ROOT)}:{number}"
        for path in sorted((ROOT / "cogs").rglob("*.py"))
        for number, line in enumerate(path.read_text().splitlines(), start=1)
        if "type: ignore" in line and "interaction.client" in line
    ]
    assert ignores == []
