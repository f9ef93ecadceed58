"""What a database must do for the store (its dialect), and the migrations both run.

A dialect runs transaction scripts (``bot.store.script``), delivers notices to every
process, and tells live processes from dead ones. That is all that differs between
SQLite (one process, one writer) and PostgreSQL (several processes).

Migrations are numbered plain SQL files in ``bot/store/migrations``:
``0007_one_engine.sql`` for both databases, and ``0007_one_engine.postgres.sql`` or
``….sqlite.sql`` for what only one of them needs. Each version is applied once, in
order, in one transaction, under a lock so that processes starting together take turns.
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Callable, Collection, Generator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, TypeVar

from bot.store.script import Op, execute, fetch_value, lock

log = logging.getLogger(__name__)

T = TypeVar("T")
MIGRATIONS_DIR = Path(__file__).with_name("migrations")
_FILE = re.compile(r"^(\d{4})_[a-z0-9_]+(?:\.(sqlite|postgres))?\.sql$")
_MIGRATIONS_TABLE = (
    "CREATE TABLE IF NOT EXISTS schema_migrations (version INTEGER PRIMARY KEY, applied_at DOUBLE PRECISION)"
)


class Database(Protocol):
    """One database, as the store uses it."""

    #: ``sqlite`` or ``postgres``: which migration files apply.
    dialect: str
    #: How long after a look first finds a holder's process missing ``gone`` may call it gone (0: at once).
    gone_after: float

    async def open(self) -> None: ...
    async def close(self) -> None: ...

    async def run(self, script: Generator[Op, Any, T], *, write: bool = True, heavy: bool = False) -> T:
        """Run ``script`` as one transaction (``write=False``: it only reads) and return what it returns.

        ``heavy``: it writes megabytes; it may wait behind light scripts (a claim, an admission)."""
        ...

    def on_notice(self, handler: Callable[[str], None]) -> None:
        """Call ``handler(payload)`` for every notice committed by any process, this one included."""
        ...

    async def hold(self, holder: str) -> None:
        """Show, for as long as this process lives, that ``holder`` (this process) is alive."""
        ...

    async def gone(self, holders: Collection[str]) -> set[str]:
        """Which of ``holders`` belong to processes that are gone (their jobs can be taken over now)."""
        ...

    async def ping(self) -> None:
        """A cheap round trip (for ``/healthz``); raises if the database does not answer."""
        ...


@dataclass(frozen=True)
class Migration:
    version: int
    name: str
    statements: tuple[str, ...]


def split_statements(sql: str) -> list[str]:
    """The statements of a migration file: separated by a ``;`` at the end of a line; ``--`` comments dropped.

    PostgreSQL function bodies (``$$ … $$``) may hold ``;`` inside lines only.
    """
    statements, current = [], []
    for line in sql.splitlines():
        if line.strip().startswith("--"):
            continue
        current.append(line)
        if line.rstrip().endswith(";"):
            statement = "\n".join(current).strip().removesuffix(";").strip()
            if statement:
                statements.append(statement)
            current = []
    rest = "\n".join(current).strip()
    if rest:
        statements.append(rest)
    return statements


def migrations(dialect: str, directory: Path = MIGRATIONS_DIR) -> list[Migration]:
    """Every migration for ``dialect``, in order: each version's shared file, then its dialect's own."""
    found: dict[int, list[tuple[int, str, str]]] = {}
    for path in sorted(directory.glob("*.sql")):
        match = _FILE.match(path.name)
        if match is None:
            raise ValueError(f"{path.name} is not named NNNN_name[.sqlite|.postgres].sql")
        only = match.group(2)
        if only is not None and only != dialect:
            continue
        found.setdefault(int(match.group(1)), []).append((0 if only is None else 1, path.stem, path.read_text()))
    versions = sorted(found)
    if versions != list(range(1, len(versions) + 1)):
        raise ValueError(f"migration versions must run 1, 2, 3… without gaps, found {versions}")
    return [
        Migration(version, files[0][1], tuple(s for _, _, text in sorted(files) for s in split_statements(text)))
        for version, files in sorted(found.items())
    ]


def migrate(pending: list[Migration], now: float | None = None) -> Generator[Op, Any, list[int]]:
    """Apply the migrations not yet applied, in one transaction; the versions applied."""
    yield from lock("migrate")
    yield from execute(_MIGRATIONS_TABLE)
    current = int((yield from fetch_value("SELECT COALESCE(MAX(version), 0) AS v FROM schema_migrations")) or 0)
    applied = []
    for migration in pending:
        if migration.version <= current:
            continue
        for statement in migration.statements:
            yield from execute(statement)
        yield from execute(
            "INSERT INTO schema_migrations (version, applied_at) VALUES (:version, :at)",
            version=migration.version,
            at=time.time() if now is None else now,
        )
        applied.append(migration.version)
    return applied


async def open_and_migrate(database: Database) -> None:
    """Open ``database`` and bring its schema up to date."""
    await database.open()
    for version in await database.run(migrate(migrations(database.dialect))):
        log.info("database migrated to version %d", version)
