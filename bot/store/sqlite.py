"""SQLite, the default: one file in WAL mode, one process, one writing connection used by one thread of
its own, and one reading connection with a thread of its own.

Every transaction script runs whole in its thread, completely or not at all, so the event
loop never waits on the disk. Scripts that queue up while the writer is busy are committed
together in one transaction, each in a savepoint of its own (group commit): a burst of two
hundred new jobs costs a few commits, not two hundred, and a failing script is rolled back
alone. A caller hears back, and notices are delivered, only after the commit.

Scripts that only read go to the reader (WAL lets it read the last commit while the writer
writes), so reading a job's images never holds up a claim. A script that writes megabytes (a
job's images) is marked heavy: a batch takes every light script waiting but only a few heavy
ones, so a burst of uploads does not make each claim and admission wait for all of them.

The log (WAL) is copied into the database file by a third thread, every ``CHECKPOINT_EVERY``
seconds, in the passive mode that never waits for the writer. SQLite's own checkpoint runs
inside the commit that fills the log past 4 MB: it copies and syncs the pages before the
commit returns, 10-20 ms during which every claim and move waits (a burst of 1 MB inputs
crossed that mark every few jobs).

Being the only writer, SQLite needs no locks between transactions; being the only process
(a lock file says so: a second process on the same file is refused), every holder that is
not this process is gone.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import fcntl
import logging
import os
import queue
import sqlite3
import threading
from collections.abc import Callable, Collection, Generator
from pathlib import Path
from typing import IO, Any, TypeVar

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
# A unit of work for the thread: run on the connection, return the result and the notices to send.
Unit = Callable[[sqlite3.Connection], tuple[Any, list[str]]]
# Heavy scripts (megabytes of images) committed in one batch at most: a light script that comes meanwhile
# waits for one image set's write, not four (the burst's first calls' ends waited up to 120 ms behind four).
HEAVY_PER_BATCH = 1
# How often the checkpointer copies the log into the database file (seconds).
CHECKPOINT_EVERY = 1.0
# The oldest SQLite the store's SQL runs on: a fenced move's ``IS NOT DISTINCT FROM`` (3.39), ``RETURNING``
# (3.35). Python uses the library of the system it was built for (Debian 12's is 3.40).
OLDEST_SQLITE = (3, 39, 0)


def drive(script: Generator[Op, Any, T], conn: sqlite3.Connection, notices: list[str]) -> T:
    """Run a transaction script on ``conn`` (inside a transaction the caller opened); collect its notices."""
    try:
        op = next(script)
        finishing = False
        while True:
            if finishing and not may_follow_finally(op):
                raise went_on_after_finally(op)
            if isinstance(op, Finally):
                # Run now, at the same point as PostgreSQL's commit runs it: its error is not the script's to handle.
                finishing = True
                conn.executemany(op.sql, op.rows)
                op = script.send(None)
                continue
            try:
                result = _perform(op, conn, notices)
            except sqlite3.Error as exc:
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


def _perform(op: Op, conn: sqlite3.Connection, notices: list[str]) -> Any:
    if isinstance(op, Fetch):
        cursor = conn.execute(op.sql, op.params)
        names = [d[0] for d in cursor.description or ()]
        rows: list[Row] = [dict(zip(names, row, strict=True)) for row in cursor.fetchall()]
        return rows
    if isinstance(op, Execute):
        return conn.execute(op.sql, op.params).rowcount
    if isinstance(op, ExecuteMany):
        conn.executemany(op.sql, op.rows)
        return None
    if isinstance(op, Notify):
        notices.append(op.payload)
        return None
    assert isinstance(op, Lock)  # the single writer holds the whole database for the transaction
    return None


# A unit's caller: its future, on its event loop.
Caller = tuple["asyncio.Future[Any]", asyncio.AbstractEventLoop]
# What a batch hands back: each caller's result, or its error.
Answer = tuple[Caller, Any, BaseException | None]


class _Thread:
    """The one thread that uses a connection; commits (or reads) what queued up together.

    A batch's callers hear in one call to their event loop, after its commit. Answered one by one,
    each answer woke the loop, which took the interpreter's lock to resume that caller while the
    thread waited (up to the switch interval, 5 ms) to answer the next: a burst's admissions were
    answered over several milliseconds more than their batch took.
    """

    def __init__(self, connect: Callable[[], sqlite3.Connection], *, name: str, begin: str) -> None:
        self._queue: queue.SimpleQueue[tuple[Unit, Caller, bool] | None] = queue.SimpleQueue()
        self._begin = begin  # BEGIN IMMEDIATE for the writer; a plain (deferred) BEGIN for the reader
        self._name = name
        self._thread = threading.Thread(target=self._main, args=(connect,), name=name, daemon=True)
        self._thread.start()

    def submit(self, unit: Unit, *, heavy: bool = False) -> asyncio.Future[Any]:
        """Queue ``unit``; its result's future, on the running loop (a unit whose caller gave up before it ran
        is skipped)."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Any] = loop.create_future()
        self._queue.put((unit, (future, loop), heavy))
        return future

    def stop(self) -> None:
        """Finish what is queued, close the connection, end the thread."""
        self._queue.put(None)
        self._thread.join()

    def _main(self, connect: Callable[[], sqlite3.Connection]) -> None:
        conn: sqlite3.Connection | None = None
        light: list[tuple[Unit, Caller]] = []
        heavy: collections.deque[tuple[Unit, Caller]] = collections.deque()
        heavy_next = False  # after a batch of light units, waiting heavy ones go first: neither starves
        stopping = False
        while True:
            waiting = [] if light or heavy or stopping else [self._queue.get()]
            while True:
                try:
                    waiting.append(self._queue.get_nowait())
                except queue.Empty:
                    break
            for item in waiting:
                if item is None:
                    stopping = True
                elif item[2]:
                    heavy.append((item[0], item[1]))
                else:
                    light.append((item[0], item[1]))
            # Light units are committed by themselves: a hand-over or an admission never waits for the
            # megabytes of a heavy batch to be written with it (the first calls' ends came up to 170 ms
            # late while the burst's images were being saved).
            if light and not (heavy and heavy_next):
                units, light, heavy_next = light, [], True
            else:
                units, heavy_next = [heavy.popleft() for _ in range(min(HEAVY_PER_BATCH, len(heavy)))], False
            if units:
                try:
                    conn = conn or connect()
                    self._commit(conn, units, self._begin)
                except Exception as exc:  # no connection, or one that broke: its callers hear why, never wait
                    log.error("the database's %s thread failed a batch (%s)", self._name, exc)
                    _fail(units, exc)
                    if conn is not None:  # the next batch starts on a fresh connection
                        with contextlib.suppress(sqlite3.Error):
                            conn.close()
                        conn = None
            if stopping and not heavy and not light:
                if conn is not None:
                    conn.close()
                return

    @staticmethod
    def _commit(conn: sqlite3.Connection, units: list[tuple[Unit, Caller]], begin: str) -> None:
        done: list[Answer] = []
        # A unit alone is the transaction: its failure rolls the transaction back, so it needs no savepoint (two
        # statements fewer, each of which hands the interpreter's lock to the event loop and waits to get it back).
        alone = len(units) == 1
        try:
            conn.execute(begin)
            for unit, caller in units:
                if caller[0].cancelled():  # its caller gave up (a cancellation that comes later finds it done)
                    continue
                if not alone:
                    conn.execute("SAVEPOINT unit")
                try:
                    result = unit(conn)
                except Exception as exc:  # this unit's own failure: undone alone, handed to its caller
                    if not alone:
                        conn.execute("ROLLBACK TO unit")
                        conn.execute("RELEASE unit")
                    elif conn.in_transaction:  # (an error SQLite rolled back itself has ended it already)
                        conn.execute("ROLLBACK")
                    done.append((caller, None, exc))
                else:
                    if not alone:
                        conn.execute("RELEASE unit")
                    done.append((caller, result, None))
            if conn.in_transaction:
                conn.execute("COMMIT")
        except sqlite3.Error as exc:  # the transaction itself failed: nothing of it was written
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            _fail(units, exc)
            return
        _answer(done)


def _fail(units: list[tuple[Unit, Caller]], exc: BaseException) -> None:
    """Hand ``exc`` to every caller of ``units``."""
    _answer([(caller, None, exc) for _unit, caller in units])


def _answer(answers: list[Answer]) -> None:
    """Hand each caller its answer: one call to each event loop, whatever the number of callers."""
    loops: dict[asyncio.AbstractEventLoop, list[Answer]] = {}
    for answer in answers:
        loops.setdefault(answer[0][1], []).append(answer)
    for loop, theirs in loops.items():
        with contextlib.suppress(RuntimeError):  # a loop closed meanwhile: nobody waits on it any more
            loop.call_soon_threadsafe(_settle, theirs)


def _settle(answers: list[Answer]) -> None:
    # On the callers' loop.
    for (future, _loop), result, error in answers:
        if future.done():  # its caller gave up while it ran
            continue
        if error is not None:
            future.set_exception(error)
        else:
            future.set_result(result)


class _Checkpointer:
    """A thread that copies the log into the database file every ``every`` seconds, on a connection of its own."""

    def __init__(self, connect: Callable[[], sqlite3.Connection], every: float) -> None:
        self._stopping = threading.Event()
        self._thread = threading.Thread(
            target=self._main, args=(connect, every), name="atelier-sqlite-checkpoint", daemon=True
        )
        self._thread.start()

    def stop(self) -> None:
        self._stopping.set()
        self._thread.join()

    def _main(self, connect: Callable[[], sqlite3.Connection], every: float) -> None:
        conn: sqlite3.Connection | None = None
        try:
            while not self._stopping.wait(every):
                try:
                    conn = conn or connect()  # once the writer has opened (and set up) the file
                    # PASSIVE copies what no reader still needs, without waiting for the writer or a reader.
                    conn.execute("PRAGMA wal_checkpoint(PASSIVE)")
                except sqlite3.Error as exc:  # the next round tries again; the log only grows meanwhile
                    log.warning("copying the database's log into its file failed (%s)", exc)
        finally:
            if conn is not None:
                conn.close()


def check_version(version: tuple[int, int, int]) -> None:
    """Refuse to start on an SQLite too old for the store's SQL (its first move would fail, not its start)."""
    if version < OLDEST_SQLITE:
        found, oldest = (".".join(map(str, v)) for v in (version, OLDEST_SQLITE))
        raise ConfigError(
            f"this Python's SQLite is {found}; Atelier needs {oldest} or newer. Use a newer system or Python build "
            "(the Docker image has one), or PostgreSQL (DATABASE_URL)."
        )


class SQLiteDatabase:
    """The store's SQLite: ``path``, used by this process alone."""

    dialect = "sqlite"
    gone_after = 0.0  # the lock file is proof enough

    def __init__(self, path: Path) -> None:
        self.path = path
        self._thread: _Thread | None = None
        self._reader: _Thread | None = None
        self._checkpointer: _Checkpointer | None = None
        self._handlers: list[Callable[[str], None]] = []
        self._holder: str | None = None
        self._lock_file: IO[str] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    async def open(self) -> None:
        """Open the file (refusing one another process has open) and start the thread."""
        check_version(sqlite3.sqlite_version_info)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock_file = _lock_exclusively(self.path.with_name(self.path.name + ".lock"))
        self._loop = asyncio.get_running_loop()

        def connect() -> sqlite3.Connection:
            # Autocommit mode: transactions are opened explicitly, one per batch of units.
            conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
            # First: a new file's first connections may meet while one of them turns the file to WAL.
            conn.execute("PRAGMA busy_timeout=5000")
            conn.execute("PRAGMA journal_mode=WAL")
            # WAL with NORMAL sync: committed jobs survive a crash of the process; only a power cut
            # may lose the last moments, and every write does not wait for the disk.
            conn.execute("PRAGMA synchronous=NORMAL")
            conn.execute("PRAGMA wal_autocheckpoint=0")  # the checkpointer's job, never a commit's
            return conn

        self._thread = _Thread(connect, name="atelier-sqlite", begin="BEGIN IMMEDIATE")
        self._reader = _Thread(connect, name="atelier-sqlite-reader", begin="BEGIN")
        try:  # both connections now (the writer's first: it turns the file to WAL), so a start fails with its reason
            await self.run(_ping())
            await self.run(_ping(), write=False)
        except sqlite3.Error as exc:
            await self.close()
            raise ConfigError(f"cannot open the SQLite database {self.path} ({exc})") from None
        self._checkpointer = _Checkpointer(connect, CHECKPOINT_EVERY)

    async def close(self) -> None:
        """Finish what is queued and close; idempotent, even when two closes overlap."""
        thread, self._thread = self._thread, None
        reader, self._reader = self._reader, None
        checkpointer, self._checkpointer = self._checkpointer, None
        if checkpointer is not None:
            await asyncio.to_thread(checkpointer.stop)
        for each in (reader, thread):  # the last connection to close copies the rest of the log
            if each is not None:
                await asyncio.to_thread(each.stop)
        lock_file, self._lock_file = self._lock_file, None
        if lock_file is not None:
            lock_file.close()

    async def run(self, script: Generator[Op, Any, T], *, write: bool = True, heavy: bool = False) -> T:
        thread = self._thread if write else self._reader
        if thread is None:
            raise RuntimeError("the database is not open")

        def unit(conn: sqlite3.Connection) -> tuple[T, list[str]]:
            notices: list[str] = []
            return drive(script, conn, notices), notices

        result, notices = await thread.submit(unit, heavy=heavy)
        for payload in notices:
            self._tell(payload)
        value: T = result
        return value

    def _tell(self, payload: str) -> None:
        for handler in self._handlers:
            try:
                handler(payload)
            except Exception:  # one listener's bug must not stop the others hearing
                log.exception("a notice handler failed on %r", payload)

    def on_notice(self, handler: Callable[[str], None]) -> None:
        self._handlers.append(handler)

    async def hold(self, holder: str) -> None:
        self._holder = holder

    async def gone(self, holders: Collection[str]) -> set[str]:
        """Every holder but this process: the lock file proves no other process uses the database."""
        return {holder for holder in holders if holder != self._holder}

    async def ping(self) -> None:
        await self.run(_ping(), write=False)


def _ping() -> Generator[Op, Any, None]:
    yield Fetch("SELECT 1", {})


def _lock_exclusively(path: Path) -> IO[str]:
    """Hold ``path`` locked for this process's life; refuse to start if another process holds it."""
    handle = path.open("a")
    try:
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.close()
        raise ConfigError(
            f"another Atelier process is using {path.with_suffix('')} (SQLite serves one process; "
            "several processes need DATABASE_URL=postgresql://…)"
        ) from None
    with contextlib.suppress(OSError):
        handle.truncate(0)
        handle.write(f"{os.getpid()}\n")
        handle.flush()
    return handle
