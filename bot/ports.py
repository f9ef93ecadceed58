"""What the engine needs from a frontend (``cogs/`` for Discord), and what it gets back.

Calls go one way: the engine calls these, the frontend answers with a value. The
frontend never calls back into the engine from inside one of them.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

from bot.core.attempts import Attempt
from bot.core.job import Delivered, Destination, Job
from bot.core.records import Notice
from bot.core.states import JobState
from bot.errors import AtelierError
from bot.i18n import Text
from bot.media.images import InputPreview, OutputImage


class Announcer(Protocol):
    """Where the member is first answered about an accepted job."""

    async def announce(self, job: Job, note: Text | None = None) -> Destination:
        """Tell the member the job was accepted; return where its progress and result are shown.

        A request for variations is announced once, with its first run; ``note`` says when fewer runs
        than asked were accepted, and why (the member reads it in the acknowledgement).

        Raise ``AtelierError`` when that is impossible: the job then fails (refunded) and the
        error reaches the member through the caller, since no destination exists yet.
        """
        ...


class InputSource(Announcer, Protocol):
    """Where an accepted job's images come from, and where the member is first answered."""

    async def fetch(self) -> Sequence[tuple[str, bytes]]:
        """Download the images, as ``(option name, bytes)`` in prompt order; raise ``InputError``."""
        ...


class Notifier(Protocol):
    """How the member sees a job's life while it lasts. Implementations must not raise."""

    async def job_moved(self, job: Job, before: JobState, error: AtelierError | None) -> None:
        """``job`` entered ``job.state`` from ``before``. When it ended, stop showing its progress: its
        final notice follows (``NoticeTeller``)."""
        ...

    async def queue_moved(self, places: Sequence[tuple[Job, int]]) -> None:
        """These waiting jobs have a new place in line (1 = next)."""
        ...

    async def queue_left(self, job_ids: Sequence[str]) -> None:
        """These jobs are no longer waiting (started, ended or cancelled, by any process): stop showing places."""
        ...

    async def job_paused(self, job: Job) -> None:
        """This process is stopping; this job will run again after the restart."""
        ...

    async def run_lost(self, job: Job) -> None:
        """This process lost ``job`` (its lease lapsed and another process runs it): stop showing anything
        of this run, silently."""
        ...

    async def job_preview(self, job: Job, image: OutputImage, index: int) -> None:
        """A partial image of ``job``'s running call (``index``: 0-based, of its ``partial_images``), fitted to
        its upload limit: show it on the job's status, the newest at most every few seconds, never after the
        run's status has closed (the result or the failure comes next)."""
        ...


@dataclass(frozen=True)
class Told:
    """The member was told (``how``: edited, a new message, a direct message, or at their next use)."""

    how: str


@dataclass(frozen=True)
class TellLater:
    """Discord did not take it now (a rate limit, an outage): try again later."""

    reason: str


class NoticeTeller(Protocol):
    """Tells a member a job's final outcome (the outbox's sender). Must not raise."""

    async def tell(self, job: Job, notice: Notice) -> Told | TellLater: ...


@dataclass(frozen=True)
class Move:
    """One move the lifecycle made, as its observers hear of it."""

    job: Job  # as it is now, in its new state
    before: JobState
    error: AtelierError | None = None  # why it failed, when it did
    attempts: Sequence[Attempt] = ()  # the API attempts this move recorded
    result: OutputImage | None = None  # the posted image, on the move to succeeded
    settled: int = 0  # a job by tokens: the settlement this move recorded (signed micro-dollars)


class MoveObserver(Protocol):
    """Told about every move this process made, right after the store recorded it (metrics, audit, the breaker).

    Called synchronously, in order, before anything else awaits: it must be quick (O(1)),
    must not block and should not raise (an error is logged and the job goes on).
    """

    def job_moved(self, move: Move) -> None: ...


@dataclass(frozen=True)
class AuditEntry:
    """A job's outcome for its server's audit channel (the frontend posts it)."""

    job: Job
    channel_id: int  # the audit channel
    outcome: JobState
    reason: Text | None = None  # what the member was told, when it did not succeed
    safety: bool = False  # refused by the image service's safety system
    preview: bytes | None = None  # a small WebP of the result
    fallback: bool = False  # made by the fallback model while its own model was failing
    settled: int = 0  # a job by tokens: its settlement, so the line shows what it really cost


class AuditSink(Protocol):
    """Where audit entries and server alerts go (``cogs.audit``). Never blocks, never raises."""

    def outcome(self, entry: AuditEntry) -> None:
        """Queue ``entry`` for its audit channel; returns at once."""
        ...

    def alert(self, guild_id: int, channel_id: int | None, text: Text, contact_user_id: int | None = None) -> None:
        """Tell a server's admins ``text``: in ``channel_id`` (its audit channel), else privately
        to ``contact_user_id``; returns at once."""
        ...


@dataclass(frozen=True)
class Posted:
    """The result is up where the member sees it."""

    channel_id: int
    message_id: int
    delivered: Delivered = Delivered.POSTED


@dataclass(frozen=True)
class NotDelivered:
    """The result was made but could not reach its member (a private result, DMs closed).

    The job still succeeds and is not refunded: the image was made and paid for.
    """

    log_detail: str


@dataclass(frozen=True)
class PostFailed:
    """The frontend could not post the result; ``too_large`` asks for a smaller file."""

    user_message: Text
    log_detail: str
    too_large: bool = False


@dataclass(frozen=True)
class ResultMedia:
    """What a finished result shows: its outputs, large, and its inputs, small.

    The outputs are decoded and fitted to the destination's upload limit, with room left for the
    inputs' small copies, which go in the same message. Inputs come as a thumbnail each, or, when
    there are many, as one ``strip`` (a message takes only so many files). A job makes one output
    today; a result that gathers several (variations) shows them together.
    """

    outputs: tuple[OutputImage, ...]
    inputs: tuple[InputPreview, ...] = ()
    strip: bytes | None = None  # every input side by side, in one small JPEG

    @property
    def output(self) -> OutputImage:
        """The (first) output: the one a single job made."""
        return self.outputs[0]

    @property
    def preview_bytes(self) -> int:
        """How much the inputs' small copies add to the message."""
        return sum(len(i.thumbnail) for i in self.inputs if i.thumbnail) + len(self.strip or b"")


class Publisher(Protocol):
    """Posts a finished result with its inputs, fitted to the destination's upload limit."""

    async def publish(self, job: Job, media: ResultMedia) -> Posted | NotDelivered | PostFailed: ...


class Frontend(Protocol):
    """What members talk to (the Discord client): run until stopped."""

    async def run(self) -> None:
        """Connect and serve until stopped; the engine is started and stopped from here."""
        ...

    def request_stop(self, reason: str) -> None:
        """Begin the one graceful stop (from a signal handler); idempotent."""
        ...


@dataclass(frozen=True)
class FrontendParts:
    """What a frontend hands the engine when it starts it."""

    notifier: Notifier
    publisher: Publisher
    teller: NoticeTeller
    audit: AuditSink | None = None
