"""The job store: jobs, their money entries, API attempts and per-guild settings, behind one interface.

SQL is written once, with ``:name`` parameters and portable types and clauses
(``ON CONFLICT … DO NOTHING``, no ``INSERT OR REPLACE``), so every backend shares
it. Migrations are numbered and run on start-up, in order, once.

Money is kept as entries, not counters: one ``charge`` row when a job is accepted
and at most one ``refund`` row, both keyed by the job (primary key ``job_id, entry``),
so no code path and no restart can refund a job twice.
"""

from __future__ import annotations

import enum
import json
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

from bot.eta import Run
from bot.jobs import Delivered, Destination, Job, JobKind, JobRequest
from bot.ledger import DayUsage, LedgerSnapshot
from bot.presets import StylePreset
from bot.settings import GuildOverrides
from bot.states import JobState

if TYPE_CHECKING:
    from bot.image_api import Attempt
    from bot.limits import Quota

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
    # 3: several processes on one database: leases, the fair turn of each member, job inputs in the
    # database, and the indexes admission's totals read.
    [
        "ALTER TABLE jobs ADD COLUMN claimed_by TEXT",
        "ALTER TABLE jobs ADD COLUMN lease_until DOUBLE PRECISION",
        "CREATE TABLE fair_turns (user_id BIGINT PRIMARY KEY, turn BIGINT NOT NULL)",
        "CREATE TABLE counters (name TEXT PRIMARY KEY, value BIGINT NOT NULL)",
        """
        CREATE TABLE job_inputs (
            job_id TEXT NOT NULL,
            number INTEGER NOT NULL,
            mime TEXT NOT NULL,
            width INTEGER NOT NULL,
            height INTEGER NOT NULL,
            note TEXT,
            data BYTEA NOT NULL,
            PRIMARY KEY (job_id, number)
        )
        """,
        "CREATE INDEX money_user_day ON money (user_id, day)",
        "CREATE INDEX money_guild_day ON money (guild_id, day)",
        "CREATE INDEX jobs_user_status ON jobs (user_id, status)",
        "ALTER TABLE jobs ADD COLUMN queued_at DOUBLE PRECISION",
        # Retention (for Reroll) of a finished job's inputs: when it ended; NULL while it is unfinished.
        "ALTER TABLE job_inputs ADD COLUMN ended_at DOUBLE PRECISION",
    ],
    # 4: operators: the model and key a job used; blocked members; servers' own API keys (encrypted).
    [
        "ALTER TABLE jobs ADD COLUMN model TEXT",
        "ALTER TABLE jobs ADD COLUMN guild_key INTEGER NOT NULL DEFAULT 0",
        """
        CREATE TABLE blocked_members (
            guild_id BIGINT NOT NULL,
            user_id BIGINT NOT NULL,
            reason TEXT,
            blocked_by BIGINT NOT NULL,
            blocked_at DOUBLE PRECISION NOT NULL,
            PRIMARY KEY (guild_id, user_id)
        )
        """,
        """
        CREATE TABLE guild_keys (
            guild_id BIGINT PRIMARY KEY,
            encrypted TEXT NOT NULL,
            set_by BIGINT NOT NULL,
            set_at DOUBLE PRECISION NOT NULL
        )
        """,
    ],
    # 5: members' workflow: private results and how each result was delivered, style presets,
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
    # 6: the language each job's member reads, for its status, result and failure.
    ["ALTER TABLE jobs ADD COLUMN language TEXT"],
]

MIGRATIONS_TABLE = (
    "CREATE TABLE IF NOT EXISTS schema_migrations (version INTEGER PRIMARY KEY, applied_at DOUBLE PRECISION)"
)

_REQUEST_COLUMNS = (
    "kind", "user_id", "guild_id", "channel_id", "prompt", "size", "input_count", "parent_job_id", "private",
    "style", "style_text", "language",
)  # fmt: skip
_JOB_COLUMNS = (
    "id", "status", *_REQUEST_COLUMNS, "delivery", "notes", "created_at", "charge_day", "cost_usd", "model",
    "guild_key", "queued_at", "started_at", "finished_at", "error", "attempts", "restarts", "api_seconds",
    "input_tokens", "output_tokens", "total_tokens", "output_width", "output_height", "output_bytes",
    "result_channel_id", "result_message_id", "delivered",
)  # fmt: skip
# Job fields a move may change, by column.
MOVABLE = frozenset(_JOB_COLUMNS) - {
    "id", "status", *_REQUEST_COLUMNS, "created_at", "charge_day", "cost_usd", "model", "guild_key",
}  # fmt: skip


@dataclass(frozen=True)
class JobStats:
    """Aggregates for ``/atelier stats``."""

    jobs_today: int
    jobs_week: int
    succeeded_week: int
    failed_week: int
    cancelled_week: int
    durations_week: list[float]
    spend_today: float  # on the operator's key, all servers
    spend_week: float  # on the operator's key, all servers
    busiest: list[tuple[int, int]]
    billed_without_result_week: int  # API calls that may have been billed but gave no result
    own_key_spend_week: float = 0.0  # this server's jobs on its own API key
    models_week: list[tuple[str, int]] = field(default_factory=list)  # this server's jobs per model


@dataclass(frozen=True)
class DayStats:
    """One UTC day of a server's jobs, for the ``/atelier stats`` chart."""

    day: str
    succeeded: int = 0
    failed: int = 0
    cancelled: int = 0
    spend_usd: float = 0.0  # net charges, whichever key paid
    durations: tuple[float, ...] = ()  # seconds from request to result of the jobs that succeeded


@dataclass(frozen=True)
class Block:
    """A member a server's moderators blocked from starting jobs there."""

    guild_id: int
    user_id: int
    reason: str | None
    blocked_by: int
    blocked_at: float


@dataclass(frozen=True)
class StoredKey:
    """A server's own API key as stored: encrypted (Fernet), never in clear."""

    guild_id: int
    encrypted: str = field(repr=False)
    set_by: int = 0
    set_at: float = 0.0


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
    claimed: Job | ClaimMiss | None = None  # ``move_and_claim``: the job it claimed, or why none


@dataclass(frozen=True)
class ClaimTerms:
    """A claim's terms: for whom, when, the lease it takes, and the cap on running jobs across workers."""

    worker: str
    now: float
    lease_seconds: float
    max_running: int


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
    async def daily_stats(self, guild_id: int, days: Sequence[str]) -> list[DayStats]:
        """One entry per day of ``days``, in that order (days without jobs are zeros)."""
        ...

    async def all_guild_overrides(self) -> dict[int, GuildOverrides]: ...
    async def guild_overrides(self, guild_id: int) -> GuildOverrides: ...
    async def save_guild_overrides(self, guild_id: int, overrides: GuildOverrides, by: int) -> None: ...
    async def ping(self) -> None:
        """A cheap round trip to the database (for ``/healthz``); raises if it does not answer."""
        ...

    async def recent_runs(self, since: float) -> list[Run]:
        """Succeeded jobs' running times since ``since``, oldest first (for honest estimates)."""
        ...

    async def all_blocks(self) -> list[Block]: ...
    async def save_block(self, block: Block) -> None: ...
    async def delete_block(self, guild_id: int, user_id: int) -> bool: ...
    async def all_guild_keys(self) -> list[StoredKey]: ...
    async def save_guild_key(self, key: StoredKey) -> None: ...
    async def delete_guild_key(self, guild_id: int) -> bool: ...

    async def history(self, user_id: int, guild_id: int | None, offset: int, limit: int) -> list[HistoryEntry]:
        """A member's jobs in one server (or in DMs), newest first."""
        ...

    async def record_result_deleted(self, job_id: str, by: int, at: float) -> None: ...
    async def set_destination(self, job_id: str, destination: Destination) -> None:
        """Show an unfinished job somewhere else from now on (its status message moved); not a move."""
        ...

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


@dataclass(frozen=True)
class SharedTotals:
    """What every process of a shared database sees alike, for the metrics."""

    queued: int = 0
    running: int = 0
    operator_spend: float = 0.0
    server_spend: float = 0.0
    oldest_queued_at: float | None = None  # when the longest-waiting queued job joined the line


class ClaimMiss(enum.Enum):
    """Why a worker's claim took no job: what it must wait for before it tries again."""

    NO_SLOT = "no slot"  # MAX_CONCURRENT_JOBS calls are running: wait for one to end
    NO_JOB = "no job"  # nothing is ready: wait for a job to be queued


class SharedStore(Protocol):
    """What several processes sharing one database need besides ``JobStore`` (PostgreSQL)."""

    async def admit_job(self, job: Job, quota: Quota, *, holder: str, lease_until: float) -> None:
        """Check ``quota`` under locks on the totals it bounds, and insert the job and its charge (held by
        ``holder``) if it passes; else raise what ``quota.check`` says."""
        ...

    async def day_usage(self, user_id: int, guild_id: int | None, day: str, now: float) -> DayUsage: ...
    async def unfinished_jobs_of(self, user_id: int) -> list[Job]: ...
    async def count(self, state: JobState) -> int: ...
    async def claim(self, worker: str, now: float, lease_seconds: float, max_running: int) -> Job | ClaimMiss:
        """Take the next job in fair order for ``worker`` (marked running), or say why none was taken."""
        ...

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
        """``JobStore.move_job``, then (if it moved) ``claim`` in the same transaction (``MoveResult.claimed``)."""
        ...

    async def renew_leases(self, worker: str, job_ids: Sequence[str], until: float) -> None: ...
    async def expired_jobs(self, now: float) -> list[Job]: ...
    async def queue_positions(self) -> list[tuple[Job, int]]: ...
    def on_notice(self, handler: Callable[[str], None]) -> None: ...
    async def notify(self, payload: str) -> None: ...
    async def totals(self, day: str) -> SharedTotals: ...
    async def recent_runs(self, since: float) -> list[Run]: ...


class Queries:
    """The SQL, shared by every backend (``:name`` parameters)."""

    insert_job = f"INSERT INTO jobs ({', '.join(_JOB_COLUMNS)}) VALUES ({', '.join(':' + c for c in _JOB_COLUMNS)})"
    insert_money = (
        "INSERT INTO money (job_id, entry, user_id, guild_id, day, amount_usd, at) "
        "SELECT id, CAST(:entry AS TEXT), user_id, guild_id, charge_day, cost_usd, CAST(:at AS DOUBLE PRECISION) "
        "FROM jobs WHERE id = :id ON CONFLICT (job_id, entry) DO NOTHING"
    )
    insert_attempt = (
        "INSERT INTO api_attempts (job_id, run, attempt, started_at, seconds, outcome, http_status, may_be_billed, "
        "request_id) VALUES (:job_id, :run, :attempt, :started_at, :seconds, :outcome, :http_status, "
        ":may_be_billed, :request_id) ON CONFLICT (job_id, run, attempt) DO NOTHING"
    )
    get_job = "SELECT * FROM jobs WHERE id = :id"
    unfinished = "SELECT * FROM jobs WHERE status NOT IN ('succeeded', 'failed', 'cancelled') ORDER BY created_at, id"
    charged_on_day = (
        "SELECT m.user_id, m.guild_id, SUM(CASE WHEN m.entry = 'charge' THEN 1 ELSE -1 END), "
        "COALESCE(SUM(CASE WHEN j.guild_key = 1 THEN 0 WHEN m.entry = 'charge' THEN m.amount_usd "
        "ELSE -m.amount_usd END), 0), "
        "COALESCE(SUM(CASE WHEN j.guild_key = 0 THEN 0 WHEN m.entry = 'charge' THEN m.amount_usd "
        "ELSE -m.amount_usd END), 0) "
        "FROM money m JOIN jobs j ON j.id = m.job_id WHERE m.day = :day GROUP BY m.user_id, m.guild_id"
    )
    last_by_user = "SELECT user_id, MAX(created_at) FROM jobs WHERE created_at >= :since GROUP BY user_id"
    recent_runs = (
        "SELECT model, input_count, size, finished_at - started_at, finished_at FROM jobs "
        "WHERE status = 'succeeded' AND started_at IS NOT NULL AND finished_at >= :since ORDER BY finished_at"
    )
    net_spend = "COALESCE(SUM(CASE WHEN entry = 'charge' THEN amount_usd ELSE -amount_usd END), 0)"
    guild_settings = "SELECT settings FROM guild_settings WHERE guild_id = :guild_id"
    save_guild_settings = (
        "INSERT INTO guild_settings (guild_id, settings, updated_at, updated_by) "
        "VALUES (:guild_id, :settings, :updated_at, :updated_by) "
        "ON CONFLICT (guild_id) DO UPDATE SET settings = excluded.settings, "
        "updated_at = excluded.updated_at, updated_by = excluded.updated_by"
    )

    operator_spend = (
        "SELECT COALESCE(SUM(CASE WHEN m.entry = 'charge' THEN m.amount_usd ELSE -m.amount_usd END), 0) "
        "FROM money m JOIN jobs j ON j.id = m.job_id WHERE j.guild_key = 0 AND "
    )
    save_block = (
        "INSERT INTO blocked_members (guild_id, user_id, reason, blocked_by, blocked_at) "
        "VALUES (:guild_id, :user_id, :reason, :blocked_by, :blocked_at) "
        "ON CONFLICT (guild_id, user_id) DO UPDATE SET reason = excluded.reason, "
        "blocked_by = excluded.blocked_by, blocked_at = excluded.blocked_at"
    )
    delete_block = "DELETE FROM blocked_members WHERE guild_id = :guild_id AND user_id = :user_id"
    all_blocks = "SELECT guild_id, user_id, reason, blocked_by, blocked_at FROM blocked_members"
    save_guild_key = (
        "INSERT INTO guild_keys (guild_id, encrypted, set_by, set_at) VALUES (:guild_id, :encrypted, :set_by, :set_at) "
        "ON CONFLICT (guild_id) DO UPDATE SET encrypted = excluded.encrypted, set_by = excluded.set_by, "
        "set_at = excluded.set_at"
    )
    delete_guild_key = "DELETE FROM guild_keys WHERE guild_id = :guild_id"
    all_guild_keys = "SELECT guild_id, encrypted, set_by, set_at FROM guild_keys"

    @staticmethod
    def daily(count: int) -> tuple[str, str, str]:
        """A server's job counts, net charges and durations per day, for ``count`` days (``:d0``…)."""
        jobs_days = Queries.in_days(count)
        return (
            f"SELECT charge_day, status, COUNT(*) FROM jobs WHERE guild_id = :guild_id AND {jobs_days} "
            "GROUP BY charge_day, status",
            f"SELECT day, {Queries.net_spend} FROM money WHERE guild_id = :guild_id AND "
            f"{Queries.in_days(count, 'day')} GROUP BY day",
            f"SELECT charge_day, finished_at - created_at FROM jobs WHERE guild_id = :guild_id AND {jobs_days} "
            "AND status = 'succeeded'",
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
    set_destination = (
        "UPDATE jobs SET delivery = :delivery WHERE id = :id AND status NOT IN ('succeeded', 'failed', 'cancelled')"
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


def stats_queries(guild_id: int, today: str, week_days: Sequence[str]) -> tuple[dict[str, str], dict[str, Any]]:
    """The SQL behind ``/atelier stats`` (one query per figure) and its parameters; see ``stats_from``."""
    days = {f"d{i}": d for i, d in enumerate(week_days)}
    week = f"{Queries.in_days(len(week_days))} AND guild_id = :guild_id"
    jobs = f"SELECT COUNT(*) FROM jobs WHERE {week}"
    queries = {
        "jobs_today": "SELECT COUNT(*) FROM jobs WHERE guild_id = :guild_id AND charge_day = :today",
        "jobs_week": jobs,
        "succeeded_week": f"{jobs} AND status = 'succeeded'",
        "failed_week": f"{jobs} AND status = 'failed'",
        "cancelled_week": f"{jobs} AND status = 'cancelled'",
        "durations_week": f"SELECT finished_at - created_at FROM jobs WHERE {week} AND status = 'succeeded'",
        # Spend on the operator's key (all servers); a server's own key is its own business.
        "spend_today": f"{Queries.operator_spend} m.day = :today",
        "spend_week": f"{Queries.operator_spend} {Queries.in_days(len(week_days), 'm.day')}",
        "own_key_spend_week": f"SELECT {Queries.net_spend} FROM money m JOIN jobs j ON j.id = m.job_id WHERE "
        f"j.guild_key = 1 AND m.guild_id = :guild_id AND {Queries.in_days(len(week_days), 'm.day')}",
        "models_week": f"SELECT COALESCE(model, '') AS m, COUNT(*) FROM jobs WHERE {week} AND status = 'succeeded' "
        "GROUP BY m ORDER BY COUNT(*) DESC, m",
        "busiest": f"SELECT user_id, COUNT(*) AS n FROM jobs WHERE {week} AND status <> 'cancelled' "
        "GROUP BY user_id ORDER BY n DESC, user_id LIMIT 5",
        "billed_without_result_week": "SELECT COUNT(*) FROM api_attempts a JOIN jobs ON jobs.id = a.job_id "
        f"WHERE {week} AND a.may_be_billed = 1 AND (a.outcome <> 'succeeded' OR jobs.status <> 'succeeded')",
    }
    return queries, {"guild_id": guild_id, "today": today, **days}


def stats_from(results: Mapping[str, Sequence[Sequence[Any]]]) -> JobStats:
    """``JobStats`` from the rows of each of ``stats_queries``."""

    def one(name: str) -> Any:
        return results[name][0][0]

    return JobStats(
        jobs_today=int(one("jobs_today")),
        jobs_week=int(one("jobs_week")),
        succeeded_week=int(one("succeeded_week")),
        failed_week=int(one("failed_week")),
        cancelled_week=int(one("cancelled_week")),
        durations_week=sorted(float(r[0]) for r in results["durations_week"]),
        spend_today=float(one("spend_today")),
        spend_week=float(one("spend_week")),
        busiest=[(int(r[0]), int(r[1])) for r in results["busiest"]],
        billed_without_result_week=int(one("billed_without_result_week")),
        own_key_spend_week=float(one("own_key_spend_week")),
        models_week=[(str(r[0]), int(r[1])) for r in results["models_week"]],
    )


def daily_stats_from(
    days: Sequence[str],
    counts: Iterable[Sequence[Any]],
    spend: Iterable[Sequence[Any]],
    durations: Iterable[Sequence[Any]],
) -> list[DayStats]:
    """One ``DayStats`` per day of ``days`` from the rows of the three ``Queries.daily`` queries."""
    by_day: dict[str, dict[str, int]] = {day: {} for day in days}
    for day, status, n in counts:
        by_day[day][status] = int(n)
    spent = {day: float(total) for day, total in spend}
    timed: dict[str, list[float]] = {day: [] for day in days}
    for day, seconds in durations:
        if seconds is not None:
            timed[day].append(float(seconds))
    return [
        DayStats(
            day=day,
            succeeded=by_day[day].get("succeeded", 0),
            failed=by_day[day].get("failed", 0),
            cancelled=by_day[day].get("cancelled", 0),
            spend_usd=spent.get(day, 0.0),
            durations=tuple(sorted(timed[day])),
        )
        for day in days
    ]


def run_from_row(row: Sequence[Any], default_model: str) -> Run:
    return Run(row[0] or default_model, int(row[1]), row[2], float(row[3]), float(row[4]))


def block_from_row(row: Sequence[Any]) -> Block:
    return Block(int(row[0]), int(row[1]), row[2], int(row[3]), float(row[4]))


def block_params(block: Block) -> dict[str, Any]:
    return {
        "guild_id": block.guild_id,
        "user_id": block.user_id,
        "reason": block.reason,
        "blocked_by": block.blocked_by,
        "blocked_at": block.blocked_at,
    }


def preset_from_row(row: Sequence[Any]) -> StylePreset:
    return StylePreset(int(row[0]), row[1], row[2], int(row[3]), float(row[4]))


def preset_params(preset: StylePreset) -> dict[str, Any]:
    return {
        "guild_id": preset.guild_id,
        "name": preset.name,
        "text": preset.text,
        "created_by": preset.created_by,
        "created_at": preset.created_at,
    }


def key_from_row(row: Sequence[Any]) -> StoredKey:
    return StoredKey(int(row[0]), str(row[1]), int(row[2]), float(row[3]))


def key_params(key: StoredKey) -> dict[str, Any]:
    return {"guild_id": key.guild_id, "encrypted": key.encrypted, "set_by": key.set_by, "set_at": key.set_at}


def job_to_params_columns() -> tuple[str, ...]:
    """The columns ``job_to_params`` fills, in table order."""
    return _JOB_COLUMNS


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
        model=job.model,
        guild_key=int(job.guild_key),
    )
    fields = (MOVABLE - {"delivery"}) | {"destination"}
    params.update(values_to_columns({name: getattr(job, name) for name in fields}))
    return params


def destination_params(job_id: str, destination: Destination) -> dict[str, Any]:
    """The parameters of ``Queries.set_destination``."""
    return {"id": job_id, **values_to_columns({"destination": destination})}


def move_statement(
    job_id: str, current: JobState, target: JobState, values: Mapping[str, Any]
) -> tuple[str, dict[str, Any]]:
    """The conditional UPDATE of a move and its parameters."""
    columns = values_to_columns(values)
    return Queries.move_job(list(columns)), {**columns, "id": job_id, "current": current.value, "target": target.value}


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
        language=row["language"],
    )
    simple = MOVABLE - {"delivery", "notes", "delivered"}
    return Job(
        id=row["id"],
        request=request,
        state=JobState(row["status"]),
        created_at=float(row["created_at"]),
        charge_day=row["charge_day"],
        cost_usd=float(row["cost_usd"]),
        model=row["model"],
        guild_key=bool(row["guild_key"]),
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
