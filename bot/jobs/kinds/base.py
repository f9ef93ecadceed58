"""What a job kind says: how it gets its inputs, what it asks the API, how its errors and results read,
and what happens to it after a restart."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

from bot.core.job import Job
from bot.errors import AtelierError
from bot.i18n import Text, _t
from bot.media.editor import Editor
from bot.media.images import PreparedImage
from bot.provider.client import ProviderRequest


class UnknownKindError(AtelierError):
    """A job of a kind this version of the bot does not know (made by a newer version)."""

    def __init__(self, name: str) -> None:
        super().__init__(
            _t("This bot does not know how to make this kind of job; please send it again."),
            log_detail=f"unknown job kind {name!r}",
        )


class JobKind(Protocol):
    """One kind of job, as the engine runs it."""

    @property
    def name(self) -> str:
        """What the job does, as stored with it and shown in logs and metrics."""
        ...

    @property
    def endpoint(self) -> str:
        """The API endpoint its request goes to ("edits" or "generations"): a model must have it."""
        ...

    @property
    def needs_images(self) -> bool:
        """Whether the member gives it images (checked, kept with the job, and kept a while after for Reroll)."""
        ...

    async def prepare(self, job: Job, files: Sequence[tuple[str, bytes]], editor: Editor) -> list[PreparedImage]:
        """The inputs kept with ``job`` (and given to ``request``), from the files its source fetched: checked and
        made safe for the API. The first ``job.request.input_count`` are the prompt's images (image1…), which the
        result shows; a kind may keep more after them (a region edit's mask)."""
        ...

    def request(self, job: Job, images: Sequence[PreparedImage], api_key: str | None) -> ProviderRequest:
        """The API request that makes ``job``'s result (``images``: its kept inputs, in prompt order)."""
        ...

    def explain(self, error: AtelierError) -> AtelierError:
        """How a failure of this kind reads to its member (most kinds keep the error as it is)."""
        ...

    def caption(self, job: Job) -> Text | None:
        """A line the result's caption adds for this kind, if any."""
        ...

    def after_restart(self, job: Job, inputs_kept: bool) -> AtelierError | None:
        """Whether a job the bot stopped or crashed under can run again: ``None``, or why not (it then fails,
        refunded). ``inputs_kept`` says whether its inputs survived."""
        ...
