"""The job engine: everything a frontend calls, in one place. It wires the parts, each of which owns one job:

- ``bot.store``: the queue, the ledger, the inputs and every record, in SQLite or PostgreSQL;
- ``bot.jobs.lifecycle``: the one function that moves jobs, and what this process holds;
- ``bot.jobs.admission``: checks, charge, inputs, queueing;
- ``bot.jobs.dispatcher``: claims as slots free, the API call each job's kind asks for;
- ``bot.jobs.delivery``: decoding, fitting and handing the result to the frontend;
- ``bot.jobs.keeper`` and ``bot.jobs.recovery``: leases, and jobs nobody runs any more;
- ``bot.jobs.outbox``: the final notices owed to members, until Discord takes them;
- ``bot.jobs.places``: places in line;
- ``bot.servers``: per-server settings, limits, presets, blocks and keys;
- operations, each an observer of the lifecycle or a check in admission: ``bot.ops.metrics``,
  ``bot.ops.audit``, ``bot.provider.routing`` (the model breaker), ``bot.provider.balance``,
  ``bot.ops.health``.

A process plays one or both roles: it admits work (a gateway), it runs jobs (a worker), or
both (the default, and the only choice with SQLite, which serves one process). The engine
does the same on either database; only the store's dialect differs.

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

from bot.config import Config
from bot.core.job import Destination, Job, JobRequest, Origin, utc_day
from bot.core.models import ImageModel
from bot.core.overrides import GuildOverrides
from bot.core.quota import DayUsage
from bot.core.records import (
    Block,
    DayStats,
    HistoryEntry,
    JobInfo,
    JobStats,
    Notice,
    NoticeDraft,
    StylePreset,
    Totals,
)
from bot.core.states import JobState, cancellable
from bot.errors import AtelierError, CancelRefusedError, InputError, InputsGoneError, UnexpectedError
from bot.i18n import Text, _t
from bot.jobs.admission import Admission, KeptInputsSource
from bot.jobs.delivery import Deliverer
from bot.jobs.dispatcher import Dispatcher, ImageAPI
from bot.jobs.eta import RECENT_SECONDS, Estimator
from bot.jobs.inputs import JobInputs
from bot.jobs.keeper import Keeper
from bot.jobs.kinds import KINDS, kind_of
from bot.jobs.lifecycle import Lifecycle
from bot.jobs.notices import NextUseNotices
from bot.jobs.outbox import Outbox
from bot.jobs.places import Places
from bot.jobs.previews import Previews
from bot.jobs.retention import Retention
from bot.media.editor import Editor
from bot.ops import heap
from bot.ops.audit import AuditTrail
from bot.ops.health import Health
from bot.ops.metrics import Metrics
from bot.ports import Announcer, FrontendParts, InputSource
from bot.provider.balance import BalanceWatch
from bot.provider.routing import ModelRouter
from bot.scheduler import Scheduler
from bot.servers.blocks import Blocklist
from bot.servers.guild_keys import GuildKeys
from bot.servers.limits import (
    GuildLimits,
    MemberStanding,
    Requester,
    check_access,
    check_can_delete,
    check_can_reuse,
    member_standing,
)
from bot.servers.presets import StylePresets
from bot.servers.settings import GuildSettings
from bot.store.database import open_and_migrate
from bot.store.legacy import import_input_folders
from bot.store.store import Store

log = logging.getLogger(__name__)

# At a stop, jobs whose images are still downloading get this long to be queued.
PREPARE_GRACE = 5.0
# At a stop, the final words owed to the members of the jobs it ended get this long to reach Discord.
TELL_GRACE = 5.0
# A Cancel button's own answer tells the member; the outbox does only if it has not within this.
CANCEL_REPLY_GRACE = 10.0
# A cancel racing the job's own next move (its images queued) tries again, a few times.
CANCEL_TRIES = 3
# How often the recent running times behind estimates are read again (every process's successes count).
RUNS_EVERY = 300.0
# A result's Info follows where it came from this many steps back (a long chain of refines stops there).
PARENTS_SHOWN = 10
# A result can be built on once it is posted: a member may click its buttons before the end is recorded.
_POSTED = (JobState.DELIVERING, JobState.SUCCEEDED)
_ALREADY_OVER = {
    JobState.SUCCEEDED: _t("This edit has already succeeded."),
    JobState.FAILED: _t("This edit has already failed."),
    JobState.CANCELLED: _t("This edit has already been cancelled."),
}


def holder_name() -> str:
    """This process's name on the jobs it holds: unique among every process, past or present."""
    return f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(3)}"


class JobEngine:
    """Admission, the fair queue, the workers, restart and shutdown, for one process."""

    def __init__(
        self,
        config: Config,
        store: Store,
        api: ImageAPI,
        editor: Editor,
        *,
        balance: BalanceWatch | None = None,
        redact: Callable[[str], None] = lambda secret: None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.config = config
        self._store = store
        self._api = api
        self._editor = editor
        self._clock = clock
        self._scheduler = Scheduler("engine")
        self.lifecycle = Lifecycle(store, holder_name(), lease_seconds=config.job_lease_seconds, clock=clock)
        self._inputs = JobInputs(store, int(config.max_queued_input_mb * 1024 * 1024), scheduler=self._scheduler)
        self._retention = Retention(
            store, config.input_retention_hours, config.input_retention_bytes, self._scheduler, clock
        )
        self._settings = GuildSettings(store)
        self._presets = StylePresets(store)
        self._notices = NextUseNotices(store, clock)
        self._blocks = Blocklist(store)
        self._keys = GuildKeys(store, config.secret_key, redact)
        self._router = ModelRouter(config)
        self._balance = balance
        self.health = Health(store)
        self._totals = Totals()
        self.metrics = Metrics(lambda: self._totals, sorted(KINDS), clock)
        self._audit = AuditTrail(config, self._settings, self._keys)
        self._estimator = Estimator(config.default_model.name)
        for observer in (self.metrics, self._router, self._audit, self._estimator):
            self.lifecycle.observe(observer)
        self.metrics.watch_models([m.name for m in config.models], self._router.is_open)
        self.metrics.export_limits(
            daily_budget=config.daily_budget, balance_warn=config.balance_warn, balance_floor=config.balance_floor
        )
        if balance is not None:
            self.metrics.watch_balance(lambda: balance.balance, lambda: balance.failures)
        self._admission = Admission(
            config,
            self.lifecycle,
            self._settings,
            self._presets,
            editor,
            self._inputs,
            blocks=self._blocks,
            keys=self._keys,
            router=self._router,
            balance=balance,
            waiting=self._waiting,
        )
        self._keeper = Keeper(self.lifecycle, store, self._inputs, self._scheduler, on_lost=self._lost)
        self._outbox = Outbox(store, self.lifecycle.holder, self._scheduler, self._keeper.gone, clock)
        self._places: Places | None = None
        self._dispatcher: Dispatcher | None = None
        self._admits = self._works = False
        self._refreshers = {
            "settings": self._settings.refresh,
            "blocks": lambda _guild: self._blocks.load(),
            "keys": lambda _guild: self._keys.load(),
            "presets": lambda _guild: self._presets.load(),
            "notices": self._notices.refresh,
            "breaker": self._router.opened_elsewhere,
        }
        # A breaker opened by one process's calls reroutes every process's admissions.
        self._router.on_open = self._announce_breaker
        self._stopping: asyncio.Task[None] | None = None
        self._closed = False

    def _announce_breaker(self, model: str) -> None:
        self._scheduler.spawn("breaker", self._store.notify(f"breaker:{model}"))

    # Start, stop, close -------------------------------------------------------------------------

    async def open(self) -> None:
        """Open the store (and migrate it), and show this process alive to the others."""
        await open_and_migrate(self._store.database)
        await import_input_folders(self._store, self.config.data_dir)  # before 0.2 the one process kept files
        await self._store.database.hold(self.lifecycle.holder)

    async def start(
        self,
        parts: FrontendParts,
        *,
        admit: bool = True,
        work: bool = True,
        mine: Callable[[Job], bool] | None = None,
    ) -> None:
        """Resume what nobody runs any more, tell what is owed, then admit work (``admit``) and run jobs
        (``work``). ``mine`` says which waiting jobs this process tells their place in line (its shards')."""
        self._admits, self._works = admit, work
        self._admission.accepting = admit
        await self._settings.load()
        await self._blocks.load()
        await self._keys.load()
        await self._presets.load()
        await self._notices.load()
        await self._read_runs()
        if parts.audit is not None:
            self._audit.attach(parts.audit)
        if self._balance is not None:
            self._balance.start(self._audit.alert_all)
        self._store.on_notice(self._heard)
        await self._retention.sweep()  # what ended unkept as its process stopped, and what outlived the window
        self.lifecycle.attach(parts.notifier, self._retention, self._outbox)
        self._outbox.attach(parts.teller)
        # What a stop or a crash left: resumed by the same rules as a take-over, before serving.
        await self._keeper.take_over()
        self._keeper.start()
        self._retention.start()
        self._outbox.start()
        self._scheduler.schedule("estimates", self._read_runs_forever())
        self._scheduler.schedule("heap", heap.keep_settled(self._admission.answers_first))
        if admit:
            self._places = Places(
                self._store, self._scheduler, mine or (lambda job: True), quiet=self._admission.answers_first
            )
            self._places.start(parts.notifier)
        if work:
            deliverer = Deliverer(self.lifecycle, self._editor, parts.publisher, self._inputs, self.config.entry)
            self._dispatcher = Dispatcher(
                self.lifecycle,
                self._api,
                self._inputs,
                deliverer,
                self.config.max_concurrent_jobs,
                self._scheduler,
                self._keys.key_for,
                Previews(self.lifecycle, self._editor, parts.notifier, self._scheduler),
                slots=self.config.process_slots,
            )
            self._dispatcher.start()

    def _heard(self, payload: str) -> None:
        """A notice from any process (this one included): wake whoever it concerns."""
        if self._dispatcher is not None:
            self._dispatcher.heard(payload)
        if self._places is not None:
            self._places.heard(payload)
        kind, _, subject = payload.partition(":")
        if payload == "reconnected":  # notices may have been missed: re-read what they would have said
            for name, refresh in self._refreshers.items():
                self._scheduler.spawn(f"reload-{name}", refresh(None))
            self._outbox.wake()
        elif kind in self._refreshers and subject:
            self._scheduler.spawn(f"reload-{kind}", self._refreshers[kind](subject))

    async def _lost(self, job: Job) -> None:
        """This process lost ``job`` to another (its lease lapsed while it stalled): stop its run and its status."""
        if self._dispatcher is not None:
            await self._dispatcher.abandon(job)
        await self.lifecycle.tell_lost(job)

    async def stop(self, grace: float) -> None:
        """Stop taking work, let running calls finish for ``grace`` s, put back the rest; idempotent."""
        if self._stopping is None:
            self._stopping = asyncio.create_task(self._stop(grace), name="atelier-stop")
        await asyncio.shield(self._stopping)

    async def _stop(self, grace: float) -> None:
        self._admission.accepting = False
        interrupted = await self._dispatcher.stop(grace) if self._dispatcher is not None else []
        waiting = (JobState.ACCEPTED, JobState.PREPARING)
        await self.lifecycle.wait_until(lambda: not self.lifecycle.held(*waiting), min(grace, PREPARE_GRACE))
        # A database that fails now (it may be stopping too) must not stop the stop: the tasks are still cancelled
        # below, and what is left is taken over after the restart.
        paused = interrupted
        try:
            await self._admission.fail_unprepared()
            if self._places is not None and self._works:
                # This process runs the jobs it admits: its waiting members hear that theirs will resume.
                in_line = [job for job, _ in await self._store.positions() if self._places.place(job.id)]
                paused = [*interrupted, *in_line]
        except Exception as exc:
            UnexpectedError.capture(exc, "ending the jobs being prepared at a stop")
        for job in paused:
            await self.lifecycle.tell_paused(job)
        try:
            # What this process interrupted goes back in line at once, for whoever runs jobs next (each once).
            await self._keeper.take_over()
        except Exception as exc:
            UnexpectedError.capture(exc, "putting back in line what the stop interrupted")
        await self._outbox.finish(TELL_GRACE)
        if self._balance is not None:
            await self._balance.stop()
        await self._audit.close()
        await self._scheduler.cancel_all()
        if self._places is not None and self._works:
            log.info("job service stopped; %d job(s) will resume after the restart", len(paused))
        else:
            log.info("job service stopped; the shared queue carries on")

    async def close(self) -> None:
        """Close the store, once."""
        if not self._closed:
            self._closed = True
            await self._store.database.close()

    # Members --------------------------------------------------------------------------------------

    def _waiting(self) -> int:
        """How many jobs wait in line, as this process last read the places (none read: 0)."""
        return len(self._places.places) if self._places is not None else 0

    async def answers_first(self) -> None:
        """Return once every request that has arrived has its answer (at most a second later)."""
        await self._admission.answers_first()

    async def submit(self, request: JobRequest, who: Requester, source: InputSource) -> Job:
        """Admit and prepare a job (see ``Admission.submit``)."""
        return await self._admission.submit(request, who, source)

    async def reroll(self, parent: Job, who: Requester, announcer: Announcer, variants: int = 1) -> Job:
        """The same request as ``parent`` again: a new job of its kind, charged like any other (``variants`` > 1:
        that many runs, a group of variations, each charged as one edit).

        A kind with images gets ``parent``'s kept inputs; ``InputsGoneError`` when they are no
        longer kept, before anything is charged.
        """
        check_can_reuse(parent, who.user_id)
        if parent.state not in _POSTED:
            raise InputError(_t("Only a finished result can be rerolled."))
        needs_images = kind_of(parent.kind).needs_images
        if needs_images and not await self.inputs_kept(parent.id):
            raise InputsGoneError(self.config.input_retention_hours)
        request = dataclasses.replace(
            parent.request,
            origin=Origin.REROLL,
            user_id=who.user_id,
            guild_id=who.guild_id,
            channel_id=who.channel_id,
            parent_job_id=parent.id,
            group_id=None,
            variant=0,
            variants=variants,
        )
        source = KeptInputsSource(announcer, self._inputs, parent.id, self.config.input_retention_hours)
        return await self.submit(request, who, source)

    async def group(self, group_id: str) -> list[Job]:
        """The runs of a request for variations, in their order (``variant``)."""
        return await self._store.jobs_of_group(group_id)

    async def group_failures(self, group_id: str) -> dict[str, Text]:
        """Why each failed run of a group failed, as its member was to be told (by job id)."""
        reasons: dict[str, Text] = {}
        for notice in await self._store.notices_of_group(group_id):
            raw = notice.payload.get("text")
            if notice.outcome is JobState.FAILED and isinstance(raw, dict):
                reasons[notice.job_id] = Text.from_json(raw)
        return reasons

    async def lock_card(self, group_id: str, seconds: float) -> str | None:
        """Take a group's card lock for at most ``seconds``; the holder's name to let go of it, or ``None`` if another
        rebuild holds it."""
        holder = f"{self.lifecycle.holder}:{secrets.token_hex(3)}"
        now = self._clock()
        return holder if await self._store.lock_card(group_id, holder, now, now + seconds) else None

    async def unlock_card(self, group_id: str, holder: str) -> None:
        await self._store.unlock_card(group_id, holder)

    async def inputs_kept(self, job_id: str) -> bool:
        """Whether a job can be rerolled: its kind needs no images, or they are still kept (an unfinished
        job has them, and keeps them when it ends, unless nothing is kept at all)."""
        job = await self.job(job_id)
        if job is not None and not kind_of(job.kind).needs_images:
            return True
        return await self._retention.kept_now(job_id, ended=job is not None and job.state.terminal)

    async def job(self, job_id: str) -> Job | None:
        """A job as it is now, finished or not."""
        return await self._store.get_job(job_id)

    async def result_for(self, job_id: str, user_id: int) -> Job:
        """A finished result that ``user_id`` may refine or reroll (a private one only its requester)."""
        job = await self.job(job_id)
        if job is None or job.state not in _POSTED:
            raise InputError(_t("That result no longer exists."))
        check_can_reuse(job, user_id)
        return job

    async def info(self, job_id: str, user_id: int) -> JobInfo:
        """A result's details for ``user_id`` (a private one only its requester's): the job, the jobs it came
        from (nearest first, at most ``PARENTS_SHOWN``), and its API attempts."""
        job = await self.job(job_id)
        if job is None:
            raise InputError(_t("That result no longer exists."))
        check_can_reuse(job, user_id)
        parents: list[Job] = []
        missing: str | None = None
        seen = {job.id}
        parent_id = job.request.parent_job_id
        while parent_id is not None and parent_id not in seen and len(parents) < PARENTS_SHOWN:
            parent = await self.job(parent_id)
            if parent is None:
                missing = parent_id
                break
            parents.append(parent)
            seen.add(parent_id)
            parent_id = parent.request.parent_job_id
        attempts = await self._store.attempts_of(job.id)
        return JobInfo(job, tuple(parents), missing, tuple(attempts))

    async def deletable(self, job_id: str, by_user: int, is_moderator: bool) -> Job:
        """The job whose result ``by_user`` wants to delete, if they may: its requester or a moderator."""
        job = await self.job(job_id)
        if job is None:
            raise InputError(_t("That edit no longer exists."))
        check_can_delete(job, by_user, is_moderator)
        return job

    async def result_deleted(self, job: Job, by_user: int) -> None:
        """Record that ``job``'s result message was deleted; the job itself stays in the ledger."""
        await self._store.record_result_deleted(job.id, by_user, self._clock())
        log.info("job=%s result deleted by user=%s", job.id, by_user)

    async def history(
        self, user_id: int, guild_id: int | None, page: int, per_page: int
    ) -> tuple[list[HistoryEntry], bool]:
        """A member's jobs in this server (or in DMs), newest first: page ``page`` (0 = newest), and
        whether an older page exists."""
        entries = await self._store.history(user_id, guild_id, page * per_page, per_page + 1)
        return entries[:per_page], len(entries) > per_page

    async def cancel_group(self, group_id: str, by_user: int, is_moderator: bool) -> list[Job]:
        """Withdraw every run of a request for variations whose API call has not started; the runs cancelled.

        Each is shown on the group's card by the outbox at once (the card is rebuilt from the group's jobs);
        ``CancelRefusedError`` (the first run's reason) when none could be.
        """
        runs = await self.group(group_id)
        if not runs:
            raise CancelRefusedError(_t("That edit no longer exists."))
        cancelled: list[Job] = []
        refusal: CancelRefusedError | None = None
        for run in runs:
            try:
                cancelled.append(await self.cancel(run.id, by_user, is_moderator, notice=NoticeDraft({"by": by_user})))
            except CancelRefusedError as refused:
                refusal = refusal or refused
        if not cancelled:
            assert refusal is not None
            raise refusal
        return cancelled

    async def cancel(self, job_id: str, by_user: int, is_moderator: bool, *, notice: NoticeDraft | None = None) -> Job:
        """Withdraw a job before its API call starts (its requester or a moderator); it costs nothing.

        The caller answers the click by editing the status message, then says so (``cancel_told``);
        if it cannot, the outbox tells the member a little later (``notice``: when the outbox tells, and what).
        """
        job = await self.job(job_id)
        if job is None:
            raise CancelRefusedError(_t("That edit no longer exists."))
        if job.user_id != by_user and not is_moderator:
            raise CancelRefusedError(_t("Only the member who asked (or a moderator) can cancel this edit."))
        now = job
        for _ in range(CANCEL_TRIES):
            if not cancellable(now.state, now.restarts):
                break
            # Refused only when the job moved meanwhile (its images were just queued): look again.
            cancelled = await self.lifecycle.move(
                job_id,
                JobState.CANCELLED,
                error=AtelierError(_t("Cancelled."), log_detail=f"cancelled by {by_user}"),
                notice=notice or _cancel_notice(by_user),
            )
            if cancelled is not None:
                return cancelled
            now = await self.job(job_id) or now
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

    async def cancel_told(self, job: Job) -> None:
        """The canceller's answer told the member their job was cancelled: the notice owed is done."""
        await self._store.notice_done(job.id, self.lifecycle.holder, "cancel_reply", self._clock())

    async def usage(self, who: Requester) -> DayUsage:
        """A member's usage today, as admission sees it."""
        now = self._clock()
        return await self._store.usage(who.user_id, who.guild_id, utc_day(now), now)

    async def standing(self, who: Requester) -> tuple[MemberStanding, GuildLimits | None]:
        """Where a member stands against the limits in force where they asked."""
        limits = await self._admission.limits_for(who.guild_id)
        return member_standing(self.config, limits, who, await self.usage(who), self._clock()), limits

    async def limits_for(self, guild_id: int | None) -> GuildLimits | None:
        return await self._admission.limits_for(guild_id)

    async def may_start_here(self, who: Requester) -> GuildLimits | None:
        """Refuse a member who may not start a job where they are, before a form is shown; the limits there.

        ``submit`` checks again (settings may change while the form is open).
        """
        limits = await self.limits_for(who.guild_id)
        check_access(self.config, limits, who)
        return limits

    async def redirect(self, job_id: str, destination: Destination) -> None:
        """The frontend moved a job's status to a new message: its result goes there (not a move)."""
        await self._store.set_destination(job_id, destination)

    async def still_running(self, job: Job) -> bool:
        """Whether ``job``'s run is still this process's (asked before a running job's status is edited)."""
        return await self.lifecycle.still_holds(job)

    def caption_for(self, job: Job) -> Text | None:
        """What a result's caption adds for its job's kind, if anything."""
        return kind_of(job.kind).caption(job)

    def usual_seconds(self, job: Job) -> float | None:
        """How long jobs like this one usually run, or ``None`` with too little history."""
        return self._estimator.usual(job)

    @staticmethod
    def longer_than_usual(elapsed: float, usual: float | None) -> bool:
        """Whether a running job has taken clearly longer than usual (it says so, without alarm)."""
        return Estimator.longer_than_usual(elapsed, usual)

    def wait_seconds(self, job: Job, place: int) -> float | None:
        """About how long until the result of a job waiting at ``place``, or ``None``."""
        return self._estimator.wait(job, place, self.config.max_concurrent_jobs)

    def position(self, job_id: str) -> int | None:
        """A waiting job's place in line, as last told, or ``None``."""
        return self._places.place(job_id) if self._places is not None else None

    async def in_flight(self) -> int:
        """API calls in flight right now, across every process."""
        return await self._store.count(JobState.RUNNING)

    async def unfinished_of(self, user_id: int) -> list[Job]:
        """A member's unfinished jobs, oldest first."""
        return await self._store.unfinished_of(user_id)

    def presets_of(self, guild_id: int | None) -> list[StylePreset]:
        """A server's style presets, by name."""
        return self._presets.of(guild_id)

    def presets_matching(self, guild_id: int | None, typed: str) -> list[StylePreset]:
        """A server's presets whose name contains what was typed (for autocomplete)."""
        return self._presets.matching(guild_id, typed)

    def notices_waiting(self, user_id: int) -> bool:
        """Whether a member has something to be told at this use (no database trip)."""
        return self._notices.waiting_for(user_id)

    async def notices_owed(self, user_id: int) -> list[tuple[Notice, Job]]:
        """What a member is owed at this use, oldest first."""
        return await self._notices.pending(user_id)

    async def notices_shown(self, user_id: int, jobs: Sequence[Job]) -> None:
        """The member has been told about ``jobs``."""
        await self._notices.shown(user_id, jobs)

    # Admins and operators ---------------------------------------------------------------------------

    async def guild_overrides(self, guild_id: int) -> GuildOverrides:
        return await self._settings.overrides(guild_id)

    def cached_overrides(self, guild_id: int) -> GuildOverrides:
        """A server's overrides without waiting (all are loaded at start-up)."""
        return self._settings.cached(guild_id)

    async def save_guild_overrides(self, guild_id: int, overrides: GuildOverrides, by: int) -> None:
        await self._settings.save(guild_id, overrides, by)

    async def add_preset(self, guild_id: int, name: str, text: str, by: int) -> tuple[StylePreset, StylePreset | None]:
        """Add or replace a server's style; the preset and the one it replaced."""
        return await self._presets.add(guild_id, name, text, by)

    async def remove_preset(self, guild_id: int, name: str) -> StylePreset:
        return await self._presets.remove(guild_id, name)

    def model_for(self, guild_id: int | None) -> ImageModel:
        """The model new jobs in a server use (before the breaker's say)."""
        return self._admission.model_for(guild_id)

    async def stats(self, guild_id: int, today: str, week_days: Sequence[str]) -> JobStats:
        """A server's figures for ``/atelier stats``."""
        return await self._store.stats(guild_id, today, week_days)

    async def daily_stats(self, guild_id: int, days: Sequence[str]) -> list[DayStats]:
        """A server's jobs, spend and timings per day (for the stats chart)."""
        return await self._store.daily_stats(guild_id, days)

    def blocks_of(self, guild_id: int) -> list[Block]:
        """A server's blocked members, oldest block first."""
        return self._blocks.of_guild(guild_id)

    async def block(self, guild_id: int, user_id: int, reason: str | None, by: int) -> Block:
        """Refuse a member's new requests in a server from now on (jobs already accepted still run)."""
        return await self._blocks.block(guild_id, user_id, reason, by)

    async def unblock(self, guild_id: int, user_id: int, by: int) -> bool:
        """Lift a block; whether there was one."""
        return await self._blocks.unblock(guild_id, user_id, by)

    @property
    def guild_keys_enabled(self) -> bool:
        """Whether the operator lets servers use their own API key (``ATELIER_SECRET_KEY``)."""
        return self._keys.enabled

    def has_guild_key(self, guild_id: int) -> bool:
        return self._keys.has_key(guild_id)

    def guild_key_set_by(self, guild_id: int) -> int | None:
        return self._keys.set_by(guild_id)

    async def set_guild_key(self, guild_id: int, key: str, by: int) -> None:
        """Use a server's own API key for its new jobs (stored encrypted)."""
        await self._keys.set(guild_id, key, by)
        self._audit.key_changed(guild_id)

    async def clear_guild_key(self, guild_id: int, by: int) -> bool:
        """Go back to the operator's key for a server's new jobs; whether it had one."""
        removed = await self._keys.clear(guild_id, by)
        self._audit.key_changed(guild_id)
        return removed

    def gateway_state(self, connected: bool, note: str = "") -> None:
        """The frontend's gateway went up or down (for ``/healthz``)."""
        self.health.gateway(connected, note)

    def discord_rate_limited(self) -> None:
        """Discord answered 429 once (counted for the metrics)."""
        self.metrics.discord_rate_limited()

    def audit_entry_dropped(self) -> None:
        """An audit line was dropped: its channel could not keep up."""
        self.metrics.audit_dropped.inc()

    async def refresh_totals(self) -> Totals:
        """Read the totals every process sees alike (for the metrics)."""
        self._totals = await self._store.totals(utc_day(self._clock()))
        return self._totals

    async def _read_runs(self) -> None:
        now = self._clock()
        self._estimator.replace(await self._store.recent_runs(now - RECENT_SECONDS, self.config.default_model.name))

    async def _read_runs_forever(self) -> None:
        while True:
            await asyncio.sleep(RUNS_EVERY)
            try:
                await self._read_runs()
            except Exception as exc:
                UnexpectedError.capture(exc, "reading recent running times")


def _cancel_notice(by_user: int) -> NoticeDraft:
    """A cancel's notice: the canceller's own answer tells the member; the outbox only if it could not."""
    return NoticeDraft({"by": by_user}, delay=CANCEL_REPLY_GRACE)
