"""The job store: jobs, their money entries, API attempts and per-guild settings, behind one interface.

SQL is written once, with ``:name`` parameters and portable types and clauses
(``ON CONFLICT … DO NOTHING``, no ``INSERT OR REPLACE``), so every backend shares
it. Migrations are numbered and run on start-up, in order, once.

Money is kept as entries, not counters: one ``charge`` row when a job is accepted
and at most one ``refund`` row, both keyed by the job (primary key ``job_id, entry``),
so no code path and no restart can refund a job twice.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

from bot.jobs import Delivered, Destination, Job, JobKind, JobRequest
from bot.ledger import LedgerSnapshot
from bot.presets import StylePreset
from bot.settings import GuildOverrides
from bot.states import JobState

if TYPE_CHECKING:
    from bot.image_api import Attempt

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
    # 2: money as keyed entries instead of a "charged" flag; API attempts; typed notes; where the result is.
    [
        """
        CREATE TABLE money (
            job_id TEXT NOT NULL,
            entry TEXT NOT NULL,
            user_id BIGINT NOT NULL,
            guild_id BIGINT,
            day TEXT NOT NULL,
            amount_usd DOUBLE PRECISION NOT NULL,
            at DOUBLE PRECISION NOT NULL,
            PRIMARY KEY (job_id, entry)
        )
        """,
        "CREATE INDEX money_day ON money (day)",
        "INSERT INTO money (job_id, entry, user_id, guild_id, day, amount_usd, at) "
        "SELECT id, 'charge', user_id, guild_id, charge_day, cost_usd, created_at FROM jobs",
        "INSERT INTO money (job_id, entry, user_id, guild_id, day, amount_usd, at) "
        "SELECT id, 'refund', user_id, guild_id, charge_day, cost_usd, COALESCE(finished_at, created_at) "
        "FROM jobs WHERE charged = 0",
        "ALTER TABLE jobs DROP COLUMN charged",
        "ALTER TABLE jobs ADD COLUMN notes TEXT NOT NULL DEFAULT '[]'",
        "ALTER TABLE jobs ADD COLUMN result_channel_id BIGINT",
        "ALTER TABLE jobs ADD COLUMN result_message_id BIGINT",
        """
        CREATE TABLE api_attempts (
            job_id TEXT NOT NULL,
            run INTEGER NOT NULL,
            attempt INTEGER NOT NULL,
            started_at DOUBLE PRECISION NOT NULL,
            seconds DOUBLE PRECISION NOT NULL,
            outcome TEXT NOT NULL,
            http_status INTEGER,
            may_be_billed INTEGER NOT NULL,
            request_id TEXT,
            PRIMARY KEY (job_id, run, attempt)
        )
        """,
    ],
    # 3: members' workflow: private results and how each result was delivered, style presets,
    # results deleted by their member or a moderator, and which undelivered results were told.
    [
        "ALTER TABLE jobs ADD COLUMN private INTEGER NOT NULL DEFAULT 0",
        "ALTER TABLE jobs ADD COLUMN style TEXT",
        "ALTER TABLE jobs ADD COLUMN style_text TEXT",
        "ALTER TABLE jobs ADD COLUMN delivered TEXT",
        "UPDATE jobs SET delivered = 'posted' WHERE status = 'succeeded'",
        "CREATE INDEX jobs_user_created ON jobs (user_id, created_at)",
        "CREATE INDEX jobs_delivered ON jobs (delivered)",
        """
        CREATE TABLE style_presets (
            guild_id BIGINT NOT NULL,
            name TEXT NOT NULL,
            text TEXT NOT NULL,
            created_by BIGINT NOT NULL,
            created_at DOUBLE PRECISION NOT NULL,
            PRIMARY KEY (guild_id, name)
        )
        """,
        """
        CREATE TABLE result_deletions (
            job_id TEXT PRIMARY KEY,
            deleted_by BIGINT NOT NULL,
            deleted_at DOUBLE PRECISION NOT NULL
        )
        """,
        """
        CREATE TABLE notices_shown (
            job_id TEXT PRIMARY KEY,
            shown_at DOUBLE PRECISION NOT NULL
        )
        """,
    ],
]

_REQUEST_COLUMNS = (
    "kind", "user_id", "guild_id", "channel_id", "prompt", "size", "input_count", "parent_job_id", "private",
    "style", "style_text",
)  # fmt: skip
_JOB_COLUMNS = (
    "id", "status", *_REQUEST_COLUMNS, "delivery", "notes", "created_at", "charge_day", "cost_usd", "started_at",
    "finished_at", "error", "attempts", "restarts", "api_seconds", "input_tokens", "output_tokens", "total_tokens",
    "output_width", "output_height", "output_bytes", "result_channel_id", "result_message_id", "delivered",
)  # fmt: skip
# Job fields a move may change, by column.
MOVABLE = frozenset(_JOB_COLUMNS) - {"id", "status", *_REQUEST_COLUMNS, "created_at", "charge_day", "cost_usd"}


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
    billed_without_result_week: int  # API calls that may have been billed but gave no result


@dataclass(frozen=True)
class HistoryEntry:
    """One of a member's jobs as ``/history`` shows it."""

    job: Job
    result_deleted: bool  # its result message was deleted with the Delete button


@dataclass(frozen=True)
class MoveResult:
    """What a move did in the store: whether the job moved, and whether a refund row was written."""

    moved: bool
    refunded: bool = False


class JobStore(Protocol):
    """What the engine needs from storage; one implementation per database."""

    async def open(self) -> None: ...
    async def close(self) -> None: ...
    async def create_job(self, job: Job) -> None:
        """Insert an accepted job and its charge, together."""
        ...

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
        """Move a job from ``current`` to ``target`` (only if it is still in ``current``), with its
        changed ``values``, a refund row if ``refund`` (at most one per job) and API ``attempts``, together."""
        ...

    async def get_job(self, job_id: str) -> Job | None: ...
    async def unfinished_jobs(self) -> list[Job]: ...
    async def ledger_snapshot(self, day: str, since: float) -> LedgerSnapshot: ...
    async def stats(self, guild_id: int, today: str, week_days: Sequence[str]) -> JobStats: ...
    async def all_guild_overrides(self) -> dict[int, GuildOverrides]: ...
    async def guild_overrides(self, guild_id: int) -> GuildOverrides: ...
    async def save_guild_overrides(self, guild_id: int, overrides: GuildOverrides, by: int) -> None: ...
    async def history(self, user_id: int, guild_id: int | None, offset: int, limit: int) -> list[HistoryEntry]:
        """A member's jobs in one server (or in DMs), newest first."""
        ...

    async def record_result_deleted(self, job_id: str, by: int, at: float) -> None: ...
    async def all_presets(self) -> list[StylePreset]: ...
    async def save_preset(self, preset: StylePreset) -> None:
        """Insert a preset, or replace the one of the same server and name."""
        ...

    async def delete_preset(self, guild_id: int, name: str) -> None: ...
    async def undelivered_users(self) -> set[int]:
        """Members with an undelivered result they have not been told about."""
        ...

    async def undelivered_jobs(self, user_id: int) -> list[Job]: ...
    async def mark_notices_shown(self, job_ids: Sequence[str], at: float) -> None: ...


class Queries:
    """The SQL, shared by every backend (``:name`` parameters)."""

    insert_job = f"INSERT INTO jobs ({', '.join(_JOB_COLUMNS)}) VALUES ({', '.join(':' + c for c in _JOB_COLUMNS)})"
    insert_money = (
        "INSERT INTO money (job_id, entry, user_id, guild_id, day, amount_usd, at) "
        "SELECT id, :entry, user_id, guild_id, charge_day, cost_usd, :at FROM jobs WHERE id = :id "
        "ON CONFLICT (job_id, entry) DO NOTHING"
    )
    insert_attempt = (
        "INSERT INTO api_attempts (job_id, run, attempt, started_at, seconds, outcome, http_status, may_be_billed, "
        "request_id) VALUES (:job_id, :run, :attempt, :started_at, :seconds, :outcome, :http_status, "
        ":may_be_billed, :request_id) ON CONFLICT (job_id, run, attempt) DO NOTHING"
    )
    get_job = "SELECT * FROM jobs WHERE id = :id"
    unfinished = "SELECT * FROM jobs WHERE status NOT IN ('succeeded', 'failed', 'cancelled') ORDER BY created_at, id"
    charged_on_day = (
        "SELECT user_id, guild_id, SUM(CASE WHEN entry = 'charge' THEN 1 ELSE -1 END), "
        "COALESCE(SUM(CASE WHEN entry = 'charge' THEN amount_usd ELSE -amount_usd END), 0) "
        "FROM money WHERE day = :day GROUP BY user_id, guild_id"
    )
    last_by_user = "SELECT user_id, MAX(created_at) FROM jobs WHERE created_at >= :since GROUP BY user_id"
    net_spend = "COALESCE(SUM(CASE WHEN entry = 'charge' THEN amount_usd ELSE -amount_usd END), 0)"
    guild_settings = "SELECT settings FROM guild_settings WHERE guild_id = :guild_id"
    save_guild_settings = (
        "INSERT INTO guild_settings (guild_id, settings, updated_at, updated_by) "
        "VALUES (:guild_id, :settings, :updated_at, :updated_by) "
        "ON CONFLICT (guild_id) DO UPDATE SET settings = excluded.settings, "
        "updated_at = excluded.updated_at, updated_by = excluded.updated_by"
    )

    history = (
        "SELECT jobs.*, result_deletions.deleted_at FROM jobs "
        "LEFT JOIN result_deletions ON result_deletions.job_id = jobs.id "
        "WHERE jobs.user_id = :user_id AND {guild} ORDER BY jobs.created_at DESC, jobs.id DESC "
        "LIMIT :limit OFFSET :offset"
    )
    record_result_deleted = (
        "INSERT INTO result_deletions (job_id, deleted_by, deleted_at) VALUES (:job_id, :by, :at) "
        "ON CONFLICT (job_id) DO NOTHING"
    )
    all_presets = "SELECT guild_id, name, text, created_by, created_at FROM style_presets ORDER BY guild_id, name"
    save_preset = (
        "INSERT INTO style_presets (guild_id, name, text, created_by, created_at) "
        "VALUES (:guild_id, :name, :text, :created_by, :created_at) "
        "ON CONFLICT (guild_id, name) DO UPDATE SET text = excluded.text, "
        "created_by = excluded.created_by, created_at = excluded.created_at"
    )
    delete_preset = "DELETE FROM style_presets WHERE guild_id = :guild_id AND name = :name"
    _untold = "delivered = 'undelivered' AND id NOT IN (SELECT job_id FROM notices_shown)"
    undelivered_users = f"SELECT DISTINCT user_id FROM jobs WHERE {_untold}"
    undelivered_jobs = f"SELECT * FROM jobs WHERE user_id = :user_id AND {_untold} ORDER BY created_at, id"
    mark_notice_shown = (
        "INSERT INTO notices_shown (job_id, shown_at) VALUES (:job_id, :at) ON CONFLICT (job_id) DO NOTHING"
    )

    @staticmethod
    def history_in(guild_id: int | None) -> str:
        """``history`` for one server's jobs, or for direct messages when ``guild_id`` is ``None``."""
        where = "jobs.guild_id IS NULL" if guild_id is None else "jobs.guild_id = :guild_id"
        return Queries.history.format(guild=where)

    @staticmethod
    def move_job(columns: Sequence[str]) -> str:
        """A conditional UPDATE: the job moves only if it is still in ``:current``."""
        sets = ", ".join(["status = :target", *(f"{c} = :{c}" for c in columns)])
        return f"UPDATE jobs SET {sets} WHERE id = :id AND status = :current"

    @staticmethod
    def in_days(count: int, column: str = "charge_day") -> str:
        """``column IN (:d0, :d1…)`` for a list of days."""
        return f"{column} IN ({', '.join(f':d{i}' for i in range(count))})"


def job_to_params(job: Job) -> dict[str, Any]:
    """A job as column values."""
    request = job.request
    params: dict[str, Any] = {name: getattr(request, name) for name in _REQUEST_COLUMNS}
    params["kind"] = request.kind.value
    params["private"] = int(request.private)  # booleans are INTEGER 0/1 in every backend
    params.update(
        id=job.id,
        status=job.state.value,
        created_at=job.created_at,
        charge_day=job.charge_day,
        cost_usd=job.cost_usd,
    )
    fields = (MOVABLE - {"delivery"}) | {"destination"}
    params.update(values_to_columns({name: getattr(job, name) for name in fields}))
    return params


def values_to_columns(values: Mapping[str, Any]) -> dict[str, Any]:
    """Changed job fields as column values (``destination`` is the ``delivery`` column)."""
    out: dict[str, Any] = {}
    for name, value in values.items():
        if name == "destination":
            out["delivery"] = json.dumps(value.to_json() if value is not None else {})
        elif name == "notes":
            out["notes"] = json.dumps(list(value))
        elif name == "delivered":
            out["delivered"] = value.value if value is not None else None
        elif name in MOVABLE:
            out[name] = value
        else:
            raise ValueError(f"{name} is not a job field a move may change")
    return out


def job_from_row(row: Mapping[str, Any]) -> Job:
    """A job from a ``SELECT * FROM jobs`` row."""
    request = JobRequest(
        kind=JobKind(row["kind"]),
        user_id=int(row["user_id"]),
        guild_id=int(row["guild_id"]) if row["guild_id"] is not None else None,
        channel_id=int(row["channel_id"]),
        prompt=row["prompt"],
        size=row["size"],
        input_count=int(row["input_count"]),
        parent_job_id=row["parent_job_id"],
        private=bool(row["private"]),
        style=row["style"],
        style_text=row["style_text"],
    )
    simple = MOVABLE - {"delivery", "notes", "delivered"}
    return Job(
        id=row["id"],
        request=request,
        state=JobState(row["status"]),
        created_at=float(row["created_at"]),
        charge_day=row["charge_day"],
        cost_usd=float(row["cost_usd"]),
        destination=Destination.from_json(json.loads(row["delivery"] or "{}")),
        notes=tuple(json.loads(row["notes"] or "[]")),
        delivered=Delivered(row["delivered"]) if row["delivered"] else None,
        **{name: row[name] for name in simple},
    )


def attempt_params(job_id: str, run: int, attempt: Attempt) -> dict[str, Any]:
    return {
        "job_id": job_id,
        "run": run,
        "attempt": attempt.number,
        "started_at": attempt.started_at,
        "seconds": attempt.seconds,
        "outcome": attempt.outcome.value,
        "http_status": attempt.http_status,
        "may_be_billed": int(attempt.may_be_billed),
        "request_id": attempt.request_id,
    }


def overrides_from_json(raw: str | None) -> GuildOverrides:
    return GuildOverrides.from_json(json.loads(raw)) if raw else GuildOverrides()
