"""The two databases behave the same: one script of store calls, run on SQLite and on PostgreSQL; money as
exact integer sums; migrations applied once; and a database the old code left at version 6 brought to 7.

The script exercises every kind of call the engine makes (admission, fenced and conditional moves with
refunds, attempts and notices, claims, reads, totals, usage, statistics, settings, blocks, keys, presets,
history); the test checks the expected results on each database, and that both observed exactly the same.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import sqlite3
import threading
from collections.abc import Generator
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from bot.core.attempts import Attempt, AttemptOutcome
from bot.core.job import Delivered, Destination, InputInfo, Job, JobRequest, Origin, utc_day
from bot.core.overrides import GuildOverrides
from bot.core.quota import Quota
from bot.core.records import (
    Block,
    ClaimMiss,
    ClaimTerms,
    Fence,
    MoveOrder,
    NoticeDraft,
    RecentRun,
    StoredImage,
    StoredKey,
    StylePreset,
)
from bot.core.states import JobState
from bot.errors import ConfigError
from bot.servers.settings import GuildSettings
from bot.store import sqlite as sqlite_module
from bot.store.database import migrate, migrations, open_and_migrate
from bot.store.postgres import FREE_LOOKS_GAP, GONE_AFTER, RECONNECT_GRACE, PostgresDatabase, lock_key
from bot.store.script import Fetch, Op, Row, execute, execute_finally, fetch_one_alone, fetch_value, lock
from bot.store.sqlite import SQLiteDatabase, check_version
from bot.store.store import Store
from bot.store.store import _moves as moves_script
from tests.postgres import fresh_database
from tests.stores import DATABASES, LEASE, NOON, PRICE, add, admit, fresh, make_job, open_store, query, step_to, value

DAY = utc_day(NOON)
DESTINATION = Destination(upload_limit=8_000_000, data={"type": "message", "channel_id": 100})
LATEST = len(migrations("sqlite"))


def job(job_id: str, user_id: int = 1, guild_id: int | None = 10, at: float = NOON) -> Job:
    request = JobRequest(
        "edit", user_id, guild_id, 100, f"prompt of {job_id}", "2048x1360", 2, Origin.REFINE, "parent1",
        private=True, style="noir", style_text=", noir", language="zh_CN",
    )  # fmt: skip
    return Job(
        id=job_id,
        request=request,
        state=JobState.ACCEPTED,
        created_at=at,
        charge_day=utc_day(at),
        cost=PRICE,
        model="gpt-image-2-vip",
        destination=DESTINATION,
        holder="gw",
    )


async def exercise(store: Store) -> dict[str, Any]:
    """The script; returns everything it observed."""
    seen: dict[str, Any] = {}
    for item in (
        job("a1"),
        job("a2", at=NOON + 1),
        job("b1", user_id=2, at=NOON + 2),
        job("d1", guild_id=None, at=NOON + 3),
    ):
        seen[f"admit {item.id}"] = await store.admit(item, Quota(item.created_at), item.created_at + LEASE)
    seen["fresh"] = await store.get_job("a1")
    # Conditional moves: only from the state the store holds (and, fenced, only by the holder of the run).
    notes = {"notes": ("image2 was re-encoded",)}
    seen["to_preparing"] = await store.move(
        "a1", JobState.ACCEPTED, JobState.PREPARING, notes, refund=False, holder="gw", now=NOON, fence=Fence("gw", 0)
    )
    seen["stale_move"] = await store.move("a1", JobState.ACCEPTED, JobState.QUEUED, {}, refund=False, holder="gw",
                                          now=NOON)  # fmt: skip
    await store.move("a1", JobState.PREPARING, JobState.QUEUED, {"queued_at": NOON + 4}, refund=False, holder="gw",
                     now=NOON + 4)  # fmt: skip
    seen["claim_a1"] = await store.claim(ClaimTerms("w", NOON + 5, LEASE, 4))
    timed_out = Attempt(1, NOON + 5, 20.0, AttemptOutcome.TIMEOUT, True, None, None)
    seen["failed"] = await store.move(
        "a1", JobState.RUNNING, JobState.FAILED, {"finished_at": NOON + 30, "error": "timeout"}, refund=True,
        holder="w", now=NOON + 30, attempts=[timed_out], fence=Fence("w", 1), notice=NoticeDraft({"text": "late"}),
    )  # fmt: skip
    # The store takes any move from the state it holds (the lifecycle's table guards the rest),
    # but a second refund row for one job is refused by its key, whatever asks for it.
    seen["refund_again"] = await store.move("a1", JobState.FAILED, JobState.FAILED, {}, refund=True, holder="w",
                                            now=NOON + 31)  # fmt: skip
    await store.move("a2", JobState.ACCEPTED, JobState.CANCELLED, {"finished_at": NOON + 3}, refund=True,
                     holder="gw", now=NOON + 3, notice=NoticeDraft({"by": 1}, delay=10.0))  # fmt: skip
    b1 = await step_to(store, job("b1", user_id=2, at=NOON + 2), JobState.PREPARING)
    await store.save_inputs("b1", [StoredImage(b"png-1", "image/png", 4, 3), StoredImage(b"png-22", "image/png", 5, 6)],
                            cap_bytes=100)  # fmt: skip
    seen["inputs"] = await store.load_inputs("b1")
    sent = (InputInfo(4, 3, 5, "image/png"), InputInfo(5, 6, 6, "image/png"))
    await step_to(store, b1, JobState.QUEUED, queued_at=NOON + 5, inputs=sent)
    seen["positions"] = await store.positions()
    seen["claim_b1"] = await store.claim(ClaimTerms("w", NOON + 6, LEASE, 4))
    answered = Attempt(1, NOON + 6, 2.5, AttemptOutcome.SUCCEEDED, True, 200, "req-1")
    await store.move("b1", JobState.RUNNING, JobState.DELIVERING, {"api_seconds": 2.5}, refund=False, holder="w",
                     now=NOON + 9, attempts=[answered], fence=Fence("w", 1))  # fmt: skip
    await store.move(
        "b1", JobState.DELIVERING, JobState.SUCCEEDED,
        {"finished_at": NOON + 12, "output_width": 2048, "output_height": 1360, "output_bytes": 3_000_000,
         "result_channel_id": 100, "result_message_id": 555, "total_tokens": 1283, "delivered": Delivered.POSTED},
        refund=False, holder="w", now=NOON + 12, fence=Fence("w", 1), notice=NoticeDraft(done_how="posted"),
    )  # fmt: skip
    seen["kept"] = await store.keep_inputs("b1", NOON + 12, cap_bytes=100)
    seen["done"] = await store.get_job("b1")
    seen["attempts"] = await store.attempts_of("b1")
    seen["missing"] = await store.get_job("nope")
    seen["unfinished"] = [j.id for j in await store.unfinished_of(1)]
    seen["running"] = (await store.count(JobState.RUNNING), await store.count(JobState.SUCCEEDED))
    seen["usage"] = [await store.usage(user, guild, DAY, NOON + 60) for user, guild in ((1, 10), (2, 10), (1, None))]
    seen["totals"] = await store.totals(DAY)
    seen["runs"] = await store.recent_runs(NOON - 60, "default-model")
    seen["stats"] = await store.stats(10, DAY, [DAY, "2026-11-24"])
    seen["days"] = await store.daily_stats(10, [DAY, "2026-11-24"])
    seen["notices"] = await query(store, "SELECT job_id, outcome, payload, claimed_by, due_at, how FROM notices "
                                         "ORDER BY job_id")  # fmt: skip
    settings = GuildSettings(store)
    await settings.save(10, GuildOverrides(user_daily_limit=None, allowed_role_ids=frozenset({5})), 7)
    await settings.save(11, GuildOverrides(user_cooldown_seconds=30.0), 7)
    reread = GuildSettings(store)
    await reread.load()
    seen["overrides"] = await reread.overrides(10)
    seen["no_overrides"] = await reread.overrides(12)
    seen["all_settings"] = await store.all_settings()
    await store.ping()
    await store.save_block(Block(10, 2, "spam", 7, NOON))
    await store.save_block(Block(10, 2, "spam again", 7, NOON + 1))
    seen["blocks"] = await store.all_blocks()
    seen["unblocked"] = (await store.delete_block(10, 2), await store.delete_block(10, 2))
    await store.save_guild_key(StoredKey(10, "gAAAA-encrypted", 7, NOON))
    seen["keys"] = await store.all_guild_keys()
    seen["key_cleared"] = (await store.delete_guild_key(10), await store.delete_guild_key(10))
    await store.save_preset(StylePreset(10, "noir", "in black and white", 7, NOON))
    await store.save_preset(StylePreset(10, "noir", "as film noir", 8, NOON + 1))
    await store.save_preset(StylePreset(10, "dusk", "at dusk", 7, NOON))
    await store.delete_preset(10, "dusk")
    seen["presets"] = await store.all_presets()
    # A status message that moved: an unfinished job shows elsewhere from now on, a finished one stays.
    moved = Destination(upload_limit=8_000_000, data={"type": "message", "channel_id": 100, "message_id": 9})
    await store.set_destination("d1", moved)
    await store.set_destination("b1", moved)
    seen["moved"] = [(await store.get_job(job_id)).destination for job_id in ("d1", "b1")]  # type: ignore[union-attr]
    await store.record_result_deleted("b1", by=5, at=NOON + 100)
    await store.record_result_deleted("b1", by=6, at=NOON + 200)  # once
    seen["history"] = [(e.job.id, e.result_deleted) for e in await store.history(2, 10, 0, 10)]
    seen["history_dm"] = [e.job.id for e in await store.history(1, None, 0, 10)]
    seen["deleted"] = await query(store, "SELECT job_id, deleted_by, deleted_at FROM result_deletions")
    return seen


def check_expected(seen: dict[str, Any]) -> None:
    assert all(seen[f"admit {job_id}"] is None for job_id in ("a1", "a2", "b1", "d1"))
    assert seen["fresh"] == job("a1")
    assert seen["to_preparing"].job.notes == ("image2 was re-encoded",) and seen["stale_move"].job is None
    assert (seen["claim_a1"].id, seen["claim_a1"].run, seen["claim_a1"].started_at) == ("a1", 1, NOON + 5)
    assert seen["failed"].job.state is JobState.FAILED and seen["failed"].refunded
    assert seen["refund_again"].job is not None and not seen["refund_again"].refunded
    assert seen["inputs"] == [StoredImage(b"png-1", "image/png", 4, 3), StoredImage(b"png-22", "image/png", 5, 6)]
    assert [(j.id, place) for j, place in seen["positions"]] == [("b1", 1), ("d1", 2)]  # d1: member 1 had a turn
    assert seen["claim_b1"].id == "b1" and seen["kept"] is True
    done = seen["done"]
    assert done.state is JobState.SUCCEEDED and done.attempts == 0  # the store keeps what it is given
    assert (done.output_width, done.result_message_id, done.total_tokens, done.api_seconds) == (2048, 555, 1283, 2.5)
    assert done.delivered is Delivered.POSTED and done.request == job("b1", user_id=2).request
    # The inputs as sent stay with the job (for its Info), and so do its API attempts.
    assert done.inputs == (InputInfo(4, 3, 5, "image/png"), InputInfo(5, 6, 6, "image/png"))
    assert seen["attempts"] == [Attempt(1, NOON + 6, 2.5, AttemptOutcome.SUCCEEDED, True, 200, "req-1")]
    assert seen["missing"] is None
    assert seen["unfinished"] == ["d1"] and seen["running"] == (0, 1)
    # a1 failed and a2 cancelled: both refunded; b1 (member 2) and d1 (a DM) still charged.
    assert [(u.user_today, u.guild_today, u.spend_today, u.user_active) for u in seen["usage"]] == [
        (1, 1, 2 * PRICE, 1),
        (1, 1, 2 * PRICE, 0),
        (1, 0, 2 * PRICE, 1),
    ]
    assert [u.user_last_accepted for u in seen["usage"]] == [NOON + 3, NOON + 2, NOON + 3]
    totals = seen["totals"]
    assert (totals.queued, totals.running, totals.operator_spend, totals.server_spend) == (0, 0, 2 * PRICE, 0)
    assert (totals.notices_pending, totals.oldest_notice_at) == (2, NOON + 3)  # a1's and a2's, not yet told
    assert seen["runs"] == [RecentRun("gpt-image-2-vip", 2, "2048x1360", 6.0, NOON + 12)]
    stats = seen["stats"]
    assert (stats.jobs_today, stats.succeeded_week, stats.failed_week, stats.cancelled_week) == (3, 1, 1, 1)
    assert stats.durations_week == [10.0] and stats.busiest == [(1, 1), (2, 1)]
    assert (stats.spend_today, stats.spend_week, stats.own_key_spend_week) == (2 * PRICE, 2 * PRICE, 0)
    assert stats.billed_without_result_week == 1  # a1's timed-out call
    assert stats.models_week == [("gpt-image-2-vip", 1)]
    today, yesterday = seen["days"]
    assert (today.day, today.succeeded, today.failed, today.cancelled) == (DAY, 1, 1, 1)
    assert today.spend == PRICE and today.durations == (10.0,)  # server 10's net charges: b1's
    assert (yesterday.succeeded, yesterday.spend, yesterday.durations) == (0, 0, ())
    assert seen["notices"] == [
        {"job_id": "a1", "outcome": "failed", "payload": '{"text": "late"}', "claimed_by": "w", "due_at": NOON + 30,
         "how": None},
        {"job_id": "a2", "outcome": "cancelled", "payload": '{"by": 1}', "claimed_by": None, "due_at": NOON + 13,
         "how": None},
        {"job_id": "b1", "outcome": "succeeded", "payload": "{}", "claimed_by": None, "due_at": NOON + 12,
         "how": "posted"},
    ]  # fmt: skip
    overrides = seen["overrides"]
    assert overrides.is_set("user_daily_limit") and overrides.user_daily_limit is None
    assert overrides.allowed_role_ids == frozenset({5}) and not overrides.is_set("guild_daily_limit")
    assert seen["no_overrides"] == GuildOverrides()
    assert set(seen["all_settings"]) == {10, 11}
    assert seen["blocks"] == [Block(10, 2, "spam again", 7, NOON + 1)]
    assert seen["unblocked"] == (True, False)
    assert seen["keys"] == [StoredKey(10, "gAAAA-encrypted", 7, NOON)]
    assert seen["key_cleared"] == (True, False)
    assert seen["presets"] == [StylePreset(10, "noir", "as film noir", 8, NOON + 1)]
    assert seen["moved"] == [Destination(8_000_000, {"type": "message", "channel_id": 100, "message_id": 9}),
                             DESTINATION]  # fmt: skip
    assert seen["history"] == [("b1", True)] and seen["history_dm"] == ["d1"]
    assert seen["deleted"] == [{"job_id": "b1", "deleted_by": 5, "deleted_at": NOON + 100}]


async def test_both_databases_give_the_expected_results_and_observe_exactly_the_same(tmp_path: Path) -> None:
    observed = {}
    for database in DATABASES:
        async with open_store(database, tmp_path) as store:
            observed[database] = await exercise(store)
        check_expected(observed[database])
    from_sqlite, from_postgres = observed["sqlite"], observed["postgres"]
    assert from_sqlite.keys() == from_postgres.keys()
    for key, seen in from_sqlite.items():
        assert from_postgres[key] == seen, key


async def test_money_totals_are_exact_integer_sums(store: Store) -> None:
    day = utc_day(NOON)
    for n in range(3):
        await admit(store, make_job(f"j{n}", 1, NOON + n))
    assert (await store.totals(day)).operator_spend == 90_000
    usage = await store.usage(1, 10, day, NOON + 10)
    assert (usage.user_today, usage.spend_today) == (3, 90_000)
    # A refund subtracts the charge once; a second refund is never written.
    refund = await store.move("j0", JobState.ACCEPTED, JobState.CANCELLED, {}, refund=True, holder="g", now=NOON)
    assert refund.refunded and (await store.totals(day)).operator_spend == 60_000
    again = await store.move("j0", JobState.CANCELLED, JobState.CANCELLED, {}, refund=True, holder="g", now=NOON)
    assert again.job is not None and not again.refunded
    assert (await store.totals(day)).operator_spend == 60_000
    rows = await query(store, "SELECT entry, amount FROM money WHERE job_id = 'j0' ORDER BY entry")
    assert rows == [{"entry": "charge", "amount": 30_000}, {"entry": "refund", "amount": 30_000}]
    # A server's own key is its own spend, outside the operator's.
    await admit(store, make_job("own", 2, NOON, guild_key=True))
    # Amounts that floats cannot hold: ten charges of $0.10 are exactly one dollar, not 0.9999999999999999.
    for n in range(10):
        await admit(store, make_job(f"dime{n}", 100 + n, NOON, guild_id=20, cost=100_000))
    await admit(store, make_job("odd", 3, NOON, cost=12_345))
    await admit(store, make_job("micro", 4, NOON, cost=1))
    totals = await store.totals(day)
    assert (totals.operator_spend, totals.server_spend) == (60_000 + 1_000_000 + 12_346, 30_000)
    assert type(totals.operator_spend) is int and type(totals.server_spend) is int
    stats = await store.stats(10, day, [day])
    assert (stats.spend_today, stats.own_key_spend_week) == (totals.operator_spend, 30_000)
    (today,) = await store.daily_stats(20, [day])
    assert today.spend == 1_000_000 and type(today.spend) is int
    assert await value(store, "SELECT SUM(amount) FROM money WHERE entry = 'charge'") == 90_000 + 30_000 + 1_012_346


async def finish(store: Store, claimed: Job, settle: int | None) -> Job:
    """Run a claimed job to succeeded as its worker would, settling its charge by ``settle`` (signed)."""
    fence = Fence("w", claimed.run)
    await store.move(claimed.id, JobState.RUNNING, JobState.DELIVERING, {}, refund=False, holder="w", now=NOON,
                     fence=fence)  # fmt: skip
    done = await store.move(
        claimed.id, JobState.DELIVERING, JobState.SUCCEEDED, {"finished_at": NOON + 1}, refund=False, holder="w",
        now=NOON + 1, fence=fence, settle=settle,
    )  # fmt: skip
    assert done.job is not None and done.job.state is JobState.SUCCEEDED
    return done.job


async def test_a_settlement_is_one_signed_row_by_job_and_every_total_counts_it_exactly(store: Store) -> None:
    """Jobs by tokens reserve 500,000 micro-dollars each: one settles below (120,000 real), one above (520,003),
    one without usage at the reservation (a row of 0), one fails (refunded once, no settlement); a flat one
    settles nothing. Totals are what was really spent, as integers, and a settlement counts no job."""
    day = utc_day(NOON)
    reserve = 500_000
    jobs = [make_job(name, 1, NOON + n, cost=reserve) for n, name in enumerate(("below", "above", "bare", "lost"))]
    jobs.append(make_job("flat", 2, NOON + 5))
    own = make_job("own", 3, NOON + 6, cost=reserve, guild_key=True)
    for each in [*jobs, own]:
        await add(store, each)
    assert (await store.totals(day)).operator_spend == 4 * reserve + PRICE
    running = {}
    while isinstance(claimed := await store.claim(ClaimTerms("w", NOON, LEASE, 10)), Job):
        running[claimed.id] = claimed
    assert sorted(running) == ["above", "bare", "below", "flat", "lost", "own"]
    await finish(store, running["below"], 120_000 - reserve)
    await finish(store, running["above"], 520_003 - reserve)
    await finish(store, running["bare"], 0)
    failed = await store.move("lost", JobState.RUNNING, JobState.FAILED, {}, refund=True, holder="w", now=NOON,
                              fence=Fence("w", running["lost"].run))  # fmt: skip
    assert failed.refunded
    await finish(store, running["flat"], None)
    await finish(store, running["own"], 42_000 - reserve)
    # The key keeps it to one settlement per job, whatever asks for a second.
    again = await store.move("below", JobState.SUCCEEDED, JobState.SUCCEEDED, {}, refund=False, holder="w",
                             now=NOON + 2, settle=-400_000)  # fmt: skip
    assert again.job is not None
    rows = await query(store, "SELECT job_id, entry, amount FROM money ORDER BY job_id, entry")
    assert [(r["job_id"], r["entry"], r["amount"]) for r in rows] == [
        ("above", "charge", reserve), ("above", "settle", 20_003),
        ("bare", "charge", reserve), ("bare", "settle", 0),
        ("below", "charge", reserve), ("below", "settle", -380_000),
        ("flat", "charge", PRICE),
        ("lost", "charge", reserve), ("lost", "refund", reserve),
        ("own", "charge", reserve), ("own", "settle", -458_000),
    ]  # fmt: skip
    spent = 120_000 + 520_003 + reserve + PRICE  # "bare" stays at its reservation
    totals = await store.totals(day)
    assert (totals.operator_spend, totals.server_spend) == (spent, 42_000)
    assert type(totals.operator_spend) is int
    usage = await store.usage(1, 10, day, NOON + 60)
    assert (usage.user_today, usage.spend_today) == (3, spent)  # four charged, one refunded: a settlement is no job
    stats = await store.stats(10, day, [day])
    assert (stats.spend_today, stats.spend_week, stats.own_key_spend_week) == (spent, spent, 42_000)
    (today,) = await store.daily_stats(10, [day])
    assert today.spend == spent + 42_000 and type(today.spend) is int
    shown = {entry.job.id: entry.cost for entry in await store.history(1, 10, 0, 10)}
    assert shown == {"below": 120_000, "above": 520_003, "bare": reserve, "lost": reserve}  # /history's costs
    # The daily budget counts what was really spent: room for one more reservation exactly.
    budget = Quota(NOON + 60, spend_today=spent + reserve - reserve)
    assert await store.admit(make_job("next", 1, NOON + 60, cost=reserve), budget, NOON + 90) is None
    over = Quota(NOON + 61, spend_today=spent + reserve - 1 - reserve)
    refused = await store.admit(make_job("over", 1, NOON + 61, cost=reserve), over, NOON + 91)
    assert refused is not None and refused[0].value == "budget"


async def test_a_request_s_spoiler_options_and_variation_are_stored_as_asked(store: Store) -> None:
    plain = make_job("plain", 1)
    asked = dataclasses.replace(
        make_job("asked", 1),
        request=dataclasses.replace(
            plain.request,
            spoiler=True,
            options={"quality": "high", "output_compression": 80},
            group_id="asked",
            variant=2,
            variants=3,
        ),
    )
    for job in (plain, asked):
        await admit(store, job)
        stored = await store.get_job(job.id)
        assert stored is not None and stored.request == job.request
    back = await store.get_job("asked")
    assert back is not None and back.request.is_variation and type(back.request.options["output_compression"]) is int


async def test_migrations_apply_once(store: Store) -> None:
    applied = await query(store, "SELECT version FROM schema_migrations ORDER BY version")
    assert [row["version"] for row in applied] == list(range(1, LATEST + 1))
    assert await store.database.run(migrate(migrations(store.dialect))) == []
    assert await value(store, "SELECT COUNT(*) FROM schema_migrations") == LATEST


# A database the old code left at version 6 ------------------------------------------------------------------

OLD_JOB = (
    "INSERT INTO jobs (id, kind, status, user_id, guild_id, channel_id, prompt, size, input_count, delivery, "
    "created_at, charge_day, cost_usd, started_at, finished_at, restarts, delivered, claimed_by, guild_key) VALUES "
    "(:id, :kind, :status, :user_id, 10, 100, :id, NULL, 1, '{}', :created_at, :day, :cost_usd, :started_at, "
    ":finished_at, :restarts, :delivered, :claimed_by, :guild_key)"
)
OLD_MONEY = (
    "INSERT INTO money (job_id, entry, user_id, guild_id, day, amount_usd, at) "
    "VALUES (:job_id, :entry, :user_id, 10, :day, :amount_usd, :at)"
)
# id, old kind, status, member, cost in dollars (a float, as the old code kept it), started, finished,
# restarts, delivered, the key's owner (1: the server's own key)
OLD_JOBS: list[tuple[str, str, str, int, float, float | None, float | None, int, str | None, int]] = [
    ("old1", "edit", "succeeded", 1, 0.03, NOON + 5, NOON + 20, 0, "posted", 0),
    ("old2", "refine", "failed", 1, 0.07, NOON + 6, NOON + 9, 1, None, 0),  # interrupted once, then failed
    ("old3", "reroll", "succeeded", 2, 0.035, NOON + 7, NOON + 30, 0, "undelivered", 0),  # never shown: owed
    ("old4", "message", "succeeded", 3, 0.1, NOON + 8, NOON + 31, 0, "undelivered", 0),  # shown: told
    ("old5", "edit", "queued", 4, 0.0157, None, None, 0, None, 0),  # 0.0157 * 1e6 is 15699.999999999998
    ("old6", "edit", "cancelled", 4, 0.0652, None, NOON + 2, 0, None, 0),
    ("old7", "edit", "succeeded", 5, 0.1, NOON + 9, NOON + 40, 0, "posted", 1),
]


def old_rows() -> Any:
    """The rows, as a script for the version-6 schema."""
    for job_id, kind, status, user, cost, started, finished, restarts, delivered, own in OLD_JOBS:
        yield from execute(
            OLD_JOB, id=job_id, kind=kind, status=status, user_id=user, created_at=NOON, day=DAY, cost_usd=cost,
            started_at=started, finished_at=finished, restarts=restarts, delivered=delivered,
            claimed_by=None if finished else "old-process", guild_key=own,
        )  # fmt: skip
        yield from execute(OLD_MONEY, job_id=job_id, entry="charge", user_id=user, day=DAY, amount_usd=cost, at=NOON)
        if status in ("failed", "cancelled"):
            yield from execute(OLD_MONEY, job_id=job_id, entry="refund", user_id=user, day=DAY, amount_usd=cost,
                               at=finished)  # fmt: skip
    yield from execute("INSERT INTO notices_shown (job_id, shown_at) VALUES ('old4', :at)", at=NOON + 60)
    yield from execute(
        "INSERT INTO job_inputs (job_id, number, mime, width, height, note, data) "
        "VALUES ('old5', 1, 'image/png', 4, 3, 'image1 was re-encoded', :data)",
        data=b"old-png",
    )


@pytest.mark.parametrize("database", DATABASES)
async def test_a_database_left_at_version_6_is_migrated_once_to_the_latest(database: str, tmp_path: Path) -> None:
    async with fresh(database, tmp_path) as connect:
        old = connect()
        await old.open()
        assert await old.run(migrate(migrations(database)[:6])) == [1, 2, 3, 4, 5, 6]
        await old.run(old_rows())
        await old.close()

        migrated = connect()
        await open_and_migrate(migrated)
        store = Store(migrated)
        try:
            await check_migrated(store)
        finally:
            await migrated.close()

        # Opened again (a restart): nothing is applied twice, nothing changes.
        again = connect()
        await open_and_migrate(again)
        store = Store(again)
        try:
            assert [r["version"] for r in await query(store, "SELECT version FROM schema_migrations")] == [
                *range(1, LATEST + 1)
            ]
            assert [(j.id, j.cost) for j in [await store.get_job(job_id) for job_id in ("old1", "old3")] if j] == [
                ("old1", 30_000), ("old3", 35_000),
            ]  # fmt: skip
        finally:
            await again.close()


async def check_migrated(store: Store) -> None:
    versions = [r["version"] for r in await query(store, "SELECT version FROM schema_migrations ORDER BY version")]
    assert versions == list(range(1, LATEST + 1)) and LATEST == 14
    # Money in integer micro-dollars, exactly; the kind (what a job does) split from its origin (how it began).
    jobs = {job_id: await store.get_job(job_id) for job_id, *_ in OLD_JOBS}
    assert {job_id: (j.kind, j.request.origin, j.cost, j.run) for job_id, j in jobs.items() if j} == {
        "old1": ("edit", Origin.COMMAND, 30_000, 1),
        "old2": ("edit", Origin.REFINE, 70_000, 2),  # run: its claims so far (restarts + 1)
        "old3": ("edit", Origin.REROLL, 35_000, 1),
        "old4": ("edit", Origin.MESSAGE, 100_000, 1),
        "old5": ("edit", Origin.COMMAND, 15_700, 0),
        "old6": ("edit", Origin.COMMAND, 65_200, 0),
        "old7": ("edit", Origin.COMMAND, 100_000, 1),
    }
    # Version 8: an old job is no spoiler, asked no model options and is no variation.
    assert {(j.request.spoiler, len(j.request.options), j.request.group_id, j.request.variant, j.request.variants)
            for j in jobs.values() if j} == {(False, 0, None, 0, 1)}  # fmt: skip
    # Version 9: an old job's inputs were not recorded as sent (its Info counts them only).
    assert {j.inputs for j in jobs.values() if j} == {()}
    amounts = await query(store, "SELECT job_id, entry, amount FROM money ORDER BY job_id, entry")
    expected = [(job_id, "charge", round(cost * 1_000_000)) for job_id, _, _, _, cost, *_ in OLD_JOBS]
    expected += [(job_id, "refund", round(cost * 1_000_000)) for job_id, _, s, _, cost, *_ in OLD_JOBS
                 if s in ("failed", "cancelled")]  # fmt: skip
    assert [(r["job_id"], r["entry"], r["amount"]) for r in amounts] == sorted(expected)
    assert all(type(r["amount"]) is int for r in amounts)
    totals = await store.totals(DAY)
    # 0.03 + 0.035 + 0.1 + 0.0157 on the operator's key (old2 and old6 refunded), 0.1 on the server's own.
    assert (totals.operator_spend, totals.server_spend) == (180_700, 100_000)
    usage = await store.usage(1, 10, DAY, NOON + 60)
    assert (usage.user_today, usage.spend_today) == (1, 180_700)
    # Every ended job has its notice, already told; an undelivered result never shown is owed at next use.
    notices = await query(store, "SELECT job_id, outcome, done_at, how, shown_at FROM notices ORDER BY job_id")
    assert [tuple(r.values()) for r in notices] == [
        ("old1", "succeeded", NOON + 20, "before_outbox", None),
        ("old2", "failed", NOON + 9, "before_outbox", None),
        ("old3", "succeeded", NOON + 30, "next_use", None),
        ("old4", "succeeded", NOON + 31, "next_use", NOON + 60),
        ("old6", "cancelled", NOON + 2, "before_outbox", None),
        ("old7", "succeeded", NOON + 40, "before_outbox", None),
    ]
    assert totals.notices_pending == 0
    assert await store.next_use_users() == {2}
    assert [(n.job_id, n.outcome) for n, _ in await store.next_use_notices(2)] == [("old3", JobState.SUCCEEDED)]
    with pytest.raises((sqlite3.OperationalError, asyncpg.UndefinedTableError)):
        await value(store, "SELECT COUNT(*) FROM notices_shown")
    # The migrated queue runs on: the queued job's inputs are there, it is claimed in a first run, and new
    # jobs are admitted and charged in micro-dollars beside the old ones.
    assert await store.load_inputs("old5") == [StoredImage(b"old-png", "image/png", 4, 3)]
    # Version 10: its inputs are one set of their own, with their size, unfinished (not kept).
    sets = await query(store, "SELECT job_id, bytes, ended_at FROM input_sets")
    assert [(r["job_id"], r["bytes"], r["ended_at"]) for r in sets] == [("old5", len(b"old-png"), None)]
    # Version 13: the queued job is its member's ready head, which the claim reads.
    heads = await query(store, "SELECT head_id, head_at FROM fair_turns WHERE head_id IS NOT NULL")
    assert [(r["head_id"], r["head_at"]) for r in heads] == [("old5", jobs["old5"].created_at if jobs["old5"] else 0)]
    claimed = await store.claim(ClaimTerms("new-process", NOON + 100, LEASE, 4))
    assert isinstance(claimed, Job) and (claimed.id, claimed.run, claimed.holder) == ("old5", 1, "new-process")
    await admit(store, make_job("new1", 1, NOON + 100))
    assert (await store.totals(DAY)).operator_spend == 180_700 + PRICE


async def test_a_script_that_goes_on_after_its_only_statement_is_refused_and_undone(store: Store) -> None:
    """A statement marked as its script's only one runs outside a transaction on PostgreSQL (one round trip
    instead of three), so a script that yields anything after it is a bug: refused on both databases, with
    nothing of it kept; marked and alone, it runs and answers as any statement."""
    added = await add(store, job("solo"), JobState.PREPARING)

    def alone() -> Generator[Op, Any, Row | None]:
        return (yield from fetch_one_alone("SELECT id, status FROM jobs WHERE id = :id", id=added.id))

    def goes_on() -> Generator[Op, Any, None]:
        yield from fetch_one_alone("UPDATE jobs SET prompt = 'changed' WHERE id = :id RETURNING id", id=added.id)
        yield from execute("UPDATE jobs SET prompt = 'changed again' WHERE id = :id", id=added.id)

    assert await store.database.run(alone()) == {"id": "solo", "status": "preparing"}
    with pytest.raises(RuntimeError, match="only one"):
        await store.database.run(goes_on())
    # SQLite undoes the script's savepoint; PostgreSQL never ran what came after the statement alone.
    expected = "prompt of solo" if store.dialect == "sqlite" else "changed"
    assert await value(store, "SELECT prompt FROM jobs WHERE id = :id", id=added.id) == expected


async def test_statements_left_for_the_commit_write_their_values_exactly(store: Store) -> None:
    """A statement left for the commit (``Finally``) runs after everything else the script did. On PostgreSQL
    it carries its values as literals: quotes, backslashes, a negative number after a minus (which written
    bare would begin a comment) and NULL arrive as they were; a value that is no number or text is refused."""
    await add(store, job("lit"), JobState.QUEUED)
    text = "it's a \\ back\\'slash -- and ''two'' \\\\ ; COMMIT"

    def script() -> Generator[Op, Any, None]:
        yield from execute("UPDATE jobs SET cost = 5 WHERE id = :id", id="lit")
        yield from execute_finally(
            "UPDATE jobs SET prompt = :text, cost = cost -:minus, created_at = :at, parent_job_id = :none "
            "WHERE id = :id",
            [{"text": text, "minus": -3, "at": NOON + 0.125, "none": None, "id": "lit"}],
        )
        yield from execute_finally("UPDATE jobs SET cost = cost * :times WHERE id = :id", [{"times": 2, "id": "lit"}])

    await store.database.run(script())
    rows = await query(store, "SELECT prompt, cost, created_at, parent_job_id FROM jobs WHERE id = 'lit'")
    assert rows == [{"prompt": text, "cost": 16, "created_at": NOON + 0.125, "parent_job_id": None}]

    def a_blob() -> Generator[Op, Any, None]:
        yield from execute("UPDATE jobs SET cost = 1 WHERE id = :id", id="lit")
        yield from execute_finally("UPDATE jobs SET prompt = :blob WHERE id = :id", [{"blob": b"x", "id": "lit"}])

    if store.dialect == "postgres":
        with pytest.raises(TypeError, match="literal"):
            await store.database.run(a_blob())
        assert await value(store, "SELECT cost FROM jobs WHERE id = 'lit'") == 16


async def test_a_script_that_goes_on_after_a_statement_left_for_the_commit_is_refused_and_undone(
    store: Store,
) -> None:
    await add(store, job("fin"), JobState.QUEUED)

    def goes_on() -> Generator[Op, Any, None]:
        yield from execute_finally("UPDATE jobs SET prompt = 'changed' WHERE id = :id", [{"id": "fin"}])
        yield from fetch_value("SELECT prompt FROM jobs WHERE id = :id", id="fin")

    with pytest.raises(RuntimeError, match="left for the commit"):
        await store.database.run(goes_on())
    assert await value(store, "SELECT prompt FROM jobs WHERE id = 'fin'") == "prompt of fin"


def test_a_plain_move_is_its_update_alone_and_any_other_move_a_transaction() -> None:
    """Which moves go without a transaction: one that only changes the job's row. A move with money,
    attempts, a notice, a claim or tidings for other processes keeps its transaction."""

    def first_op(current: JobState, target: JobState, **extra: Any) -> Op:
        claim = extra.pop("claim", None)
        order = MoveOrder("j1", current, target, {}, extra.pop("refund", False), "gw", NOON, **extra)
        script = moves_script([order], claim)
        try:
            return next(script)
        finally:
            script.close()

    def alone(op: Op) -> bool:
        return isinstance(op, Fetch) and op.alone

    assert alone(first_op(JobState.ACCEPTED, JobState.PREPARING))
    assert alone(first_op(JobState.DELIVERING, JobState.DELIVERING))
    assert not alone(first_op(JobState.PREPARING, JobState.QUEUED))  # "queued" is told to every process
    assert not alone(first_op(JobState.QUEUED, JobState.CANCELLED, refund=True))
    assert not alone(first_op(JobState.RUNNING, JobState.DELIVERING))  # "slot" is told
    assert not alone(first_op(JobState.DELIVERING, JobState.SUCCEEDED))  # a notice row
    attempt = Attempt(1, NOON, 1.0, AttemptOutcome.SUCCEEDED, True, 200)
    assert not alone(first_op(JobState.DELIVERING, JobState.DELIVERING, attempts=(attempt,)))
    assert not alone(first_op(JobState.ACCEPTED, JobState.PREPARING, claim=ClaimTerms("gw", NOON, LEASE, 4)))


async def test_claiming_several_at_once_takes_what_as_many_claims_in_a_row_would(store: Store) -> None:
    """Member 1 has three jobs waiting, member 2 one, member 3 one still preparing. Three slots free at once
    take, in one transaction, what three claims in a row take: fair turns (1, 2, then 1 again), never a job
    not ready, and never beyond the cap across processes; with nothing left, the miss says why."""
    for n, (name, user) in enumerate((("a1", 1), ("a2", 1), ("b1", 2), ("a3", 1))):
        await add(store, make_job(name, user, NOON + n))
    await add(store, make_job("c1", 3, NOON + 5), JobState.PREPARING)
    other = await store.claim(ClaimTerms("other", NOON, LEASE, 4))  # another process runs one call already
    assert isinstance(other, Job) and other.id == "a1"
    taken = await store.claim_up_to(ClaimTerms("w", NOON + 10, LEASE, 4), 5)
    assert isinstance(taken, list)
    # Three, not five: the cap of 4 across processes, and one runs elsewhere. Each in its first run.
    assert [(j.id, j.state, j.holder, j.run) for j in taken] == [
        ("b1", JobState.RUNNING, "w", 1),
        ("a2", JobState.RUNNING, "w", 1),
        ("a3", JobState.RUNNING, "w", 1),
    ]
    assert await store.claim_up_to(ClaimTerms("w", NOON + 11, LEASE, 4), 2) is ClaimMiss.NO_SLOT
    assert await store.claim_up_to(ClaimTerms("w", NOON + 11, LEASE, 10), 2) is ClaimMiss.NO_JOB  # c1: not ready


async def test_a_job_s_images_large_and_small_are_kept_and_read_back_byte_for_byte_in_order(store: Store) -> None:
    """A megabyte, a small file and 100 kB (PostgreSQL sends a large one in a statement of its own)."""
    await add(store, make_job("big", 1), JobState.PREPARING)
    images = [
        StoredImage(bytes(range(256)) * 4096, "image/png", 1024, 1024),
        StoredImage(b"tiny", "image/webp", 1, 1),
        StoredImage(b"\x00\xff" * 50_000, "image/jpeg", 300, 200),
    ]
    await store.save_inputs("big", images, cap_bytes=10_000_000)
    assert await store.load_inputs("big") == images


# Each member's head as the jobs say it: their first waiting job in acceptance order, when it is queued.
HEADS_FROM_JOBS = """
SELECT w.user_id, w.id FROM jobs w WHERE w.status = 'queued' AND NOT EXISTS (
    SELECT 1 FROM jobs e WHERE e.user_id = w.user_id AND e.status IN ('accepted', 'preparing', 'queued')
    AND (e.created_at < w.created_at OR (e.created_at = w.created_at AND e.id < w.id)))
"""


async def ready_heads(store: Store) -> dict[int, str]:
    """The ready heads the store keeps for its claims, checked against the jobs themselves."""
    kept = {
        r["user_id"]: r["head_id"] for r in await query(store, "SELECT * FROM fair_turns WHERE head_id IS NOT NULL")
    }
    assert kept == {r["user_id"]: r["id"] for r in await query(store, HEADS_FROM_JOBS)}
    return kept


async def test_the_ready_heads_kept_for_claims_follow_every_move_that_changes_them(store: Store) -> None:
    """A claim reads each member's ready head from their row, not from the whole line. The rows follow every
    move that changes a head: a job queued, claimed, cancelled or back in line after an interruption; a head
    still being prepared holds back the member's later jobs. A job admitted with an earlier time than the
    head (another process's clock) is found by the claim, which then waits for it as the old line did."""
    w = ClaimTerms("w", NOON + 50, LEASE, 10)
    a1 = await add(store, make_job("a1", 1, NOON + 1), JobState.PREPARING)
    await add(store, make_job("a2", 1, NOON + 2))
    await add(store, make_job("b1", 2, NOON + 3))
    b2 = await add(store, make_job("b2", 2, NOON + 4))
    assert await ready_heads(store) == {2: "b1"}  # a1 is being prepared: a2 waits behind it
    await step_to(store, b2, JobState.CANCELLED)
    assert await ready_heads(store) == {2: "b1"}
    first = await store.claim(w)
    assert isinstance(first, Job) and first.id == "b1"
    assert await ready_heads(store) == {}
    assert await store.claim(w) is ClaimMiss.NO_JOB
    await step_to(store, a1, JobState.QUEUED)
    assert await ready_heads(store) == {1: "a1"}
    taken = await store.claim(w)
    assert isinstance(taken, Job) and taken.id == "a1"
    assert await ready_heads(store) == {1: "a2"}
    # A stop catches a1 running: back in line, it is its member's head again, before a2.
    back = await step_to(store, await step_to(store, taken, JobState.INTERRUPTED), JobState.QUEUED)
    assert await ready_heads(store) == {1: "a1"}
    again = await store.claim(w)
    assert isinstance(again, Job) and (again.id, again.run) == ("a1", back.run + 1)
    # Another process's clock: c0 admitted after c1 is queued, but stamped earlier. The kept row names c1 until a
    # claim finds c0 in front of it; then c1 waits for c0, as it would in the line.
    await add(store, make_job("c1", 3, NOON + 10))
    c0 = await admit(store, make_job("c0", 3, NOON + 9))
    kept = {
        r["user_id"]: r["head_id"] for r in await query(store, "SELECT * FROM fair_turns WHERE head_id IS NOT NULL")
    }
    assert kept == {1: "a2", 3: "c1"}
    assert [j.id for j in await _claims(store, w, 3)] == ["a2"]
    assert await ready_heads(store) == {}
    await step_to(store, await step_to(store, c0, JobState.PREPARING), JobState.QUEUED)
    assert [j.id for j in await _claims(store, w, 3)] == ["c0", "c1"]
    assert await ready_heads(store) == {}


async def _claims(store: Store, terms: ClaimTerms, count: int) -> list[Job]:
    taken = await store.claim_up_to(terms, count)
    return taken if isinstance(taken, list) else []


@pytest.mark.parametrize("database", DATABASES)
async def test_claims_from_one_reading_of_the_order_take_what_claims_one_at_a_time_take(
    database: str, tmp_path: Path
) -> None:
    """The same line in two stores: twenty members with one to four jobs each, some still being prepared, some
    members served before. Slots filled several at a time (one reading of the fair order for each batch) take
    the same jobs in the same order as one claim at a time, up to the cap and past members with one ready job."""
    plan = [(f"u{user}j{n}", user, NOON + user * 0.5 + n * 0.1, (user + n) % 5 == 0) for user in range(20)
            for n in range(1 + user % 4)]  # fmt: skip
    served_before = [3, 7, 11]

    async def build(store: Store) -> None:
        for user in served_before:  # a turn each, in this order: these members go after the others
            await add(store, make_job(f"old{user}", user, NOON - 100 + user))
            old = await store.claim(ClaimTerms("earlier", NOON - 50, LEASE, 100))
            assert isinstance(old, Job) and old.id == f"old{user}"
            await step_to(store, await step_to(store, old, JobState.DELIVERING), JobState.SUCCEEDED)
        for job_id, user, at, preparing in sorted(plan, key=lambda p: p[2]):
            await add(store, make_job(job_id, user, at), JobState.PREPARING if preparing else JobState.QUEUED)

    async with open_store(database, tmp_path, "batches") as batches, open_store(database, tmp_path, "single") as single:
        await build(batches)
        await build(single)
        in_batches: list[str] = []
        for size in (5, 1, 16, 3, 40):
            taken = await batches.claim_up_to(ClaimTerms("w", NOON + 10, LEASE, 30), size)
            in_batches += [j.id for j in taken] if isinstance(taken, list) else []
        one_by_one: list[str] = []
        while isinstance(taken := await single.claim(ClaimTerms("w", NOON + 10, LEASE, 30)), Job):
            one_by_one.append(taken.id)
        assert taken is ClaimMiss.NO_SLOT or taken is ClaimMiss.NO_JOB
        assert in_batches == one_by_one
        assert len(one_by_one) == 30 and len(set(one_by_one)) == 30  # the cap, each job once
        assert await ready_heads(batches) == await ready_heads(single)


async def test_sqlite_s_log_is_copied_into_its_file_by_a_thread_of_its_own_never_by_a_commit(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A commit that copies the log holds up every claim and move behind it; the checkpointer's thread does not."""
    monkeypatch.setattr(sqlite_module, "CHECKPOINT_EVERY", 0.05)
    path = tmp_path / "logged.sqlite3"
    database = SQLiteDatabase(path)
    await database.open()
    try:
        await database.run(execute("CREATE TABLE blobs (data BLOB)"))
        assert await database.run(fetch_value("PRAGMA wal_autocheckpoint")) == 0
        blob = bytes(range(256)) * 4096  # 1 MB
        for _ in range(8):
            await database.run(execute("INSERT INTO blobs (data) VALUES (:data)", data=blob), heavy=True)
        # The pages reach the database file (only a checkpoint writes there), within moments.
        async with asyncio.timeout(5):
            while path.stat().st_size < 8 * len(blob):  # noqa: ASYNC110 - the file, written by another thread
                await asyncio.sleep(0.02)
        assert await database.run(fetch_value("SELECT COUNT(*) FROM blobs"), write=False) == 8
    finally:
        await database.close()
    assert not path.with_name(path.name + "-wal").exists()  # the last connection closed copied the rest


async def test_sqlite_s_writer_commits_light_scripts_by_themselves_and_gives_heavy_ones_their_turn(
    tmp_path: Path,
) -> None:
    """A hand-over (light) asked while megabytes of images (heavy) are being written is answered before the next
    heavy script runs, not after it in one transaction: the first calls' ends of a burst came up to 170 ms late
    while its images were being saved. And heavy scripts are not starved by light ones arriving all the time."""
    ran: list[str] = []
    gates = {name: threading.Event() for name in ("H1", "L1")}
    begun = {name: threading.Event() for name in ("H1", "L1")}
    l1_answered = threading.Event()
    answered_before_h2_ended: list[bool] = []
    futures: dict[str, asyncio.Future[Any]] = {}

    def unit(name: str) -> Any:
        def run(conn: sqlite3.Connection) -> tuple[str, list[str]]:
            ran.append(name)
            if name in gates:
                begun[name].set()
                assert gates[name].wait(10)
            if name == "H2":  # L1 committed and answered by itself: its caller hears while H2 is written
                answered_before_h2_ended.append(l1_answered.wait(5))
            return name, []

        return run

    def connect() -> sqlite3.Connection:
        return sqlite3.connect(tmp_path / "writer.sqlite3", isolation_level=None, check_same_thread=False)

    thread = sqlite_module._Thread(connect, name="test-writer", begin="BEGIN IMMEDIATE")
    try:
        futures["H1"] = thread.submit(unit("H1"), heavy=True)
        assert await asyncio.to_thread(begun["H1"].wait, 10)
        futures["H2"] = thread.submit(unit("H2"), heavy=True)
        futures["L1"] = thread.submit(unit("L1"))
        futures["L1"].add_done_callback(lambda _: l1_answered.set())
        gates["H1"].set()
        assert await asyncio.to_thread(begun["L1"].wait, 10)  # the light one next, though the heavy one asked first
        futures["L2"] = thread.submit(unit("L2"))
        gates["L1"].set()
        async with asyncio.timeout(10):
            assert [(await futures[name])[0] for name in ("H1", "H2", "L1", "L2")] == ["H1", "H2", "L1", "L2"]
    finally:
        await asyncio.to_thread(thread.stop)
    # H2 waited for L1 (committed and answered by itself), then had its turn before L2, which came later.
    assert ran == ["H1", "L1", "H2", "L2"]
    assert answered_before_h2_ended == [True]


async def test_sqlite_s_threads_answer_a_batch_s_callers_in_one_call_to_their_loop(tmp_path: Path) -> None:
    """Each answer of a batch used to wake the event loop on its own, and the thread then waited for the
    interpreter's lock to give the next: all of a batch's callers are resumed by one call now, in their order."""
    calls: list[Any] = []
    started, go = threading.Event(), threading.Event()

    def unit(name: str) -> Any:
        def run(conn: sqlite3.Connection) -> tuple[str, list[str]]:
            started.set()
            assert go.wait(10)
            return name, []

        return run

    def connect() -> sqlite3.Connection:
        return sqlite3.connect(tmp_path / "answers.sqlite3", isolation_level=None, check_same_thread=False)

    loop = asyncio.get_running_loop()
    real = loop.call_soon_threadsafe

    def counted(callback: Any, *args: Any, **kwargs: Any) -> Any:
        calls.append(callback)
        return real(callback, *args, **kwargs)

    thread = sqlite_module._Thread(connect, name="test-answers", begin="BEGIN IMMEDIATE")
    try:
        first = thread.submit(unit("first"))
        assert await asyncio.to_thread(started.wait, 10)
        rest = [thread.submit(unit(f"u{n}")) for n in range(20)]  # queued while the first is written
        loop.call_soon_threadsafe = counted  # type: ignore[method-assign]  # counts the thread's calls from here
        go.set()
        async with asyncio.timeout(10):
            assert (await first)[0] == "first"
            assert [(await each)[0] for each in rest] == [f"u{n}" for n in range(20)]
    finally:
        loop.call_soon_threadsafe = real  # type: ignore[method-assign]
        await asyncio.to_thread(thread.stop)
    # The first alone (it was being written when the others came), then the twenty together: two calls.
    assert len(calls) == 2


async def test_sqlite_s_writer_undoes_a_failing_unit_alone_whether_it_is_written_alone_or_in_a_batch(
    tmp_path: Path,
) -> None:
    """A unit that writes and then fails leaves nothing behind and its caller hears why; the units written with
    it in the same batch are kept. Alone, the unit is the whole transaction (no savepoint); in a batch, it has
    a savepoint of its own."""
    started, go = threading.Event(), threading.Event()

    def write(value: str, *, fail: bool = False, wait: bool = False) -> Any:
        def run(conn: sqlite3.Connection) -> tuple[str, list[str]]:
            if wait:
                started.set()
                assert go.wait(10)
            conn.execute("INSERT INTO t (v) VALUES (?)", (value,))
            if fail:
                raise ValueError(f"{value} failed")
            return value, []

        return run

    path = tmp_path / "undo.sqlite3"
    with contextlib.closing(sqlite3.connect(path, isolation_level=None)) as setup:
        setup.execute("CREATE TABLE t (v TEXT)")

    def connect() -> sqlite3.Connection:
        return sqlite3.connect(path, isolation_level=None, check_same_thread=False)

    thread = sqlite_module._Thread(connect, name="test-undo", begin="BEGIN IMMEDIATE")
    try:
        async with asyncio.timeout(10):
            with pytest.raises(ValueError, match="alone failed"):
                await thread.submit(write("alone", fail=True))
            assert (await thread.submit(write("after")))[0] == "after"
            first = thread.submit(write("first", wait=True))
            assert await asyncio.to_thread(started.wait, 10)
            batch = [thread.submit(write("kept1")), thread.submit(write("undone", fail=True)),
                     thread.submit(write("kept2"))]  # fmt: skip
            go.set()
            assert (await first)[0] == "first"
            outcomes = await asyncio.gather(*batch, return_exceptions=True)
    finally:
        await asyncio.to_thread(thread.stop)
    assert [o if isinstance(o, Exception) else o[0] for o in outcomes][0::2] == ["kept1", "kept2"]
    assert isinstance(outcomes[1], ValueError)
    with contextlib.closing(sqlite3.connect(path)) as check:
        assert sorted(v for (v,) in check.execute("SELECT v FROM t")) == ["after", "first", "kept1", "kept2"]


async def test_on_postgresql_no_transaction_holds_a_job_s_row_while_it_waits_for_a_lock_or_for_another_row(
    tmp_path: Path,
) -> None:
    """Deadlocks a stalled worker's take-over could meet (the model test met the second): a hand-over that
    moved its job and then waited for the claims' lock, and a renewal that held one job's row while it
    waited for another's. Each waits now without holding what the other side wants next."""
    async with open_store("postgres", tmp_path) as store:
        assert isinstance(store.database, PostgresDatabase)
        for name, user in (("a", 1), ("b", 2), ("c", 3), ("d", 4)):
            await add(store, make_job(name, user, NOON + user))
        taken = await store.claim_up_to(ClaimTerms("w", NOON + 5, LEASE, 4), 2)
        assert isinstance(taken, list) and [j.id for j in taken] == ["a", "b"]
        run = {j.id: j.run for j in taken}
        pool = store.database.pool

        async def waiting(kind: str) -> None:  # until a backend waits for a lock of ``kind``
            sql = "SELECT COUNT(*) FROM pg_locks WHERE NOT granted AND locktype = $1"
            async with asyncio.timeout(5):
                while not await pool.fetchval(sql, kind):  # noqa: ASYNC110 - PostgreSQL's state, read again
                    await asyncio.sleep(0.01)

        async with pool.acquire() as other:
            # A take-over holds the claims' lock and is about to move b; b's own worker ends b's call meanwhile.
            async with other.transaction():
                await other.execute(f"SELECT pg_advisory_xact_lock({lock_key('claim')})")
                order = MoveOrder("b", JobState.RUNNING, JobState.DELIVERING, {}, False, "w", NOON + 6,
                                  fence=Fence("w", run["b"]))  # fmt: skip
                hand_over = asyncio.ensure_future(store.move_all([order], ClaimTerms("w", NOON + 6, LEASE, 4)))
                await waiting("advisory")
                # b's row is free: the hand-over waits for the lock before it touches any row.
                await other.execute("SET LOCAL lock_timeout = '500ms'")
                await other.execute("UPDATE jobs SET lease_until = lease_until WHERE id = 'b'")
            (moved,) = await asyncio.wait_for(hand_over, 5)
            assert moved.job is not None and moved.job.state is JobState.DELIVERING
            assert isinstance(moved.claimed, Job) and moved.claimed.id == "c"

            # A renewal of a and b while b's row is held by a move that waits for something else.
            async with pool.acquire() as mover, mover.transaction():
                await mover.execute("UPDATE jobs SET lease_until = lease_until WHERE id = 'b'")
                renewal = asyncio.ensure_future(store.renew("w", ["a", "b"], NOON + 100))
                await waiting("transactionid")
                # a's row is free: the renewal holds nothing while it waits for b's.
                async with other.transaction():
                    await other.execute("SET LOCAL lock_timeout = '500ms'")
                    await other.execute("UPDATE jobs SET lease_until = lease_until WHERE id = 'a'")
            assert await asyncio.wait_for(renewal, 5) == {"a": run["a"], "b": run["b"]}


async def test_on_postgresql_scripts_get_their_connections_in_the_order_they_asked(tmp_path: Path) -> None:
    """PostgreSQL alone has a pool to wait for. asyncpg's pool hands a released connection to a script that
    asks at that moment before its oldest waiter, which then goes to the back of the queue: in a burst of
    admissions the first members to ask were answered last, some 40 places late. Fifty members arriving
    together, each a reading then a transaction, over five connections: each ends about where it arrived.
    (Measured: the latest member of a round a median 2 places late with turns, 6 on a busy CI machine;
    20-28 without.)"""
    async with open_store("postgres", tmp_path) as store:
        assert isinstance(store.database, PostgresDatabase) and store.database.pool_size == 5
        # The pool grown first: a connection being opened would let the scripts after it start before it.
        await asyncio.gather(*(value(store, "SELECT pg_sleep(0.1)") for _ in range(5)))
        assert store.database.pool.get_size() == 5

        def admission(member: int) -> Generator[Op, Any, None]:
            yield from lock(f"user:{member}")
            yield from execute("SELECT pg_sleep(0.0005)")
            yield from execute("SELECT 1")

        async def member(n: int, ended: list[int]) -> None:
            await value(store, "SELECT 1")
            await store.database.run(admission(n))
            ended.append(n)

        latest = []
        for _ in range(5):
            ended: list[int] = []
            members = []
            for n in range(50):
                members.append(asyncio.ensure_future(member(n, ended)))
                if n % 3 == 0:
                    await asyncio.sleep(0.0003)
            async with asyncio.timeout(20):
                await asyncio.gather(*members)
            latest.append(max(place - n for place, n in enumerate(ended)))
        # Twelve places: a busy CI machine gave medians up to 6 with turns; without them, 20 to 28.
    assert sorted(latest)[2] <= 12, latest


async def test_an_sqlite_too_old_for_the_stores_sql_is_refused_at_start_with_its_reason(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Its first fenced move would fail (``IS NOT DISTINCT FROM`` came in 3.39), not its start: refuse the start."""
    check_version(sqlite3.sqlite_version_info)  # this Python's passes
    monkeypatch.setattr(sqlite3, "sqlite_version_info", (3, 31, 1))
    with pytest.raises(ConfigError, match=r"this Python's SQLite is 3\.31\.1; Atelier needs 3\.39\.0 or newer"):
        await SQLiteDatabase(tmp_path / "atelier.sqlite3").open()
    assert not (tmp_path / "atelier.sqlite3").exists()


async def test_on_postgresql_a_process_whose_session_came_back_calls_no_other_gone_for_a_while() -> None:
    """When PostgreSQL restarts, every session drops and comes back within a second or so: the first process
    back must not take the running jobs of the others, still reconnecting, as a dead process's (their calls
    would be made and paid twice). A process killed for good is still found gone, that much later."""
    now = [0.0]
    async with fresh_database() as url:
        a = PostgresDatabase(f"{url}?application_name=gone-a", pool_size=1)
        b = PostgresDatabase(f"{url}?application_name=gone-b", pool_size=1, clock=lambda: now[0])
        await a.open()
        await b.open()
        try:
            await a.hold("a")
            await b.hold("b")
            assert await b.gone({"a", "b"}) == set()
            await a.close()  # a dies
            assert await b.gone({"a"}) == set()  # its lock is free: one look is not enough (see the next test)
            now[0] += GONE_AFTER
            assert await b.gone({"a"}) == {"a"}  # free for that long: its session ended and stayed ended
            came_back = asyncio.Event()
            b.on_notice(lambda payload: came_back.set() if payload == "reconnected" else None)
            terminate = "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = 'gone-b'"
            conn = await asyncpg.connect(url)
            try:
                await conn.execute(terminate)  # b's session drops, as every session does when PostgreSQL restarts
            finally:
                await conn.close()
            async with asyncio.timeout(10):
                await came_back.wait()
            assert await b.gone({"a"}) == set()  # a's session might be on its way back too
            now[0] += RECONNECT_GRACE
            assert await b.gone({"a"}) == set()  # what b's looks found before its reconnection counts no more
            now[0] += GONE_AFTER
            assert await b.gone({"a"}) == {"a"}
        finally:
            await b.close()
            await a.close()


async def test_on_postgresql_a_holder_is_gone_only_if_its_lock_stays_free() -> None:
    """A live process whose session alone dropped (a proxy's idle cut, a terminated backend) reconnects and holds
    its lock again within a second; its call is still in flight at the provider. A look that found its lock free
    in between must not make it gone: its jobs taken over, their calls would be made and paid twice."""
    now = [0.0]
    async with fresh_database() as url:
        b = PostgresDatabase(f"{url}?application_name=free-b", pool_size=1, clock=lambda: now[0])
        await b.open()
        lives = []
        try:
            await b.hold("b")
            for _ in range(2):  # the same holder's session, twice: it drops, and comes back
                life = PostgresDatabase(f"{url}?application_name=free-a", pool_size=1)
                lives.append(life)
                await life.open()
                await life.hold("a")
                assert await b.gone({"a"}) == set()
                now[0] += GONE_AFTER
                assert await b.gone({"a"}) == set()  # held: what a look found free before counts no more
                await life.close()
                assert await b.gone({"a"}) == set()  # free since this look only
            now[0] += GONE_AFTER / 2
            assert await b.gone({"a"}) == set()
            now[0] += GONE_AFTER / 2
            assert await b.gone({"a", "b"}) == {"a"}  # free at every look for GONE_AFTER: gone
        finally:
            await b.close()
            for life in lives:
                await life.close()


async def test_on_postgresql_a_look_at_some_holders_keeps_what_the_others_looks_found() -> None:
    """The take-over asks about the holders of jobs, the outbox about those of notices. A look at the one must not
    start the other's count again (two lookers taking turns would never call a dead process gone); but a look that
    found a lock free long ago says nothing of the time since, and counts for nothing."""
    now = [0.0]
    async with fresh_database() as url:
        b = PostgresDatabase(f"{url}?application_name=looks-b", pool_size=1, clock=lambda: now[0])
        await b.open()
        try:
            await b.hold("b")
            assert await b.gone({"a"}) == set()  # nobody holds "a" or "c": dead processes
            now[0] += GONE_AFTER / 2
            assert await b.gone({"c"}) == set()
            now[0] += GONE_AFTER / 2
            assert await b.gone({"a"}) == {"a"}
            assert await b.gone({"c"}) == set()
            now[0] += FREE_LOOKS_GAP + 1
            assert await b.gone({"c"}) == set()  # its last look was too long ago: the count starts again
            now[0] += GONE_AFTER
            assert await b.gone({"c", "b"}) == {"c"}
        finally:
            await b.close()


async def test_on_postgresql_a_holder_that_came_back_between_two_looks_is_counted_again() -> None:
    """A session that dropped, came back and dropped again between two looks looks free at both: the notice its
    process sends as it holds its lock again tells the lookers that the lock was held in between."""
    now = [0.0]
    async with fresh_database() as url:
        b = PostgresDatabase(f"{url}?application_name=flap-b", pool_size=1, clock=lambda: now[0])
        a = PostgresDatabase(f"{url}?application_name=flap-a", pool_size=1)
        await b.open()
        try:
            await b.hold("b")
            assert await b.gone({"a"}) == set()  # free: the count starts
            await a.open()
            await a.hold("a")  # back…
            await a.close()  # …and gone again before b's next look
            async with asyncio.timeout(5):
                while "a" in b._free_looks:  # noqa: ASYNC110 (the notice reaches b's session in its own time)
                    await asyncio.sleep(0.01)
            now[0] += GONE_AFTER
            assert await b.gone({"a"}) == set()  # the count started again at this look
            now[0] += GONE_AFTER
            assert await b.gone({"a"}) == {"a"}
        finally:
            await b.close()
            await a.close()
