"""The store's records besides jobs: what it returns, as plain frozen values."""

from __future__ import annotations

import enum
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from bot.core.attempts import Attempt
from bot.core.job import Job
from bot.core.quota import Quota
from bot.core.states import JobState


@dataclass(frozen=True)
class JobStats:
    """Aggregates for ``/atelier stats`` (amounts in micro-dollars)."""

    jobs_today: int
    jobs_week: int
    succeeded_week: int
    failed_week: int
    cancelled_week: int
    durations_week: list[float]
    spend_today: int  # on the operator's key, all servers
    spend_week: int  # on the operator's key, all servers
    busiest: list[tuple[int, int]]
    billed_without_result_week: int  # API calls that may have been billed but gave no result
    own_key_spend_week: int = 0  # this server's jobs on its own API key
    models_week: list[tuple[str, int]] = field(default_factory=list)  # this server's jobs per model


@dataclass(frozen=True)
class DayStats:
    """One UTC day of a server's jobs, for the ``/atelier stats`` chart."""

    day: str
    succeeded: int = 0
    failed: int = 0
    cancelled: int = 0
    spend: int = 0  # net charges in micro-dollars, whichever key paid
    durations: tuple[float, ...] = ()  # seconds from request to result of the jobs that succeeded


@dataclass(frozen=True)
class Block:
    """A member a server's moderators blocked from starting jobs there."""

    guild_id: int
    user_id: int
    reason: str | None
    blocked_by: int
    blocked_at: float


@dataclass(frozen=True)
class StoredKey:
    """A server's own API key as stored: encrypted (Fernet), never in clear."""

    guild_id: int
    encrypted: str = field(repr=False)
    set_by: int = 0
    set_at: float = 0.0


@dataclass(frozen=True)
class StylePreset:
    """One named style of one server."""

    guild_id: int
    name: str
    text: str
    created_by: int
    created_at: float


@dataclass(frozen=True)
class HistoryEntry:
    """One of a member's jobs as ``/history`` shows it."""

    job: Job
    result_deleted: bool  # its result message was deleted with the Delete button
    settled: int = 0  # a job by tokens: its settlement (signed micro-dollars), so it shows what it really cost

    @property
    def cost(self) -> int:
        """What the job cost: its charge, settled (a refund is the caller's to say)."""
        return self.job.cost + self.settled


@dataclass(frozen=True)
class JobInfo:
    """Everything a result's Info button tells: the job, where it came from, and its API attempts."""

    job: Job
    parents: tuple[Job, ...] = ()  # its parent first, then that one's parent, and so on
    missing_parent: str | None = None  # the id of the first ancestor no longer in the ledger
    attempts: tuple[Attempt, ...] = ()  # every API attempt of every run, in order

    @property
    def retried(self) -> bool:
        """Whether it took more than one try: a call repeated, or a run again after a restart."""
        return self.job.restarts > 0 or len(self.attempts) > 1 or self.job.attempts > 1


@dataclass(frozen=True)
class RecentRun:
    """One successful job's running time, and what makes jobs similar (for honest estimates)."""

    model: str
    input_count: int
    size: str | None
    seconds: float
    finished_at: float


@dataclass(frozen=True)
class Totals:
    """What every process sees alike, for the metrics (amounts in micro-dollars)."""

    queued: int = 0
    running: int = 0
    operator_spend: int = 0
    server_spend: int = 0
    oldest_queued_at: float | None = None
    notices_pending: int = 0
    oldest_notice_at: float | None = None


class ClaimMiss(enum.Enum):
    """Why a claim took no job: what the worker must wait for before it tries again."""

    NO_SLOT = "no slot"  # MAX_CONCURRENT_JOBS calls are running: wait for one to end
    NO_JOB = "no job"  # nothing is ready: wait for a job to be queued


@dataclass(frozen=True)
class ClaimTerms:
    """A claim's terms: for whom, when, the lease it takes, and the cap on running jobs across processes."""

    holder: str
    now: float
    lease_seconds: float
    max_running: int


@dataclass(frozen=True)
class Fence:
    """Who must still hold a job for a move of it to happen: its holder and its run.

    A take-over's fence (``gone``: the holders it found gone) also asks that the job still be abandoned as
    the move is written: its lease lapsed by the move's time, or its holder among ``gone``. A holder that
    only stalled may wake between the take-over's reading and its move, renew its lease and post its result;
    the take-over must then leave the job to it, or the result would be posted twice."""

    holder: str | None
    run: int
    gone: frozenset[str] | None = None


@dataclass(frozen=True)
class MoveResult:
    """What a move did: the job as stored after it (``None``: refused), whether a refund row was written,
    and, when a claim went with it, the job claimed or why none."""

    job: Job | None
    refunded: bool = False
    claimed: Job | ClaimMiss | None = None


@dataclass(frozen=True)
class StoredImage:
    """A job's input as its row holds it (what was done to it is on the job, as notes)."""

    data: bytes
    mime: str
    width: int
    height: int


@dataclass(frozen=True)
class Notice:
    """A final outcome owed to a member (the outbox): recorded with the move that ended the job."""

    job_id: str
    outcome: JobState
    payload: Mapping[str, Any]  # what to tell, as the frontend stored it (JSON)
    created_at: float
    due_at: float
    attempts: int = 0
    claimed_by: str | None = None
    done_at: float | None = None
    how: str | None = None


@dataclass(frozen=True)
class NoticeDraft:
    """What a move that ends a job records for its member: due now, or after a grace (a reply on its way)."""

    payload: Mapping[str, Any] = field(default_factory=dict)
    delay: float = 0.0
    done_how: str | None = None  # already told (a posted result): recorded as done


@dataclass(frozen=True)
class AdmitOrder:
    """One admission as the store writes it: ``job``, if its member's totals are within ``quota``, held by
    its holder until ``lease_until``."""

    job: Job
    quota: Quota
    lease_until: float


@dataclass(frozen=True)
class MoveOrder:
    """One move as the store writes it: the job, from ``current`` to ``target`` with its changed ``values``,
    a refund row if ``refund``, a settlement of ``settle`` micro-dollars, its API ``attempts``, the
    ``notice`` its member is owed when it ends (held by ``holder`` first), and the ``fence`` it needs."""

    job_id: str
    current: JobState
    target: JobState
    values: Mapping[str, Any]
    refund: bool
    holder: str
    now: float
    attempts: Sequence[Attempt] = ()
    fence: Fence | None = None
    notice: NoticeDraft | None = None
    settle: int | None = None
