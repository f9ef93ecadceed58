"""Admissions written together (``Store.admit_all``, ``bot.jobs.intake``).

A group of admissions in one transaction must decide and charge exactly what the same admissions
written one by one would: each checked against its member's totals with the jobs admitted before
it counted. Run on both databases.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest

from bot.core.job import Job
from bot.core.quota import DayUsage, Limit, Quota
from bot.core.records import AdmitOrder
from bot.core.states import JobState
from bot.jobs.intake import Intake
from bot.store.store import Store
from tests.stores import DATABASES, LEASE, NOON, PRICE, add, make_job, open_store, query

Outcome = tuple[Limit, DayUsage] | None


def orders() -> list[AdmitOrder]:
    """Member 1 may have two jobs today and asks three times; member 2 may have no second unfinished job and
    has one; member 3 may spend what is left of a budget of five edits today; member 4 asks within a cooldown."""

    def order(job_id: str, user: int, offset: float, **bounds: Any) -> AdmitOrder:
        job = make_job(job_id, user, NOON + offset)
        return AdmitOrder(job, Quota(job.created_at, **bounds), job.created_at + LEASE)

    budget = 5 * PRICE - PRICE  # the day's spend may be at most this before one more edit
    return [
        order("a1", 1, 1, user_today=1),
        order("b1", 2, 2, user_active=0),
        order("a2", 1, 3, user_today=1),
        order("c1", 3, 4, spend_today=budget),
        order("a3", 1, 5, user_today=1),  # the third today: refused, counting the two before it in this group
        order("c2", 3, 6, spend_today=budget),  # the day's sixth edit (b0, d0, a1, a2, c1, this): refused
        order("d1", 4, 7, user_last_accepted=NOON + 6.5),  # member 4's job at 0.5 s ago, below
    ]


async def written(store: Store, grouped: bool) -> tuple[list[Outcome], list[dict[str, Any]], list[str]]:
    """The outcomes of ``orders`` on ``store`` (with member 2's unfinished job and member 4's recent one),
    written as one group or one by one; the money rows and the jobs' ids after."""
    await add(store, make_job("b0", 2, NOON), JobState.QUEUED)
    await add(store, make_job("d0", 4, NOON + 6.6), JobState.QUEUED)
    if grouped:
        outcomes = await store.admit_all(orders())
    else:
        outcomes = [(await store.admit_all([one]))[0] for one in orders()]
    money = await query(store, "SELECT job_id, entry, user_id, day, amount, at FROM money ORDER BY job_id, entry")
    ids = [row["id"] for row in await query(store, "SELECT id FROM jobs ORDER BY id")]
    return outcomes, money, ids


@pytest.mark.parametrize("database", DATABASES)
async def test_a_group_of_admissions_decides_and_charges_what_the_same_admissions_one_by_one_do(
    database: str, tmp_path: Path
) -> None:
    async with open_store(database, tmp_path / "group", "group") as store:
        grouped = await written(store, grouped=True)
    async with open_store(database, tmp_path / "alone", "alone") as store:
        alone = await written(store, grouped=False)
    outcomes, money, ids = grouped
    assert [None if o is None else o[0] for o in outcomes] == [
        None, Limit.ACTIVE, None, None, Limit.DAILY, Limit.BUDGET, Limit.COOLDOWN,
    ]  # fmt: skip
    refused_a3 = outcomes[4]
    assert refused_a3 is not None and refused_a3[1].user_today == 2
    assert ids == ["a1", "a2", "b0", "c1", "d0"]
    charged = {row["job_id"]: row for row in money if row["entry"] == "charge"}
    assert sorted(charged) == ["a1", "a2", "b0", "c1", "d0"]
    # Each charge is the job's price, stamped with its admission.
    assert [(charged[i]["amount"], charged[i]["at"]) for i in ("a1", "a2", "c1")] == [
        (PRICE, NOON + 1), (PRICE, NOON + 3), (PRICE, NOON + 4),
    ]  # fmt: skip
    assert grouped == alone


def _fresh_jobs(count: int, first_user: int = 100) -> list[Job]:
    return [make_job(f"n{n}", first_user + n, NOON + n) for n in range(count)]


class CountingStore(Store):
    """The store, counting the admissions each transaction wrote."""

    def __init__(self, store: Store) -> None:
        super().__init__(store.database)
        self.groups: list[int] = []

    async def admit_all(self, orders: Sequence[AdmitOrder]) -> list[Outcome]:
        self.groups.append(len(orders))
        return await super().admit_all(orders)


async def test_admissions_asked_at_once_are_written_in_one_transaction(store: Store) -> None:
    counting = CountingStore(store)
    intake = Intake(counting)
    jobs = _fresh_jobs(12)
    outcomes = await asyncio.wait_for(
        asyncio.gather(*(intake.admit(AdmitOrder(j, Quota(j.created_at), j.created_at + LEASE)) for j in jobs)), 30
    )
    assert outcomes == [None] * 12
    assert sum(counting.groups) == 12 and len(counting.groups) <= 2, counting.groups
    charged = await query(store, "SELECT job_id FROM money WHERE entry = 'charge' ORDER BY job_id")
    assert [row["job_id"] for row in charged] == sorted(j.id for j in jobs)
    # One alone costs what it did: a transaction of its own.
    late = make_job("late", 999, NOON + 99)
    assert await intake.admit(AdmitOrder(late, Quota(late.created_at), late.created_at + LEASE)) is None
    assert counting.groups[-1] == 1


async def test_when_a_group_fails_each_admission_is_written_alone_and_only_the_faulty_one_fails(store: Store) -> None:
    """A job whose id is taken fails its group's transaction (nothing of it kept); the others are then
    admitted alone and charged once, and the faulty one's caller gets the database's error."""
    await add(store, make_job("n3", 50, NOON), JobState.QUEUED)
    counting = CountingStore(store)
    intake = Intake(counting)
    jobs = _fresh_jobs(6)  # n3 among them: the id is taken
    outcomes = await asyncio.wait_for(
        asyncio.gather(
            *(intake.admit(AdmitOrder(j, Quota(j.created_at), j.created_at + LEASE)) for j in jobs),
            return_exceptions=True,
        ),
        30,
    )
    assert [o is None for o in outcomes] == [True, True, True, False, True, True]
    assert isinstance(outcomes[3], Exception)
    assert counting.groups[0] == 6 and counting.groups[-6:] == [1] * 6
    money = await query(store, "SELECT job_id, user_id FROM money WHERE entry = 'charge' ORDER BY job_id")
    assert [(row["job_id"], row["user_id"]) for row in money] == [
        ("n0", 100), ("n1", 101), ("n2", 102), ("n3", 50), ("n4", 104), ("n5", 105),
    ]  # fmt: skip
