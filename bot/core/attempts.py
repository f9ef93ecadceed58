"""API attempts as the engine records them: how each HTTP attempt of a call ended, and whether it may be billed.

The provider bills a call even when we hang up, so every attempt is recorded with the
answer to one question: could the provider have made (and billed) an image in it?
"""

from __future__ import annotations

import enum
from dataclasses import dataclass


class AttemptOutcome(enum.StrEnum):
    """How one HTTP attempt of a call ended."""

    SUCCEEDED = "succeeded"
    REJECTED = "rejected"  # a 4xx the API explains
    SAFETY_REFUSED = "safety_refused"
    AUTH_FAILED = "auth_failed"
    QUOTA_EXHAUSTED = "quota_exhausted"
    RATE_LIMITED = "rate_limited"
    SERVER_ERROR_FAST = "server_error_fast"
    SERVER_ERROR_SLOW = "server_error_slow"
    CONNECT_FAILED = "connect_failed"
    CONNECTION_LOST = "connection_lost"
    BODY_CUT_OFF = "body_cut_off"
    TIMEOUT = "timeout"
    INTERRUPTED = "interrupted"
    ABANDONED = "abandoned"  # this process lost the job's lease mid-call; another runs it

    @property
    def may_be_billed(self) -> bool:
        """Whether the provider may have produced, and billed, an image in this attempt."""
        return self in MAY_BE_BILLED

    @property
    def retried(self) -> bool:
        """Whether this failure is safe to repeat: the provider cannot have started billing it."""
        return self in RETRIED


RETRIED = frozenset({AttemptOutcome.CONNECT_FAILED, AttemptOutcome.RATE_LIMITED, AttemptOutcome.SERVER_ERROR_FAST})
MAY_BE_BILLED = frozenset(
    {
        AttemptOutcome.SUCCEEDED,
        AttemptOutcome.SERVER_ERROR_SLOW,
        AttemptOutcome.CONNECTION_LOST,
        AttemptOutcome.BODY_CUT_OFF,
        AttemptOutcome.TIMEOUT,
        AttemptOutcome.INTERRUPTED,
        AttemptOutcome.ABANDONED,
    }
)


@dataclass(frozen=True)
class Attempt:
    """One HTTP attempt of a call, recorded as soon as it ends (so a caller keeps it if the call raises)."""

    number: int  # 1-based within one call
    started_at: float  # time.time() when sending began
    seconds: float  # until the answer or the failure was complete
    outcome: AttemptOutcome
    may_be_billed: bool
    http_status: int | None = None
    request_id: str | None = None
