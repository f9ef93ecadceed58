"""The PostgreSQL job store: the same interface, schema and migrations as SQLite, shared by processes.

With ``DATABASE_URL=postgresql://…`` several processes (gateways and workers, on several
machines) share one source of truth, and PostgreSQL does what a queue server would:

- **Money is checked and charged in the database.** Admission is one statement
  (``atelier_admit_v1``) that takes advisory locks on the member, the server (when a
  server limit applies) and the whole day's spend (when a budget does), reads the totals,
  compares them with the request's ``Quota`` bounds, and inserts the job with its charge
  row. Two processes cannot both sell the last edit of a limit.
- **The queue is the jobs table.** A worker claims the next job with
  ``SELECT … FOR UPDATE SKIP LOCKED`` in the fair order, computed in SQL: the head of
  each member's line, members who were served least recently first (``fair_turns``).
  Claims take an advisory lock for the cap: at most ``MAX_CONCURRENT_JOBS`` running jobs
  with a live lease, across all workers together. A claim is one statement
  (``atelier_claim_v1``); the worker whose call ends claims the next job in the same
  transaction that records the end (``move_and_claim``).
- **Leases.** A claimed job carries ``lease_until``, renewed by its worker; a job whose
  lease ran out (a worker killed with SIGKILL) is taken over once by another worker.
- **LISTEN/NOTIFY** on the channel ``atelier``: ``queued`` when a job enters the queue,
  ``slot`` when an API call ends and frees a slot (idle workers wake at once), ``claimed``
  when its end gave the slot to the next job (gateways re-tell places), ``cancel:<job>``
  and ``settings:<guild>`` so every process hears of them. A move and its notices are one
  statement: a notice is sent only for a move that happened.
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
    ClaimTerms,
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
    from bot.limits import Quota

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
SELECT j.id, j.user_id {into} FROM heads h
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

# Admission and claims are PL/pgSQL functions: one round trip each, where a transaction of
# separate statements took six to nine, each waiting its turn on a gateway busy with a burst
# of commands. Each statement in them still takes a fresh snapshot (READ COMMITTED), so what
# is read after a lock sees everything committed before the lock was granted. They are
# (re)created at every start under the migration lock; the version in their names lets old
# and new processes run side by side through a rolling deploy.
_COLUMNS = [*job_to_params_columns(), "claimed_by", "lease_until"]
_CONFLICTS = "#variable_conflict use_column"  # a name in a query is the column, never a variable


def _variables(sql: str) -> str:
    """Shared SQL's ``:name`` parameters as the function's ``p_name`` arguments."""
    return _PARAM.sub(lambda match: "p_" + match.group(1), sql)


ADMIT_FUNCTION = f"""
CREATE OR REPLACE FUNCTION atelier_admit_v1(
    p_keys text[], p_job jsonb, p_day text, p_user_id bigint, p_guild_id bigint, p_since float8,
    p_whole_day boolean, b_spend float8, b_guild bigint, b_active bigint, b_user bigint, b_accepted float8
) RETURNS TABLE (
    admitted boolean, user_today bigint, guild_today bigint, spend_today float8, user_active bigint,
    last_accepted float8
) LANGUAGE plpgsql AS $fn$
{_CONFLICTS}
DECLARE
    k text;
    u record;
    ok boolean;
BEGIN
    -- Always in the order given (day, server, member): admissions never deadlock on each other.
    FOREACH k IN ARRAY p_keys LOOP
        PERFORM pg_advisory_xact_lock(hashtextextended(k, 0));
    END LOOP;
    SELECT * INTO u FROM ({_variables(USAGE)}) AS usage;
    -- The same comparisons as ``Quota.exceeded``: a total passes when it is within its bound.
    ok := (b_spend IS NULL OR u.spend_today <= b_spend)
        AND (b_guild IS NULL OR u.guild_today <= b_guild)
        AND (b_active IS NULL OR u.user_active <= b_active)
        AND (b_user IS NULL OR u.user_today <= b_user)
        AND (b_accepted IS NULL OR u.last_accepted IS NULL OR u.last_accepted <= b_accepted);
    IF ok THEN
        WITH job AS (
            INSERT INTO jobs ({", ".join(_COLUMNS)})
            SELECT {", ".join(_COLUMNS)} FROM jsonb_populate_record(NULL::jobs, p_job)
            RETURNING id, user_id, guild_id, charge_day, cost_usd, created_at
        )
        INSERT INTO money (job_id, entry, user_id, guild_id, day, amount_usd, at)
        SELECT id, 'charge', user_id, guild_id, charge_day, cost_usd, created_at FROM job;
    END IF;
    RETURN QUERY SELECT ok, u.user_today::bigint, u.guild_today::bigint, u.spend_today::float8,
        u.user_active::bigint, u.last_accepted::float8;
END
$fn$
"""
ADMIT = "SELECT * FROM atelier_admit_v1($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)"

CLAIM_FUNCTION = f"""
CREATE OR REPLACE FUNCTION atelier_claim_v1(p_worker text, p_now float8, p_lease_until float8, p_max bigint)
RETURNS TABLE (miss text, job jobs) LANGUAGE plpgsql AS $fn$
{_CONFLICTS}
DECLARE
    head record;
    next_turn bigint;
    claimed jobs;
BEGIN
    -- Every slot taken is the usual answer while jobs wait: said before the lock that
    -- serialises claims, so workers that cannot start anything don't hold up one that can.
    IF (SELECT COUNT(*) FROM jobs WHERE status = 'running' AND lease_until >= p_now) >= p_max THEN
        RETURN QUERY SELECT 'no slot', NULL::jobs;
        RETURN;
    END IF;
    -- Claims are serialised only to keep the cap exact; the row itself is taken with SKIP LOCKED.
    PERFORM pg_advisory_xact_lock(hashtextextended('atelier:claim', 0));
    IF (SELECT COUNT(*) FROM jobs WHERE status = 'running' AND lease_until >= p_now) >= p_max THEN
        RETURN QUERY SELECT 'no slot', NULL::jobs;
        RETURN;
    END IF;
    {CLAIM.format(into="INTO head").strip()};
    IF NOT FOUND THEN
        RETURN QUERY SELECT 'no job', NULL::jobs;
        RETURN;
    END IF;
    INSERT INTO counters (name, value) VALUES ('fair_turn', 1)
    ON CONFLICT (name) DO UPDATE SET value = counters.value + 1 RETURNING value INTO next_turn;
    INSERT INTO fair_turns (user_id, turn) VALUES (head.user_id, next_turn)
    ON CONFLICT (user_id) DO UPDATE SET turn = excluded.turn;
    UPDATE jobs SET status = 'running', started_at = p_now, claimed_by = p_worker, lease_until = p_lease_until
    WHERE id = head.id AND status = 'queued' RETURNING * INTO claimed;
    IF NOT FOUND THEN
        RETURN QUERY SELECT 'no job', NULL::jobs;
        RETURN;
    END IF;
    RETURN QUERY SELECT NULL::text, claimed;
END
$fn$
"""
CLAIM_NEXT = "SELECT miss, job FROM atelier_claim_v1($1, $2, $3, $4)"
# A claim, and the notices of the move before it: those for a slot taken, or for one left free.
CLAIM_AND_TELL = (
    "SELECT c.miss, c.job, (SELECT COUNT(pg_notify($5, notice)) "
    "FROM unnest(CASE WHEN c.miss IS NULL THEN $6::text[] ELSE $7::text[] END) AS notice) AS told "
    "FROM atelier_claim_v1($1, $2, $3, $4) AS c"
)


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
        """Apply any migrations not yet applied (one process at a time), then open the connections."""
        conn = await asyncpg.connect(self._dsn)
        try:
            async with conn.transaction():
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
                await conn.execute(ADMIT_FUNCTION)
                await conn.execute(CLAIM_FUNCTION)
        finally:
            await conn.close()
        # Every connection opened (and its statements prepared) up front: a burst of admissions must
        # not wait for connections to open. No reset between uses: they keep no session state (locks
        # are per transaction, nothing listens on them, nothing is SET), and the reset would cost a
        # round trip on every use.
        self._pool = await asyncpg.create_pool(
            self._dsn, min_size=self._pool_size, max_size=self._pool_size, reset=_keep_session, init=_prepare
        )

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
        if not refund and not attempts:  # most moves: one statement, its own transaction
            row = await self.pool.fetchrow(*_move_statement(job_id, current, target, values, notify=True))
            return MoveResult(moved=row is not None)
        async with self.pool.acquire() as conn, conn.transaction():
            return await self._move(conn, job_id, current, target, values, refund, attempts, None)

    async def move_and_claim(
        self,
        job_id: str,
        current: JobState,
        target: JobState,
        values: Mapping[str, Any],
        *,
        refund: bool,
        attempts: Sequence[Attempt] = (),
        claim: ClaimTerms,
    ) -> MoveResult:
        """``move_job``, then (if it moved) ``claim`` in the same transaction: the slot a call's end frees
        goes to the next job at once, with no notice to wait for and no second transaction."""
        async with self.pool.acquire() as conn, conn.transaction():
            return await self._move(conn, job_id, current, target, values, refund, attempts, claim)

    @staticmethod
    async def _move(
        conn: asyncpg.Connection,
        job_id: str,
        current: JobState,
        target: JobState,
        values: Mapping[str, Any],
        refund: bool,
        attempts: Sequence[Attempt],
        claim: ClaimTerms | None,
    ) -> MoveResult:
        # With a claim, the notices wait for its answer: a slot it took is not free for others.
        row = await conn.fetchrow(*_move_statement(job_id, current, target, values, notify=claim is None))
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
        claimed: Job | ClaimMiss | None = None
        if claim is not None:
            # The claim and the move's notices in one statement: the claim lock is held to the commit.
            told = [f"notices:{row['user_id']}"] if row["delivered"] == Delivered.UNDELIVERED else []
            taken = await conn.fetchrow(
                CLAIM_AND_TELL, claim.worker, claim.now, claim.now + claim.lease_seconds, claim.max_running,
                CHANNEL, _notices(job_id, current, target, slot_taken=True) + told,
                _notices(job_id, current, target, slot_taken=False) + told,
            )  # fmt: skip
            claimed = ClaimMiss(taken["miss"]) if taken["miss"] is not None else job_from_row(taken["job"])
        return MoveResult(moved=True, refunded=refunded, claimed=claimed)

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

    async def admit_job(self, job: Job, quota: Quota, *, holder: str, lease_until: float) -> None:
        """Check ``quota`` and insert the job with its charge, held by ``holder`` until ``lease_until``:
        one statement (``atelier_admit_v1``), under locks on the totals the quota bounds.

        The member's totals are always locked; the server's only when a server limit applies
        and the day's spend only when a budget does, so a busy server's members are admitted
        side by side, not one after another. If the holder dies while admitting, another
        process ends the job.
        """
        keys = [f"atelier:user:{job.user_id}"]
        if job.guild_id is not None and quota.guild_today is not None:
            keys.insert(0, f"atelier:guild:{job.guild_id}")
        if quota.spend_today is not None:
            keys.insert(0, "atelier:day")
        columns = {**job_to_params(job), "claimed_by": holder, "lease_until": lease_until}
        row = await self.pool.fetchrow(
            ADMIT,
            keys,
            json.dumps(columns),
            job.charge_day,
            job.user_id,
            job.guild_id,
            job.created_at - 86400,
            quota.spend_today is not None,
            quota.spend_today,
            quota.guild_today,
            quota.user_active,
            quota.user_today,
            quota.user_last_accepted,
        )
        if not row["admitted"]:
            quota.check(_usage_from(row, job.guild_id))
            raise RuntimeError("the database refused an admission its quota allows")  # they decide alike

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
        return _usage_from(await conn.fetchrow(*_args(USAGE, params)), guild_id)

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
            "FROM money m JOIN jobs j ON j.id = m.job_id WHERE j.guild_key = 1 AND m.day = $1), "
            "(SELECT MIN(COALESCE(queued_at, created_at)) FROM jobs WHERE status = 'queued')",
            day,
        )
        oldest = None if row[4] is None else float(row[4])
        return SharedTotals(int(row[0]), int(row[1]), float(row[2]), float(row[3]), oldest)

    async def count(self, state: JobState) -> int:
        return int(await self.pool.fetchval("SELECT COUNT(*) FROM jobs WHERE status = $1", state.value))

    # The queue ---------------------------------------------------------------------------------

    async def claim_next(self, worker: str, now: float, lease_seconds: float, max_running: int) -> Job | None:
        """Take the next job in fair order and mark it running under ``worker``'s lease, or ``None``."""
        taken = await self.claim(worker, now, lease_seconds, max_running)
        return taken if isinstance(taken, Job) else None

    async def claim(self, worker: str, now: float, lease_seconds: float, max_running: int) -> Job | ClaimMiss:
        """Take the next job in fair order and mark it running under ``worker``'s lease, or say why not:
        one statement (``atelier_claim_v1``)."""
        row = await self.pool.fetchrow(CLAIM_NEXT, worker, now, now + lease_seconds, max_running)
        if row["miss"] is not None:
            return ClaimMiss(row["miss"])
        return job_from_row(row["job"])

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
        """Keep a job's inputs, refusing with ``QueueFullError`` past ``cap_bytes`` for all queued inputs.

        The rows are written first and the total checked after, under a lock held to the commit:
        writes of megabytes go side by side, and only the check waits its turn. Others' rows
        still being written are not counted (not committed); each sees those committed before it.
        """
        async with self.pool.acquire() as conn, conn.transaction():
            # Not waiting for this commit's megabytes to be flushed is safe: the job is queued only
            # by a later commit, and that one's flush covers everything logged before it.
            await conn.execute("SET LOCAL synchronous_commit TO OFF")
            await conn.execute("DELETE FROM job_inputs WHERE job_id = $1", job_id)
            await conn.executemany(
                "INSERT INTO job_inputs (job_id, number, mime, width, height, data) VALUES ($1, $2, $3, $4, $5, $6)",
                [_input_row(job_id, n, image) for n, image in enumerate(images, start=1)],
            )
            await conn.execute("SELECT pg_advisory_xact_lock(hashtextextended('atelier:inputs', 0))")
            if int(await conn.fetchval(QUEUED_INPUT_BYTES)) > cap_bytes:
                raise QueueFullError()  # the transaction rolls back: nothing of this job is kept

    async def load_inputs(self, job_id: str) -> list[PreparedImage] | None:
        rows = await self.pool.fetch(
            "SELECT mime, width, height, data FROM job_inputs WHERE job_id = $1 ORDER BY number", job_id
        )
        if not rows:
            return None
        return [PreparedImage(bytes(r["data"]), str(r["mime"]), int(r["width"]), int(r["height"])) for r in rows]

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


InputRow = tuple[str, int, str, int, int, bytes]


def _input_row(job_id: str, number: int, image: PreparedImage) -> InputRow:
    """A kept input as the plain values its row holds. Its note (a ``Text``) is not one of them: the
    notes are on the job, rendered in its member's language when it was queued (as with SQLite)."""
    return (job_id, number, image.mime, image.width, image.height, image.data)


def _usage_from(row: asyncpg.Record, guild_id: int | None) -> DayUsage:
    return DayUsage(
        user_today=int(row["user_today"]),
        guild_today=int(row["guild_today"]) if guild_id is not None else 0,
        spend_today=float(row["spend_today"]),
        user_active=int(row["user_active"]),
        user_last_accepted=float(row["last_accepted"]) if row["last_accepted"] is not None else None,
    )


async def _keep_session(_conn: asyncpg.Connection) -> None:
    return None


async def _prepare(conn: asyncpg.Connection) -> None:
    """Prepare admission and claims once per connection as it opens (asyncpg prepares a statement,
    and PostgreSQL compiles a function, when it first runs), not in the first burst of commands.
    Neither call changes anything: an admission every member is over the bound of, a claim with
    no slot."""
    await conn.fetchrow(ADMIT, [], "{}", "", 0, 0, 0.0, False, None, None, -1, None, None)
    await conn.fetchrow(CLAIM_NEXT, "", 0.0, 0.0, 0)


def _set_on_close(event: asyncio.Event, _conn: object) -> None:
    event.set()


def _move_statement(
    job_id: str, current: JobState, target: JobState, values: Mapping[str, Any], *, notify: bool
) -> tuple[Any, ...]:
    """The conditional UPDATE of a move and (``notify``) its notices, as one statement: a notice is sent
    only if the job moved, when the statement's transaction commits."""
    sql, params = move_statement(job_id, current, target, values)
    notices = _notices(job_id, current, target) if notify else []
    statement = (
        f"WITH moved AS ({sql} RETURNING restarts, user_id, delivered) "
        "SELECT restarts, user_id, delivered, "
        "(SELECT COUNT(pg_notify(:channel, notice)) FROM unnest(CAST(:notices AS text[])) AS notice) AS notified, "
        # The gateways tell the member of a result that could not reach them, next time they come.
        "CASE WHEN :notify AND delivered = :undelivered THEN pg_notify(:channel, 'notices:' || user_id) IS NULL END "
        "AS told FROM moved"
    )
    extra = {"channel": CHANNEL, "notices": notices, "notify": notify, "undelivered": Delivered.UNDELIVERED.value}
    return _args(statement, {**params, **extra})


def _notices(job_id: str, current: JobState, target: JobState, *, slot_taken: bool = False) -> list[str]:
    """What other processes must hear of a move: ``slot`` when a call's end frees one for any worker
    (``claimed`` when the same transaction gave it to the next job: places in line moved, no slot is
    free)."""
    notices = []
    if target is JobState.QUEUED:
        notices.append("queued")
    if current is JobState.RUNNING:
        notices.append("claimed" if slot_taken else "slot")
    if target is JobState.CANCELLED:
        notices.append(f"cancel:{job_id}")
    return notices
