"""Admission: from a member's request to a job in line, or to a clear refusal.

One call (``Admission.submit``) resolves the style preset, checks who may ask, the
server's private-results setting and the limits, accepts and charges the job, has the
frontend answer the member, fetches and checks the images, keeps them with the job and
queues it. Whatever fails after the charge ends the job as failed, which refunds it;
nothing is left charged and "active" behind. Every way to start a job (``/edit``,
``/imagine``, Refine, Reroll, "Edit images" on a message) is this one call with its own
input source; a kind without images (``/imagine``) has nothing to fetch.

One member's requests are admitted one after another, in the order they arrived, so their
jobs are accepted, and start, in that order (a member's later edit never overtakes their
earlier one, however the database orders concurrent transactions).

Variations (a request with ``variants`` > 1) are that many ordinary jobs sharing a group (the id
of the first): each is admitted, checked against the limits and charged as one edit, and waits
its turns in the fair queue like any other job of its member. The cooldown applies to the request,
once: the group's later runs are admitted without it. When a limit stops the runs short, the ones
admitted so far run and the member is told, in the one acknowledgement, how many and why; the
ones refused were never charged. The images are fetched and checked once, and kept for each run.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
from collections.abc import AsyncIterator, Callable, Sequence

from bot.config import Config
from bot.core.job import MOST_VARIANTS, Destination, InputInfo, Job, JobRequest, new_job_id, utc_day
from bot.core.models import PARTIAL_IMAGES, ImageModel
from bot.core.states import JobState
from bot.errors import AtelierError, InputError, InputsGoneError, QueueFullError, UnexpectedError
from bot.i18n import Text, _nt, _t, catalogs
from bot.jobs.inputs import JobInputs
from bot.jobs.kinds import kind_of
from bot.jobs.lifecycle import Lifecycle
from bot.media.editor import Editor
from bot.ports import Announcer, InputSource
from bot.provider.balance import BalanceTooLowError, BalanceWatch
from bot.provider.routing import ModelRouter
from bot.servers.blocks import Blocklist
from bot.servers.guild_keys import GuildKeys
from bot.servers.limits import (
    GuildLimits,
    Requester,
    ShuttingDownError,
    apply_privacy,
    apply_spoilers,
    check_access,
    quota_for,
)
from bot.servers.presets import StylePresets
from bot.servers.settings import GuildSettings

log = logging.getLogger(__name__)

# The longest a job's download waits for the answers, and for the jobs ahead of it, in a burst.
ANSWERS_FIRST_SECONDS = 1.0
# The longest a slot's job waits for the answers of a burst before it fetches its images.
AHEAD_WAITS_SECONDS = 0.1
STOPPED_WHILE_FETCHING = _t(
    "The bot restarted while your images were being fetched, so this edit did not start. "
    "You were not charged; please send it again."
)


STOPPED_ADMITTING = _t("Something went wrong while your variations were being accepted; you were not charged.")


class Admission:
    """Checks, charges and prepares new jobs."""

    def __init__(
        self,
        config: Config,
        lifecycle: Lifecycle,
        settings: GuildSettings,
        presets: StylePresets,
        editor: Editor,
        inputs: JobInputs,
        *,
        blocks: Blocklist,
        keys: GuildKeys,
        router: ModelRouter,
        balance: BalanceWatch | None = None,
        waiting: Callable[[], int] = lambda: 0,
    ) -> None:
        self._config = config
        self._lifecycle = lifecycle
        self._settings = settings
        self._presets = presets
        self._editor = editor
        self._inputs = inputs
        self._blocks = blocks
        self._keys = keys
        self._router = router
        self._balance = balance
        self._waiting = waiting  # how many jobs wait in line, as last read (``Places``)
        self.accepting = True
        self._members: dict[int, asyncio.Lock] = {}  # one admission at a time per member, in arrival order
        self._unanswered = 0  # requests between arriving and their member's answer (or refusal)
        self._ahead = 0  # jobs fetching and keeping their images at once, ahead of the others (at most the slots)
        self._clear = asyncio.Event()  # set while no request waits for its answer and no job is ahead
        self._clear.set()
        self._answered = asyncio.Event()  # set while no request waits for its answer
        self._answered.set()

    def model_for(self, guild_id: int | None) -> ImageModel:
        """The model a server picked (if the operator still allows it), else the default."""
        if guild_id is not None:
            picked = self._config.model(self._settings.cached(guild_id).pick("model", None))
            if picked is not None:
                return picked
        return self._config.default_model

    def preview_partials(self, guild_id: int | None, model: ImageModel) -> int:
        """How many partial images a job here streams for its live preview (0: none): the most ``model``
        streams, when the server turned previews on."""
        if guild_id is None or not self._settings.cached(guild_id).pick("preview", False):
            return 0
        return model.streamed_partials

    async def limits_for(self, guild_id: int | None) -> GuildLimits | None:
        """The limits in force in a guild (``None`` in DMs)."""
        if guild_id is None:
            return None
        return GuildLimits.resolve(self._config, await self._settings.overrides(guild_id))

    async def submit(self, request: JobRequest, who: Requester, source: InputSource) -> Job:
        """Admit, charge, announce, fetch, check, keep and queue a job; return it as it ended up.

        Raises ``AtelierError`` when the request is refused (nothing charged), or when the job
        failed before the member could be answered through ``source`` (charged, then refunded).
        Any later failure is shown to the member by the notifier, and the failed job is returned.
        """
        if not self.accepting:
            raise ShuttingDownError()
        self._unanswered += 1
        self._clear.clear()
        self._answered.clear()
        try:
            async with self._member_turn(request.user_id):
                if request.variants > 1:
                    jobs, short = await self._admit_group(request, who)
                else:
                    jobs, short = [await self._admit(request, who)], None
        except BaseException:  # refused: the caller answers at once
            self._answer_given()
            raise
        return (await self._prepare(jobs, source, short))[0]

    @contextlib.asynccontextmanager
    async def _member_turn(self, user_id: int) -> AsyncIterator[None]:
        """This member's admissions one at a time, first come first served (asyncio's locks are fair)."""
        lock = self._members.setdefault(user_id, asyncio.Lock())
        try:
            async with lock:
                yield
        finally:
            if not lock.locked() and self._members.get(user_id) is lock:
                del self._members[user_id]

    async def _admit_group(self, request: JobRequest, who: Requester) -> tuple[list[Job], Text | None]:
        """Admit a request's variations as jobs of one group, one run at a time while the limits allow; the
        jobs, and what the member is told when fewer run than asked. Nothing admitted: the first refusal."""
        asked = max(2, min(request.variants, MOST_VARIANTS))
        group_id = new_job_id()
        jobs: list[Job] = []
        for variant in range(1, asked + 1):
            run = dataclasses.replace(request, group_id=group_id, variant=variant, variants=asked)
            try:
                # The cooldown is the request's: the runs after the first do not wait for it.
                first = variant == 1
                jobs.append(await self._admit(run, who, job_id=group_id if first else None, cooldown=first))
            except AtelierError as refused:  # a limit, or a full queue: the runs admitted so far go ahead
                if not jobs:
                    raise
                log.info("group=%s: %d of %d variations admitted (%s)", group_id, len(jobs), asked, refused.log_detail)
                return jobs, _nt(
                    "Only {count} of {asked} variations will run, and only it is charged: {reason}",
                    "Only {count} of {asked} variations will run, and only they are charged: {reason}",
                    len(jobs),
                    asked=asked,
                    reason=refused.user_message,
                )
            except BaseException:  # a bug, or a stop: the runs charged so far are refunded, not left accepted
                stopped = AtelierError(STOPPED_ADMITTING, log_detail="a group's admission stopped")
                await asyncio.shield(asyncio.gather(*(self._fail(job, stopped) for job in jobs)))
                raise
        return jobs, None

    async def _admit(
        self, request: JobRequest, who: Requester, *, job_id: str | None = None, cooldown: bool = True
    ) -> Job:
        kind_of(request.kind)  # a kind this version knows, before anything is charged
        self._blocks.check(who.guild_id, who.user_id)
        if request.style is not None and request.style_text is None:
            preset = self._presets.get(request.guild_id, request.style)
            request = dataclasses.replace(request, style=preset.name, style_text=preset.text)
        limits = await self.limits_for(who.guild_id)
        check_access(self._config, limits, who)
        request = apply_spoilers(limits, apply_privacy(limits, request), who)
        chosen = self.model_for(who.guild_id)
        chosen.check_size(request.size)
        # Only what the model takes is ever sent (the provider silently rewrites the rest). A reroll carries
        # its parent's partial images: the server's setting now decides them, below.
        asked = {name: value for name, value in request.options.items() if name != PARTIAL_IMAGES}
        request = dataclasses.replace(request, options=chosen.check_options(asked))
        chosen.check_region(request.region)  # a region edit needs a model that takes a mask, and a marked region
        endpoint = kind_of(request.kind).endpoint
        if chosen.path(endpoint) is None:
            raise InputError(
                _t("{model} cannot make an image from words alone; ask an admin to pick another model.",
                   model=chosen.name)
            )  # fmt: skip
        own_key = self._keys.key_for(who.guild_id) is not None
        if not own_key and self._balance is not None and self._balance.refusing:
            raise BalanceTooLowError()
        if await self._inputs.full():
            raise QueueFullError()
        model = self._router.route(chosen, request.size, request.options, endpoint, mask=request.region is not None)
        partials = self.preview_partials(who.guild_id, model)
        if partials:
            request = dataclasses.replace(request, options={**request.options, PARTIAL_IMAGES: partials})
        # A flat price, or by tokens the most this job can cost, its partial images included (settled to the
        # real cost at its end).
        cost = model.reservation(
            request.api_prompt, request.input_count, request.size, request.options, mask=request.region is not None
        )
        # The check and the charge are one step (``Lifecycle.create``), so two quick requests
        # cannot both take the last edit of a limit.
        now = self._lifecycle.clock()
        quota = quota_for(self._config, limits, who, now, price=cost, own_key=own_key)
        if not cooldown:
            quota = dataclasses.replace(quota, user_last_accepted=None)
        job = await self._lifecycle.create(
            Job(
                id=job_id or new_job_id(),
                request=request,
                state=JobState.ACCEPTED,
                created_at=now,
                charge_day=utc_day(now),
                cost=cost,
                model=model.name,
                holder=self._lifecycle.holder,
                guild_key=own_key,
            ),
            quota,
        )
        return job

    async def _prepare(self, jobs: list[Job], source: InputSource, short: Text | None) -> list[Job]:
        """Announce, fetch, check, keep and queue a request's jobs (one, or a group's runs): one acknowledgement
        (which says when fewer runs than asked were accepted), one fetch and check of the images, kept for each
        job; each queued as it is ready. Returns the jobs as they ended up."""
        first = jobs[0]
        announced = False
        ahead = False
        try:
            try:
                destination = await source.announce(first, short)
            finally:
                self._answer_given()
            announced = True
            preparing = [
                moved
                for job in jobs
                if (moved := await self._lifecycle.move(job, JobState.PREPARING, destination=destination)) is not None
            ]
            notes: tuple[str, ...] = ()
            inputs: tuple[InputInfo, ...] = ()
            kind = kind_of(first.kind)
            images = None
            if kind.needs_images and preparing:
                ahead = await self._fetch_turn()
                files = await source.fetch()
                images = await kind.prepare(preparing[0], files, self._editor)
                # Notes are kept as text, in the language of the member who reads them.
                notes = tuple(catalogs().render(image.note, first.request.language) for image in images if image.note)
                # What the result names image1…; a kind may keep more after them (a region edit's mask).
                shown = images[: first.request.input_count]
                inputs = tuple(InputInfo(i.width, i.height, len(i.data), i.mime) for i in shown)
            ended: list[Job] = []
            for job in preparing:
                if images is not None:
                    await self._inputs.save(job.id, images)
                queued = await self._lifecycle.move(job, JobState.QUEUED, notes=notes, inputs=inputs)
                if queued is None:  # cancelled while its images were being prepared: never queued again
                    if images is not None:
                        await self._inputs.delete(job.id)  # saved after the job ended
                    ended.append(await self._as_it_is(job))
                else:
                    ended.append(queued)
            return ended or [await self._as_it_is(job) for job in jobs]
        except AtelierError as error:
            failure: AtelierError = error
        except asyncio.CancelledError:
            stopped = AtelierError(STOPPED_WHILE_FETCHING, log_detail="preparation stopped")
            await asyncio.shield(
                asyncio.gather(*(self._fail(job, stopped) for job in jobs if self._lifecycle.holds(job.id)))
            )
            raise
        except Exception as exc:  # a bug: logged under a reference; the member gets the one apology
            failure = UnexpectedError.capture(exc, f"preparing job {first.id}")
        finally:
            if ahead:
                self._ahead -= 1
                self._settle()
        # Each run not queued yet fails (refunded); one already queued (no longer held here) runs.
        failed = [
            (await self._fail(job, failure) or job) if self._lifecycle.holds(job.id) else await self._as_it_is(job)
            for job in jobs
        ]
        if not announced:
            raise failure  # nobody has answered the member yet: the caller's error path does
        return failed

    async def answers_first(self) -> None:
        """Wait until every request that has arrived has its answer, at most ``ANSWERS_FIRST_SECONDS``: what can wait
        a moment (a waiting member's new place) goes after the answers members are waiting for."""
        await _at_most(ANSWERS_FIRST_SECONDS, self._answered)

    def _answer_given(self) -> None:
        self._unanswered -= 1
        self._settle()

    def _settle(self) -> None:
        if not self._unanswered:
            self._answered.set()
            if not self._ahead:
                self._clear.set()

    async def _as_it_is(self, job: Job) -> Job:
        return await self._lifecycle.store.get_job(job.id) or job

    async def _fetch_turn(self) -> bool:
        """Wait for this job's turn to fetch and keep its images; whether it went ahead of the others (the
        caller then ends its turn once the job is queued or has failed).

        As many jobs as there are slots go first, unless as many jobs already wait in line: the API needs
        them first (a line as long as the slots keeps the API busy without them; the line as last read, so
        a shorter one, perhaps claimed since, does not count). They wait only for the answers
        of the requests that have arrived (admitted and acknowledged, or refused), at most
        ``AHEAD_WAITS_SECONDS``: fetching, checking and saving their images (and the workers' claims and
        reads of them) would otherwise take the processor from the last answers of a burst, a few
        milliseconds each, for a delay to the API of a tenth of a second at most, once a burst. Any other
        job waits until every request that has arrived is answered and the slots' jobs are queued. An
        answer is what a member waits for, and a slot's job what the API waits for; the images of a job
        further back can wait a moment. Otherwise a burst shares the event loop, the database (and, with
        PostgreSQL, its connections) between the answers, the slots' jobs and every other download and
        save: the last answers come late, and the API waits for its first calls. Bounded, so a flood of
        requests cannot hold the others back for long.
        """
        slots = self._config.max_concurrent_jobs
        if self._ahead < slots and self._waiting() < slots:
            self._ahead += 1
            self._clear.clear()
            await _at_most(AHEAD_WAITS_SECONDS, self._answered)
            return True
        await _at_most(ANSWERS_FIRST_SECONDS, self._clear)
        return False

    async def _fail(self, job: Job, error: AtelierError) -> Job | None:
        """End a job admission cannot finish (failed, refunded, its member told); or, if the database will not
        take even that, let it go: held, its lease would be renewed for ever and the job stay "preparing", still
        charged. Let go, its lease lapses and the take-over queues it (its images saved whole) or fails it."""
        held = self._lifecycle.holds(job.id) or job
        try:
            return await self._lifecycle.move(held, JobState.FAILED, error=error)
        except Exception as exc:
            self._lifecycle.let_go(held)
            log.warning("job=%s: the database refused its end (%s); letting it go for the take-over", job.id,
                        type(exc).__name__)  # fmt: skip
            return None

    async def fail_unprepared(self) -> int:
        """At a stop: end the jobs whose images are still on their way (refunded, the member told)."""
        unprepared = self._lifecycle.held(JobState.ACCEPTED, JobState.PREPARING)
        for job in unprepared:
            await self._fail(job, AtelierError(STOPPED_WHILE_FETCHING, log_detail="stopped while preparing"))
        return len(unprepared)


class KeptInputsSource:
    """A reroll's input source: the frontend answers the member; the images are the parent job's kept inputs.

    They are sent through the same checks as any upload (they pass through unchanged, as
    they were prepared once already), so a reroll costs what an edit costs.
    """

    def __init__(self, announcer: Announcer, inputs: JobInputs, parent_job_id: str, hours: float) -> None:
        self._announcer = announcer
        self._inputs = inputs
        self._parent_job_id = parent_job_id
        self._hours = hours

    async def announce(self, job: Job, note: Text | None = None) -> Destination:
        return await self._announcer.announce(job, note)

    async def fetch(self) -> Sequence[tuple[str, bytes]]:
        images = await self._inputs.load(self._parent_job_id)
        if images is None:  # dropped since the member clicked (the window or the disk cap)
            raise InputsGoneError(self._hours)
        return [(f"image{number}", image.data) for number, image in enumerate(images, start=1)]


async def _at_most(seconds: float, event: asyncio.Event) -> None:
    """Wait until ``event`` is set, or ``seconds`` have passed."""
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(seconds):
            await event.wait()
