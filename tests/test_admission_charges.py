"""An admission's charge is written by the database with the job (migration 14), in the same statement
as the check of the member's limits: each admission finds the charges of those before it, and only an
admitted job is charged, once, at its price, stamped with its admission. Run on both databases.
"""

from __future__ import annotations

from typing import Any

from bot.core.quota import Limit, Quota
from bot.core.states import JobState
from bot.store.store import Store
from tests.stores import LEASE, NOON, PRICE, add, make_job, query


async def test_each_admission_is_charged_with_its_job_and_counts_for_the_next(store: Store) -> None:
    """Member 1 may have two jobs today and asks three times; member 2 may have no second unfinished job and
    has one; member 3 may spend what is left of a budget of five edits today; member 4 asks within a cooldown."""
    await add(store, make_job("b0", 2, NOON), JobState.QUEUED)
    await add(store, make_job("d0", 4, NOON + 6.6), JobState.QUEUED)
    budget = 5 * PRICE - PRICE  # the day's spend may be at most this before one more edit

    async def admit(job_id: str, user: int, offset: float, **bounds: Any) -> Limit | None:
        job = make_job(job_id, user, NOON + offset)
        refused = await store.admit(job, Quota(job.created_at, **bounds), job.created_at + LEASE)
        return None if refused is None else refused[0]

    assert await admit("a1", 1, 1, user_today=1) is None
    assert await admit("b1", 2, 2, user_active=0) is Limit.ACTIVE
    assert await admit("a2", 1, 3, user_today=1) is None
    assert await admit("c1", 3, 4, spend_today=budget) is None
    assert await admit("a3", 1, 5, user_today=1) is Limit.DAILY  # the third today: a1's and a2's charges count
    assert await admit("c2", 3, 6, spend_today=budget) is Limit.BUDGET  # the day's sixth: b0, d0, a1, a2, c1
    assert await admit("d1", 4, 7, user_last_accepted=NOON + 6.5) is Limit.COOLDOWN  # d0 came 0.4 s ago

    assert [row["id"] for row in await query(store, "SELECT id FROM jobs ORDER BY id")] == [
        "a1", "a2", "b0", "c1", "d0",
    ]  # fmt: skip
    money = await query(store, "SELECT job_id, entry, user_id, amount, at FROM money ORDER BY job_id, entry")
    assert [(r["job_id"], r["entry"], r["user_id"], r["amount"], r["at"]) for r in money] == [
        ("a1", "charge", 1, PRICE, NOON + 1),
        ("a2", "charge", 1, PRICE, NOON + 3),
        ("b0", "charge", 2, PRICE, NOON),
        ("c1", "charge", 3, PRICE, NOON + 4),
        ("d0", "charge", 4, PRICE, NOON + 6.6),
    ]
