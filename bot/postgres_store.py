"""The PostgreSQL job store: the same interface, schema and migrations as SQLite, shared by processes.

With ``DATABASE_URL=postgresql://…`` several processes (gateways and workers, on several
machines) share one source of truth, and PostgreSQL does what a queue server would:

- **Money is checked and charged in the database.** Admission runs in one transaction
  that takes advisory locks on the member, the server and (when a budget is set) the
  whole day's spend, reads the totals, lets the caller check them, and inserts the job
  with its charge row. Two processes cannot both sell the last edit of a limit.
- **The queue is the jobs table.** A worker claims the next job with
  ``SELECT … FOR UPDATE SKIP LOCKED`` in the fair order, computed in SQL: the head of
  each member's line, members who were served least recently first (``fair_turns``).
  Claims take an advisory lock for the cap: at most ``MAX_CONCURRENT_JOBS`` running jobs
  with a live lease, across all workers together.
- **Leases.** A claimed job carries ``lease_until``, renewed by its worker; a job whose
  lease ran out (a worker killed with SIGKILL) is taken over once by another worker.
- **LISTEN/NOTIFY** on the channel ``atelier``: ``queued`` when a job enters the queue and
  ``slot`` when an API call ends (idle workers wake at once), ``cancel:<job>`` and
  ``settings:<guild>`` so every process hears of them.
- **Job inputs live in the database** (``job_inputs``), so a worker on another machine
  can run any job; their total is capped by ``MAX_QUEUED_INPUT_MB``.

The shared SQL (``bot.storage``) is written with ``:name`` parameters; this module
translates it to PostgreSQL's ``$n`` once per statement.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import logging
import re
import time
from collections.abc import Callable, Mapping, Sequence
from functools import lru_cache
from typing import TYPE_CHECKING, Any

import asyncpg

from bot.errors import QueueFullError
from bot.eta import Run
from bot.images import PreparedImage
from bot.jobs import Delivered, Destination, Job
from bot.ledger import DayUsage, LedgerSnapshot
from bot.presets import StylePreset
from bot.settings import GuildOverrides
from bot.states import JobState
from bot.storage import (
    MIGRATIONS,
    MIGRATIONS_TABLE,
    Block,
    ClaimMiss,
    DayStats,
    HistoryEntry,
    JobStats,
    MoveResult,
    Queries,
    SharedTotals,
    StoredKey,
    attempt_params,
    block_from_row,
    block_params,
    daily_stats_from,
    destination_params,
    job_from_row,
    job_to_params,
    job_to_params_columns,
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

CHANNEL = "atelier"
_PARAM = re.compile(r"(?<![:\w]):([A-Za-z_]\w*)")
_UNFINISHED = "status NOT IN ('succeeded', 'failed', 'cancelled')"

# The fair choice, in SQL: each member's first waiting job (in acceptance order) is their head;
# a head that is ready (queued) may start; members served least recently go first. A head
# locked by another transaction (a claim, a cancel) is skipped, not waited for.
CLAIM = """
WITH heads AS (
    SELECT DISTINCT ON (user_id) id, user_id, status, created_at
    FROM jobs WHERE status IN ('accepted', 'preparing', 'queued')
    ORDER BY user_id, created_at, id
)
SELECT j.id, j.user_id FROM heads h
JOIN jobs j ON j.id = h.id
LEFT JOIN fair_turns t ON t.user_id = h.user_id
WHERE h.status = 'queued' AND j.status = 'queued'
ORDER BY COALESCE(t.turn, -1), h.created_at, h.id
LIMIT 1
FOR UPDATE OF j SKIP LOCKED
"""

RUNNING = "SELECT COUNT(*) FROM jobs WHERE status = 'running' AND lease_until >= $1"

# Every waiting job's place, as the claim would serve them if all were ready: round k of the
# round-robin takes each member's k-th job, members in the order of their last turn.
POSITIONS = """
WITH waiting AS (
    SELECT j.*, ROW_NUMBER() OVER (PARTITION BY j.user_id ORDER BY j.created_at, j.id) AS k,
           MIN(j.created_at) OVER (PARTITION BY j.user_id) AS head_at
    FROM jobs j WHERE j.status IN ('accepted', 'preparing', 'queued')
), members AS (
    SELECT w.user_id, ROW_NUMBER() OVER (ORDER BY COALESCE(t.turn, -1), MIN(w.head_at), w.user_id) AS rank
    FROM waiting w LEFT JOIN fair_turns t ON t.user_id = w.user_id
    GROUP BY w.user_id, t.turn
)
SELECT w.*, ROW_NUMBER() OVER (ORDER BY w.k, m.rank) AS place
FROM waiting w JOIN members m ON m.user_id = w.user_id
ORDER BY place
"""

# An accepted job, held by its admitting process, and its charge: one statement.
_COLUMNS = [*job_to_params_columns(), "claimed_by", "lease_until"]
ADMIT = (
    f"WITH job AS (INSERT INTO jobs ({', '.join(_COLUMNS)}) VALUES ({', '.join(':' + c for c in _COLUMNS)}) "
    "RETURNING id, user_id, guild_id, charge_day, cost_usd, created_at) "
    "INSERT INTO money (job_id, entry, user_id, guild_id, day, amount_usd, at) "
    "SELECT id, 'charge', user_id, guild_id, charge_day, cost_usd, created_at FROM job"
)
# Advisory locks taken in the order given, in one round trip.
LOCK_IN_ORDER = (
    "SELECT pg_advisory_xact_lock(hashtextextended(key, 0)) "
    "FROM unnest($1::text[]) WITH ORDINALITY AS keys(key, n) ORDER BY n"
)

USAGE = f"""
SELECT
    (SELECT COALESCE(SUM(CASE WHEN entry = 'charge' THEN 1 ELSE -1 END), 0)
     FROM money WHERE day = :day AND user_id = :user_id) AS user_today,
    (SELECT COALESCE(SUM(CASE WHEN entry = 'charge' THEN 1 ELSE -1 END), 0)
     FROM money WHERE day = :day AND guild_id = :guild_id) AS guild_today,
    (SELECT {Queries.net_spend} FROM money m JOIN jobs j ON j.id = m.job_id
     WHERE m.day = :day AND j.guild_key = 0 AND :whole_day) AS spend_today,
    (SELECT COUNT(*) FROM jobs WHERE user_id = :user_id AND {_UNFINISHED}) AS user_active,
    (SELECT MAX(created_at) FROM jobs WHERE user_id = :user_id AND created_at >= :since) AS last_accepted
"""


# The inputs of unfinished jobs (kept ones of finished jobs have their own cap, INPUT_RETENTION_MB).
QUEUED_INPUT_BYTES = "SELECT COALESCE(SUM(octet_length(data)), 0) FROM job_inputs WHERE ended_at IS NULL"


@lru_cache(maxsize=512)
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
    """``(query, *arguments)`` for asyncpg from shared SQL and named parameters."""
    query, names = to_postgres(sql)
    return (query, *(params[name] for name in names))


class PostgresJobStore:
    """Jobs, money, settings, the shared queue and job inputs in PostgreSQL."""

    def __init__(self, dsn: str, *, pool_size: int = 5) -> None:
        self._dsn = dsn
        self._pool_size = pool_size
        self._pool: asyncpg.Pool | None = None
        self._listener: asyncpg.Connection | None = None
        self._listen_task: asyncio.Task[None] | None = None
        self._handlers: list[Callable[[str], None]] = []

    @property
    def pool(self) -> asyncpg.Pool:
        if self._pool is None:
            raise RuntimeError("store is not open")
        return self._pool

    async def open(self) -> None:
        """Connect and apply any migrations not yet applied (one process at a time)."""
        # Every connection opened up front: a burst of admissions must not wait for connections to open.
        # No reset between uses: they keep no session state (locks are per transaction, nothing listens
        # on them, nothing is SET), and the reset would cost a round trip on every use.
        self._pool = await asyncpg.create_pool(
            self._dsn, min_size=self._pool_size, max_size=self._pool_size, reset=_keep_session, init=_prepare
        )
        async with self.pool.acquire() as conn, conn.transaction():
            await conn.execute("SELECT pg_advisory_xact_lock(hashtextextended('atelier:migrate', 0))")
            await conn.execute(MIGRATIONS_TABLE)
            current = int(await conn.fetchval("SELECT COALESCE(MAX(version), 0) FROM schema_migrations"))
            for version, statements in enumerate(MIGRATIONS, start=1):
                if version <= current:
                    continue
                for statement in statements:
                    await conn.execute(statement)
                await conn.execute(
                    "INSERT INTO schema_migrations (version, applied_at) VALUES ($1, $2)", version, time.time()
                )
                log.info("database migrated to version %d", version)

    async def close(self) -> None:
        """Stop listening and close the connections; idempotent."""
        task, self._listen_task = self._listen_task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        listener, self._listener = self._listener, None
        if listener is not None:
            await listener.close()
        pool, self._pool = self._pool, None
        if pool is not None:
            await pool.close()

    # The shared interface --------------------------------------------------------------------

    async def create_job(self, job: Job) -> None:
        async with self.pool.acquire() as conn, conn.transaction():
            await self._insert(conn, job)

    async def _insert(self, conn: asyncpg.Connection, job: Job) -> None:
        await conn.execute(*_args(Queries.insert_job, job_to_params(job)))
        await conn.execute(*_args(Queries.insert_money, {"id": job.id, "entry": "charge", "at": job.created_at}))

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
        async with self.pool.acquire() as conn, conn.transaction():
            row = await conn.fetchrow(*_args(sql + " RETURNING restarts, user_id, delivered", params))
            if row is None:
                return MoveResult(moved=False)
            refunded = False
            if refund:
                entry = {"id": job_id, "entry": "refund", "at": time.time()}
                refunded = (await conn.execute(*_args(Queries.insert_money, entry))).endswith(" 1")
            if attempts:
                query, _names = to_postgres(Queries.insert_attempt)
                rows = [_args(Queries.insert_attempt, attempt_params(job_id, row["restarts"], a))[1:] for a in attempts]
                await conn.executemany(query, rows)
            if row["delivered"] == Delivered.UNDELIVERED:  # the gateways tell the member next time
                await conn.execute("SELECT pg_notify($1, $2)", CHANNEL, f"notices:{row['user_id']}")
            for notice in _notices(job_id, current, target):
                await conn.execute("SELECT pg_notify($1, $2)", CHANNEL, notice)
        return MoveResult(moved=True, refunded=refunded)

    async def get_job(self, job_id: str) -> Job | None:
        row = await self.pool.fetchrow(*_args(Queries.get_job, {"id": job_id}))
        return job_from_row(row) if row else None

    async def unfinished_jobs(self) -> list[Job]:
        return [job_from_row(r) for r in await self.pool.fetch(Queries.unfinished)]

    async def ledger_snapshot(self, day: str, since: float) -> LedgerSnapshot:
        charged = [
            (int(r[0]), int(r[1]) if r[1] is not None else None, int(r[2]), float(r[3]), float(r[4]))
            for r in await self.pool.fetch(*_args(Queries.charged_on_day, {"day": day}))
        ]
        last = {int(r[0]): float(r[1]) for r in await self.pool.fetch(*_args(Queries.last_by_user, {"since": since}))}
        return LedgerSnapshot(charged=charged, last_accepted=last)

    async def stats(self, guild_id: int, today: str, week_days: Sequence[str]) -> JobStats:
        queries, params = stats_queries(guild_id, today, week_days)
        async with self.pool.acquire() as conn:
            return stats_from({name: await conn.fetch(*_args(sql, params)) for name, sql in queries.items()})

    async def all_guild_overrides(self) -> dict[int, GuildOverrides]:
        rows = await self.pool.fetch("SELECT guild_id, settings FROM guild_settings")
        return {int(r[0]): overrides_from_json(r[1]) for r in rows}

    async def guild_overrides(self, guild_id: int) -> GuildOverrides:
        raw = await self.pool.fetchval(*_args(Queries.guild_settings, {"guild_id": guild_id}))
        return overrides_from_json(raw)

    async def save_guild_overrides(self, guild_id: int, overrides: GuildOverrides, by: int) -> None:
        params = {
            "guild_id": guild_id,
            "settings": json.dumps(overrides.to_json()),
            "updated_at": time.time(),
            "updated_by": by,
        }
        async with self.pool.acquire() as conn, conn.transaction():
            await conn.execute(*_args(Queries.save_guild_settings, params))
            await conn.execute("SELECT pg_notify($1, $2)", CHANNEL, f"settings:{guild_id}")

    async def daily_stats(self, guild_id: int, days: Sequence[str]) -> list[DayStats]:
        params: dict[str, Any] = {"guild_id": guild_id, **{f"d{i}": d for i, d in enumerate(days)}}
        async with self.pool.acquire() as conn:
            rows = [await conn.fetch(*_args(sql, params)) for sql in Queries.daily(len(days))]
        return daily_stats_from(days, *rows)

    async def recent_runs(self, since: float) -> list[Run]:
        rows = await self.pool.fetch(*_args(Queries.recent_runs, {"since": since}))
        return [run_from_row(r, "") for r in rows]

    async def ping(self) -> None:
        await self.pool.fetchval("SELECT 1")

    # Blocks and servers' own keys: every process keeps them in memory, so a change is announced.

    async def all_blocks(self) -> list[Block]:
        return [block_from_row(r) for r in await self.pool.fetch(Queries.all_blocks)]

    async def save_block(self, block: Block) -> None:
        await self._write_and_notify(Queries.save_block, block_params(block), f"blocks:{block.guild_id}")

    async def delete_block(self, guild_id: int, user_id: int) -> bool:
        params = {"guild_id": guild_id, "user_id": user_id}
        return await self._write_and_notify(Queries.delete_block, params, f"blocks:{guild_id}")

    async def all_guild_keys(self) -> list[StoredKey]:
        return [key_from_row(r) for r in await self.pool.fetch(Queries.all_guild_keys)]

    async def save_guild_key(self, key: StoredKey) -> None:
        await self._write_and_notify(Queries.save_guild_key, key_params(key), f"keys:{key.guild_id}")

    async def delete_guild_key(self, guild_id: int) -> bool:
        return await self._write_and_notify(Queries.delete_guild_key, {"guild_id": guild_id}, f"keys:{guild_id}")

    async def _write_and_notify(self, sql: str, params: Mapping[str, Any], notice: str) -> bool:
        """One write and its notice to the other processes; whether it changed a row."""
        async with self.pool.acquire() as conn, conn.transaction():
            status = await conn.execute(*_args(sql, params))
            await conn.execute("SELECT pg_notify($1, $2)", CHANNEL, notice)
        return not status.endswith(" 0")

    # Members' workflow: history, deleted results, presets (announced), undelivered results.

    async def history(self, user_id: int, guild_id: int | None, offset: int, limit: int) -> list[HistoryEntry]:
        params = {"user_id": user_id, "guild_id": guild_id, "offset": offset, "limit": limit}
        rows = await self.pool.fetch(*_args(Queries.history_in(guild_id), params))
        return [HistoryEntry(job_from_row(r), r["deleted_at"] is not None) for r in rows]

    async def record_result_deleted(self, job_id: str, by: int, at: float) -> None:
        await self.pool.execute(*_args(Queries.record_result_deleted, {"job_id": job_id, "by": by, "at": at}))

    async def set_destination(self, job_id: str, destination: Destination) -> None:
        await self.pool.execute(*_args(Queries.set_destination, destination_params(job_id, destination)))

    async def all_presets(self) -> list[StylePreset]:
        return [preset_from_row(r) for r in await self.pool.fetch(Queries.all_presets)]

    async def save_preset(self, preset: StylePreset) -> None:
        await self._write_and_notify(Queries.save_preset, preset_params(preset), f"presets:{preset.guild_id}")

    async def delete_preset(self, guild_id: int, name: str) -> None:
        params = {"guild_id": guild_id, "name": name}
        await self._write_and_notify(Queries.delete_preset, params, f"presets:{guild_id}")

    async def undelivered_users(self) -> set[int]:
        return {int(r[0]) for r in await self.pool.fetch(Queries.undelivered_users)}

    async def undelivered_jobs(self, user_id: int) -> list[Job]:
        rows = await self.pool.fetch(*_args(Queries.undelivered_jobs, {"user_id": user_id}))
        return [job_from_row(r) for r in rows]

    async def mark_notices_shown(self, job_ids: Sequence[str], at: float) -> None:
        query, _ = to_postgres(Queries.mark_notice_shown)
        await self.pool.executemany(query, [(job_id, at) for job_id in job_ids])

    # Money checked and charged in the database ------------------------------------------------

    async def admit_job(
        self,
        job: Job,
        check: Callable[[DayUsage], None],
        *,
        whole_day: bool,
        holder: str,
        lease_until: float,
        whole_guild: bool = True,
    ) -> None:
        """Lock the member's, the server's (``whole_guild``: when a server limit applies) and (``whole_day``:
        when a budget does) everyone's totals, let ``check`` refuse, and insert the job with its charge,
        held by ``holder`` until ``lease_until``: one transaction. A total no limit applies to is not
        locked, so a busy server's members are admitted side by side, not one after another. If the
        holder dies while admitting, another process ends the job."""
        keys = [f"atelier:user:{job.user_id}"]
        if job.guild_id is not None and whole_guild:
            keys.insert(0, f"atelier:guild:{job.guild_id}")
        if whole_day:
            keys.insert(0, "atelier:day")
        async with self.pool.acquire() as conn, conn.transaction():
            # Always in this order (day, server, member): admissions never deadlock on each other.
            await conn.execute(LOCK_IN_ORDER, keys)
            check(await self._usage(conn, job.user_id, job.guild_id, job.charge_day, job.created_at, whole_day))
            await conn.execute(*_args(ADMIT, {**job_to_params(job), "claimed_by": holder, "lease_until": lease_until}))

    async def day_usage(self, user_id: int, guild_id: int | None, day: str, now: float) -> DayUsage:
        async with self.pool.acquire() as conn:
            return await self._usage(conn, user_id, guild_id, day, now, True)

    @staticmethod
    async def _usage(
        conn: asyncpg.Connection, user_id: int, guild_id: int | None, day: str, now: float, whole_day: bool
    ) -> DayUsage:
        """A member's, their server's and (``whole_day``, else 0: the day's spend is read only when a
        budget needs it, it sums every charge of the day) the day's totals."""
        params = {"day": day, "user_id": user_id, "guild_id": guild_id, "since": now - 86400, "whole_day": whole_day}
        row = await conn.fetchrow(*_args(USAGE, params))
        return DayUsage(
            user_today=int(row["user_today"]),
            guild_today=int(row["guild_today"]) if guild_id is not None else 0,
            spend_today=float(row["spend_today"]),
            user_active=int(row["user_active"]),
            user_last_accepted=float(row["last_accepted"]) if row["last_accepted"] is not None else None,
        )

    async def unfinished_jobs_of(self, user_id: int) -> list[Job]:
        rows = await self.pool.fetch(
            f"SELECT * FROM jobs WHERE user_id = $1 AND {_UNFINISHED} ORDER BY created_at, id", user_id
        )
        return [job_from_row(r) for r in rows]

    async def totals(self, day: str) -> SharedTotals:
        row = await self.pool.fetchrow(
            "SELECT (SELECT COUNT(*) FROM jobs WHERE status = 'queued'), "
            "(SELECT COUNT(*) FROM jobs WHERE status = 'running'), "
            f"({Queries.operator_spend} m.day = $1), "
            "(SELECT COALESCE(SUM(CASE WHEN m.entry = 'charge' THEN m.amount_usd ELSE -m.amount_usd END), 0) "
            "FROM money m JOIN jobs j ON j.id = m.job_id WHERE j.guild_key = 1 AND m.day = $1)",
            day,
        )
        return SharedTotals(int(row[0]), int(row[1]), float(row[2]), float(row[3]))

    async def count(self, state: JobState) -> int:
        return int(await self.pool.fetchval("SELECT COUNT(*) FROM jobs WHERE status = $1", state.value))

    # The queue ---------------------------------------------------------------------------------

    async def claim_next(self, worker: str, now: float, lease_seconds: float, max_running: int) -> Job | None:
        """Take the next job in fair order and mark it running under ``worker``'s lease, or ``None``."""
        taken = await self.claim(worker, now, lease_seconds, max_running)
        return taken if isinstance(taken, Job) else None

    async def claim(self, worker: str, now: float, lease_seconds: float, max_running: int) -> Job | ClaimMiss:
        """Take the next job in fair order and mark it running under ``worker``'s lease, or say why not."""
        async with self.pool.acquire() as conn:
            # Every slot taken is the usual answer while jobs wait: said without the lock that
            # serialises claims, so workers that cannot start anything don't hold up one that can.
            if await conn.fetchval(RUNNING, now) >= max_running:
                return ClaimMiss.NO_SLOT
            async with conn.transaction():
                return await self._claim(conn, worker, now, lease_seconds, max_running)

    @staticmethod
    async def _claim(
        conn: asyncpg.Connection, worker: str, now: float, lease_seconds: float, max_running: int
    ) -> Job | ClaimMiss:
        # Claims are serialised only to keep the cap exact; the row itself is taken with SKIP LOCKED.
        await conn.execute("SELECT pg_advisory_xact_lock(hashtextextended('atelier:claim', 0))")
        if await conn.fetchval(RUNNING, now) >= max_running:
            return ClaimMiss.NO_SLOT
        head = await conn.fetchrow(CLAIM)
        if head is None:
            return ClaimMiss.NO_JOB
        turn = await conn.fetchval(
            "INSERT INTO counters (name, value) VALUES ('fair_turn', 1) "
            "ON CONFLICT (name) DO UPDATE SET value = counters.value + 1 RETURNING value"
        )
        await conn.execute(
            "INSERT INTO fair_turns (user_id, turn) VALUES ($1, $2) "
            "ON CONFLICT (user_id) DO UPDATE SET turn = excluded.turn",
            head["user_id"],
            turn,
        )
        row = await conn.fetchrow(
            "UPDATE jobs SET status = 'running', started_at = $2, claimed_by = $3, lease_until = $4 "
            "WHERE id = $1 AND status = 'queued' RETURNING *",
            head["id"],
            now,
            worker,
            now + lease_seconds,
        )
        return job_from_row(row) if row else ClaimMiss.NO_JOB

    async def renew_leases(self, worker: str, job_ids: Sequence[str], until: float) -> None:
        """Extend the lease of the jobs ``worker`` holds."""
        await self.pool.execute(
            "UPDATE jobs SET lease_until = $1 WHERE id = ANY($2::text[]) AND claimed_by = $3",
            until,
            list(job_ids),
            worker,
        )

    async def expired_jobs(self, now: float) -> list[Job]:
        """Jobs whose holder's lease ran out, and jobs interrupted but not yet back in line."""
        rows = await self.pool.fetch(
            "SELECT * FROM jobs WHERE (status IN ('accepted', 'preparing', 'running', 'delivering') "
            "AND lease_until < $1) OR status = 'interrupted' ORDER BY created_at, id",
            now,
        )
        return [job_from_row(r) for r in rows]

    async def queue_positions(self) -> list[tuple[Job, int]]:
        """Every waiting job with its place in line (1 = next)."""
        return [(job_from_row(r), int(r["place"])) for r in await self.pool.fetch(POSITIONS)]

    # Notifications -----------------------------------------------------------------------------

    def on_notice(self, handler: Callable[[str], None]) -> None:
        """Call ``handler(payload)`` for every notice on the ``atelier`` channel, from any process."""
        self._handlers.append(handler)
        if self._listen_task is None:
            self._listen_task = asyncio.create_task(self._listen(), name="atelier-listen")

    async def _listen(self) -> None:
        """Keep one connection listening; reconnect (and tell the handlers to re-check) if it drops."""
        while True:
            try:
                lost = asyncio.Event()
                self._listener = await asyncpg.connect(self._dsn)
                self._listener.add_termination_listener(functools.partial(_set_on_close, lost))
                await self._listener.add_listener(CHANNEL, self._dispatch_notice)
                self._dispatch_notice(None, 0, CHANNEL, "reconnected")
                await lost.wait()
            except (OSError, asyncpg.PostgresError) as exc:
                log.warning("lost the PostgreSQL notification connection (%s); reconnecting", type(exc).__name__)
            await asyncio.sleep(1.0)

    def _dispatch_notice(self, _conn: object, _pid: int, _channel: str, payload: str) -> None:
        for handler in self._handlers:
            handler(payload)

    async def notify(self, payload: str) -> None:
        await self.pool.execute("SELECT pg_notify($1, $2)", CHANNEL, payload)

    # Job inputs ----------------------------------------------------------------------------------

    async def save_inputs(self, job_id: str, images: Sequence[PreparedImage], cap_bytes: int) -> None:
        """Keep a job's inputs, refusing with ``QueueFullError`` past ``cap_bytes`` for all queued inputs."""
        adding = sum(len(image.data) for image in images)
        async with self.pool.acquire() as conn, conn.transaction():
            await conn.execute("SELECT pg_advisory_xact_lock(hashtextextended('atelier:inputs', 0))")
            held = int(await conn.fetchval(QUEUED_INPUT_BYTES))
            if held + adding > cap_bytes:
                raise QueueFullError()
            await conn.execute("DELETE FROM job_inputs WHERE job_id = $1", job_id)
            await conn.executemany(
                "INSERT INTO job_inputs (job_id, number, mime, width, height, note, data) "
                "VALUES ($1, $2, $3, $4, $5, $6, $7)",
                [
                    (job_id, n, image.mime, image.width, image.height, image.note, image.data)
                    for n, image in enumerate(images, start=1)
                ],
            )

    async def load_inputs(self, job_id: str) -> list[PreparedImage] | None:
        rows = await self.pool.fetch(
            "SELECT mime, width, height, note, data FROM job_inputs WHERE job_id = $1 ORDER BY number", job_id
        )
        if not rows:
            return None
        return [PreparedImage(bytes(r["data"]), r["mime"], r["width"], r["height"], r["note"]) for r in rows]

    async def inputs_exist(self, job_id: str) -> bool:
        return bool(await self.pool.fetchval("SELECT EXISTS (SELECT 1 FROM job_inputs WHERE job_id = $1)", job_id))

    async def delete_inputs(self, job_id: str) -> None:
        await self.pool.execute("DELETE FROM job_inputs WHERE job_id = $1", job_id)

    async def queued_input_bytes(self) -> int:
        return int(await self.pool.fetchval(QUEUED_INPUT_BYTES))

    # Retention (for Reroll): a kept row carries the time its job ended; unfinished jobs' rows have none.

    async def keep_inputs(self, job_id: str, ended_at: float, cap_bytes: int) -> bool:
        """Mark a finished job's inputs kept, dropping the oldest kept ones to stay within ``cap_bytes``;
        ``False`` if they are not there or alone exceed the cap."""
        async with self.pool.acquire() as conn, conn.transaction():
            await conn.execute("SELECT pg_advisory_xact_lock(hashtextextended('atelier:kept', 0))")
            size = await conn.fetchval("SELECT SUM(octet_length(data)) FROM job_inputs WHERE job_id = $1", job_id)
            if size is None or size > cap_bytes:
                return False
            await self._drop_kept(conn, None, cap_bytes - int(size))
            await conn.execute("UPDATE job_inputs SET ended_at = $2 WHERE job_id = $1", job_id, ended_at)
            return True

    async def inputs_kept(self, job_id: str, since: float) -> bool:
        return bool(
            await self.pool.fetchval(
                "SELECT EXISTS (SELECT 1 FROM job_inputs WHERE job_id = $1 AND (ended_at IS NULL OR ended_at > $2))",
                job_id,
                since,
            )
        )

    async def drop_kept_inputs(self, ended_before: float, cap_bytes: int) -> int:
        """Delete the kept inputs that outlived the window, then the oldest past the cap; how many jobs'."""
        async with self.pool.acquire() as conn, conn.transaction():
            await conn.execute("SELECT pg_advisory_xact_lock(hashtextextended('atelier:kept', 0))")
            return await self._drop_kept(conn, ended_before, cap_bytes)

    @staticmethod
    async def _drop_kept(conn: asyncpg.Connection, ended_before: float | None, most: int) -> int:
        dropped = 0
        if ended_before is not None:
            expired = [
                r[0]
                for r in await conn.fetch(
                    "SELECT DISTINCT job_id FROM job_inputs WHERE ended_at IS NOT NULL AND ended_at <= $1",
                    ended_before,
                )
            ]
            if expired:
                await conn.execute("DELETE FROM job_inputs WHERE job_id = ANY($1::text[])", expired)
            dropped = len(expired)
        kept = await conn.fetch(
            "SELECT job_id, SUM(octet_length(data)) AS bytes, MIN(ended_at) AS ended FROM job_inputs "
            "WHERE ended_at IS NOT NULL GROUP BY job_id ORDER BY ended, job_id"
        )
        total = sum(int(r["bytes"]) for r in kept)
        oldest = []
        for row in kept:
            if total <= most:
                break
            oldest.append(row["job_id"])
            total -= int(row["bytes"])
        if oldest:
            await conn.execute("DELETE FROM job_inputs WHERE job_id = ANY($1::text[])", oldest)
        return dropped + len(oldest)

    async def drop_orphan_inputs(self) -> int:
        """Delete the unmarked rows of jobs that are over (their process died as they ended)."""
        status = await self.pool.execute(
            "DELETE FROM job_inputs WHERE ended_at IS NULL AND job_id IN "
            "(SELECT id FROM jobs WHERE status IN ('succeeded', 'failed', 'cancelled'))"
        )
        return int(status.split()[-1])


async def _keep_session(_conn: asyncpg.Connection) -> None:
    return None


async def _prepare(conn: asyncpg.Connection) -> None:
    """Plan admission's reads once per connection as it opens (asyncpg caches a statement when it
    first runs it), not in the first burst of commands. Harmless reads, or nothing before the
    first migration."""
    await conn.execute(LOCK_IN_ORDER, [])
    params = {"day": "", "user_id": 0, "guild_id": 0, "since": 0.0, "whole_day": False}
    with contextlib.suppress(asyncpg.UndefinedTableError, asyncpg.UndefinedColumnError):
        await conn.fetchrow(*_args(USAGE, params))


def _set_on_close(event: asyncio.Event, _conn: object) -> None:
    event.set()


def _notices(job_id: str, current: JobState, target: JobState) -> list[str]:
    """What other processes must hear of a move (sent when its transaction commits)."""
    notices = []
    if target is JobState.QUEUED:
        notices.append("queued")
    if current is JobState.RUNNING:
        notices.append("slot")
    if target is JobState.CANCELLED:
        notices.append(f"cancel:{job_id}")
    return notices
