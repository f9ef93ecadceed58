"""Jobs: what a member asked for, as the engine and the store know it (no Discord objects)."""

from __future__ import annotations

import enum
import secrets
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any


class JobStatus(enum.StrEnum):
    """A job's life: queued → running → succeeded | failed; queued → cancelled."""

    QUEUED = "queued"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"

    @property
    def active(self) -> bool:
        """Whether the job still holds a place (and a charge)."""
        return self in (JobStatus.QUEUED, JobStatus.RUNNING)


def new_job_id() -> str:
    """A short random id for a job, safe in custom ids and log lines."""
    return secrets.token_hex(6)


def utc_day(moment: float) -> str:
    """The UTC calendar day (YYYY-MM-DD) a timestamp falls on; quotas reset at 00:00 UTC."""
    return datetime.fromtimestamp(moment, UTC).strftime("%Y-%m-%d")


@dataclass(frozen=True)
class JobRequest:
    """What a member asked for, before it is accepted."""

    kind: str  # "edit" or "refine"
    user_id: int
    guild_id: int | None
    channel_id: int
    prompt: str
    size: str | None
    input_count: int
    parent_job_id: str | None = None
    # Where to show progress and the result; opaque to the engine, owned by cogs/.
    delivery: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Job:
    """A job as stored."""

    id: str
    kind: str
    status: JobStatus
    user_id: int
    guild_id: int | None
    channel_id: int
    prompt: str
    size: str | None
    input_count: int
    parent_job_id: str | None
    delivery: dict[str, Any]
    created_at: float
    charge_day: str
    charged: bool
    cost_usd: float
    started_at: float | None = None
    finished_at: float | None = None
    error: str | None = None
    attempts: int = 0
    restarts: int = 0
    api_seconds: float | None = None
    input_tokens: int | None = None
    output_tokens: int | None = None
    total_tokens: int | None = None
    output_width: int | None = None
    output_height: int | None = None
    output_bytes: int | None = None
