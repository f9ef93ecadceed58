"""A job's lifecycle as data: its states, the moves allowed between them, and what each costs.

::

    accepted ──► preparing ──► queued ──► running ──► delivering ──► succeeded
        │            │           │  ▲        │             │
        │            │           │  │        └──(a stop)───┴──► interrupted
        │            │           │  └───────── back in line, once ─────┘
        ▼            ▼           ▼
      failed or cancelled (before the API call)      failed (from running, delivering, interrupted)

A job is charged when it is accepted and refunded when it ends failed or cancelled; a job
priced by tokens is charged its most expensive outcome and settled to its real cost when it
succeeds (one settlement row, the signed difference).
Cancelling is possible only before the API call starts (accepted, preparing, queued,
and not queued again after an interruption: that job's call had started).
A job interrupted by a stop goes back in line once; a second interruption fails it.
``bot.jobs.lifecycle`` is the one place that moves jobs along this table, and
``bot.store`` the one place that writes a move (its SQL takes the state names from here).
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Mapping
from dataclasses import dataclass


class JobState(enum.StrEnum):
    """Where a job is in its life. The values are what the store's ``status`` column holds."""

    ACCEPTED = "accepted"  # admitted and charged; the member is being answered
    PREPARING = "preparing"  # its images are being fetched, checked and saved
    QUEUED = "queued"  # waiting for an API slot
    RUNNING = "running"  # the API call is in flight (it may be billed from here on)
    DELIVERING = "delivering"  # the answer is in; decoding and posting it
    INTERRUPTED = "interrupted"  # a stop caught it running or delivering; it will run again once
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"

    @property
    def terminal(self) -> bool:
        """Whether the job is over (nothing can move it again)."""
        return self in _TERMINAL

    @property
    def waiting(self) -> bool:
        """Whether the job waits for its turn (its images may still be on their way)."""
        return self in (JobState.ACCEPTED, JobState.PREPARING, JobState.QUEUED)


_TERMINAL = frozenset({JobState.SUCCEEDED, JobState.FAILED, JobState.CANCELLED})


class MoneyEffect(enum.Enum):
    """What entering a state does to the member's, the server's and the day's totals."""

    NONE = "none"
    REFUND = "refund"  # the acceptance charge is given back, at most once per job
    SETTLE = "settle"  # a charge by tokens is settled to the real cost, at most once per job (when it is one)


@dataclass(frozen=True)
class Restarts:
    """The guard on interrupted → queued: a job goes back in line only once."""

    limit: int = 1

    def __call__(self, restarts: int) -> bool:
        return restarts < self.limit


Guard = Callable[[int], bool]  # called with the job's restart count


S = JobState
# A job back in line after an interruption already reached the API once (and may have been
# billed for it): it can no longer be cancelled, and it gets no third run.
FIRST_RUN = Restarts(limit=1)

#: Every allowed move: from-state → {to-state: guard or None}. Anything else is refused.
TRANSITIONS: Mapping[JobState, Mapping[JobState, Guard | None]] = {
    S.ACCEPTED: {S.PREPARING: None, S.FAILED: None, S.CANCELLED: None},
    S.PREPARING: {S.QUEUED: None, S.FAILED: None, S.CANCELLED: None},
    S.QUEUED: {S.RUNNING: None, S.FAILED: None, S.CANCELLED: FIRST_RUN},
    S.RUNNING: {S.DELIVERING: None, S.INTERRUPTED: FIRST_RUN, S.FAILED: None},
    S.DELIVERING: {S.SUCCEEDED: None, S.INTERRUPTED: FIRST_RUN, S.FAILED: None},
    S.INTERRUPTED: {S.QUEUED: FIRST_RUN, S.FAILED: None},
    S.SUCCEEDED: {},
    S.FAILED: {},
    S.CANCELLED: {},
}

#: The money effect of entering a state. The charge itself is made when a job is created (accepted).
MONEY: Mapping[JobState, MoneyEffect] = {state: MoneyEffect.NONE for state in JobState} | {
    S.SUCCEEDED: MoneyEffect.SETTLE,
    S.FAILED: MoneyEffect.REFUND,
    S.CANCELLED: MoneyEffect.REFUND,
}


def allowed(current: JobState, target: JobState, restarts: int) -> bool:
    """Whether a job in ``current`` that has restarted ``restarts`` times may move to ``target``."""
    targets = TRANSITIONS[current]
    if target not in targets:
        return False
    guard = targets[target]
    return guard is None or guard(restarts)


def cancellable(state: JobState, restarts: int) -> bool:
    """Whether a job can still be withdrawn: only before its API call has ever started."""
    return allowed(state, JobState.CANCELLED, restarts)


#: A job waiting for its turn (its images may still be on their way).
WAITING = (JobState.ACCEPTED, JobState.PREPARING, JobState.QUEUED)
#: A job its member's later jobs wait behind: one waiting, or one put back (interrupted) that goes back in line
#: next. A member's jobs start in the order they were asked, a take-over's re-queueing included.
IN_LINE = (*WAITING, JobState.INTERRUPTED)
#: A job some process holds, under a lease: being admitted, or claimed and running.
HELD = (JobState.ACCEPTED, JobState.PREPARING, JobState.RUNNING, JobState.DELIVERING)
#: A job that is over.
ENDED = (JobState.SUCCEEDED, JobState.FAILED, JobState.CANCELLED)


def sql_states(*states: JobState) -> str:
    """``'accepted', 'preparing'``: state names for an SQL ``IN (…)``, generated from ``JobState``.

    The values are this module's own constants (never input), so writing them into the SQL text
    is safe, and it lets the planner match them against indexes as it would literals.
    """
    return ", ".join(f"'{JobState(state).value}'" for state in states)
