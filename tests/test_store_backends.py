"""The two store backends behave the same: one script of store calls, run on SQLite and on PostgreSQL.

Every call the engine makes is exercised (create, conditional moves with refunds and API
attempts, reads, the ledger snapshot, stats, settings); the test asserts the expected
results on each backend, and that both backends gave exactly the same observations.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from bot.postgres_store import PostgresJobStore
from bot.sqlite_store import SQLiteJobStore
from bot.storage import Block, JobStore, StoredKey

from bot.core.job import Destination, Job, JobKind, JobRequest, utc_day
from bot.core.overrides import GuildOverrides
from bot.core.states import JobState
from bot.provider.client import Attempt, AttemptOutcome
from tests.postgres import fresh_database

NOON = 1795608000.0  # 2026-11-25 12:00 UTC
DAY = utc_day(NOON)


@pytest.fixture(params=["sqlite", "postgres"])
async def store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[JobStore]:
    if request.param == "sqlite":
        backend: JobStore = SQLiteJobStore(tmp_path / "db.sqlite3")
        await backend.open()
        yield backend
        await backend.close()
        return
    async with fresh_database() as url:
        backend = PostgresJobStore(url)
        await backend.open()
        yield backend
        await backend.close()


def job(job_id: str, user_id: int = 1, guild_id: int | None = 10, at: float = NOON) -> Job:
    request = JobRequest(JobKind.EDIT, user_id, guild_id, 100, f"prompt of {job_id}", "2048x1360", 2, "parent1")
    return Job(
        id=job_id,
        request=request,
        state=JobState.ACCEPTED,
        created_at=at,
        charge_day=utc_day(at),
        cost_usd=0.03,
        destination=Destination(upload_limit=8_000_000, data={"type": "message", "channel_id": 100}),
    )


async def exercise(store: JobStore) -> dict[str, Any]:
    """The script; returns everything it observed."""
    seen: dict[str, Any] = {}
    for item in (job("a1"), job("a2", at=NOON + 1), job("b1", user_id=2, at=NOON + 2), job("d1", guild_id=None)):
        await store.create_job(item)
    seen["fresh"] = await store.get_job("a1")
    # Conditional moves: only from the state the store holds.
    seen["to_preparing"] = await store.move_job(
        "a1", JobState.ACCEPTED, JobState.PREPARING, {"notes": ("image2 was re-encoded",)}, refund=False
    )
    seen["stale_move"] = await store.move_job("a1", JobState.ACCEPTED, JobState.QUEUED, {}, refund=False)
    await store.move_job("a1", JobState.PREPARING, JobState.QUEUED, {}, refund=False)
    await store.move_job("a1", JobState.QUEUED, JobState.RUNNING, {"started_at": NOON + 5}, refund=False)
    timed_out = Attempt(1, NOON + 5, 20.0, AttemptOutcome.TIMEOUT, True, None, None)
    seen["failed"] = await store.move_job(
        "a1", JobState.RUNNING, JobState.FAILED, {"finished_at": NOON + 30, "error": "timeout"},
        refund=True, attempts=[timed_out],
    )  # fmt: skip
    # The store takes any move from the state it holds (the lifecycle's table guards the rest),
    # but a second refund row for one job is refused by its key, whatever asks for it.
    seen["refund_again"] = await store.move_job("a1", JobState.FAILED, JobState.FAILED, {}, refund=True)
    await store.move_job("a2", JobState.ACCEPTED, JobState.CANCELLED, {"finished_at": NOON + 3}, refund=True)
    for step in (JobState.PREPARING, JobState.QUEUED, JobState.RUNNING, JobState.DELIVERING):
        current = (await store.get_job("b1")).state  # type: ignore[union-attr]
        attempts = [Attempt(1, NOON + 6, 2.5, AttemptOutcome.SUCCEEDED, True, 200, "req-1")]
        await store.move_job(
            "b1", current, step, {"api_seconds": 2.5} if step is JobState.DELIVERING else {},
            refund=False, attempts=attempts if step is JobState.DELIVERING else (),
        )  # fmt: skip
    await store.move_job(
        "b1", JobState.DELIVERING, JobState.SUCCEEDED,
        {"finished_at": NOON + 12, "output_width": 2048, "output_height": 1360, "output_bytes": 3_000_000,
         "result_channel_id": 100, "result_message_id": 555, "total_tokens": 1283},
        refund=False,
    )  # fmt: skip
    seen["done"] = await store.get_job("b1")
    seen["missing"] = await store.get_job("nope")
    seen["unfinished"] = [j.id for j in await store.unfinished_jobs()]
    snapshot = await store.ledger_snapshot(DAY, NOON - 86400)
    seen["charged"] = sorted(snapshot.charged, key=lambda r: (r[0], r[1] or 0))
    seen["last"] = snapshot.last_accepted
    stats = await store.stats(10, DAY, [DAY])
    seen["stats"] = stats
    await store.save_guild_overrides(10, GuildOverrides(user_daily_limit=None, allowed_role_ids=frozenset({5})), 7)
    await store.save_guild_overrides(11, GuildOverrides(user_cooldown_seconds=30.0), 7)
    seen["overrides"] = await store.guild_overrides(10)
    seen["no_overrides"] = await store.guild_overrides(12)
    seen["all_overrides"] = await store.all_guild_overrides()
    seen["days"] = await store.daily_stats(10, [DAY, "2026-11-24"])
    await store.ping()
    await store.save_block(Block(10, 2, "spam", 7, NOON))
    await store.save_block(Block(10, 2, "spam again", 7, NOON + 1))
    seen["blocks"] = await store.all_blocks()
    seen["unblocked"] = (await store.delete_block(10, 2), await store.delete_block(10, 2))
    await store.save_guild_key(StoredKey(10, "gAAAA-encrypted", 7, NOON))
    seen["keys"] = await store.all_guild_keys()
    seen["key_cleared"] = (await store.delete_guild_key(10), await store.delete_guild_key(10))
    # A status message that moved: an unfinished job shows elsewhere from now on, a finished one stays.
    moved = Destination(upload_limit=8_000_000, data={"type": "message", "channel_id": 100, "message_id": 9})
    await store.set_destination("d1", moved)
    await store.set_destination("b1", moved)
    seen["moved"] = ((await store.get_job("d1")).destination, (await store.get_job("b1")).destination)  # type: ignore[union-attr]
    return seen


async def test_the_store_script_gives_the_expected_results(store: JobStore) -> None:
    seen = await exercise(store)
    assert seen["fresh"] == job("a1")
    assert seen["to_preparing"].moved and not seen["stale_move"].moved
    assert seen["failed"].moved and seen["failed"].refunded
    assert seen["refund_again"].moved and not seen["refund_again"].refunded
    done = seen["done"]
    assert done.state is JobState.SUCCEEDED and done.attempts == 0  # the store keeps what it is given
    assert (done.output_width, done.result_message_id, done.total_tokens, done.api_seconds) == (2048, 555, 1283, 2.5)
    assert seen["missing"] is None
    assert seen["unfinished"] == ["d1"]
    # a1 failed and a2 cancelled: both refunded; b1 and d1 still charged.
    assert seen["charged"] == [
        (1, None, 1, pytest.approx(0.03), 0.0),
        (1, 10, 0, 0.0, 0.0),
        (2, 10, 1, pytest.approx(0.03), 0.0),
    ]
    assert seen["last"] == {1: NOON + 1, 2: NOON + 2}
    stats = seen["stats"]
    assert (stats.jobs_today, stats.succeeded_week, stats.failed_week, stats.cancelled_week) == (3, 1, 1, 1)
    assert stats.durations_week == [pytest.approx(10.0)]
    assert stats.spend_today == pytest.approx(0.06) and stats.busiest == [(1, 1), (2, 1)]
    assert stats.billed_without_result_week == 1  # a1's timed-out call
    overrides = seen["overrides"]
    assert overrides.is_set("user_daily_limit") and overrides.user_daily_limit is None
    assert overrides.allowed_role_ids == frozenset({5}) and not overrides.is_set("guild_daily_limit")
    assert seen["no_overrides"] == GuildOverrides()
    assert set(seen["all_overrides"]) == {10, 11}
    today, yesterday = seen["days"]
    assert (today.day, today.succeeded, today.failed, today.cancelled) == (DAY, 1, 1, 1)
    assert today.spend_usd == pytest.approx(0.03) and today.durations == (pytest.approx(10.0),)
    assert (yesterday.succeeded, yesterday.spend_usd, yesterday.durations) == (0, 0.0, ())
    assert seen["blocks"] == [Block(10, 2, "spam again", 7, NOON + 1)]
    assert seen["unblocked"] == (True, False)
    assert seen["keys"] == [StoredKey(10, "gAAAA-encrypted", 7, NOON)]
    assert seen["key_cleared"] == (True, False)
    assert seen["moved"] == (
        Destination(upload_limit=8_000_000, data={"type": "message", "channel_id": 100, "message_id": 9}),
        job("b1").destination,
    )


async def test_both_backends_observe_exactly_the_same(tmp_path: Path) -> None:
    sqlite = SQLiteJobStore(tmp_path / "same.sqlite3")
    await sqlite.open()
    try:
        from_sqlite = await exercise(sqlite)
    finally:
        await sqlite.close()
    async with fresh_database() as url:
        postgres = PostgresJobStore(url)
        await postgres.open()
        try:
            from_postgres = await exercise(postgres)
        finally:
            await postgres.close()
    assert from_postgres == from_sqlite


async def test_migrations_apply_once_on_postgres() -> None:
    async with fresh_database() as url:
        for _ in range(2):
            store = PostgresJobStore(url)
            await store.open()
            await store.close()
        store = PostgresJobStore(url)
        await store.open()
        try:
            versions = await store.pool.fetch("SELECT version FROM schema_migrations ORDER BY version")
            from bot.storage import MIGRATIONS

            assert [r[0] for r in versions] == list(range(1, len(MIGRATIONS) + 1))
        finally:
            await store.close()
