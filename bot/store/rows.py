"""Jobs and the other records as table rows, and back: plain, typed values in both directions.

Every value a statement is given is a ``str``, ``int``, ``float``, ``bytes`` or ``None``
(booleans are ``INTEGER`` 0/1 on both databases), so no engine object (a ``Text``, an enum)
reaches a driver, and every value read back is converted to its type here.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from bot.core.job import Delivered, Destination, InputInfo, Job, JobRequest, Origin
from bot.core.records import Notice
from bot.core.region import Region
from bot.core.states import JobState

REQUEST_COLUMNS = (
    "kind", "origin", "user_id", "guild_id", "channel_id", "prompt", "size", "input_count", "parent_job_id",
    "private", "style", "style_text", "language", "spoiler", "options", "group_id", "variant", "variants",
    "region",
)  # fmt: skip
JOB_COLUMNS = (
    "id", "status", *REQUEST_COLUMNS, "delivery", "notes", "inputs", "created_at", "charge_day", "cost", "model",
    "guild_key", "queued_at", "started_at", "finished_at", "error", "attempts", "restarts", "api_seconds",
    "input_tokens", "output_tokens", "total_tokens", "output_width", "output_height", "output_bytes",
    "result_channel_id", "result_message_id", "delivered", "claimed_by", "lease_until", "run",
)  # fmt: skip
# Job fields a move may change, by column (a move never changes what was asked, or the charge).
MOVABLE = frozenset(JOB_COLUMNS) - {
    "id", "status", *REQUEST_COLUMNS, "created_at", "charge_day", "cost", "model", "guild_key", "run",
}  # fmt: skip
# Job fields by the column that holds them, where the names differ.
_FIELD_OF = {"delivery": "destination", "claimed_by": "holder"}
_SIMPLE = MOVABLE - {"delivery", "notes", "inputs", "delivered", "claimed_by", "lease_until"}


def job_params(job: Job, lease_until: float | None = None) -> dict[str, Any]:
    """A new job as column values."""
    request = job.request
    params: dict[str, Any] = {name: getattr(request, name) for name in REQUEST_COLUMNS}
    params.update(
        origin=request.origin.value,
        private=int(request.private),
        spoiler=int(request.spoiler),
        options=json.dumps(dict(request.options), sort_keys=True),
        region=request.region.to_json() if request.region is not None else None,
    )
    params.update(
        id=job.id,
        status=job.state.value,
        created_at=job.created_at,
        charge_day=job.charge_day,
        cost=int(job.cost),
        model=job.model,
        guild_key=int(job.guild_key),
        run=job.run,
        lease_until=lease_until,
    )
    params.update(column_values({name: getattr(job, field) for name, field in _fields(MOVABLE - {"lease_until"})}))
    return params


def _fields(columns: frozenset[str]) -> list[tuple[str, str]]:
    return sorted((column, _FIELD_OF.get(column, column)) for column in columns)


def column_values(values: Mapping[str, Any]) -> dict[str, Any]:
    """Changed job fields (by field or column name) as column values."""
    out: dict[str, Any] = {}
    for name, value in values.items():
        if name in ("destination", "delivery"):
            out["delivery"] = json.dumps(value.to_json() if value is not None else {})
        elif name == "notes":
            out["notes"] = json.dumps([str(note) for note in value])
        elif name == "inputs":
            out["inputs"] = json.dumps([info.to_json() for info in value])
        elif name == "delivered":
            out["delivered"] = Delivered(value).value if value is not None else None
        elif name in ("holder", "claimed_by"):
            out["claimed_by"] = value
        elif name in _SIMPLE or name == "lease_until":
            out[name] = value
        else:
            raise ValueError(f"{name} is not a job field a move may change")
    return out


def job_from_row(row: Mapping[str, Any]) -> Job:
    """A job from a ``SELECT * FROM jobs`` row."""
    request = JobRequest(
        kind=str(row["kind"]),
        origin=Origin(row["origin"]),
        user_id=int(row["user_id"]),
        guild_id=_int(row["guild_id"]),
        channel_id=int(row["channel_id"]),
        prompt=str(row["prompt"]),
        size=row["size"],
        input_count=int(row["input_count"]),
        parent_job_id=row["parent_job_id"],
        private=bool(row["private"]),
        style=row["style"],
        style_text=row["style_text"],
        language=row["language"],
        spoiler=bool(row["spoiler"]),
        options=_options(row["options"]),
        group_id=row["group_id"],
        variant=int(row["variant"]),
        variants=int(row["variants"]),
        region=Region.from_json(row["region"]),
    )
    return Job(
        id=str(row["id"]),
        request=request,
        state=JobState(row["status"]),
        created_at=float(row["created_at"]),
        charge_day=str(row["charge_day"]),
        cost=int(row["cost"]),
        model=row["model"],
        guild_key=bool(row["guild_key"]),
        destination=Destination.from_json(json.loads(row["delivery"] or "{}")),
        notes=tuple(str(n) for n in json.loads(row["notes"] or "[]")),
        inputs=tuple(InputInfo.from_json(i) for i in json.loads(row["inputs"] or "[]")),
        queued_at=_float(row["queued_at"]),
        started_at=_float(row["started_at"]),
        finished_at=_float(row["finished_at"]),
        error=row["error"],
        restarts=int(row["restarts"]),
        attempts=int(row["attempts"]),
        api_seconds=_float(row["api_seconds"]),
        input_tokens=_int(row["input_tokens"]),
        output_tokens=_int(row["output_tokens"]),
        total_tokens=_int(row["total_tokens"]),
        output_width=_int(row["output_width"]),
        output_height=_int(row["output_height"]),
        output_bytes=_int(row["output_bytes"]),
        result_channel_id=_int(row["result_channel_id"]),
        result_message_id=_int(row["result_message_id"]),
        delivered=Delivered(row["delivered"]) if row["delivered"] else None,
        holder=row["claimed_by"],
        run=int(row["run"]),
    )


def _options(raw: str | None) -> dict[str, str | int]:
    options = json.loads(raw or "{}")
    return {str(k): v if isinstance(v, int) else str(v) for k, v in options.items()}


def _int(value: Any) -> int | None:
    return int(value) if value is not None else None


def _float(value: Any) -> float | None:
    return float(value) if value is not None else None


def notice_from_row(row: Mapping[str, Any]) -> Notice:
    return Notice(
        job_id=str(row["job_id"]),
        outcome=JobState(row["outcome"]),
        payload=json.loads(row["payload"] or "{}"),
        created_at=float(row["created_at"]),
        due_at=float(row["due_at"]),
        attempts=int(row["attempts"]),
        claimed_by=row["claimed_by"],
        done_at=_float(row["done_at"]),
        how=row["how"],
    )
