"""Transaction scripts: each of the store's behaviours, written once for both databases.

A script is a generator that yields the operations of one transaction (a statement to
run, a lock to take, a notice to send) and receives each one's result; the dialect runs
it. SQLite drives a script in its own thread, synchronously, inside its group commit;
PostgreSQL drives it over one connection, a round trip per statement. Neither knows
what the script does, and the script never knows which database it is on::

    def claim(...) -> Script[Job | None]:
        yield from lock("claim")
        row = yield from fetch_one(HEAD, now=now)
        ...

Statements use ``:name`` parameters. A script that raises rolls its transaction back. A script whose
only statement is atomic by itself says so (``alone``): PostgreSQL then runs it without ``BEGIN`` and
``COMMIT``, one round trip instead of three, and refuses a script that yields anything after it. A
statement whose outcome the script does not read may be left for the commit (``Finally``): PostgreSQL
sends it with the ``COMMIT``, one round trip fewer while the transaction holds its locks.
"""

from __future__ import annotations

from collections.abc import Generator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

Row = Mapping[str, Any]
Params = Mapping[str, Any]


@dataclass(frozen=True)
class Fetch:
    """Run a statement and receive its rows (``alone``: the script's only operation)."""

    sql: str
    params: Params
    alone: bool = False


@dataclass(frozen=True)
class Execute:
    """Run a statement and receive how many rows it changed."""

    sql: str
    params: Params


@dataclass(frozen=True)
class Finally:
    """Run a statement once per parameter set with the commit; the script reads nothing of it, and only
    notices and other ``Finally`` statements may follow it, so it runs at the same point on either database.
    PostgreSQL sends it in the commit's round trip, with its values written into it as literals: numbers,
    text and NULL only (a bad value is refused, never written)."""

    sql: str
    rows: Sequence[Params]


@dataclass(frozen=True)
class ExecuteMany:
    """Run a statement once per parameter set."""

    sql: str
    rows: Sequence[Params]


@dataclass(frozen=True)
class Lock:
    """Take a lock named ``key`` until the transaction ends (PostgreSQL: an advisory lock; SQLite, whose
    single writer runs one transaction at a time, needs none)."""

    key: str


@dataclass(frozen=True)
class Notify:
    """Tell every process (this one included) ``payload`` once the transaction commits."""

    payload: str


Op = Fetch | Execute | Finally | ExecuteMany | Lock | Notify
Script = Generator[Op, Any, Any]


def went_on_after(op: Op) -> RuntimeError:
    """The error for a script that yielded another operation after one it said was its only one."""
    return RuntimeError(f"a script went on after the statement it said was its only one: {op!r:.80}")


def is_alone(op: Op) -> bool:
    return isinstance(op, Fetch) and op.alone


def fetch(sql: str, **params: Any) -> Generator[Op, Any, list[Row]]:
    rows: list[Row] = yield Fetch(sql, params)
    return rows


def fetch_one(sql: str, **params: Any) -> Generator[Op, Any, Row | None]:
    rows: list[Row] = yield Fetch(sql, params)
    return rows[0] if rows else None


def fetch_one_alone(sql: str, **params: Any) -> Generator[Op, Any, Row | None]:
    """``fetch_one`` as the script's only operation: no statement, lock or notice may follow it."""
    rows: list[Row] = yield Fetch(sql, params, alone=True)
    return rows[0] if rows else None


def fetch_value(sql: str, **params: Any) -> Generator[Op, Any, Any]:
    rows: list[Row] = yield Fetch(sql, params)
    return next(iter(rows[0].values())) if rows else None


def execute(sql: str, **params: Any) -> Generator[Op, Any, int]:
    changed: int = yield Execute(sql, params)
    return changed


def execute_finally(sql: str, rows: Sequence[Params]) -> Generator[Op, Any, None]:
    """``sql`` for each of ``rows``, run with the commit (``Finally``): the script's last statements."""
    if rows:
        yield Finally(sql, rows)


def may_follow_finally(op: Op) -> bool:
    """Whether ``op`` may come after a ``Finally`` statement."""
    return isinstance(op, Finally | Notify)


def went_on_after_finally(op: Op) -> RuntimeError:
    return RuntimeError(f"a script went on after a statement it left for the commit: {op!r:.80}")


def execute_many(sql: str, rows: Sequence[Params]) -> Generator[Op, Any, None]:
    if rows:
        yield ExecuteMany(sql, rows)


def lock(*keys: str) -> Generator[Op, Any, None]:
    """Take these locks, in this order (always the same order everywhere: no deadlock)."""
    for key in keys:
        yield Lock(key)


def notify(*payloads: str) -> Generator[Op, Any, None]:
    for payload in payloads:
        yield Notify(payload)


def in_list(name: str, values: Sequence[Any]) -> tuple[str, dict[str, Any]]:
    """``:name0, :name1…`` for an SQL ``IN (…)`` and its parameters (``NULL`` for none: matches nothing)."""
    if not values:
        return "NULL", {}
    params = {f"{name}{i}": value for i, value in enumerate(values)}
    return ", ".join(f":{key}" for key in params), params
