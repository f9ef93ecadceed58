"""Members' head locks on PostgreSQL: a move of one member's waiting job holds up that member alone.

A gateway moves each prepared job to "queued" in a transaction of a few statements, and during a
burst its event loop is busy between them. That move writes the member's ready head, so it used to
hold the claims' lock from its first statement to its commit, and every claim of every process
waited for it (300–800 ms at a time while a queue of 10,000 was built: ``bench/RESULTS.md``). It
now takes only its member's head lock; a claim takes the claims' lock, then the head locks of the
members it chose, and checks as it writes that each head still stands.

PostgreSQL only: SQLite has one writer, which runs one transaction at a time, so nothing can run
beside a move there, and a move cannot be held up between its statements.
"""

from __future__ import annotations

import asyncio

import asyncpg
import pytest

from bot.core.records import ClaimTerms, Fence
from bot.core.states import JobState
from bot.store.postgres import PostgresDatabase, lock_key
from bot.store.store import Store
from tests.stores import GATEWAY, LEASE, NOON, add, make_job, query

WORKER = "w"
WAITING_FOR_A_LOCK = (
    "SELECT COUNT(*) FROM pg_stat_activity WHERE datname = current_database() AND wait_event_type = 'Lock'"
)
pytestmark = pytest.mark.parametrize("store", ["postgres"], indirect=True)


def terms(now: float) -> ClaimTerms:
    return ClaimTerms(WORKER, now, LEASE, 100)


async def waiting_for_a_lock(store: Store, count: int = 1, timeout: float = 10) -> None:
    """Until ``count`` sessions of the store's database wait for a lock (a row's or an advisory one). (Read on a
    connection of its own: within a transaction, ``pg_stat_activity`` keeps showing its first reading.)"""
    async with asyncio.timeout(timeout):
        while await pool(store).fetchval(WAITING_FOR_A_LOCK) < count:  # noqa: ASYNC110  # other sessions' state
            await asyncio.sleep(0.02)


def pool(store: Store) -> asyncpg.Pool:
    assert isinstance(store.database, PostgresDatabase)
    return store.database.pool


async def test_a_move_held_up_between_its_statements_holds_up_its_member_alone_not_the_claims(store: Store) -> None:
    slow = await add(store, make_job("slow", 1, NOON), JobState.PREPARING)
    await add(store, make_job("other", 2, NOON + 1))
    async with pool(store).acquire() as conn:
        # The slow job's row held: its move to "queued" stops at its UPDATE, with the locks it took first.
        async with conn.transaction():
            await conn.execute("SELECT 1 FROM jobs WHERE id = 'slow' FOR UPDATE")
            move = asyncio.create_task(
                store.move(
                    "slow",
                    JobState.PREPARING,
                    JobState.QUEUED,
                    {"queued_at": NOON + 2},
                    refund=False,
                    holder=GATEWAY,
                    now=NOON + 2,
                    fence=Fence(slow.holder, slow.run),
                )
            )
            await waiting_for_a_lock(store)
            # Another member's job is claimed meanwhile (before: the claim waited for the move's commit).
            taken = await asyncio.wait_for(store.claim(terms(NOON + 3)), timeout=5)
            assert getattr(taken, "id", None) == "other", taken
            assert not move.done()
        moved = await asyncio.wait_for(move, timeout=10)
    assert moved.job is not None and moved.job.state is JobState.QUEUED
    # The slow member's head was written right: their job is the next claimed.
    taken = await store.claim(terms(NOON + 4))
    assert getattr(taken, "id", None) == "slow", taken


async def test_a_claim_whose_head_was_cancelled_before_it_took_its_members_lock_claims_the_next(store: Store) -> None:
    first = await add(store, make_job("first", 1, NOON))
    await add(store, make_job("second", 1, NOON + 1))
    async with pool(store).acquire() as conn:
        # A cancel of the member's head under way, as a gateway writes it: the member's head lock, the job, the
        # member's new head, not committed yet.
        async with conn.transaction():
            await conn.execute(f"SELECT pg_advisory_xact_lock({lock_key('head:1')})")
            await conn.execute(f"UPDATE jobs SET status = 'cancelled' WHERE id = '{first.id}'")
            await conn.execute("UPDATE fair_turns SET head_id = 'second', head_at = $1 WHERE user_id = 1", NOON + 1)
            claiming = asyncio.create_task(store.claim(terms(NOON + 3)))
            await waiting_for_a_lock(store)  # the claim read "first" as the head, and waits for the member
        taken = await asyncio.wait_for(claiming, timeout=10)
    # The claim saw its head gone as it wrote, and took the member's next job (before: it took nothing).
    assert getattr(taken, "id", None) == "second", taken
    rows = await query(store, "SELECT id, status FROM jobs ORDER BY id")
    assert rows == [{"id": "first", "status": "cancelled"}, {"id": "second", "status": "running"}]
