"""The limits one request must pass, as bounds on totals, and the words that explain a refusal.

Whether a request passes is decided in one place: the store's admission statement compares
the totals it reads with these bounds (``bot.store.queries.VERDICT``), on either database,
under locks on the totals that are bounded. This module only holds the bounds and turns the
store's verdict (which limit, and the totals it saw) into the member's explanation.
"""

from __future__ import annotations

import enum
import math
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from bot.core.money import format_usd
from bot.errors import AtelierError
from bot.i18n import Text, _nt, _t


class LimitReachedError(AtelierError):
    """A quota, the cooldown, the active-job cap or the budget refuses the request."""


class Limit(enum.StrEnum):
    """Which limit refused a request, in the order a refusal names them (the store's verdict)."""

    BUDGET = "budget"
    GUILD = "guild"
    ACTIVE = "active"
    DAILY = "daily"
    COOLDOWN = "cooldown"


@dataclass(frozen=True)
class DayUsage:
    """A member's, their server's and the day's totals, as admission and ``/usage`` see them."""

    user_today: int
    guild_today: int
    spend_today: int  # micro-dollars on the operator's key (what the daily budget counts)
    user_active: int
    user_last_accepted: float | None


@dataclass(frozen=True)
class Quota:
    """The most each total may be for one more job to pass (``None``: no limit)."""

    now: float
    spend_today: int | None = None  # the daily budget less this job's price (micro-dollars)
    guild_today: int | None = None
    user_active: int | None = None
    user_today: int | None = None
    user_last_accepted: float | None = None  # the cooldown: the last job accepted no later than this
    # For the explanation of a refusal:
    budget: int = 0
    guild_limit: int = 0
    daily_limit: int = 0
    max_active: int = 0
    cooldown: float = 0.0

    def refusal(self, limit: Limit, usage: DayUsage) -> LimitReachedError:
        """The member's explanation of the store's verdict: which limit, how much is used, when it resets."""
        match limit:
            case Limit.BUDGET:
                text = _t(
                    "Today's budget for image edits is used up (${spent} of ${budget}); it {resets}.",
                    spent=format_usd(usage.spend_today),
                    budget=format_usd(self.budget),
                    resets=resets_text(self.now),
                )
            case Limit.GUILD:
                text = _t(
                    "This server has used all {limit} of its edits for today; the limit {resets}.",
                    limit=self.guild_limit,
                    resets=resets_text(self.now),
                )
            case Limit.ACTIVE:
                text = _nt(
                    "You already have {count} edit queued or running (the most at once is {most}). "
                    "Wait for one to finish, or cancel one.",
                    "You already have {count} edits queued or running (the most at once is {most}). "
                    "Wait for one to finish, or cancel one.",
                    usage.user_active,
                    most=self.max_active,
                )
            case Limit.DAILY:
                text = _t(
                    "You've used {used} of your {limit} edits for today; the limit {resets}.",
                    used=usage.user_today,
                    limit=self.daily_limit,
                    resets=resets_text(self.now),
                )
            case Limit.COOLDOWN:
                wait = (usage.user_last_accepted or 0.0) + self.cooldown - self.now
                text = _t(
                    "Slow down a little: you can start another edit in {wait}.",
                    wait=describe_wait(max(wait, 0.0)),
                )
        return LimitReachedError(text, log_detail=f"refused: {limit} limit")


def next_reset(now: float) -> float:
    """The next 00:00 UTC after ``now``: when daily counts start again."""
    day = datetime.fromtimestamp(now, UTC).date() + timedelta(days=1)
    return datetime(day.year, day.month, day.day, tzinfo=UTC).timestamp()


def describe_wait(seconds: float) -> Text:
    """``2 h 5 min``, ``40 s``: a short human duration."""
    seconds = max(0, math.ceil(seconds))
    if seconds < 60:
        return _t("{seconds} s", seconds=seconds)
    hours, rest = divmod(seconds, 3600)
    minutes = math.ceil(rest / 60) if hours == 0 else rest // 60
    return (
        _t("{hours} h {minutes} min", hours=hours, minutes=minutes) if hours else _t("{minutes} min", minutes=minutes)
    )


def resets_text(now: float) -> Text:
    return _t("resets at 00:00 UTC (in {wait})", wait=describe_wait(next_reset(now) - now))
