"""PostgreSQL, for several processes (gateways and workers, on several machines) sharing one store.

- **Transactions.** A script runs on one pooled connection: ``BEGIN`` and the locks it takes
  first go in one round trip, then a round trip per statement, then its notices and ``COMMIT``
  in one more. A read-only script, or one whose only statement is atomic by itself (``alone``),
  runs without a transaction: one round trip for a job's plain move.
- **Locks** are advisory locks held to the end of the transaction (``pg_advisory_xact_lock``),
  keyed by a 64-bit hash of their name; scripts take them in a fixed order, so none deadlocks.
- **Notices** are ``NOTIFY`` on the channel ``atelier``, sent only if the transaction commits.
  One session connection per process listens, and reconnects if it drops (then every handler
  hears ``reconnected`` and re-reads whatever a lost notice would have said).
- **Who is alive.** The same session connection holds a session-level advisory lock on this
  process's holder name for its whole life. When a process dies its connection closes and
  the lock goes with it, so another process can tell at once that its jobs are abandoned
  (``gone``), instead of waiting for their leases to run out.
- **Connections.** The pool starts with one connection and grows only to ``pool_size``,
  what the process's role uses (a gateway's admissions, a worker's slots); with the session
  connection, a process holds at most ``pool_size + 1``.

A transaction-mode pooler (PgBouncer's ``pool_mode = transaction``) would hand the session
connection's lock and ``LISTEN`` to other clients; it is detected at start and refused.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import hashlib
import logging
import math
import re
import time
from collections.abc import Callable, Collection, Generator, Mapping
from functools import lru_cache
from typing import Any, TypeVar

import asyncpg

from bot.errors import ConfigError
from bot.store.script import (
    Execute,
    ExecuteMany,
    Fetch,
    Finally,
    Lock,
    Notify,
    Op,
    Row,
    is_alone,
    may_follow_finally,
    went_on_after,
    went_on_after_finally,
)

log = logging.getLogger(__name__)

T = TypeVar("T")
CHANNEL = "atelier"
_PARAM = re.compile(r"(?<![:\w]):([A-Za-z_]\w*)")
RECONNECT_AFTER = 1.0
# How long a process whose own session connection came back trusts no other holder's free lock. When
# PostgreSQL restarts, every session drops at once and each process reconnects within ``RECONNECT_AFTER``
# and a connection's set-up; the first back would otherwise find the others' locks free, take their running
# jobs over and make (and pay for) their calls a second time. A dead process's jobs wait that much longer.
RECONNECT_GRACE = 3.0
# How long another holder's lock must stay free, from the first look that found it free to a later one, before
# its process counts as gone. A process whose own session alone dropped (a proxy's idle cut, a terminated
# backend) is alive, its call still in flight at the provider; it reconnects at once and holds its lock again
# well within this. Taking its jobs over at the first free look would make (and pay for) those calls twice.
GONE_AFTER = 1.5
# A look that found a lock free counts towards ``GONE_AFTER`` only if another look found it free within this long:
# an older one says nothing of the time between (the lock may have been held again, and dropped again since).
FREE_LOOKS_GAP = 10.0
# The notice a process sends each time it holds its lock (at start, and after every reconnection): another's looks
# sample the lock every few seconds, and a session that came back and dropped again between two of them would
# otherwise look as if it had stayed free all along.
HOLDING = "holding:"
# The holders' locks held in this database (a bigint advisory lock shows as two 32-bit halves, ``objsubid`` 1).
HELD_LOCKS = """
SELECT l.classid, l.objid FROM pg_locks l
JOIN unnest($1::bigint[], $2::bigint[]) AS k(classid, objid)
  ON l.classid::bigint = k.classid AND l.objid::bigint = k.objid
WHERE l.locktype = 'advisory' AND l.objsubid = 1 AND l.granted
  AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database())
"""
# A value this large (an image) goes in a statement of its own, not in an ``executemany``.
BLOB_BYTES = 64 * 1024


@lru_cache(maxsize=1024)
def to_postgres(sql: str) -> tuple[str, tuple[str, ...]]:
    """``:name`` parameters as ``$1, $2…``, and the names in that order."""
    names: list[str] = []

    def number(match: re.Match[str]) -> str:
        name = match.group(1)
        if name not in names:
            names.append(name)
        return f"${names.index(name) + 1}"

    return _PARAM.sub(number, sql), tuple(names)


def _args(sql: str, params: Mapping[str, Any]) -> tuple[Any, ...]:
    query, names = to_postgres(sql)
    return (query, *(params[name] for name in names))


def lock_key(name: str) -> int:
    """A 64-bit advisory lock key for a name (the same in every process)."""
    return int.from_bytes(hashlib.blake2b(name.encode(), digest_size=8).digest(), "big", signed=True)


def holder_lock(holder: str) -> int:
    """The advisory lock key a process holds for its life, as ``holder`` (see ``gone``)."""
    return lock_key("holder:" + holder)


def lock_halves(key: int) -> tuple[int, int]:
    """How ``pg_locks`` shows a bigint advisory lock: ``classid`` (its high 32 bits) and ``objid`` (its low ones)."""
    unsigned = key % 2**64
    return unsigned >> 32, unsigned & 0xFFFFFFFF


def _literal(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


class PostgresDatabase:
    """The store's PostgreSQL at ``dsn``, shared with other processes."""

    dialect = "postgres"

    def __init__(
        self, dsn: str, *, pool_size: int, clock: Callable[[], float] = time.monotonic, gone_after: float = GONE_AFTER
    ) -> None:
        self._dsn = dsn
        self.pool_size = pool_size
        self._clock = clock
        self._trust_gone_from = -math.inf  # see ``RECONNECT_GRACE``
        self.gone_after = gone_after
        # holder -> when looks began to find its lock free, and when one last did (``GONE_AFTER``, ``FREE_LOOKS_GAP``)
        self._free_looks: dict[str, tuple[float, float]] = {}
        self._pool: asyncpg.Pool | None = None
        self._session: asyncpg.Connection | None = None
        self._session_task: asyncio.Task[None] | None = None
        self._session_ready: asyncio.Event | None = None
        self._handlers: list[Callable[[str], None]] = []
        self._holder: str | None = None
        self._session_use = asyncio.Lock()  # one query at a time on the session connection
        # Scripts that write megabytes (a job's images) take at most all connections but two, which stay for
        # the light ones (an admission, a claim, a move) that members and slots wait for.
        self._heavy = asyncio.Semaphore(max(1, pool_size - 2))
        # Connections are handed out first come, first served. The pool's own queue is not fair: a connection
        # released wakes its oldest waiter, but a script that asks in the meantime takes it, and the waiter
        # goes to the back of the queue. In a burst of admissions the first to arrive were answered last.
        # At most ``pool_size`` scripts hold a turn, so the pool never has a waiter of its own.
        self._turns = asyncio.Semaphore(pool_size)

    @property
    def pool(self) -> asyncpg.Pool:
        if self._pool is None:
            raise RuntimeError("the database is not open")
        return self._pool

    async def open(self) -> None:
        """Open the pool (one connection, growing to ``pool_size``) and the session connection."""
        # No reset between uses: connections keep no session state (locks end with their
        # transaction, nothing listens on them, nothing is SET), and a reset is a round trip.
        self._pool = await asyncpg.create_pool(
            self._dsn, min_size=1, max_size=self.pool_size, reset=_keep_session, max_inactive_connection_lifetime=60
        )
        await self._refuse_transaction_pooling()
        self._session_ready = asyncio.Event()
        self._session_task = asyncio.create_task(self._keep_session(), name="atelier-postgres-session")
        async with asyncio.timeout(30):
            await self._session_ready.wait()

    async def close(self) -> None:
        """Close the session connection and the pool; idempotent."""
        task, self._session_task = self._session_task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        session, self._session = self._session, None
        if session is not None:
            with contextlib.suppress(OSError, asyncpg.PostgresError):
                await session.close()
        pool, self._pool = self._pool, None
        if pool is not None:
            await pool.close()

    async def _refuse_transaction_pooling(self) -> None:
        """Refuse a pooler that shares server connections between clients transaction by transaction.

        Directly connected, two clients always have two server processes. Behind a transaction-mode
        pooler, a second client's transaction is given the server connection the first one just
        released (PgBouncer reuses the last released first), so they see the same process.
        """
        first = await asyncpg.connect(self._dsn)
        try:
            seen = int(await first.fetchval("SELECT pg_backend_pid()"))
            async with self.pool.acquire() as second, second.transaction():
                other = int(await second.fetchval("SELECT pg_backend_pid()"))
            again = int(await first.fetchval("SELECT pg_backend_pid()"))
        finally:
            await first.close()
        if other == seen or again != seen:
            raise ConfigError(
                "DATABASE_URL points at a pooler in transaction mode (PgBouncer pool_mode = transaction): "
                "Atelier needs session connections (it listens for notices and holds a lock for its life). "
                "Point it at PostgreSQL directly, or use pool_mode = session."
            )

    # Running scripts ----------------------------------------------------------------------------

    async def run(self, script: Generator[Op, Any, T], *, write: bool = True, heavy: bool = False) -> T:
        if heavy:
            async with self._heavy:
                return await self._run(script, write)
        return await self._run(script, write)

    async def _run(self, script: Generator[Op, Any, T], write: bool) -> T:
        async with self._turns, self.pool.acquire() as conn:
            if not write:
                return await self._drive(script, conn, None, [])
            notices: list[str] = []
            try:
                op = next(script)
            except StopIteration as stop:
                value: T = stop.value
                return value
            if is_alone(op):  # atomic by itself: no transaction (``_drive`` refuses anything after it)
                return await self._drive(script, conn, op, [])
            # BEGIN and the locks a script takes first: one round trip.
            locks = []
            while isinstance(op, Lock):
                locks.append(f"SELECT pg_advisory_xact_lock({lock_key(op.key)})")
                try:
                    op = script.send(None)
                except StopIteration as stop:
                    await conn.execute(";".join(["BEGIN", *locks, "COMMIT"]))
                    value = stop.value
                    return value
            # A script cancelled anywhere in its transaction (a stop, a run abandoned) is rolled back here, not
            # left open for the pool to find when the connection comes back.
            try:
                await conn.execute(";".join(["BEGIN", *locks]))
                finals: list[str] = []
                result = await self._drive(script, conn, op, notices, finals)
                # The statements left for the commit, the notices and the commit: one round trip (a notice is
                # sent only if the commit happens).
                told = [f"SELECT pg_notify({_literal(CHANNEL)}, {_literal(payload)})" for payload in notices]
                await conn.execute(";".join([*finals, *told, "COMMIT"]))
            except BaseException:
                with contextlib.suppress(Exception):
                    if not conn.is_closed():
                        await conn.execute("ROLLBACK")
                raise
            return result

    @staticmethod
    async def _drive(
        script: Generator[Op, Any, T],
        conn: asyncpg.Connection,
        first: Op | None,
        notices: list[str],
        finals: list[str] | None = None,
    ) -> T:
        try:
            op = next(script) if first is None else first
            while True:
                if finals and not may_follow_finally(op):
                    raise went_on_after_finally(op)
                if isinstance(op, Finally):
                    if finals is None:
                        raise RuntimeError(f"a statement left for a commit outside a transaction: {op!r:.80}")
                    finals.extend(_inline(op.sql, row) for row in op.rows)
                    op = script.send(None)
                    continue
                try:
                    result = await _perform(op, conn, notices)
                except asyncpg.PostgresError as exc:
                    op = script.throw(exc)
                else:
                    alone, op = is_alone(op), script.send(result)
                    if alone:
                        raise went_on_after(op)
        except StopIteration as stop:
            value: T = stop.value
            return value
        finally:
            script.close()

    # Notices and who is alive ------------------------------------------------------------------

    def on_notice(self, handler: Callable[[str], None]) -> None:
        self._handlers.append(handler)

    def _dispatch(self, _conn: object, _pid: int, _channel: str, payload: str) -> None:
        if payload.startswith(HOLDING):  # a holder's lock is held again: what looks found free before no longer counts
            self._free_looks.pop(payload.removeprefix(HOLDING), None)
            return
        for handler in self._handlers:
            try:
                handler(payload)
            except Exception:  # one listener's bug must not stop the others hearing
                log.exception("a notice handler failed on %r", payload)

    async def hold(self, holder: str) -> None:
        """Hold ``holder``'s lock on the session connection from now on (and again after a reconnection)."""
        self._holder = holder
        async with self._session_use:
            if self._session is not None:
                notice = _literal(HOLDING + holder)
                await self._session.execute(
                    f"SELECT pg_advisory_lock({holder_lock(holder)}), pg_notify('{CHANNEL}', {notice})"
                )

    async def gone(self, holders: Collection[str]) -> set[str]:
        """The holders whose process no longer holds its lock: its session ended and did not come back, so it
        is dead. A lock must be found free at looks ``GONE_AFTER`` s apart, and at every look between (none of them
        ``FREE_LOOKS_GAP`` apart); and none is believed for ``RECONNECT_GRACE`` s after this process's own session
        came back (theirs may be coming back too)."""
        others = sorted({h for h in holders if h and h != self._holder})
        if not others:
            return set()
        async with self._session_use:
            # Read under the session's turn: a reconnection's ``hold`` (and its grace) comes before a look made on it.
            session, now = self._session, self._clock()
            if session is None or now < self._trust_gone_from:
                return set()
            # Read from the lock table, not by taking each lock in turn: a look never holds another's lock, so it
            # never makes a third process's look find it held (nor keeps it, if cancelled between take and release).
            halves = [lock_halves(holder_lock(holder)) for holder in others]
            rows = await session.fetch(HELD_LOCKS, [high for high, _ in halves], [low for _, low in halves])
            held = {(int(r["classid"]), int(r["objid"])) for r in rows}
        free = {holder for holder, pair in zip(others, halves, strict=True) if pair not in held}
        # The take-over and the outbox each ask of their own holders: a look keeps what it did not ask about.
        asked = set(others)
        looks = {h: seen for h, seen in self._free_looks.items() if h not in asked and now - seen[1] <= FREE_LOOKS_GAP}
        for holder in free:
            first, last = self._free_looks.get(holder, (now, now))
            looks[holder] = (first if now - last <= FREE_LOOKS_GAP else now, now)
        self._free_looks = looks  # a lock found held again is no longer suspected
        return {holder for holder in free if now - looks[holder][0] >= self.gone_after}

    async def _keep_session(self) -> None:
        """Keep one session connection listening and holding this process's lock; reconnect if it drops."""
        assert self._session_ready is not None
        while True:
            try:
                lost = asyncio.Event()
                session = await asyncpg.connect(self._dsn)
                connected_at = time.monotonic()
                session.add_termination_listener(functools.partial(_set_on_close, lost))
                await session.add_listener(CHANNEL, self._dispatch)
                if self._session_ready.is_set():  # it came back: so may the others' (not at the first connection)
                    self._trust_gone_from = self._clock() + RECONNECT_GRACE
                    self._free_looks = {}  # what looks found free before says nothing of the time since
                self._session = session
                if self._holder is not None:
                    await self.hold(self._holder)
                self._session_ready.set()
                self._dispatch(None, 0, CHANNEL, "reconnected")
                await lost.wait()
                log.warning("lost the PostgreSQL session connection; reconnecting")
                self._session = None
                if time.monotonic() - connected_at >= RECONNECT_AFTER:
                    continue  # at once: the others find this process's lock free until then (``GONE_AFTER``)
            except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
                # (``InterfaceError``: the connection closed under a call, as between connecting and listening.)
                log.warning("the PostgreSQL session connection failed (%s); reconnecting", type(exc).__name__)
            self._session = None
            await asyncio.sleep(RECONNECT_AFTER)

    async def ping(self) -> None:
        async with self._turns:
            await self.pool.fetchval("SELECT 1")


async def _perform(op: Op, conn: asyncpg.Connection, notices: list[str]) -> Any:
    if isinstance(op, Fetch):
        rows: list[Row] = [dict(record) for record in await conn.fetch(*_args(op.sql, op.params))]
        return rows
    if isinstance(op, Execute):
        status = await conn.execute(*_args(op.sql, op.params))
        return int(status.split()[-1]) if status.split()[-1].isdigit() else 0
    if isinstance(op, ExecuteMany):
        query, names = to_postgres(op.sql)
        sets = [tuple(params[name] for name in names) for params in op.rows]
        if any(_carries_blob(values) for values in sets):
            # asyncpg's executemany sends a large value in small pieces, about 1.5 ms of the event loop's time a
            # megabyte against 0.2 ms for one execute: rows carrying images go one statement each.
            for values in sets:
                await conn.execute(query, *values)
        else:
            await conn.executemany(query, sets)
        return None
    if isinstance(op, Notify):
        notices.append(op.payload)
        return None
    assert isinstance(op, Lock)
    # A lock after the transaction's first statement (the first ones are taken with BEGIN).
    await conn.execute(f"SELECT pg_advisory_xact_lock({lock_key(op.key)})")
    return None


def _inline(sql: str, params: Mapping[str, Any]) -> str:
    """``sql`` with its ``:name`` parameters written in as literals (``Finally``: numbers, text, NULL)."""
    return _PARAM.sub(lambda match: _value_literal(params[match.group(1)]), sql)


def _value_literal(value: Any) -> str:
    if value is None:
        return "NULL"
    if isinstance(value, bool):
        return "TRUE" if value else "FALSE"
    # Numbers in brackets: a negative one after a minus would otherwise begin a comment (``--1``).
    if isinstance(value, int):
        return f"({value})"
    if isinstance(value, float) and math.isfinite(value):
        return f"({value!r})"
    if isinstance(value, str) and "\0" not in value:
        # An escape string: its backslashes and quotes doubled, whatever standard_conforming_strings says.
        return "E'" + value.replace("\\", "\\\\").replace("'", "''") + "'"
    raise TypeError(f"not written into a statement as a literal: {type(value).__name__}")


def _carries_blob(row: tuple[Any, ...]) -> bool:
    return any(isinstance(value, bytes | bytearray | memoryview) and len(value) >= BLOB_BYTES for value in row)


async def _keep_session(_conn: asyncpg.Connection) -> None:
    return None


def _set_on_close(event: asyncio.Event, _conn: object) -> None:
    event.set()
