"""The job engine: what a frontend calls. It wires the parts, each of which owns one job:

- ``bot.lifecycle``: the record of unfinished jobs and the one function that moves them;
- ``bot.admission``: checks, charge, inputs, queueing;
- ``bot.dispatcher``: the fair choice when a slot frees, the API call;
- ``bot.delivery``: decoding, fitting and handing the result to the frontend;
- ``bot.recovery``: what a restart finds unfinished;
- ``bot.settings`` and ``bot.presets``: per-server overrides and style presets;
- ``bot.retention``: how long an ended job's inputs stay (for Reroll);
- ``bot.notices``: results that could not be delivered, until their member is told;
- operations, each an observer of the lifecycle or a check in admission: ``bot.metrics``,
  ``bot.audit``, ``bot.routing`` (the model breaker), ``bot.blocks``, ``bot.guild_keys``,
  ``bot.balance``, ``bot.health``;
- ``bot.shared_queue``: with PostgreSQL, the queue several processes share.

A process plays one or both roles: it admits work (a gateway), it runs jobs (a worker),
or both (the default, and the only choice with SQLite).

Stopping is one path (``stop``), whatever asked for it: stop taking work, give running
calls their grace, put back or end what is left, tell the members; ``close`` then
closes the store, once.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import os
import secrets
import socket
import time
from collections.abc import Callable, Sequence
from typing import cast

from bot.admission import Admission, KeptInputsSource
from bot.audit import AuditTrail
from bot.balance import BalanceWatch
from bot.blocks import Blocklist
from bot.config import Config
from bot.delivery import Deliverer
from bot.dispatcher import Dispatcher, EditAPI
from bot.editor import Editor
from bot.errors import AtelierError, CancelRefusedError, InputError, InputsGoneError, UnexpectedError
from bot.eta import RECENT_SECONDS, Estimator
from bot.guild_keys import GuildKeys
from bot.health import Health
from bot.i18n import _t
from bot.inputs import InputStore, JobInputs
from bot.jobs import Destination, Job, JobKind, JobRequest
from bot.ledger import DayUsage
from bot.lifecycle import Lifecycle
from bot.limits import (
    GuildLimits,
    MemberStanding,
    Requester,
    check_access,
    check_can_delete,
    check_can_reuse,
    member_standing,
)
from bot.metrics import Metrics
from bot.models import ImageModel
from bot.notices import UndeliveredNotices
from bot.ports import Announcer, AuditSink, InputSource, Notifier, Publisher
from bot.presets import StylePresets
from bot.recovery import resume_unfinished
from bot.retention import DatabaseRetention, KeptRows, Retention
from bot.routing import ModelRouter
from bot.settings import GuildOverrides, GuildSettings
from bot.shared_queue import SharedQueue
from bot.states import JobState, cancellable
from bot.storage import Block, DayStats, HistoryEntry, JobStore, SharedStore

log = logging.getLogger(__name__)

# At a stop, jobs whose images are still downloading get this long to be queued.
PREPARE_GRACE = 5.0
# A result can be built on once it is posted: a member may click its buttons before the end is recorded.
_POSTED = (JobState.DELIVERING, JobState.SUCCEEDED)
_ALREADY_OVER = {
    JobState.SUCCEEDED: _t("This edit has already succeeded."),
    JobState.FAILED: _t("This edit has already failed."),
    JobState.CANCELLED: _t("This edit has already been cancelled."),
}


class JobEngine:
    """Admission, the fair queue, the workers, restart and shutdown, for one process."""

    def __init__(
        self,
        config: Config,
        store: JobStore,
        api: EditAPI,
        inputs: JobInputs,
        editor: Editor,
        *,
        balance: BalanceWatch | None = None,
        redact: Callable[[str], None] = lambda secret: None,
    ) -> None:
        self.config = config
        self.store = store
        self._api = api
        self._inputs = inputs
        self._editor = editor
        shared = cast(SharedStore, store) if config.shared else None
        hours, cap = config.input_retention_hours, config.input_retention_bytes
        self.retention: Retention | DatabaseRetention = (
            DatabaseRetention(cast(KeptRows, store), hours, cap)
            if shared is not None
            else Retention(cast(InputStore, inputs), hours, cap)
        )
        self.lifecycle = Lifecycle(store, self.retention, shared)
        self.lifecycle.holder = f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(3)}"
        self.lifecycle.lease_seconds = config.job_lease_seconds
        self.settings = GuildSettings(store)
        self.presets = StylePresets(store)
        self.notices = UndeliveredNotices(store)
        self.blocks = Blocklist(store)
        self.keys = GuildKeys(store, config.secret_key, redact)
        self.router = ModelRouter(config)
        self.balance = balance
        self.health = Health(store)
        self.metrics = Metrics(self.lifecycle)
        self.audit = AuditTrail(config, self.settings, self.keys)
        self.estimator = Estimator(config.default_model.name)
        for observer in (self.metrics, self.router, self.audit, self.estimator):
            self.lifecycle.observe(observer)
        self.metrics.watch_models([m.name for m in config.models], self.router.is_open)
        self.metrics.export_limits(
            daily_budget_usd=config.daily_budget_usd,
            balance_warn_usd=config.balance_warn_usd,
            balance_floor_usd=config.balance_floor_usd,
        )
        if balance is not None:
            self.metrics.watch_balance(lambda: balance.balance_usd, lambda: balance.failures)
        self.admission = Admission(
            config,
            self.lifecycle,
            self.settings,
            self.presets,
            editor,
            inputs,
            blocks=self.blocks,
            keys=self.keys,
            router=self.router,
            balance=balance,
        )
        refreshers = {
            "settings": self.settings.refresh,
            "blocks": lambda _guild: self.blocks.load(),
            "keys": lambda _guild: self.keys.load(),
            "presets": lambda _guild: self.presets.load(),
            "notices": self.notices.refresh,
            "breaker": self.router.opened_elsewhere,
        }
        self.shared = (
            SharedQueue(config, shared, self.lifecycle, inputs, refreshers, self.estimator) if shared else None
        )
        if self.shared is not None:
            # A breaker opened by a worker's calls reroutes the gateways' admissions too.
            self.router.on_open = self.shared.announce_breaker
            shared_queue = self.shared
            self.metrics.watch_shared(lambda: shared_queue.totals)
        self._shared_store = shared
        self._dispatcher: Dispatcher | None = None
        self._notifier: Notifier | None = None
        self._stopping: asyncio.Task[None] | None = None
        self._closed = False

    # Start, stop, close -------------------------------------------------------------------------

    async def open(self) -> None:
        """Open the store (and migrate it)."""
        await self.store.open()

    async def start(
        self,
        notifier: Notifier,
        publisher: Publisher,
        audit: AuditSink | None = None,
        *,
        admit: bool = True,
        work: bool = True,
        mine: Callable[[Job], bool] | None = None,
    ) -> None:
        """Resume what was left unfinished, then admit work (``admit``) and run jobs (``work``), and
        watch the balance. ``mine`` says which waiting jobs this process tells their place in line
        (its shards')."""
        self._notifier = notifier
        self.admission.accepting = admit
        await self.settings.load()
        await self.blocks.load()
        await self.keys.load()
        await self.presets.load()
        await self.notices.load()
        self.estimator.load(await self.store.recent_runs(time.time() - RECENT_SECONDS))
        if audit is not None:
            self.audit.attach(audit)
        if self.balance is not None:
            self.balance.start(self.audit.alert_all)
        if self.shared is not None:
            await self.retention.load(set())
            self.lifecycle.attach(notifier)
            self.shared.start(notifier, announce=admit, mine=mine)
            next_job = self.shared.next_job
        else:
            if not (admit and work):
                raise RuntimeError("separate gateway and worker processes need PostgreSQL (DATABASE_URL)")
            jobs = await self.lifecycle.load(time.time())
            await self.retention.load({job.id for job in jobs})
            self.lifecycle.attach(notifier)
            await resume_unfinished(self.lifecycle, self._inputs, jobs)
            next_job = self.lifecycle.take_next
        self.retention.start()
        if work:
            deliverer = Deliverer(self.lifecycle, self._editor, publisher, self.notices)
            self._dispatcher = Dispatcher(
                self.lifecycle,
                self._api,
                self._inputs,
                deliverer,
                self.config.max_concurrent_jobs,
                next_job,
                self.keys.key_for,
                shared_slots=self.shared is not None,
            )
            self._dispatcher.start()

    async def stop(self, grace: float) -> None:
        """Stop taking work, let running calls finish for ``grace`` s, put back the rest; idempotent."""
        if self._stopping is None:
            self._stopping = asyncio.create_task(self._stop(grace), name="atelier-stop")
        await asyncio.shield(self._stopping)

    async def _stop(self, grace: float) -> None:
        self.admission.accepting = False
        if self._dispatcher is not None:
            await self._dispatcher.stop(grace)
        waiting = (JobState.ACCEPTED, JobState.PREPARING)
        await self.lifecycle.wait_until(lambda: self.lifecycle.count(*waiting) == 0, min(grace, PREPARE_GRACE))
        await self.admission.fail_unprepared()
        await self.lifecycle.detach()
        await self.retention.stop()
        if self.balance is not None:
            await self.balance.stop()
        await self.audit.close()
        if self.shared is not None:
            # The queue lives on in the database: what this process interrupted goes back in line
            # at once, for the other workers (each job once).
            await self.shared.take_over()
            await self.shared.stop()
            log.info("job service stopped; the shared queue carries on")
            return
        resuming = self.lifecycle.jobs(JobState.QUEUED, JobState.INTERRUPTED)
        if self._notifier is not None:
            for job in self.lifecycle.jobs(JobState.QUEUED):
                try:
                    await self._notifier.job_paused(job)
                except Exception as exc:
                    UnexpectedError.capture(exc, f"the notifier for job {job.id}")
        log.info("job service stopped; %d job(s) will resume after the restart", len(resuming))

    async def close(self) -> None:
        """Close the store, once."""
        if not self._closed:
            self._closed = True
            await self.store.close()

    # Members and admins -------------------------------------------------------------------------

    async def submit(self, request: JobRequest, who: Requester, source: InputSource) -> Job:
        """Admit and prepare a job (see ``Admission.submit``)."""
        return await self.admission.submit(request, who, source)

    async def reroll(self, parent: Job, who: Requester, announcer: Announcer) -> Job:
        """The same inputs, instruction, style and size as ``parent`` again: a new job, charged like any other.

        The images are ``parent``'s kept inputs; everything else is ``submit``. Raises
        ``InputsGoneError`` when they are no longer kept, before anything is charged.
        """
        check_can_reuse(parent, who.user_id)
        if parent.state not in _POSTED:
            raise InputError(_t("Only a finished result can be rerolled."))
        if not await self.inputs_kept(parent.id):
            raise InputsGoneError(self.config.input_retention_hours)
        request = dataclasses.replace(
            parent.request,
            kind=JobKind.REROLL,
            user_id=who.user_id,
            guild_id=who.guild_id,
            channel_id=who.channel_id,
            parent_job_id=parent.id,
        )
        source = KeptInputsSource(announcer, self._inputs, parent.id, self.config.input_retention_hours)
        return await self.submit(request, who, source)

    async def inputs_kept(self, job_id: str) -> bool:
        """Whether a job's inputs are still kept, so it can be rerolled (an unfinished job has them, and
        they will be kept when it ends, unless nothing is kept at all)."""
        if await self.retention.kept_now(job_id):
            return True
        return self.retention.window > 0 and self.lifecycle.get(job_id) is not None

    async def job(self, job_id: str) -> Job | None:
        """A job as it is now, finished or not."""
        return self.lifecycle.get(job_id) or await self.store.get_job(job_id)

    async def result_for(self, job_id: str, user_id: int) -> Job:
        """A finished result that ``user_id`` may refine or reroll (a private one only its requester)."""
        job = await self.job(job_id)
        if job is None or job.state not in _POSTED:
            raise InputError(_t("That result no longer exists."))
        check_can_reuse(job, user_id)
        return job

    async def deletable(self, job_id: str, by_user: int, is_moderator: bool) -> Job:
        """The job whose result ``by_user`` wants to delete, if they may: its requester or a moderator."""
        job = await self.job(job_id)
        if job is None:
            raise InputError(_t("That edit no longer exists."))
        check_can_delete(job, by_user, is_moderator)
        return job

    async def result_deleted(self, job: Job, by_user: int) -> None:
        """Record that ``job``'s result message was deleted; the job itself stays in the ledger."""
        await self.store.record_result_deleted(job.id, by_user, time.time())
        log.info("job=%s result deleted by user=%s", job.id, by_user)

    async def history(
        self, user_id: int, guild_id: int | None, page: int, per_page: int
    ) -> tuple[list[HistoryEntry], bool]:
        """A member's jobs in this server (or in DMs), newest first: page ``page`` (0 = newest), and
        whether an older page exists."""
        entries = await self.store.history(user_id, guild_id, page * per_page, per_page + 1)
        return entries[:per_page], len(entries) > per_page

    async def cancel(self, job_id: str, by_user: int, is_moderator: bool) -> Job:
        """Withdraw a job before its API call starts (its requester or a moderator); it costs nothing."""
        job = self.lifecycle.get(job_id) or await self.store.get_job(job_id)
        if job is None:
            raise CancelRefusedError(_t("That edit no longer exists."))
        if job.user_id != by_user and not is_moderator:
            raise CancelRefusedError(_t("Only the member who asked (or a moderator) can cancel this edit."))
        cancelled = None
        if cancellable(job.state, job.restarts):
            cancelled = await self.lifecycle.move(
                job_id, JobState.CANCELLED, error=AtelierError(_t("Cancelled."), log_detail=f"cancelled by {by_user}")
            )
        if cancelled is not None:
            return cancelled
        now = self.lifecycle.get(job_id) or await self.store.get_job(job_id) or job
        if now.state.terminal:
            raise CancelRefusedError(_ALREADY_OVER[now.state])
        if now.restarts:
            raise CancelRefusedError(
                _t(
                    "This edit had already started before the bot restarted, so it can't be cancelled; "
                    "it will finish shortly."
                )
            )
        raise CancelRefusedError(_t("This edit is already running and can't be stopped; it will finish shortly."))

    async def usage(self, who: Requester) -> DayUsage:
        """A member's usage today, as admission sees it."""
        return await self.lifecycle.usage(who.user_id, who.guild_id, time.time())

    async def standing(self, who: Requester) -> tuple[MemberStanding, GuildLimits | None]:
        """Where a member stands against the limits in force where they asked."""
        limits = await self.admission.limits_for(who.guild_id)
        now = time.time()
        return member_standing(self.config, limits, who, await self.usage(who), now), limits

    async def limits_for(self, guild_id: int | None) -> GuildLimits | None:
        return await self.admission.limits_for(guild_id)

    async def may_start_here(self, who: Requester) -> GuildLimits | None:
        """Refuse a member who may not start a job where they are, before a form is shown; the limits there.

        ``submit`` checks again (settings may change while the form is open).
        """
        limits = await self.limits_for(who.guild_id)
        check_access(self.config, limits, who)
        return limits

    async def guild_overrides(self, guild_id: int) -> GuildOverrides:
        return await self.settings.overrides(guild_id)

    async def save_guild_overrides(self, guild_id: int, overrides: GuildOverrides, by: int) -> None:
        await self.settings.save(guild_id, overrides, by)

    async def redirect(self, job_id: str, destination: Destination) -> None:
        """The frontend moved a job's status to a new message: its result goes there."""
        await self.lifecycle.redirect(job_id, destination)

    def usual_seconds(self, job: Job) -> float | None:
        """How long jobs like this one usually run, or ``None`` with too little history."""
        return self.estimator.usual(job)

    def wait_seconds(self, job: Job, place: int) -> float | None:
        """About how long until the result of a job waiting at ``place``, or ``None``."""
        return self.estimator.wait(job, place, self.config.max_concurrent_jobs)

    def position(self, job_id: str) -> int | None:
        """A waiting job's place in line, or ``None``."""
        if self.shared is not None:
            return self.shared.places.get(job_id)
        return self.lifecycle.position(job_id)

    async def in_flight(self) -> int:
        """API calls in flight right now (with PostgreSQL, across all workers)."""
        if self._shared_store is not None:
            return await self._shared_store.count(JobState.RUNNING)
        return self.lifecycle.count(JobState.RUNNING)

    async def unfinished_of(self, user_id: int) -> list[Job]:
        """A member's unfinished jobs, oldest first."""
        return await self.lifecycle.unfinished_of(user_id)

    # Operators ----------------------------------------------------------------------------------

    def model_for(self, guild_id: int | None) -> ImageModel:
        """The model new jobs in a server use (before the breaker's say)."""
        return self.admission.model_for(guild_id)

    async def daily_stats(self, guild_id: int, days: Sequence[str]) -> list[DayStats]:
        """A server's jobs, spend and timings per day (for the stats chart)."""
        return await self.store.daily_stats(guild_id, days)

    async def block(self, guild_id: int, user_id: int, reason: str | None, by: int) -> Block:
        """Refuse a member's new requests in a server from now on (jobs already accepted still run)."""
        return await self.blocks.block(guild_id, user_id, reason, by)

    async def unblock(self, guild_id: int, user_id: int, by: int) -> bool:
        """Lift a block; whether there was one."""
        return await self.blocks.unblock(guild_id, user_id, by)

    async def set_guild_key(self, guild_id: int, key: str, by: int) -> None:
        """Use a server's own API key for its new jobs (stored encrypted)."""
        await self.keys.set(guild_id, key, by)
        self.audit.key_changed(guild_id)

    async def clear_guild_key(self, guild_id: int, by: int) -> bool:
        """Go back to the operator's key for a server's new jobs; whether it had one."""
        removed = await self.keys.clear(guild_id, by)
        self.audit.key_changed(guild_id)
        return removed

    def gateway_state(self, connected: bool, note: str = "") -> None:
        """The frontend's gateway went up or down (for ``/healthz``)."""
        self.health.gateway(connected, note)
