"""Today's charges and each member's active jobs, in memory, so admission needs no database trip.

The store is the record; this is its running total. It is loaded once at start-up
and afterwards changed only by the job service, the only writer of jobs (one bot
process per database). Admission reads it under the service's lock, so the check
and the charge are one step and two quick requests cannot both slip past a limit.
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
    spend_today: float
    user_active: int
    user_last_accepted: float | None


@dataclass
class LedgerSnapshot:
    """What the store holds for one day, as loaded at start-up."""

    charged: list[tuple[int, int | None, int, float]] = field(default_factory=list)  # user, guild, jobs, dollars
    active: dict[str, int] = field(default_factory=dict)  # job id -> user, for queued or running jobs
    last_accepted: dict[int, float] = field(default_factory=dict)  # user -> newest charged job


class UsageLedger:
    """Counts of charged jobs per member and guild per UTC day, spend per day, active jobs per member."""

    def __init__(self) -> None:
        self._user_day: Counter[tuple[int, str]] = Counter()
        self._guild_day: Counter[tuple[int, str]] = Counter()
        self._spend_day: dict[str, float] = {}
        self._active: Counter[int] = Counter()
        self._active_jobs: set[str] = set()
        self._last: dict[int, float] = {}

    def load(self, day: str, snapshot: LedgerSnapshot) -> None:
        """Start from what the store holds for ``day``."""
        for user_id, guild_id, jobs, dollars in snapshot.charged:
            self._user_day[(user_id, day)] += jobs
            if guild_id is not None:
                self._guild_day[(guild_id, day)] += jobs
            self._spend_day[day] = self._spend_day.get(day, 0.0) + dollars
        for job_id, user_id in snapshot.active.items():
            self._active_jobs.add(job_id)
            self._active[user_id] += 1
        self._last.update(snapshot.last_accepted)

    def is_active(self, job_id: str) -> bool:
        """Whether the job is still queued or running (so it holds a place and a charge)."""
        return job_id in self._active_jobs

    def usage(self, user_id: int, guild_id: int | None, day: str) -> DayUsage:
        """A member's, their guild's and the day's totals."""
        return DayUsage(
            user_today=self._user_day[(user_id, day)],
            guild_today=self._guild_day[(guild_id, day)] if guild_id is not None else 0,
            spend_today=self._spend_day.get(day, 0.0),
            user_active=self._active[user_id],
            user_last_accepted=self._last.get(user_id),
        )

    def charge(self, job: Job) -> None:
        """A job was accepted: count it, its cost, and its place among the member's active jobs."""
        self._user_day[(job.user_id, job.charge_day)] += 1
        if job.guild_id is not None:
            self._guild_day[(job.guild_id, job.charge_day)] += 1
        self._spend_day[job.charge_day] = self._spend_day.get(job.charge_day, 0.0) + job.cost_usd
        self._active[job.user_id] += 1
        self._active_jobs.add(job.id)
        self._last[job.user_id] = job.created_at

    def end(self, job: Job, *, refund: bool) -> bool:
        """A job stopped being active; ``refund`` gives its charge back (failed or cancelled).

        Returns ``False`` (and changes nothing) if the job had already ended, so a job is
        never refunded twice.
        """
        if job.id not in self._active_jobs:
            return False
        self._active_jobs.discard(job.id)
        self._active[job.user_id] = max(0, self._active[job.user_id] - 1)
        if refund:
            self._user_day[(job.user_id, job.charge_day)] -= 1
            if job.guild_id is not None:
                self._guild_day[(job.guild_id, job.charge_day)] -= 1
            self._spend_day[job.charge_day] = self._spend_day.get(job.charge_day, 0.0) - job.cost_usd
        return True
