"""The store as the engine uses it: every behaviour once, as a transaction script over the shared SQL.

Admission and its charge, the fair order and places in line, claims and the cap on running
calls, fenced moves and the money they carry, leases and who holds what, inputs and their
cap, retention, the outbox of final notices: the same scripts run on SQLite and on
PostgreSQL (``bot.store.database``). Money is append-only rows of integer micro-dollars,
keyed by job and entry, and every total is a sum of them.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Collection, Generator, Mapping, Sequence
from typing import Any, TypeVar

from bot.core.attempts import Attempt, AttemptOutcome
from bot.core.job import Delivered, Job
from bot.core.quota import DayUsage, Limit, Quota
from bot.core.records import (
    AdmitOrder,
    Block,
    ClaimMiss,
    ClaimTerms,
    DayStats,
    Fence,
    HistoryEntry,
    JobStats,
    MoveOrder,
    MoveResult,
    Notice,
    NoticeDraft,
    RecentRun,
    StoredImage,
    StoredKey,
    StylePreset,
    Totals,
)
from bot.core.states import IN_LINE, JobState
from bot.errors import QueueFullError
from bot.store import queries as q
from bot.store.database import Database
from bot.store.rows import (
    column_values,
    job_from_row,
    job_params,
    notice_from_row,
)
from bot.store.script import (
    Op,
    execute,
    execute_finally,
    execute_many,
    fetch,
    fetch_one,
    fetch_one_alone,
    fetch_value,
    in_list,
    lock,
    notify,
)

T = TypeVar("T")
Script = Generator[Op, Any, T]
# How long the process that ended a job has to tell its member before any other process may.
NOTICE_LEASE = 30.0
# The most values one ``IN (…)`` list binds (SQLite's oldest builds allow 999 parameters).
IN_LIST_SIZE = 500
# The most moves written as one statement (each binds its id, run and values: well within those 999).
MOST_ALIKE = 100
# The most admissions written in one transaction (their ids bind one ``IN (…)`` list).
MOST_ADMITTED = 100


class Store:
    """Jobs, money, inputs, notices and servers' records, in one database."""

    def __init__(self, database: Database) -> None:
        self.database = database

    @property
    def dialect(self) -> str:
        return self.database.dialect

    async def _write(self, script: Script[T]) -> T:
        return await self.database.run(script, write=True)

    async def _read(self, script: Script[T]) -> T:
        return await self.database.run(script, write=False)

    def on_notice(self, handler: Callable[[str], None]) -> None:
        self.database.on_notice(handler)

    async def notify(self, payload: str) -> None:
        await self._write(notify(payload))

    async def ping(self) -> None:
        await self.database.ping()

    # Admission ------------------------------------------------------------------------------------

    async def admit(self, job: Job, quota: Quota, lease_until: float) -> tuple[Limit, DayUsage] | None:
        """Check ``quota`` and, if every total is within its bound, insert the job and its charge (held by
        ``job.holder`` until ``lease_until``), as one transaction; else the limit that refuses and the totals."""
        return (await self.admit_all([AdmitOrder(job, quota, lease_until)]))[0]

    async def admit_all(self, orders: Sequence[AdmitOrder]) -> list[tuple[Limit, DayUsage] | None]:
        """``admit`` for each order (at most ``MOST_ADMITTED``), in that order, as one transaction: each job
        is checked against its member's totals with the jobs admitted before it counted."""
        assert 0 < len(orders) <= MOST_ADMITTED
        return await self._write(_admit_all(orders))

    async def usage(self, user_id: int, guild_id: int | None, day: str, now: float) -> DayUsage:
        params = _usage_params(user_id, guild_id, day, now, whole_day=True, whole_guild=True)
        row = await self._read(fetch_one(q.USAGE, **params))
        assert row is not None
        return _usage_from(row)

    # Moves, claims, leases ------------------------------------------------------------------------

    async def move(
        self,
        job_id: str,
        current: JobState,
        target: JobState,
        values: Mapping[str, Any],
        *,
        refund: bool,
        holder: str,
        now: float,
        attempts: Sequence[Attempt] = (),
        fence: Fence | None = None,
        notice: NoticeDraft | None = None,
        claim: ClaimTerms | None = None,
        settle: int | None = None,
    ) -> MoveResult:
        """Move a job from ``current`` to ``target`` (only if it is still there, and with a ``fence`` only if
        the fence's holder still holds that run), with its changed ``values``, a refund row if ``refund``, a
        settlement row of ``settle`` micro-dollars (signed) if given, its API ``attempts``, the ``notice``
        its member is owed when it ends (held by ``holder`` first), and (``claim``) the next job for
        ``holder``: all or nothing."""
        order = MoveOrder(job_id, current, target, values, refund, holder, now, attempts, fence, notice, settle)
        (moved,) = await self._write(_moves([order], claim))
        return moved

    async def move_all(self, orders: Sequence[MoveOrder], claim: ClaimTerms | None = None) -> list[MoveResult]:
        """``move`` each order and then (``claim``) claim as many jobs for ``claim.holder`` as moves happened,
        all in one transaction: the calls that ended together pass their slots on in one claim. Each result
        as ``move`` gives it, in order; the jobs claimed go to the moves in the order they were taken."""
        return await self._write(_moves(orders, claim))

    async def claim(self, terms: ClaimTerms) -> Job | ClaimMiss:
        """Take the next job in fair order (marked running, in a new run, under ``terms.holder``'s lease),
        or say why none was taken."""
        return await self._write(_claim(terms))

    async def claim_up_to(self, terms: ClaimTerms, count: int) -> list[Job] | ClaimMiss:
        """``claim`` up to ``count`` jobs in one transaction (as many claims one after another would take
        them); the jobs in the order taken, or why none was taken."""
        return await self._write(_claim_up_to(terms, count))

    async def claimed_at(self, holder: str, stamps: Collection[float], now: float) -> list[Job]:
        """The jobs claims of ``holder`` stamped ``stamps`` took, if they are still its own, running under a
        live lease (a claim whose answer was lost may have been written after all)."""
        names, params = in_list("stamp", sorted(stamps))
        rows = await self._read(fetch(q.CLAIMED_AT.format(stamps=names), holder=holder, now=now, **params))
        return [job_from_row(row) for row in rows]

    async def renew(self, holder: str, job_ids: Collection[str], until: float) -> dict[str, int]:
        """Extend the leases of the jobs ``holder`` still holds; those jobs and their runs (one missing: lost).

        One statement per job, each a transaction of its own: a renewal that held some jobs' rows while it
        waited for another's, moved by a transaction that waits for a lock, could close a cycle with one
        that holds that lock and waits for a row the renewal holds (PostgreSQL fails one of them after a
        second). A statement alone holds nothing while it waits.
        """
        renewed: dict[str, int] = {}
        for job_id in sorted(job_ids):
            row = await self._write(fetch_one_alone(q.RENEW, id=job_id, holder=holder, until=until))
            if row is not None:
                renewed[job_id] = int(row["run"])
        return renewed

    async def holders(self) -> set[str]:
        """Every process that holds a job right now, as its jobs say."""
        return {str(row["claimed_by"]) for row in await self._read(fetch(q.HOLDERS))}

    async def abandoned(self, now: float, gone: Collection[str]) -> list[Job]:
        """Jobs no live process holds (a gone holder, a lapsed lease, no holder at all) and interrupted ones."""
        names, params = in_list("gone", sorted(gone))
        rows = await self._read(fetch(q.ABANDONED.format(gone=names), now=now, **params))
        return [job_from_row(row) for row in rows]

    async def record_attempts(self, job_id: str, run: int, attempts: Sequence[Attempt]) -> None:
        """Keep API attempts of a run that lost its job (it moves nothing: another run holds the job); they
        replace what the take-over recorded for that run."""
        await self._write(execute_many(q.UPSERT_ATTEMPT, [_attempt_params(job_id, run, a) for a in attempts]))

    # Reading jobs ---------------------------------------------------------------------------------

    async def get_job(self, job_id: str) -> Job | None:
        row = await self._read(fetch_one(q.GET_JOB, id=job_id))
        return job_from_row(row) if row else None

    async def attempts_of(self, job_id: str) -> list[Attempt]:
        """Every API attempt recorded for a job, of every run, in the order they were made."""
        rows = await self._read(fetch(q.ATTEMPTS_OF, job_id=job_id))
        return [
            Attempt(
                number=int(r["attempt"]),
                started_at=float(r["started_at"]),
                seconds=float(r["seconds"]),
                outcome=AttemptOutcome(r["outcome"]),
                may_be_billed=bool(r["may_be_billed"]),
                http_status=int(r["http_status"]) if r["http_status"] is not None else None,
                request_id=r["request_id"],
            )
            for r in rows
        ]

    async def unfinished_of(self, user_id: int) -> list[Job]:
        return [job_from_row(r) for r in await self._read(fetch(q.UNFINISHED_OF, user_id=user_id))]

    async def count(self, state: JobState) -> int:
        return int(await self._read(fetch_value(q.COUNT_STATE, state=state.value)) or 0)

    async def positions(self) -> list[tuple[Job, int]]:
        """Every waiting job with its place in line (1 = next)."""
        return [(job_from_row(row), int(row["place"])) for row in await self._read(fetch(q.POSITIONS))]

    async def places(self) -> list[tuple[str, int]]:
        """Every queued job's id and place in line (1 = next): ``positions`` of the queued, without the jobs."""
        return [(str(row["id"]), int(row["place"])) for row in await self._read(fetch(q.PLACES))]

    async def jobs(self, job_ids: Collection[str]) -> list[Job]:
        """The jobs of ``job_ids`` that exist, in no given order (read ``IN_LIST_SIZE`` at a time)."""
        found: list[Job] = []
        wanted = sorted(job_ids)
        for start in range(0, len(wanted), IN_LIST_SIZE):
            ids, params = in_list("id", wanted[start : start + IN_LIST_SIZE])
            found += [job_from_row(row) for row in await self._read(fetch(q.JOBS_IN.format(ids=ids), **params))]
        return found

    async def jobs_of_group(self, group_id: str) -> list[Job]:
        """A group's jobs (the runs of a request for variations), in their order."""
        return [job_from_row(row) for row in await self._read(fetch(q.JOBS_OF_GROUP, group_id=group_id))]

    async def notices_of_group(self, group_id: str) -> list[Notice]:
        """The final notices owed (or given) for a group's runs."""
        return [notice_from_row(row) for row in await self._read(fetch(q.NOTICES_OF_GROUP, group_id=group_id))]

    async def lock_card(self, group_id: str, holder: str, now: float, until: float) -> bool:
        """Take a group's card lock for ``holder`` until ``until``, if it is free (or its holder's time is up)."""
        row = await self._write(fetch_one(q.LOCK_CARD, group_id=group_id, holder=holder, now=now, until=until))
        return row is not None

    async def unlock_card(self, group_id: str, holder: str) -> None:
        await self._write(execute(q.UNLOCK_CARD, group_id=group_id, holder=holder))

    async def totals(self, day: str) -> Totals:
        row = await self._read(fetch_one(q.TOTALS, day=day))
        assert row is not None
        return Totals(
            queued=int(row["queued"]),
            running=int(row["running"]),
            operator_spend=int(row["operator_spend"]),
            server_spend=int(row["server_spend"]),
            oldest_queued_at=_float(row["oldest_queued_at"]),
            notices_pending=int(row["notices_pending"]),
            oldest_notice_at=_float(row["oldest_notice_at"]),
        )

    async def recent_runs(self, since: float, default_model: str) -> list[RecentRun]:
        rows = await self._read(fetch(q.RECENT_RUNS, since=since))
        return [
            RecentRun(r["model"] or default_model, int(r["input_count"]), r["size"], float(r["seconds"]),
                      float(r["finished_at"]))
            for r in rows
        ]  # fmt: skip

    async def set_destination(self, job_id: str, destination: Any) -> None:
        """Show an unfinished job somewhere else from now on (its status message moved); not a move."""
        await self._write(execute(q.SET_DESTINATION, id=job_id, **column_values({"destination": destination})))

    # Inputs and retention ---------------------------------------------------------------------------

    async def save_inputs(self, job_id: str, images: Sequence[StoredImage], cap_bytes: int) -> None:
        """Keep a job's inputs; refuse with ``QueueFullError`` past ``cap_bytes`` for every unfinished job's."""
        await self.database.run(_save_inputs(job_id, images, cap_bytes), write=True, heavy=True)

    async def load_inputs(self, job_id: str) -> list[StoredImage] | None:
        return (await self.load_inputs_of([job_id])).get(job_id)

    async def load_inputs_of(self, job_ids: Sequence[str]) -> dict[str, list[StoredImage]]:
        """The inputs of each of ``job_ids`` that has them, in prompt order (read ``IN_LIST_SIZE`` jobs at a
        time)."""
        wanted = list(dict.fromkeys(job_ids))
        found: dict[str, list[StoredImage]] = {}
        for start in range(0, len(wanted), IN_LIST_SIZE):
            ids, params = in_list("job", wanted[start : start + IN_LIST_SIZE])
            for r in await self._read(fetch(q.LOAD_INPUTS.format(ids=ids), **params)):
                image = StoredImage(bytes(r["data"]), str(r["mime"]), int(r["width"]), int(r["height"]))
                found.setdefault(str(r["job_id"]), []).append(image)
        return found

    async def inputs_exist(self, job_id: str) -> bool:
        return bool(await self._read(fetch_value(q.INPUTS_EXIST, job_id=job_id)))

    async def delete_inputs(self, job_id: str) -> None:
        await self._write(_delete_inputs(job_id))

    async def queued_input_bytes(self) -> int:
        return int(await self._read(fetch_value(q.QUEUED_INPUT_BYTES)) or 0)

    async def keep_inputs(self, job_id: str, ended_at: float, cap_bytes: int) -> bool:
        """Mark a finished job's inputs kept, dropping the oldest kept ones to stay within ``cap_bytes``;
        ``False`` if they are not there or alone exceed the cap (then they are deleted)."""
        return await self._write(_keep_inputs(job_id, ended_at, cap_bytes))

    async def inputs_kept(self, job_id: str, since: float) -> bool:
        """Whether a job's inputs are there: unfinished, or ended after ``since``."""
        return bool(await self._read(fetch_value(q.INPUTS_KEPT, job_id=job_id, since=since)))

    async def drop_kept_inputs(self, ended_before: float, cap_bytes: int) -> int:
        """Delete the kept inputs that outlived the window, then the oldest past the cap; how many jobs'."""
        return await self._write(_drop_kept(ended_before, cap_bytes))

    async def drop_orphan_inputs(self, ended_before: float) -> int:
        """Delete the inputs of jobs that ended before ``ended_before`` but were never marked kept (their process
        died as they ended, or the marking failed)."""
        return await self._write(_drop_orphans(ended_before))

    # The outbox -------------------------------------------------------------------------------------

    async def claim_notices(
        self, holder: str, now: float, gone: Collection[str], limit: int = 10
    ) -> list[tuple[Notice, Job]]:
        """Take up to ``limit`` notices that are due and that no live process is telling (with their jobs)."""
        return await self._write(_claim_notices(holder, now, gone, limit))

    async def holders_of_notices(self) -> set[str]:
        """The processes telling a notice right now, as the notices say."""
        return {str(row["claimed_by"]) for row in await self._read(fetch(q.NOTICE_HOLDERS))}

    async def take_own_notice(self, job_id: str, holder: str, now: float) -> tuple[Notice, Job] | None:
        """The notice of a job ``holder`` just ended, if it is still ``holder``'s to tell."""
        return await self._write(_take_own_notice(job_id, holder, now))

    async def notice_done(self, job_id: str, holder: str, how: str, at: float) -> bool:
        """The member was told (``how``), or the notice was handed to the fallback path."""
        return bool(await self._write(execute(q.NOTICE_DONE, job_id=job_id, holder=holder, how=how, at=at)))

    async def notice_later(self, job_id: str, holder: str, due_at: float) -> None:
        """Try again at ``due_at`` (any process may)."""
        await self._write(execute(q.NOTICE_LATER, job_id=job_id, holder=holder, due_at=due_at))

    async def next_use_users(self) -> set[int]:
        """Members owed a word at their next use of the bot."""
        return {int(row["user_id"]) for row in await self._read(fetch(q.NEXT_USE_USERS))}

    async def next_use_notices(self, user_id: int) -> list[tuple[Notice, Job]]:
        """What a member is owed at their next use, oldest first, with the jobs."""
        return await self._read(_next_use(user_id))

    async def mark_shown(self, job_ids: Sequence[str], at: float) -> None:
        await self._write(execute_many(q.MARK_SHOWN, [{"job_id": job_id, "at": at} for job_id in job_ids]))

    # Servers' settings, blocks, keys and presets (every process caches them: a change is announced) ---

    async def all_settings(self) -> dict[int, dict[str, Any]]:
        return {int(r["guild_id"]): json.loads(r["settings"]) for r in await self._read(fetch(q.ALL_SETTINGS))}

    async def guild_settings(self, guild_id: int) -> dict[str, Any]:
        raw = await self._read(fetch_value(q.GUILD_SETTINGS, guild_id=guild_id))
        return dict(json.loads(raw)) if raw else {}

    async def save_settings(self, guild_id: int, settings: Mapping[str, Any], by: int) -> None:
        params = {"guild_id": guild_id, "settings": json.dumps(settings), "updated_at": time.time(), "updated_by": by}
        await self._write(_write_and_notify(q.SAVE_SETTINGS, params, f"settings:{guild_id}"))

    async def all_blocks(self) -> list[Block]:
        rows = await self._read(fetch(q.ALL_BLOCKS))
        return [
            Block(int(r["guild_id"]), int(r["user_id"]), r["reason"], int(r["blocked_by"]), float(r["blocked_at"]))
            for r in rows
        ]

    async def save_block(self, block: Block) -> None:
        params = {
            "guild_id": block.guild_id,
            "user_id": block.user_id,
            "reason": block.reason,
            "blocked_by": block.blocked_by,
            "blocked_at": block.blocked_at,
        }
        await self._write(_write_and_notify(q.SAVE_BLOCK, params, f"blocks:{block.guild_id}"))

    async def delete_block(self, guild_id: int, user_id: int) -> bool:
        params = {"guild_id": guild_id, "user_id": user_id}
        return bool(await self._write(_write_and_notify(q.DELETE_BLOCK, params, f"blocks:{guild_id}")))

    async def all_guild_keys(self) -> list[StoredKey]:
        rows = await self._read(fetch(q.ALL_KEYS))
        return [StoredKey(int(r["guild_id"]), str(r["encrypted"]), int(r["set_by"]), float(r["set_at"])) for r in rows]

    async def save_guild_key(self, key: StoredKey) -> None:
        params = {"guild_id": key.guild_id, "encrypted": key.encrypted, "set_by": key.set_by, "set_at": key.set_at}
        await self._write(_write_and_notify(q.SAVE_KEY, params, f"keys:{key.guild_id}"))

    async def delete_guild_key(self, guild_id: int) -> bool:
        return bool(await self._write(_write_and_notify(q.DELETE_KEY, {"guild_id": guild_id}, f"keys:{guild_id}")))

    async def all_presets(self) -> list[StylePreset]:
        rows = await self._read(fetch(q.ALL_PRESETS))
        return [
            StylePreset(int(r["guild_id"]), str(r["name"]), str(r["text"]), int(r["created_by"]),
                        float(r["created_at"]))
            for r in rows
        ]  # fmt: skip

    async def save_preset(self, preset: StylePreset) -> None:
        params = {
            "guild_id": preset.guild_id,
            "name": preset.name,
            "text": preset.text,
            "created_by": preset.created_by,
            "created_at": preset.created_at,
        }
        await self._write(_write_and_notify(q.SAVE_PRESET, params, f"presets:{preset.guild_id}"))

    async def delete_preset(self, guild_id: int, name: str) -> None:
        params = {"guild_id": guild_id, "name": name}
        await self._write(_write_and_notify(q.DELETE_PRESET, params, f"presets:{guild_id}"))

    # Members' history and servers' statistics -------------------------------------------------------

    async def history(self, user_id: int, guild_id: int | None, offset: int, limit: int) -> list[HistoryEntry]:
        params = {"user_id": user_id, "guild_id": guild_id, "offset": offset, "limit": limit}
        rows = await self._read(fetch(q.history_sql(guild_id), **params))
        return [HistoryEntry(job_from_row(r), r["deleted_at"] is not None, int(r["settled"])) for r in rows]

    async def record_result_deleted(self, job_id: str, by: int, at: float) -> None:
        await self._write(execute(q.RECORD_DELETED, job_id=job_id, by=by, at=at))

    async def stats(self, guild_id: int, today: str, week_days: Sequence[str]) -> JobStats:
        params: dict[str, Any] = {"guild_id": guild_id, "today": today, **{f"d{i}": d for i, d in enumerate(week_days)}}
        results = await self._read(_fetch_all(q.stats_sql(len(week_days)), params))

        def one(name: str) -> int:
            return int(results[name][0]["n"] or 0)

        return JobStats(
            jobs_today=one("jobs_today"),
            jobs_week=one("jobs_week"),
            succeeded_week=one("succeeded_week"),
            failed_week=one("failed_week"),
            cancelled_week=one("cancelled_week"),
            durations_week=sorted(float(r["n"]) for r in results["durations_week"]),
            spend_today=one("spend_today"),
            spend_week=one("spend_week"),
            busiest=[(int(r["user_id"]), int(r["n"])) for r in results["busiest"]],
            billed_without_result_week=one("billed_without_result_week"),
            own_key_spend_week=one("own_key_spend_week"),
            models_week=[(str(r["m"]), int(r["n"])) for r in results["models_week"]],
        )

    async def daily_stats(self, guild_id: int, days: Sequence[str]) -> list[DayStats]:
        """One entry per day of ``days``, in that order (days without jobs are zeros)."""
        params: dict[str, Any] = {"guild_id": guild_id, **{f"d{i}": d for i, d in enumerate(days)}}
        counts_sql, spend_sql, durations_sql = q.daily_sql(len(days))
        results = await self._read(
            _fetch_all({"counts": counts_sql, "spend": spend_sql, "durations": durations_sql}, params)
        )
        by_day: dict[str, dict[str, int]] = {day: {} for day in days}
        for row in results["counts"]:
            by_day[str(row["charge_day"])][str(row["status"])] = int(row["n"])
        spent = {str(row["day"]): int(row["total"]) for row in results["spend"]}
        timed: dict[str, list[float]] = {day: [] for day in days}
        for row in results["durations"]:
            if row["seconds"] is not None:
                timed[str(row["charge_day"])].append(float(row["seconds"]))
        return [
            DayStats(
                day=day,
                succeeded=by_day[day].get(JobState.SUCCEEDED, 0),
                failed=by_day[day].get(JobState.FAILED, 0),
                cancelled=by_day[day].get(JobState.CANCELLED, 0),
                spend=spent.get(day, 0),
                durations=tuple(sorted(timed[day])),
            )
            for day in days
        ]


# The scripts ----------------------------------------------------------------------------------------


def _usage_params(
    user_id: int,
    guild_id: int | None,
    day: str,
    now: float,
    *,
    whole_day: bool,
    whole_guild: bool,
    group_id: str | None = None,
) -> dict[str, Any]:
    return {
        "day": day,
        "user_id": user_id,
        "guild_id": guild_id,
        "since": now - 86400,
        "whole_day": int(whole_day),
        "whole_guild": int(whole_guild),
        "group_id": group_id,
    }


def _usage_from(row: Mapping[str, Any]) -> DayUsage:
    return DayUsage(
        user_today=int(row["user_today"]),
        guild_today=int(row["guild_today"]),
        spend_today=int(row["spend_today"]),
        user_active=int(row["user_active"]),
        user_last_accepted=_float(row["last_accepted"]),
    )


def _admission_locks(job: Job, quota: Quota) -> list[str]:
    # The day's spend is locked only when a budget applies and the server's totals only when a server limit
    # does, so a busy server's members are admitted side by side.
    keys = []
    if quota.spend_today is not None:
        keys.append("day")
    if job.guild_id is not None and quota.guild_today is not None:
        keys.append(f"guild:{job.guild_id}")
    keys.append(f"user:{job.user_id}")
    return keys


def _lock_order(key: str) -> tuple[int, str]:
    # Always the day, then servers, then members (each kind by name), so admissions never deadlock on each other.
    return (0 if key == "day" else 1 if key.startswith("guild:") else 2), key


def _admission_checks(order: AdmitOrder) -> dict[str, Any]:
    """The verdict's parameters for ``order``: its member's totals to read and the quota's bounds."""
    job, quota = order.job, order.quota
    usage = _usage_params(
        job.user_id, job.guild_id, job.charge_day, job.created_at, whole_day=quota.spend_today is not None,
        whole_guild=quota.guild_today is not None, group_id=job.request.group_id,
    )  # fmt: skip
    return {
        **usage,
        "b_spend": quota.spend_today,
        "b_guild": quota.guild_today,
        "b_active": quota.user_active,
        "b_user": quota.user_today,
        "b_accepted": quota.user_last_accepted,
    }


def _admit_all(orders: Sequence[AdmitOrder]) -> Script[list[tuple[Limit, DayUsage] | None]]:
    """Admissions in one transaction, in order: each job inserted, with its charge, if its member's totals
    (those admitted before it included) allow it; for each, ``None`` or why it was refused.

    The charge is written by the database with the job (migration 14), so that each insert of a group sent
    at once finds the charges of those before it."""
    yield from lock(*sorted({key for o in orders for key in _admission_locks(o.job, o.quota)}, key=_lock_order))
    checks = [_admission_checks(order) for order in orders]
    inserts = [
        {**check, **{f"j_{name}": value for name, value in job_params(order.job, order.lease_until).items()}}
        for order, check in zip(orders, checks, strict=True)
    ]
    ids = [order.job.id for order in orders]
    if len(orders) == 1:
        admitted = set(ids) if (yield from execute(q.ADMIT_JOB, **inserts[0])) else set()
    else:
        # One round trip for them all (PostgreSQL pipelines them), then which were inserted.
        yield from execute_many(q.ADMIT_JOB, inserts)
        names, params = in_list("id", ids)
        admitted = {row["id"] for row in (yield from fetch(q.IDS_IN.format(ids=names), **params))}
    outcomes: list[tuple[Limit, DayUsage] | None] = []
    for job_id, check, insert in zip(ids, checks, inserts, strict=True):
        row = None
        if job_id not in admitted:
            # Refused (the locks still held): which limit, and the totals. A worker may have ended one of the
            # member's jobs since (it takes none of these locks): then the job is admitted after all.
            row = yield from fetch_one(q.VERDICT, **check)
            assert row is not None
            if row["verdict"] is None and (yield from execute(q.ADMIT_JOB, **insert)):
                admitted.add(job_id)
        if job_id in admitted:
            outcomes.append(None)
        else:
            assert row is not None and row["verdict"] is not None, "a refusal that no limit explains"
            outcomes.append((Limit(row["verdict"]), _usage_from(row)))
    return outcomes


def _moves(orders: Sequence[MoveOrder], claim: ClaimTerms | None) -> Script[list[MoveResult]]:
    """The moves, then (``claim``) one claim of as many jobs as moves happened; one transaction."""
    tell: list[str] = []
    alone = len(orders) == 1 and claim is None
    stored = []
    attempts: list[dict[str, Any]] = []
    # The claims' lock before any job's row, as every transaction takes its locks: one that held a job's
    # row while it waited for the lock could wait on one that holds the lock and waits for that row (a take-
    # over's move of a stalled process's job), and PostgreSQL ends that cycle after a second by failing one.
    locked = claim is not None or any(_changes_head(order) for order in orders)
    if locked:
        yield from lock("claim")
    if _alike(orders):
        stored = yield from _move_alike(orders, attempts)
    else:
        for order in orders:
            stored.append((yield from _move(order, alone, tell, attempts)))
    done = [result for result in stored if result.job is not None]
    taken: list[Job] | ClaimMiss = []
    if claim is not None and done:
        taken = yield from _claim_up_to(claim, len(done), locked=True)
    # Every move's API attempts, with the commit: nothing reads them before, and the claims' lock is held
    # one round trip less.
    yield from execute_finally(q.INSERT_ATTEMPT, attempts)
    claimed = taken if isinstance(taken, list) else []
    freed = sum(
        1
        for order, result in zip(orders, stored, strict=True)
        if result.job is not None and order.current is JobState.RUNNING
    )
    if freed > len(claimed):
        tell.append("slot")  # a call's end frees a slot for any worker (unless it went to the next job here)
    yield from notify(*dict.fromkeys(tell))
    if claim is None:
        return stored
    # The jobs taken go to the moves in order; a move past them learns why there was none (fewer taken than
    # asked: fewer were ready).
    given = iter(claimed)
    miss = taken if isinstance(taken, ClaimMiss) else ClaimMiss.NO_JOB
    return [
        result if result.job is None else MoveResult(result.job, result.refunded, next(given, None) or miss)
        for result in stored
    ]  # fmt: skip


def _alike(orders: Sequence[MoveOrder]) -> bool:
    """Whether ``orders`` can be one statement: several jobs of one holder, fenced, moved between the same
    states with nothing but the job's row to write (no money, notice, head or tidings), each setting the
    same columns (from ``EACH_TYPES``): the moves of calls that ended together."""
    if not 1 < len(orders) <= MOST_ALIKE or len({order.job_id for order in orders}) < len(orders):
        return False
    first = orders[0]
    names = set(first.values)
    return names <= q.EACH_TYPES.keys() and all(
        order.current is first.current and order.target is first.target and not order.target.terminal
        and order.fence is not None and first.fence is not None and order.fence.holder == first.fence.holder
        and order.fence.gone is None
        and not order.refund and order.settle is None and order.notice is None and not _changes_head(order)
        and set(order.values) == names
        for order in orders
    )  # fmt: skip


def _move_alike(orders: Sequence[MoveOrder], attempts: list[dict[str, Any]]) -> Script[list[MoveResult]]:
    """The moves of ``_alike`` orders, in one statement: each job moves if its own fence still holds."""
    first = orders[0]
    assert first.fence is not None
    names = list(first.values)
    params: dict[str, Any] = {"current": first.current.value, "target": first.target.value}
    params["fence_holder"] = first.fence.holder
    for i, order in enumerate(orders):
        assert order.fence is not None
        params.update({f"id{i}": order.job_id, f"fence_run{i}": order.fence.run})
        params.update({f"{name}{i}": order.values[name] for name in names})
    rows = yield from fetch(q.move_sql(names, fenced=True, new_run=False, each=len(orders)), **params)
    moved = {str(row["id"]): job_from_row(row) for row in rows}
    stored = []
    for order in orders:
        job = moved.get(order.job_id)
        if job is not None:
            attempts.extend(_attempt_params(order.job_id, job.run, a) for a in order.attempts)
        stored.append(MoveResult(job))
    return stored


def _changes_head(order: MoveOrder) -> bool:
    """Whether the move may change its member's ready head (a job queued, or leaving the line: an interrupted
    one that fails holds its member's later jobs back until then)."""
    current, target = order.current, order.target
    return target is JobState.QUEUED or current is JobState.QUEUED or (current in IN_LINE and target.terminal)


def _move(order: MoveOrder, alone: bool, tell: list[str], attempts: list[dict[str, Any]]) -> Script[MoveResult]:
    """One move's statements; what it has to tell goes on ``tell`` (told when the transaction ends), its API
    attempts' rows on ``attempts`` (written after it). ``alone``: it is the transaction's only work, so a plain
    move may run as a single statement."""
    current, target, job_id, now = order.current, order.target, order.job_id, order.now
    columns = column_values(order.values)
    fence = order.fence
    params: dict[str, Any] = {**columns, "id": job_id, "current": current.value, "target": target.value}
    gone = None
    if fence is not None:
        params.update(fence_holder=fence.holder, fence_run=fence.run)
        if fence.gone is not None:
            gone, gone_params = in_list("fence_gone", sorted(fence.gone))
            params.update(gone_params, fence_now=now)
    sql = q.move_sql(list(columns), fenced=fence is not None, new_run=False, gone=gone)
    heads = _changes_head(order)
    # A plain move (no money, attempts, notice, head, claim or tidings below) is its UPDATE alone: one round trip.
    plain = alone and not (
        order.refund or order.settle is not None or order.attempts or target.terminal or heads
        or current is JobState.RUNNING
    )  # fmt: skip
    # A move that may change its member's ready head sets their row right under the claims' lock (taken
    # by ``_moves``), which orders it with every claim: none chooses from it half-written, and no two
    # writers lose an update.
    row = yield from (fetch_one_alone if plain else fetch_one)(sql, **params)
    if row is None:
        return MoveResult(None)
    moved = job_from_row(row)
    refunded = False
    if order.refund:
        refunded = (yield from execute(q.INSERT_MONEY, id=job_id, entry=q.REFUND, at=now)) == 1
    if order.settle is not None:
        yield from execute(q.INSERT_SETTLEMENT, id=job_id, entry=q.SETTLE, amount=int(order.settle), at=now)
    attempts.extend(_attempt_params(job_id, moved.run, a) for a in order.attempts)
    if target.terminal:
        draft = order.notice or NoticeDraft()
        done = draft.done_how is not None
        # The mover tells a notice due now; one due after a grace (a reply on its way) is anyone's when due.
        held = not done and draft.delay == 0
        yield from execute(
            q.INSERT_NOTICE,
            job_id=job_id,
            outcome=target.value,
            payload=json.dumps(dict(draft.payload)),
            created_at=now,
            due_at=now + draft.delay,
            claimed_by=order.holder if held else None,
            lease_until=now + NOTICE_LEASE if held else None,
            done_at=now if done else None,
            how=draft.done_how,
        )
        if moved.delivered is Delivered.UNDELIVERED:
            tell.append(f"notices:{moved.user_id}")  # every gateway tells the member at their next use
    if heads:
        yield from execute(q.REFRESH_HEAD, user_id=moved.user_id)
    if target is JobState.QUEUED or (current.waiting and target.terminal):
        # A job is ready, or a member's first waiting job left the line: their next one may start now.
        tell.append("queued")
    if target is JobState.CANCELLED:
        tell.append(f"cancel:{job_id}")
    return MoveResult(moved, refunded)


def _claim(terms: ClaimTerms) -> Script[Job | ClaimMiss]:
    taken = yield from _claim_up_to(terms, 1)
    return taken[0] if isinstance(taken, list) else taken


def _claim_up_to(terms: ClaimTerms, count: int, *, locked: bool = False) -> Script[list[Job] | ClaimMiss]:
    # Claims take turns only to keep the cap exact; a worker with nothing to claim learns why. (``locked``:
    # the transaction holds the claims' lock already.)
    if not locked:
        yield from lock("claim")
    columns = column_values(
        {"started_at": terms.now, "holder": terms.holder, "lease_until": terms.now + terms.lease_seconds}
    )
    claimed: list[Job] = []
    miss = ClaimMiss.NO_JOB
    while len(claimed) < count:
        # One reading of the fair order for every slot still to fill: the first members in it are what as
        # many claims in a row would take, as long as each has a ready head (fewer: read again after).
        rows = yield from fetch(q.CLAIM_HEADS, now=terms.now, limit=count - len(claimed))
        free = terms.max_running - int(rows[0]["running"])
        if free <= 0:
            miss = ClaimMiss.NO_SLOT
            break
        heads = [row for row in rows if row["head"] is not None]
        if not heads:
            break
        stale = [row for row in heads if row["earlier"] or row["head_status"] != JobState.QUEUED.value]
        if stale:
            # A member's row is stale (see ``CLAIM_HEADS``): set it right and read again. Each time sets
            # rows to what the jobs say, so this ends.
            yield from execute_many(q.REFRESH_HEAD, [{"user_id": row["user_id"]} for row in stale])
            continue
        chosen = [str(row["head"]) for row in heads[:free]]
        ids, params = in_list("id", chosen)
        moved = yield from fetch(
            q.move_sql(list(columns), fenced=False, new_run=True, ids=ids),
            current=JobState.QUEUED.value, target=JobState.RUNNING.value, **params, **columns,
        )  # fmt: skip
        by_id = {str(row["id"]): job_from_row(row) for row in moved}
        # Under the claims' lock every chosen head is still queued: each is moved.
        jobs = [by_id[job_id] for job_id in chosen if job_id in by_id]
        if not jobs:  # pragma: no cover - the claims' lock and the reading make this impossible
            break
        # Their members' turns, one after another in the order served, and their next heads: with the commit
        # when no reading of the order follows (as many taken as asked), else now, for that reading.
        turns = [{"user_id": job.user_id} for job in jobs]
        claimed.extend(jobs)
        if len(claimed) >= count:
            yield from execute_finally(q.TAKE_TURN, turns)
        else:
            yield from execute_many(q.TAKE_TURN, turns)
    if not claimed:
        return miss
    yield from notify("claimed")
    return claimed


def _save_inputs(job_id: str, images: Sequence[StoredImage], cap_bytes: int) -> Script[None]:
    # The rows first, then the total under the lock: the writes of megabytes go side by side,
    # and only the check takes turns (others' uncommitted rows do not count).
    yield from _delete_inputs(job_id)
    yield from execute_many(
        q.INSERT_INPUT,
        [
            {"job_id": job_id, "number": n, "mime": i.mime, "width": i.width, "height": i.height, "data": i.data}
            for n, i in enumerate(images, start=1)
        ],
    )
    yield from execute(q.INSERT_INPUT_SET, job_id=job_id, bytes=sum(len(i.data) for i in images))
    yield from lock("inputs")
    if int((yield from fetch_value(q.QUEUED_INPUT_BYTES)) or 0) > cap_bytes:
        raise QueueFullError()  # the transaction is rolled back: nothing of this job is kept


def _delete_inputs(job_id: str) -> Script[None]:
    yield from execute(q.DELETE_INPUTS, job_id=job_id)
    yield from execute(q.DELETE_INPUT_SET, job_id=job_id)


def _drop_orphans(ended_before: float) -> Script[int]:
    orphans = [str(r["job_id"]) for r in (yield from fetch(q.ORPHAN_INPUT_SETS, before=ended_before))]
    for job_id in orphans:
        yield from _delete_inputs(job_id)
    return len(orphans)


def _keep_inputs(job_id: str, ended_at: float, cap_bytes: int) -> Script[bool]:
    yield from lock("kept")
    size = yield from fetch_value(q.INPUTS_SIZE, job_id=job_id)
    if size is None or int(size) > cap_bytes:
        yield from _delete_inputs(job_id)
        return False
    yield from _drop_oldest(cap_bytes - int(size))
    yield from execute(q.MARK_KEPT, job_id=job_id, ended_at=ended_at)
    return True


def _drop_kept(ended_before: float, cap_bytes: int) -> Script[int]:
    yield from lock("kept")
    expired = [str(r["job_id"]) for r in (yield from fetch(q.EXPIRED_KEPT, before=ended_before))]
    for job_id in expired:
        yield from _delete_inputs(job_id)
    return len(expired) + (yield from _drop_oldest(cap_bytes))


def _drop_oldest(most: int) -> Script[int]:
    """Delete the oldest kept inputs until at most ``most`` bytes are kept; how many jobs' went."""
    kept = yield from fetch(q.KEPT_BY_AGE)
    total = sum(int(r["size"]) for r in kept)
    dropped = 0
    for row in kept:
        if total <= most:
            break
        yield from _delete_inputs(str(row["job_id"]))
        total -= int(row["size"])
        dropped += 1
    return dropped


def _claim_notices(holder: str, now: float, gone: Collection[str], limit: int) -> Script[list[tuple[Notice, Job]]]:
    yield from lock("notices")
    names, params = in_list("gone", sorted(gone))
    due = yield from fetch(q.DUE_NOTICES.format(gone=names), now=now, limit=limit, **params)
    taken = []
    for row in due:
        notice = yield from fetch_one(q.CLAIM_NOTICE, job_id=row["job_id"], holder=holder, until=now + NOTICE_LEASE)
        job = yield from fetch_one(q.GET_JOB, id=row["job_id"])
        if notice is not None and job is not None:
            taken.append((notice_from_row(notice), job_from_row(job)))
    return taken


def _take_own_notice(job_id: str, holder: str, now: float) -> Script[tuple[Notice, Job] | None]:
    notice = yield from fetch_one(q.TAKE_OWN_NOTICE, job_id=job_id, holder=holder, until=now + NOTICE_LEASE)
    if notice is None:
        return None
    job = yield from fetch_one(q.GET_JOB, id=job_id)
    return (notice_from_row(notice), job_from_row(job)) if job is not None else None


def _next_use(user_id: int) -> Script[list[tuple[Notice, Job]]]:
    owed = []
    for row in (yield from fetch(q.NEXT_USE_NOTICES, user_id=user_id)):
        job = yield from fetch_one(q.GET_JOB, id=row["job_id"])
        if job is not None:
            owed.append((notice_from_row(row), job_from_row(job)))
    return owed


def _write_and_notify(sql: str, params: Mapping[str, Any], notice: str) -> Script[int]:
    changed = yield from execute(sql, **params)
    yield from notify(notice)
    return changed


def _fetch_all(queries: Mapping[str, str], params: Mapping[str, Any]) -> Script[dict[str, list[Any]]]:
    results = {}
    for name, sql in queries.items():
        results[name] = yield from fetch(sql, **params)
    return results


def _attempt_params(job_id: str, run: int, attempt: Attempt) -> dict[str, Any]:
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


def _float(value: Any) -> float | None:
    return float(value) if value is not None else None
