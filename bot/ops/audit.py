"""The engine's half of the audit channel: every job's outcome, and alerts for a server's admins.

An observer of the lifecycle: a job that ends in a server with an audit channel becomes
an ``AuditEntry`` handed to the frontend's ``AuditSink`` (which queues, batches and posts
it, never blocking the job). A result's preview (a small WebP) is made in a worker
thread first, at most ``PREVIEWS_AT_ONCE`` at a time; when more are waiting the entry
goes without one rather than holding the image in memory.

Alerts: a server's own key refused (or its account empty) is told to that server's
admins, once until a job with the key succeeds or the key is set again; the operator's
balance crossing a threshold is told to every audit channel.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging

from bot.config import Config
from bot.core.job import Job
from bot.core.states import JobState
from bot.errors import AuthenticationError, QuotaExhaustedError, SafetyRejectedError
from bot.i18n import Text, _t
from bot.media.images import make_preview
from bot.ports import AuditEntry, AuditSink, Move
from bot.servers.guild_keys import GuildKeys
from bot.servers.settings import GuildSettings

log = logging.getLogger(__name__)

PREVIEWS_AT_ONCE = 2
KEY_OUT_OF_CREDIT = _t(
    "🔑 **This server's own image service account is out of credit.** Edits here fail until it is topped up, or an "
    "admin removes the key with `/atelier key clear` to use the bot's own key."
)


def key_refused(detail: str) -> Text:
    return _t(
        "🔑 **This server's own image API key was refused** by the image service ({detail}). Edits here fail until "
        "an admin sets a working key with `/atelier key set` (or removes it with `/atelier key clear` to use the "
        "bot's own key).",
        detail=detail,
    )


class AuditTrail:
    """Turns terminal moves into audit entries and server alerts (a lifecycle observer)."""

    def __init__(self, config: Config, settings: GuildSettings, keys: GuildKeys) -> None:
        self._config = config
        self._settings = settings
        self._keys = keys
        self._sink: AuditSink | None = None
        self._previews: set[asyncio.Task[None]] = set()
        self._key_alerted: set[int] = set()

    def attach(self, sink: AuditSink) -> None:
        self._sink = sink

    async def close(self) -> None:
        """Let previews being made finish (they are small and quick), then stop posting."""
        if self._previews:
            await asyncio.wait(list(self._previews), timeout=2.0)
        self._sink = None

    def job_moved(self, move: Move) -> None:
        job = move.job
        if not job.state.terminal or job.guild_id is None:
            return
        self._watch_key(move)
        channel = self._settings.cached(job.guild_id).pick("audit_channel_id", None)
        if self._sink is None or not isinstance(channel, int):
            return
        error = move.error
        entry = AuditEntry(
            job=job,
            channel_id=channel,
            outcome=job.state,
            reason=error.user_message if error is not None and job.state is not JobState.SUCCEEDED else None,
            safety=isinstance(error, SafetyRejectedError),
            fallback=self._was_fallback(job),
            settled=move.settled,
        )
        if move.result is not None and len(self._previews) < PREVIEWS_AT_ONCE:
            task = asyncio.create_task(self._with_preview(entry, move.result.data), name=f"atelier-preview-{job.id}")
            self._previews.add(task)
            task.add_done_callback(self._previews.discard)
        else:
            self._sink.outcome(entry)

    async def _with_preview(self, entry: AuditEntry, image: bytes) -> None:
        preview: bytes | None
        try:
            preview = await asyncio.to_thread(make_preview, image)
        except (OSError, ValueError) as exc:  # an image the preview cannot read: post without one
            log.info("job=%s no audit preview: %s", entry.job.id, exc)
            preview = None
        del image
        if self._sink is not None:
            self._sink.outcome(dataclasses.replace(entry, preview=preview))

    def _was_fallback(self, job: Job) -> bool:
        if job.guild_id is None:
            return False
        picked = self._config.model(self._settings.cached(job.guild_id).pick("model", None))
        chosen = picked or self._config.default_model
        fallback = self._config.fallback_for(chosen)
        return fallback is not None and job.model == fallback.name

    def _watch_key(self, move: Move) -> None:
        job = move.job
        assert job.guild_id is not None
        if not job.guild_key:
            return
        if job.state is JobState.SUCCEEDED:
            self._key_alerted.discard(job.guild_id)
            return
        error = move.error
        if not isinstance(error, (AuthenticationError, QuotaExhaustedError)) or job.guild_id in self._key_alerted:
            return
        self._key_alerted.add(job.guild_id)
        text = (
            KEY_OUT_OF_CREDIT if isinstance(error, QuotaExhaustedError) else key_refused(error.log_detail.split(":")[0])
        )
        log.info("guild=%s: telling its admins that their own API key failed", job.guild_id)
        self.alert(job.guild_id, text, contact_user_id=self._keys.set_by(job.guild_id))

    def key_changed(self, guild_id: int) -> None:
        """A server's key was set or removed: a new failure is worth telling again."""
        self._key_alerted.discard(guild_id)

    def alert(self, guild_id: int, text: Text, contact_user_id: int | None = None) -> None:
        """Tell one server's admins: in its audit channel, else privately to ``contact_user_id``."""
        if self._sink is None:
            return
        channel = self._settings.cached(guild_id).pick("audit_channel_id", None)
        self._sink.alert(guild_id, channel if isinstance(channel, int) else None, text, contact_user_id)

    def alert_all(self, text: Text) -> None:
        """Tell every audit channel (the operator's balance concerns every server)."""
        if self._sink is None:
            return
        for guild_id, channel in self._settings.audit_channels().items():
            self._sink.alert(guild_id, channel, text)
