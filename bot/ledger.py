"""Today's charges in memory, so admission needs no database trip: a cache of the store's money entries.

The store is the record: one charge row per accepted job and at most one refund row,
keyed by the job. This cache is loaded from those rows at start-up and afterwards
changed only by ``bot.lifecycle``, and only for a row the store actually wrote, so
it can never count a refund the store refused as a repeat. It is safe while one
process writes the database (the SQLite mode).
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

from bot.jobs import Job


@dataclass(frozen=True)
class DayUsage:
    """What a quota check needs to know about a member, their guild and the day."""

    user_today: int
    guild_today: int
    spend_today: float  # on the operator's key (what the daily budget counts)
    user_active: int
    user_last_accepted: float | None


@dataclass
class LedgerSnapshot:
    """What the store holds for one day, as loaded at start-up."""

    # user, guild, net jobs, net dollars on the operator's key, net dollars on servers' own keys
    charged: list[tuple[int, int | None, int, float, float]] = field(default_factory=list)
    last_accepted: dict[int, float] = field(default_factory=dict)  # user -> newest accepted job


class UsageLedger:
    """Net charged jobs per member and guild per UTC day, and spend per day.

    Spend is kept apart by whose key pays: the operator's (what ``DAILY_BUDGET_USD``
    limits) and servers' own keys (counted, never against the budget).
    """

    def __init__(self) -> None:
        self._user_day: Counter[tuple[int, str]] = Counter()
        self._guild_day: Counter[tuple[int, str]] = Counter()
        self._spend_day: dict[str, float] = {}
        self._own_key_spend_day: dict[str, float] = {}
        self._last: dict[int, float] = {}

    def load(self, day: str, snapshot: LedgerSnapshot) -> None:
        """Start from what the store holds for ``day``."""
        for user_id, guild_id, jobs, dollars, own_key_dollars in snapshot.charged:
            self._user_day[(user_id, day)] += jobs
            if guild_id is not None:
                self._guild_day[(guild_id, day)] += jobs
            self._spend_day[day] = self._spend_day.get(day, 0.0) + dollars
            self._own_key_spend_day[day] = self._own_key_spend_day.get(day, 0.0) + own_key_dollars
        self._last.update(snapshot.last_accepted)

    def usage(self, user_id: int, guild_id: int | None, day: str, *, active: int) -> DayUsage:
        """A member's, their guild's and the day's totals; ``active`` comes from the lifecycle."""
        return DayUsage(
            user_today=self._user_day[(user_id, day)],
            guild_today=self._guild_day[(guild_id, day)] if guild_id is not None else 0,
            spend_today=self._spend_day.get(day, 0.0),
            user_active=active,
            user_last_accepted=self._last.get(user_id),
        )

    def charge(self, job: Job) -> None:
        """The store recorded the job's charge."""
        self._add(job, +1)
        self._last[job.user_id] = max(self._last.get(job.user_id, 0.0), job.created_at)

    def refund(self, job: Job) -> None:
        """The store recorded the job's refund (which it does at most once)."""
        self._add(job, -1)

    def release(self, job: Job) -> None:
        """The store refused to record the job's charge: take it back out of the totals."""
        self._add(job, -1)

    def _add(self, job: Job, sign: int) -> None:
        self._user_day[(job.user_id, job.charge_day)] += sign
        if job.guild_id is not None:
            self._guild_day[(job.guild_id, job.charge_day)] += sign
        spend = self._own_key_spend_day if job.guild_key else self._spend_day
        spend[job.charge_day] = spend.get(job.charge_day, 0.0) + sign * job.cost_usd

    def spend(self, day: str) -> tuple[float, float]:
        """Net dollars of ``day``: on the operator's key, and on servers' own keys."""
        return self._spend_day.get(day, 0.0), self._own_key_spend_day.get(day, 0.0)

    def totals(self, day: str) -> tuple[dict[int, int], dict[int, int], float]:
        """Per-member and per-guild net jobs and the operator's spend of ``day`` (what the model test compares)."""
        users = {u: n for (u, d), n in self._user_day.items() if d == day and n}
        guilds = {g: n for (g, d), n in self._guild_day.items() if d == day and n}
        return users, guilds, self._spend_day.get(day, 0.0)
