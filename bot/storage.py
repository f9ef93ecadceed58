"""The job store: jobs, their ledger and per-guild settings, behind one small interface.

SQL is written once, with ``:name`` parameters and portable types and clauses
(``ON CONFLICT … DO UPDATE``, no ``INSERT OR REPLACE``), so that a PostgreSQL
backend can share it and only translate the parameter style. SQLite (through
aiosqlite) is the default backend. Migrations run on start-up, in order, once.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any, Protocol

import aiosqlite

from bot.jobs import Job, JobStatus
from bot.ledger import LedgerSnapshot

log = logging.getLogger(__name__)

# Each migration is a list of statements; the list index + 1 is its version.
MIGRATIONS: list[list[str]] = [
    [
        """
        CREATE TABLE jobs (
            id TEXT PRIMARY KEY,
            kind TEXT NOT NULL,
            status TEXT NOT NULL,
            user_id BIGINT NOT NULL,
            guild_id BIGINT,
            channel_id BIGINT NOT NULL,
            prompt TEXT NOT NULL,
            size TEXT,
            input_count INTEGER NOT NULL,
            parent_job_id TEXT,
            delivery TEXT NOT NULL,
            created_at DOUBLE PRECISION NOT NULL,
            charge_day TEXT NOT NULL,
            charged INTEGER NOT NULL,
            cost_usd DOUBLE PRECISION NOT NULL,
            started_at DOUBLE PRECISION,
            finished_at DOUBLE PRECISION,
            error TEXT,
            attempts INTEGER NOT NULL DEFAULT 0,
            restarts INTEGER NOT NULL DEFAULT 0,
            api_seconds DOUBLE PRECISION,
            input_tokens INTEGER,
            output_tokens INTEGER,
            total_tokens INTEGER,
            output_width INTEGER,
            output_height INTEGER,
            output_bytes INTEGER
        )
        """,
        "CREATE INDEX jobs_user_day ON jobs (user_id, charge_day)",
        "CREATE INDEX jobs_guild_day ON jobs (guild_id, charge_day)",
        "CREATE INDEX jobs_status ON jobs (status)",
        """
        CREATE TABLE guild_settings (
            guild_id BIGINT PRIMARY KEY,
            settings TEXT NOT NULL,
            updated_at DOUBLE PRECISION NOT NULL,
            updated_by BIGINT NOT NULL
        )
        """,
    ],
]

_JOB_COLUMNS = [f.name for f in fields(Job)]


@dataclass(frozen=True)
class JobStats:
    """Aggregates for ``/atelier stats``."""

    jobs_today: int
    jobs_week: int
    succeeded_week: int
    failed_week: int
    cancelled_week: int
    durations_week: list[float]
    spend_today: float
    spend_week: float
    busiest: list[tuple[int, int]]


class JobStore(Protocol):
    """What the engine needs from storage; one implementation per database."""

    async def open(self) -> None: ...
    async def close(self) -> None: ...
    async def insert_job(self, job: Job) -> None: ...
    async def update_job(self, job_id: str, **values: Any) -> None: ...
    async def get_job(self, job_id: str) -> Job | None: ...
    async def jobs_with_status(self, statuses: Sequence[JobStatus]) -> list[Job]: ...
    async def active_jobs_for_user(self, user_id: int) -> list[Job]: ...
    async def ledger_snapshot(self, day: str, since: float) -> LedgerSnapshot: ...
    async def stats(self, guild_id: int, today: str, week_days: Sequence[str]) -> JobStats: ...
    async def guild_settings(self, guild_id: int) -> dict[str, Any]: ...
    async def save_guild_settings(self, guild_id: int, settings: dict[str, Any], by: int) -> None: ...


class Queries:
    """The SQL, shared by every backend (``:name`` parameters)."""

    insert_job = f"INSERT INTO jobs ({', '.join(_JOB_COLUMNS)}) VALUES ({', '.join(':' + c for c in _JOB_COLUMNS)})"
    get_job = "SELECT * FROM jobs WHERE id = :id"
    active_for_user = (
        "SELECT * FROM jobs WHERE user_id = :user_id AND status IN ('queued', 'running') ORDER BY created_at"
    )
    charged_today = (
        "SELECT user_id, guild_id, COUNT(*), COALESCE(SUM(cost_usd), 0) FROM jobs "
        "WHERE charge_day = :day AND charged = 1 GROUP BY user_id, guild_id"
    )
    active_jobs = "SELECT id, user_id FROM jobs WHERE status IN ('queued', 'running')"
    last_by_user = "SELECT user_id, MAX(created_at) FROM jobs WHERE created_at >= :since GROUP BY user_id"
    spend_today = "SELECT COALESCE(SUM(cost_usd), 0) FROM jobs WHERE charge_day = :day AND charged = 1"
    guild_settings = "SELECT settings FROM guild_settings WHERE guild_id = :guild_id"
    save_guild_settings = (
        "INSERT INTO guild_settings (guild_id, settings, updated_at, updated_by) "
        "VALUES (:guild_id, :settings, :updated_at, :updated_by) "
        "ON CONFLICT (guild_id) DO UPDATE SET settings = excluded.settings, "
        "updated_at = excluded.updated_at, updated_by = excluded.updated_by"
    )

    @staticmethod
    def update_job(columns: Iterable[str]) -> str:
        """An UPDATE of the given (validated) columns of one job."""
        return f"UPDATE jobs SET {', '.join(f'{c} = :{c}' for c in columns)} WHERE id = :id"

    @staticmethod
    def with_status(count: int) -> str:
        """Jobs in any of ``count`` statuses, oldest first."""
        names = ", ".join(f":s{i}" for i in range(count))
        return f"SELECT * FROM jobs WHERE status IN ({names}) ORDER BY created_at"

    @staticmethod
    def in_days(count: int, where: str = "") -> str:
        """Placeholders ``:d0, :d1…`` for a list of days."""
        names = ", ".join(f":d{i}" for i in range(count))
        return f"charge_day IN ({names}){where}"


def _row_to_job(row: aiosqlite.Row) -> Job:
    values = dict(row)
    values["status"] = JobStatus(values["status"])
    values["charged"] = bool(values["charged"])
    values["delivery"] = json.loads(values["delivery"])
    return Job(**values)


def _job_to_params(job: Job) -> dict[str, Any]:
    params = {name: getattr(job, name) for name in _JOB_COLUMNS}
    params["status"] = job.status.value
    params["charged"] = int(job.charged)
    params["delivery"] = json.dumps(job.delivery)
    return params


class SQLiteJobStore:
    """The default store: one SQLite file, one connection, WAL mode."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._db: aiosqlite.Connection | None = None

    @property
    def db(self) -> aiosqlite.Connection:
        if self._db is None:
            raise RuntimeError("store is not open")
        return self._db

    async def open(self) -> None:
        """Open the database and apply any migrations not yet applied."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._db = await aiosqlite.connect(self.path)
        self._db.row_factory = aiosqlite.Row
        await self._db.execute("PRAGMA journal_mode=WAL")
        # WAL with NORMAL sync: committed jobs survive a crash of the process; only a power cut
        # may lose the last moments, and every write does not wait for the disk.
        await self._db.execute("PRAGMA synchronous=NORMAL")
        await self._db.execute("PRAGMA busy_timeout=5000")
        await self._migrate()

    async def _migrate(self) -> None:
        await self.db.execute(
            "CREATE TABLE IF NOT EXISTS schema_migrations (version INTEGER PRIMARY KEY, applied_at DOUBLE PRECISION)"
        )
        async with self.db.execute("SELECT COALESCE(MAX(version), 0) FROM schema_migrations") as cursor:
            row = await cursor.fetchone()
        current = int(row[0]) if row else 0
        for version, statements in enumerate(MIGRATIONS, start=1):
            if version <= current:
                continue
            for statement in statements:
                await self.db.execute(statement)
            await self.db.execute(
                "INSERT INTO schema_migrations (version, applied_at) VALUES (:v, :t)",
                {"v": version, "t": time.time()},
            )
            await self.db.commit()
            log.info("database migrated to version %d", version)

    async def close(self) -> None:
        db, self._db = self._db, None  # idempotent, even when two closes overlap
        if db is not None:
            await db.close()

    async def _scalar(self, sql: str, params: dict[str, Any]) -> Any:
        async with self.db.execute(sql, params) as cursor:
            row = await cursor.fetchone()
        return row[0] if row else None

    async def insert_job(self, job: Job) -> None:
        await self.db.execute(Queries.insert_job, _job_to_params(job))
        await self.db.commit()

    async def update_job(self, job_id: str, **values: Any) -> None:
        unknown = set(values) - set(_JOB_COLUMNS)
        if unknown:
            raise ValueError(f"unknown job columns: {sorted(unknown)}")
        params = {
            k: (v.value if isinstance(v, JobStatus) else int(v) if isinstance(v, bool) else v)
            for k, v in values.items()
        }
        if "delivery" in params:
            params["delivery"] = json.dumps(params["delivery"])
        await self.db.execute(Queries.update_job(values), {**params, "id": job_id})
        await self.db.commit()

    async def get_job(self, job_id: str) -> Job | None:
        async with self.db.execute(Queries.get_job, {"id": job_id}) as cursor:
            row = await cursor.fetchone()
        return _row_to_job(row) if row else None

    async def jobs_with_status(self, statuses: Sequence[JobStatus]) -> list[Job]:
        params = {f"s{i}": s.value for i, s in enumerate(statuses)}
        async with self.db.execute(Queries.with_status(len(statuses)), params) as cursor:
            return [_row_to_job(row) for row in await cursor.fetchall()]

    async def active_jobs_for_user(self, user_id: int) -> list[Job]:
        async with self.db.execute(Queries.active_for_user, {"user_id": user_id}) as cursor:
            return [_row_to_job(row) for row in await cursor.fetchall()]

    async def ledger_snapshot(self, day: str, since: float) -> LedgerSnapshot:
        """Charged jobs of ``day``, active jobs, and each member's newest job since ``since``."""
        snapshot = LedgerSnapshot()
        async with self.db.execute(Queries.charged_today, {"day": day}) as cursor:
            snapshot.charged = [
                (int(r[0]), int(r[1]) if r[1] is not None else None, int(r[2]), float(r[3]))
                for r in await cursor.fetchall()
            ]
        async with self.db.execute(Queries.active_jobs, {}) as cursor:
            snapshot.active = {str(r[0]): int(r[1]) for r in await cursor.fetchall()}
        async with self.db.execute(Queries.last_by_user, {"since": since}) as cursor:
            snapshot.last_accepted = {int(r[0]): float(r[1]) for r in await cursor.fetchall()}
        return snapshot

    async def stats(self, guild_id: int, today: str, week_days: Sequence[str]) -> JobStats:
        days = {f"d{i}": d for i, d in enumerate(week_days)}
        params = {"guild_id": guild_id, **days}
        week = Queries.in_days(len(week_days), " AND guild_id = :guild_id")

        async def count(where: str) -> int:
            return int(await self._scalar(f"SELECT COUNT(*) FROM jobs WHERE {week}{where}", params))

        async with self.db.execute(
            f"SELECT finished_at - created_at FROM jobs WHERE {week} AND status = 'succeeded'", params
        ) as cursor:
            durations = sorted(float(r[0]) for r in await cursor.fetchall())
        async with self.db.execute(
            f"SELECT user_id, COUNT(*) AS n FROM jobs WHERE {week} AND status <> 'cancelled' "
            "GROUP BY user_id ORDER BY n DESC, user_id LIMIT 5",
            params,
        ) as cursor:
            busiest = [(int(r[0]), int(r[1])) for r in await cursor.fetchall()]
        spend_week = await self._scalar(
            f"SELECT COALESCE(SUM(cost_usd), 0) FROM jobs WHERE {Queries.in_days(len(week_days))} AND charged = 1",
            days,
        )
        return JobStats(
            jobs_today=int(
                await self._scalar(
                    "SELECT COUNT(*) FROM jobs WHERE guild_id = :guild_id AND charge_day = :day",
                    {"guild_id": guild_id, "day": today},
                )
            ),
            jobs_week=await count(""),
            succeeded_week=await count(" AND status = 'succeeded'"),
            failed_week=await count(" AND status = 'failed'"),
            cancelled_week=await count(" AND status = 'cancelled'"),
            durations_week=durations,
            spend_today=float(await self._scalar(Queries.spend_today, {"day": today})),
            spend_week=float(spend_week),
            busiest=busiest,
        )

    async def guild_settings(self, guild_id: int) -> dict[str, Any]:
        raw = await self._scalar(Queries.guild_settings, {"guild_id": guild_id})
        return dict(json.loads(raw)) if raw else {}

    async def save_guild_settings(self, guild_id: int, settings: dict[str, Any], by: int) -> None:
        await self.db.execute(
            Queries.save_guild_settings,
            {
                "guild_id": guild_id,
                "settings": json.dumps(settings),
                "updated_at": time.time(),
                "updated_by": by,
            },
        )
        await self.db.commit()
