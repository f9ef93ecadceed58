"""The default job store: one SQLite file in WAL mode, used from one thread of its own.

Every store call is one unit of work run in that thread, completely or not at all (a
move writes its status, refund row and attempts together), and the event loop never
waits on the disk. Units that queue up while the thread is busy are committed together
in one transaction, each in a savepoint of its own (group commit): a burst of two
hundred new jobs costs a few commits, not two hundred, and a failing unit is rolled
back alone. A caller hears back only after the commit. The standard library's
``sqlite3`` is all it needs.
"""

from __future__ import annotations

import asyncio
import json
import logging
import queue
import sqlite3
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import Future
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from bot.eta import Run
from bot.jobs import Destination, Job
from bot.ledger import LedgerSnapshot
from bot.presets import StylePreset
from bot.settings import GuildOverrides
from bot.states import JobState
from bot.storage import (
    MIGRATIONS,
    MIGRATIONS_TABLE,
    Block,
    DayStats,
    HistoryEntry,
    JobStats,
    MoveResult,
    Queries,
    StoredKey,
    attempt_params,
    block_from_row,
    block_params,
    daily_stats_from,
    destination_params,
    job_from_row,
    job_to_params,
    key_from_row,
    key_params,
    move_statement,
    overrides_from_json,
    preset_from_row,
    preset_params,
    run_from_row,
    stats_from,
    stats_queries,
)

if TYPE_CHECKING:
    from bot.image_api import Attempt

log = logging.getLogger(__name__)

T = TypeVar("T")


Work = Callable[[sqlite3.Connection], Any]


class _StoreThread:
    """The one thread that uses the connection; commits what queued up together."""

    def __init__(self, connect: Callable[[], sqlite3.Connection]) -> None:
        self._queue: queue.SimpleQueue[tuple[Work, Future[Any]] | None] = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._main, args=(connect,), name="atelier-sqlite", daemon=True)
        self._thread.start()

    def submit(self, work: Work) -> Future[Any]:
        future: Future[Any] = Future()
        self._queue.put((work, future))
        return future

    def stop(self) -> None:
        """Finish what is queued, close the connection, end the thread."""
        self._queue.put(None)
        self._thread.join()

    def _main(self, connect: Callable[[], sqlite3.Connection]) -> None:
        conn: sqlite3.Connection | None = None
        while True:
            batch = [self._queue.get()]
            while True:
                try:
                    batch.append(self._queue.get_nowait())
                except queue.Empty:
                    break
            units = [unit for unit in batch if unit is not None]
            if units:
                if conn is None:
                    conn = connect()
                self._commit(conn, units)
            if None in batch:
                if conn is not None:
                    conn.close()
                return

    @staticmethod
    def _commit(conn: sqlite3.Connection, units: list[tuple[Work, Future[Any]]]) -> None:
        done: list[tuple[Future[Any], Any, BaseException | None]] = []
        try:
            conn.execute("BEGIN IMMEDIATE")
            for work, future in units:
                if not future.set_running_or_notify_cancel():
                    continue
                conn.execute("SAVEPOINT unit")
                try:
                    result = work(conn)
                except Exception as exc:  # this unit's own failure: undone alone, handed to its caller
                    conn.execute("ROLLBACK TO unit")
                    conn.execute("RELEASE unit")
                    done.append((future, None, exc))
                else:
                    conn.execute("RELEASE unit")
                    done.append((future, result, None))
            conn.execute("COMMIT")
        except sqlite3.Error as exc:  # the transaction itself failed: nothing of it was written
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            for _work, future in units:
                if not future.done():
                    if not future.running():
                        future.set_running_or_notify_cancel()
                    future.set_exception(exc)
            return
        for future, result, error in done:
            if error is not None:
                future.set_exception(error)
            else:
                future.set_result(result)


class SQLiteJobStore:
    """Jobs, money and settings in one SQLite file."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._thread: _StoreThread | None = None

    async def _run(self, work: Callable[[sqlite3.Connection], T]) -> T:
        if self._thread is None:
            raise RuntimeError("store is not open")
        result: T = await asyncio.wrap_future(self._thread.submit(work))
        return result

    _transaction = _run  # every unit of work is a transaction (see the module docstring)

    async def open(self) -> None:
        """Open the database and apply any migrations not yet applied."""
        self.path.parent.mkdir(parents=True, exist_ok=True)

        def connect() -> sqlite3.Connection:
            # Autocommit mode: transactions are opened explicitly, one per batch of units.
            conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
            conn.row_factory = sqlite3.Row
            conn.execute("PRAGMA journal_mode=WAL")
            # WAL with NORMAL sync: committed jobs survive a crash of the process; only a power cut
            # may lose the last moments, and every write does not wait for the disk.
            conn.execute("PRAGMA synchronous=NORMAL")
            conn.execute("PRAGMA busy_timeout=5000")
            return conn

        self._thread = _StoreThread(connect)
        await self._run(self._migrate)

    @staticmethod
    def _migrate(conn: sqlite3.Connection) -> None:
        conn.execute(MIGRATIONS_TABLE)
        current = int(conn.execute("SELECT COALESCE(MAX(version), 0) FROM schema_migrations").fetchone()[0])
        for version, statements in enumerate(MIGRATIONS, start=1):
            if version <= current:
                continue
            for statement in statements:
                conn.execute(statement)
            conn.execute(
                "INSERT INTO schema_migrations (version, applied_at) VALUES (:v, :t)", {"v": version, "t": time.time()}
            )
            log.info("database migrated to version %d", version)

    async def close(self) -> None:
        """Close the database; idempotent, even when two closes overlap."""
        thread, self._thread = self._thread, None
        if thread is not None:
            await asyncio.to_thread(thread.stop)

    async def create_job(self, job: Job) -> None:
        params = job_to_params(job)

        def insert(conn: sqlite3.Connection) -> None:
            conn.execute(Queries.insert_job, params)
            conn.execute(Queries.insert_money, {"id": job.id, "entry": "charge", "at": job.created_at})

        await self._transaction(insert)

    async def move_job(
        self,
        job_id: str,
        current: JobState,
        target: JobState,
        values: Mapping[str, Any],
        *,
        refund: bool,
        attempts: Sequence[Attempt] = (),
    ) -> MoveResult:
        sql, params = move_statement(job_id, current, target, values)

        def move(conn: sqlite3.Connection) -> MoveResult:
            if conn.execute(sql, params).rowcount != 1:
                return MoveResult(moved=False)
            refunded = False
            if refund:
                entry = {"id": job_id, "entry": "refund", "at": time.time()}
                refunded = conn.execute(Queries.insert_money, entry).rowcount == 1
            if attempts:
                run = int(conn.execute("SELECT restarts FROM jobs WHERE id = :id", {"id": job_id}).fetchone()[0])
                conn.executemany(Queries.insert_attempt, [attempt_params(job_id, run, a) for a in attempts])
            return MoveResult(moved=True, refunded=refunded)

        return await self._transaction(move)

    async def get_job(self, job_id: str) -> Job | None:
        def get(conn: sqlite3.Connection) -> Job | None:
            row = conn.execute(Queries.get_job, {"id": job_id}).fetchone()
            return job_from_row(row) if row else None

        return await self._run(get)

    async def unfinished_jobs(self) -> list[Job]:
        return await self._run(lambda conn: [job_from_row(r) for r in conn.execute(Queries.unfinished).fetchall()])

    async def ledger_snapshot(self, day: str, since: float) -> LedgerSnapshot:
        """Net charges of ``day``, and each member's newest job since ``since``."""

        def read(conn: sqlite3.Connection) -> LedgerSnapshot:
            charged = [
                (int(r[0]), int(r[1]) if r[1] is not None else None, int(r[2]), float(r[3]), float(r[4]))
                for r in conn.execute(Queries.charged_on_day, {"day": day}).fetchall()
            ]
            last = {int(r[0]): float(r[1]) for r in conn.execute(Queries.last_by_user, {"since": since}).fetchall()}
            return LedgerSnapshot(charged=charged, last_accepted=last)

        return await self._run(read)

    async def stats(self, guild_id: int, today: str, week_days: Sequence[str]) -> JobStats:
        queries, params = stats_queries(guild_id, today, week_days)

        def read(conn: sqlite3.Connection) -> JobStats:
            return stats_from({name: conn.execute(sql, params).fetchall() for name, sql in queries.items()})

        return await self._run(read)

    async def all_guild_overrides(self) -> dict[int, GuildOverrides]:
        def read(conn: sqlite3.Connection) -> dict[int, GuildOverrides]:
            rows = conn.execute("SELECT guild_id, settings FROM guild_settings").fetchall()
            return {int(r[0]): overrides_from_json(r[1]) for r in rows}

        return await self._run(read)

    async def guild_overrides(self, guild_id: int) -> GuildOverrides:
        def read(conn: sqlite3.Connection) -> GuildOverrides:
            row = conn.execute(Queries.guild_settings, {"guild_id": guild_id}).fetchone()
            return overrides_from_json(row[0] if row else None)

        return await self._run(read)

    async def save_guild_overrides(self, guild_id: int, overrides: GuildOverrides, by: int) -> None:
        params = {
            "guild_id": guild_id,
            "settings": json.dumps(overrides.to_json()),
            "updated_at": time.time(),
            "updated_by": by,
        }
        await self._transaction(lambda conn: conn.execute(Queries.save_guild_settings, params) and None)

    async def daily_stats(self, guild_id: int, days: Sequence[str]) -> list[DayStats]:
        params: dict[str, Any] = {"guild_id": guild_id, **{f"d{i}": d for i, d in enumerate(days)}}
        queries = Queries.daily(len(days))

        def read(conn: sqlite3.Connection) -> list[DayStats]:
            return daily_stats_from(days, *(conn.execute(sql, params).fetchall() for sql in queries))

        return await self._run(read)

    async def recent_runs(self, since: float) -> list[Run]:
        def read(conn: sqlite3.Connection) -> list[Run]:
            return [run_from_row(r, "") for r in conn.execute(Queries.recent_runs, {"since": since}).fetchall()]

        return await self._run(read)

    async def ping(self) -> None:
        await self._run(lambda conn: conn.execute("SELECT 1").fetchone())

    async def all_blocks(self) -> list[Block]:
        def read(conn: sqlite3.Connection) -> list[Block]:
            return [block_from_row(r) for r in conn.execute(Queries.all_blocks).fetchall()]

        return await self._run(read)

    async def save_block(self, block: Block) -> None:
        params = block_params(block)
        await self._transaction(lambda conn: conn.execute(Queries.save_block, params) and None)

    async def delete_block(self, guild_id: int, user_id: int) -> bool:
        params = {"guild_id": guild_id, "user_id": user_id}
        return await self._transaction(lambda conn: conn.execute(Queries.delete_block, params).rowcount == 1)

    async def all_guild_keys(self) -> list[StoredKey]:
        def read(conn: sqlite3.Connection) -> list[StoredKey]:
            return [key_from_row(r) for r in conn.execute(Queries.all_guild_keys).fetchall()]

        return await self._run(read)

    async def save_guild_key(self, key: StoredKey) -> None:
        params = key_params(key)
        await self._transaction(lambda conn: conn.execute(Queries.save_guild_key, params) and None)

    async def delete_guild_key(self, guild_id: int) -> bool:
        params = {"guild_id": guild_id}
        return await self._transaction(lambda conn: conn.execute(Queries.delete_guild_key, params).rowcount == 1)

    async def history(self, user_id: int, guild_id: int | None, offset: int, limit: int) -> list[HistoryEntry]:
        params = {"user_id": user_id, "guild_id": guild_id, "offset": offset, "limit": limit}
        sql = Queries.history_in(guild_id)

        def read(conn: sqlite3.Connection) -> list[HistoryEntry]:
            return [HistoryEntry(job_from_row(r), r["deleted_at"] is not None) for r in conn.execute(sql, params)]

        return await self._run(read)

    async def record_result_deleted(self, job_id: str, by: int, at: float) -> None:
        params = {"job_id": job_id, "by": by, "at": at}
        await self._transaction(lambda conn: conn.execute(Queries.record_result_deleted, params) and None)

    async def set_destination(self, job_id: str, destination: Destination) -> None:
        params = destination_params(job_id, destination)
        await self._transaction(lambda conn: conn.execute(Queries.set_destination, params) and None)

    async def all_presets(self) -> list[StylePreset]:
        def read(conn: sqlite3.Connection) -> list[StylePreset]:
            return [preset_from_row(r) for r in conn.execute(Queries.all_presets).fetchall()]

        return await self._run(read)

    async def save_preset(self, preset: StylePreset) -> None:
        params = preset_params(preset)
        await self._transaction(lambda conn: conn.execute(Queries.save_preset, params) and None)

    async def delete_preset(self, guild_id: int, name: str) -> None:
        params = {"guild_id": guild_id, "name": name}
        await self._transaction(lambda conn: conn.execute(Queries.delete_preset, params) and None)

    async def undelivered_users(self) -> set[int]:
        return await self._run(lambda conn: {int(r[0]) for r in conn.execute(Queries.undelivered_users)})

    async def undelivered_jobs(self, user_id: int) -> list[Job]:
        params = {"user_id": user_id}
        return await self._run(lambda conn: [job_from_row(r) for r in conn.execute(Queries.undelivered_jobs, params)])

    async def mark_notices_shown(self, job_ids: Sequence[str], at: float) -> None:
        rows = [{"job_id": job_id, "at": at} for job_id in job_ids]
        await self._transaction(lambda conn: conn.executemany(Queries.mark_notice_shown, rows) and None)
