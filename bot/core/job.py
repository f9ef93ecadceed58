"""A job: what a member asked for, and the job as the engine and the store know it (no Discord objects)."""

from __future__ import annotations

import enum
import secrets
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from bot.core.region import Region
from bot.core.states import JobState

# Discord's upload limit without boosts; used when a destination did not say.
DEFAULT_UPLOAD_LIMIT = 10 * 1024 * 1024
# The most runs one request for variations makes (the commands' ``variations`` option offers 2 to this).
MOST_VARIANTS = 4
# An admin may write a style's text as "…, as a watercolour" or "..., as a watercolour".
_JOINS_DIRECTLY = (",", ";", ":")


class Origin(enum.StrEnum):
    """How a job was started (its kind says what it does)."""

    COMMAND = "command"  # a slash command (/edit, /imagine)
    REFINE = "refine"  # the Refine button: a result becomes image1 of a new edit
    REROLL = "reroll"  # the Reroll button: a result's request again
    MESSAGE = "message"  # "Edit images" on a message: the images already in the chat


class Delivered(enum.StrEnum):
    """How a succeeded job's result reached its member (the store's ``delivered`` column)."""

    POSTED = "posted"  # in the channel or thread, for everyone
    PRIVATE = "private"  # where it was asked, visible only to the requester
    DIRECT_MESSAGE = "direct_message"  # a private result that came after the interaction expired
    UNDELIVERED = "undelivered"  # made (and charged), but the member could not be reached


def new_job_id() -> str:
    """A short random id for a job, safe in custom ids and log lines."""
    return secrets.token_hex(6)


def utc_day(moment: float) -> str:
    """The UTC calendar day (YYYY-MM-DD) a timestamp falls on; quotas reset at 00:00 UTC."""
    return datetime.fromtimestamp(moment, UTC).strftime("%Y-%m-%d")


def styled_prompt(instruction: str, style_text: str | None) -> str:
    """``instruction`` with a style preset's ``style_text`` added.

    "make it dusk" + "as a watercolour" → "make it dusk, as a watercolour"; a text that starts
    with ``,`` ``;`` or ``:`` is joined as it is written.
    """
    if not style_text:
        return instruction
    base = instruction.rstrip().rstrip(".,;:")
    if style_text.startswith(_JOINS_DIRECTLY):
        return base + style_text
    return f"{base}, {style_text}"


@dataclass(frozen=True)
class JobRequest:
    """What a member asked for, before it is accepted."""

    kind: str  # the job kind that makes it, by name (``bot.jobs.kinds``): "edit", "imagine"
    user_id: int
    guild_id: int | None
    channel_id: int
    prompt: str
    size: str | None
    input_count: int
    origin: Origin = Origin.COMMAND
    parent_job_id: str | None = None
    private: bool = False  # status and result visible only to the requester
    style: str | None = None  # the name of the server's style preset, if one was chosen
    style_text: str | None = None  # that preset's text as it was when the job was accepted
    language: str | None = None  # the catalog its member reads (e.g. "zh_CN"); None: English
    spoiler: bool = False  # the result's media (output and inputs) are shown as spoilers
    # The model's options asked for (e.g. {"quality": "high", "output_format": "webp"}): only what
    # the job's model takes, checked before acceptance. Values are strings or integers.
    options: Mapping[str, str | int] = field(default_factory=dict)
    # Variations: the runs of one request share ``group_id`` (the id of its first job); ``variant``
    # is this run's place (1..``variants``), ``variants`` how many were asked (when the limits allowed
    # fewer, the group's jobs are those admitted). Not a variation: no group, variant 0, variants 1.
    # A request asks for variations with ``variants`` > 1 and no group: admission makes the group.
    group_id: str | None = None
    variant: int = 0
    variants: int = 1
    # A region edit's region: the grid's ticked cells and whether the member's own mask comes with the
    # inputs (``None``: not a region edit). Checked against the model (it must take a mask) before acceptance.
    region: Region | None = None

    @property
    def is_variation(self) -> bool:
        return self.group_id is not None

    @property
    def api_prompt(self) -> str:
        """What the image API is asked: the instruction, with the style preset's text added."""
        return styled_prompt(self.prompt, self.style_text)


@dataclass(frozen=True)
class Destination:
    """Where a job's progress and result are shown.

    ``data`` belongs to the frontend (ids, a token) and is stored as it is; the engine
    reads only ``upload_limit``, to fit the result before handing it over.
    """

    upload_limit: int
    data: Mapping[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {**self.data, "upload_limit": self.upload_limit}

    @classmethod
    def from_json(cls, value: Mapping[str, Any] | None) -> Destination | None:
        if not value:
            return None
        data = {key: item for key, item in value.items() if key != "upload_limit"}
        return cls(int(value.get("upload_limit") or DEFAULT_UPLOAD_LIMIT), data)


@dataclass(frozen=True)
class InputInfo:
    """One of a job's input images as it was sent to the API: its size in pixels and in bytes.

    Kept with the job (the images themselves go when their retention ends), so a result's Info
    can name its inputs for as long as the job is in the ledger. Named by place: image1, image2…
    """

    width: int
    height: int
    size: int  # bytes
    mime: str

    def to_json(self) -> dict[str, Any]:
        return {"width": self.width, "height": self.height, "bytes": self.size, "mime": self.mime}

    @classmethod
    def from_json(cls, value: Mapping[str, Any]) -> InputInfo:
        return cls(int(value["width"]), int(value["height"]), int(value["bytes"]), str(value["mime"]))


@dataclass(frozen=True)
class Job:
    """A job as stored. Only ``bot.jobs.lifecycle`` makes a changed copy of one."""

    id: str
    request: JobRequest
    state: JobState
    created_at: float
    charge_day: str
    cost: int  # the charge in micro-dollars: its model's price when the job was accepted
    model: str | None = None  # the model that makes it (None: a job from before models were recorded)
    guild_key: bool = False  # made with its server's own API key: outside the operator's daily budget
    destination: Destination | None = None
    notes: tuple[str, ...] = ()  # what was done to the inputs, e.g. "image2 was re-encoded to fit 4.2 MB"
    inputs: tuple[InputInfo, ...] = ()  # its images as sent (image1 first); empty before they are ready
    queued_at: float | None = None  # when it last joined the line (its images ready)
    started_at: float | None = None
    finished_at: float | None = None
    error: str | None = None
    restarts: int = 0
    attempts: int = 0
    api_seconds: float | None = None
    input_tokens: int | None = None
    output_tokens: int | None = None
    total_tokens: int | None = None
    output_width: int | None = None
    output_height: int | None = None
    output_bytes: int | None = None
    result_channel_id: int | None = None
    result_message_id: int | None = None
    delivered: Delivered | None = None
    holder: str | None = None  # the process that holds it (admitting it, or running it)
    run: int = 0  # how many times it was claimed: a move of a running job names its run (fencing)

    @property
    def user_id(self) -> int:
        return self.request.user_id

    @property
    def guild_id(self) -> int | None:
        return self.request.guild_id

    @property
    def kind(self) -> str:
        return self.request.kind

    @property
    def upload_limit(self) -> int:
        """The largest result the destination takes."""
        return self.destination.upload_limit if self.destination else DEFAULT_UPLOAD_LIMIT
