"""What members see while a job waits and runs, its result and its final outcome: the engine's Notifier,
Publisher and NoticeTeller.

Status edits are throttled per job (Discord rate-limits message edits): the
first is sent at once, later ones at most every ``STATUS_MIN_INTERVAL`` seconds
(places in line and the time so far every ``STATUS_UPDATE_SECONDS``), always with
the newest text, and never after the result or the final outcome: the status line
is closed before either goes out. A running job's status line belongs to the run that
wrote it: before each edit it asks the engine whether that run still holds the job,
and a run that lost its job stops editing, silently. The times come with the engine's
estimate of how long such an edit usually takes, when it has one.

A live preview goes through the same line: the newest partial image waits for its turn
(at most one edit every ``STATUS_MIN_INTERVAL`` seconds; an older one still waiting is
dropped), and is shown as a card with the image (``cogs.delivery.preview``). While a
preview shows, the time-so-far ticks stop (they would take the image away, or upload it
again every few seconds); the next preview, the result or the failure replaces it.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import functools
import logging
import time
import zlib
from collections.abc import Awaitable, Callable, Sequence

import discord

from bot.core.job import Delivered, Destination, Job
from bot.core.models import PARTIAL_IMAGES
from bot.core.records import Notice
from bot.core.states import JobState, cancellable
from bot.engine import JobEngine
from bot.errors import AtelierError
from bot.i18n import Text, _t
from bot.media.images import OutputImage
from bot.ports import NotDelivered, Posted, PostFailed, ResultMedia, TellLater, Told
from bot.retries import SHORT_PAUSES, asked_again
from cogs.core.errors import failure_text
from cogs.core.language import for_job
from cogs.delivery.acknowledge import status_text
from cogs.delivery.buttons import cancel_view
from cogs.delivery.card import ResultCard, card_files, card_text, origin_of
from cogs.delivery.destinations import Delivery, DirectMessagesClosedError
from cogs.delivery.group import GroupCards
from cogs.delivery.pace import Pacer
from cogs.delivery.preview import PreviewPicture
from cogs.delivery.results import result_buttons

log = logging.getLogger(__name__)

ViewFactory = Callable[[], discord.ui.View]
TextFactory = Callable[[], str]
Redirect = Callable[[Destination], Awaitable[None]]
Guard = Callable[[], Awaitable[bool]]

STATUS_MIN_INTERVAL = 3.0
# Places up to this one are shown at the full pace; a place further back changes with every job
# that starts but matters less, so its line is edited less often: half as often from twice as far
# (places 100-199), a quarter from four times (200-399), and so on. The edits of a whole line then
# grow with the log of its length, not with it: about 5 × (1 + log2(length / 50)) a second at
# STATUS_UPDATE_SECONDS=10, 43 for 10,000 waiting jobs instead of 1,000. (In steps, not in
# proportion: a job moving up a place keeps its pace, and its pending edit keeps its turn.)
FULL_PACE_PLACES = 50
# How many waiting jobs' lines are updated before letting others use the loop (a line of 10,000).
LINES_AT_A_TIME = 500
# How long closing a status line waits for an edit or a move it started (post, point, record).
MOVE_TIMEOUT = 15.0
_DISCORD_UPLOAD_TOO_LARGE = 40005


DIRECT_MESSAGE_NOTE = _t(
    "🔒 Your private result came after Discord's 15-minute limit for private answers, so it is here. "
    "Use `/history` in the server to refine or reroll it."
)


def place_interval(every: float, place: int) -> float:
    """The least time between two edits of a waiting job's line at ``place``."""
    return every * (1 << max(0, (place // FULL_PACE_PLACES).bit_length() - 1))


class StatusLine:
    """One job's status message: edited no more often than every few seconds, moved when Discord would refuse."""

    def __init__(
        self,
        delivery: Delivery,
        redirect: Redirect,
        every: float,
        still_mine: Guard | None = None,
        phase: float = 0.0,
        pace: Callable[[], Awaitable[None]] | None = None,
    ) -> None:
        self.delivery = delivery
        self.running = False  # a running job's line; else a waiting job's (set by its maker)
        self._redirect = redirect
        self._every = every
        self._still_mine = still_mine  # asked before each edit; False: another run owns the job now
        self._last = 0.0  # when the line last edited its message (0: never)
        self._phase = phase  # where in its interval a waiting line's first place update falls, 0 to 1
        self._pace = pace  # a waiting line's turn among the process's place updates (``cogs.delivery.pace``)
        self._pending: tuple[TextFactory, ViewFactory | None, float] | None = None
        self._place = 0  # a waiting job's place, as last read
        self._place_pending = False  # the pending update is a place update: it shows ``_place`` as it is when sent
        self._flusher: asyncio.Task[None] | None = None
        self._sending = False
        self._ticker: asyncio.Task[None] | None = None
        self._moving: asyncio.Task[None] | None = None  # held here: a shielded task must be referenced
        self._stuck = False  # Discord refused an edit of this message: the next update moves it
        self._cannot_move = False
        self._closed = False
        self._picture: PreviewPicture | None = None  # the newest preview given
        self._shown: PreviewPicture | None = None  # the preview the message shows

    def update(self, content: TextFactory, view: ViewFactory | None, interval: float | None = None) -> None:
        """Show ``content()`` soon: at once if nothing was shown in the last ``interval`` seconds."""
        if self._closed:
            return
        self._place_pending = False
        interval = min(STATUS_MIN_INTERVAL, self._every) if interval is None else interval
        sooner = self._pending is not None and interval < self._pending[2]
        self._pending = (content, view, interval)
        if self._flusher is not None and not self._flusher.done() and sooner and not self._sending:
            self._flusher.cancel()  # it sleeps for a longer interval; this news is more urgent
            self._flusher = None
        if self._flusher is None or self._flusher.done():
            self._flusher = asyncio.create_task(self._flush())

    def wait_at(self, place: int, text: Callable[[int], str], view: ViewFactory | None, interval: float) -> None:
        """Show a waiting job's ``place`` (as ``text(place)``) in its turn, at most every ``interval`` seconds.

        A long line's places change with every claim. While a place update is pending, a newer place only
        replaces its number, read when the update is sent. (Made anew at each reading of a line of 10,000,
        the updates were tens of thousands of objects that lived until their turn; so many new long-lived
        objects set off a full garbage collection of the whole process, 0.2-0.7 s, every second or two.)
        """
        self._place = place
        pending = self._pending
        if self._last == 0.0 and pending is None and place > FULL_PACE_PLACES:
            # Far back, where the acknowledgement showed a place a moment ago, the first update comes within one
            # interval, at the line's own point in it. (Lines open when their place first changes, and every place
            # changes when the first calls start: 6,000 lines of a line of 10,000 opened together, all edited at
            # once, and for seconds the process did little but send those edits, admissions waiting behind them.)
            # Near the front, where few lines are, a member sees the first move at once.
            self._last = time.monotonic() - self._phase * interval
        if (
            self._place_pending
            and pending is not None
            and pending[2] == interval
            and (pending[1] is None) == (view is None)
        ):
            return
        self.update(lambda: text(self._place), view, interval)
        self._place_pending = True

    def preview(self, content: TextFactory, picture: PreviewPicture) -> None:
        """Show ``picture`` (a partial image) with ``content()`` in its turn, unless a newer one came first."""
        if self._closed or (self._picture is not None and picture.index <= self._picture.index):
            return
        self._picture = picture  # an older one still waiting for its turn is dropped
        self.update(content, None, STATUS_MIN_INTERVAL)

    async def _flush(self) -> None:
        while self._pending is not None:
            wait = self._last + self._pending[2] - time.monotonic()
            if wait > 0:
                await asyncio.sleep(wait)
                if self._pending is None:
                    break
            if self._pace is not None and self._place_pending:
                await self._pace()  # due: now its turn among the process's place updates
                if self._pending is None:
                    break
            content, view, interval = self._pending
            self._pending = None
            self._last = time.monotonic()
            self._sending = True
            picture = self._picture if self._picture is not self._shown else None
            moving = not self._cannot_move and (self._stuck or self.delivery.move_due)
            try:
                try:
                    if picture is not None and not moving and not self.delivery.is_card:
                        # Recorded before the message becomes a card (and before the run is asked once more), so
                        # whoever tells this job's end, in any process, writes its words as a card too.
                        await self._became_card()
                    mine = self._still_mine is None or await self._still_mine()
                except Exception as exc:
                    # The database did not answer: this update waits for its next turn (unless a newer one came),
                    # and the line goes on. (Ended here, it would freeze while a preview holds back the ticks.)
                    log.warning("a status update waits: the database failed (%s)", type(exc).__name__)
                    if self._pending is None:
                        self._pending = (content, view, interval)
                    continue
                if not mine:
                    self._pending = None
                    return  # this run lost its job: whatever it would show is no longer true
                # Texts and views are built only for edits actually sent: most queued updates are superseded.
                text, buttons = content(), view() if view is not None else None
                if moving:
                    self._moving = asyncio.create_task(self._move(text, buttons))
                    # Shielded: a move that posted its message must also record it, or the result would miss it.
                    await asyncio.shield(self._moving)
                    if picture is not None and self._pending is None:
                        self._pending = (content, view, interval)  # the preview goes to the new message next
                elif picture is not None:
                    if await self.delivery.preview(text, picture):
                        self._shown = picture
                    else:
                        self._stuck = True
                elif not await self.delivery.status(text, buttons):
                    self._stuck = True
            finally:
                self._sending = False
                # Counted again from the end of the edit: the database's answer and the upload before it can take
                # a while, and Discord sees the edits arrive, so the next one leaves a full interval after this one.
                self._last = time.monotonic()

    async def _record(self, destination: Destination) -> None:
        """Record where the status is now, so the result goes there: asked again while the database fails (the
        message is posted already: unrecorded, the result would miss it, and it would say "Editing…" for good)."""
        await asked_again(lambda: self._redirect(destination), SHORT_PAUSES, "recording a status message's move", log)

    async def _became_card(self) -> None:
        destination = self.delivery.as_card()
        await self._record(destination)
        self.delivery = Delivery(self.delivery.bot, destination, self.delivery.user_id, self.delivery.language)

    async def _move(self, text: str, view: discord.ui.View | None) -> None:
        """Post the status as a fresh message, point the old one to it, and make the job's result go there."""
        try:
            destination = await self.delivery.move(text, view)
        except discord.HTTPException as exc:
            # The bot may not write in the channel: the status stays where it is, as long as it can.
            log.info("could not move a status message (%s %s)", exc.status, exc.code)
            self._cannot_move = True
            return
        self.delivery = Delivery(self.delivery.bot, destination, self.delivery.user_id, self.delivery.language)
        self._stuck = False
        self._shown = None  # a fresh message: no preview on it yet
        await self._record(destination)

    def tick(self, content: TextFactory) -> None:
        """While the API works, show ``content()`` (the time so far) every ``every`` seconds."""

        async def run() -> None:
            while True:
                await asyncio.sleep(self._every)
                if self._picture is None:  # a preview's card keeps its own words until the next one
                    self.update(content, None)

        self._ticker = asyncio.create_task(run())

    async def close(self) -> None:
        """Stop all status edits for good (the result or the failure comes next).

        An edit or a move already on its way is let finish, not cancelled: the result must go where
        the status now is, and must land after it. (A cancelled edit would also hold the token: see
        ``cogs.delivery.destinations``.) Only an update still waiting for its turn is dropped.
        """
        self._closed = True
        self._pending = None
        flusher = self._flusher
        if flusher is not None and self._sending:
            await asyncio.wait({flusher}, timeout=MOVE_TIMEOUT)
        for task in (self._ticker, flusher):
            if task is not None and not task.done():
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task


def about(seconds: float) -> Text:
    """A rough duration: "about 95 s", "about 4 min", "about 1 h 20 min"."""
    if seconds < 10:
        return _t("about {seconds} s", seconds=max(1, round(seconds)))
    if seconds < 120:
        return _t("about {seconds} s", seconds=5 * round(seconds / 5))
    minutes = round(seconds / 60)
    if minutes < 60:
        return _t("about {minutes} min", minutes=minutes)
    if minutes % 60:
        return _t("about {hours} h {minutes} min", hours=minutes // 60, minutes=minutes % 60)
    return _t("about {hours} h", hours=minutes // 60)


def so_far(seconds: float) -> Text:
    """Time elapsed: "40 s", "3 min 05 s"."""
    whole = int(seconds)
    if whole < 120:
        return _t("{seconds} s", seconds=whole)
    return _t("{minutes} min {seconds} s", minutes=whole // 60, seconds=f"{whole % 60:02d}")


class DiscordNotifier:
    """Implements the engine's Notifier with Discord messages (status edits, failures)."""

    def __init__(self, bot: discord.Client, engine: JobEngine) -> None:
        self.bot = bot
        self.engine = engine
        self._every = engine.config.status_update_seconds
        self._lines: dict[str, StatusLine] = {}  # open status messages (Discord state, not job state)
        # The jobs this process runs or delivers: their wait is over, whatever a reading of the places made
        # before their claim still says (``queue_moved`` leaves them alone).
        self._started: set[str] = set()
        self._cards = GroupCards(bot, engine)
        # The waiting lines' place updates take turns, after the answers members wait for (``cogs.delivery.pace``).
        self._places_pace = Pacer(quiet=engine.answers_first)

    def delivery(self, job: Job) -> Delivery | None:
        """Where this job is shown, rebuilt from what it stored (``None`` before it was announced)."""
        if job.destination is None:
            return None
        return Delivery(self.bot, job.destination, job.user_id, job.request.language)

    def _line(self, job: Job) -> StatusLine | None:
        if job.request.is_variation:
            return None  # a group's runs share one message, its card: it shows their ends, not each one's wait
        line = self._lines.get(job.id)
        if line is None:
            delivery = self.delivery(job)
            if delivery is None:
                return None
            redirect = functools.partial(self.engine.redirect, job.id)
            # A running job's line belongs to its run: it edits only while that run holds the job.
            # A waiting job's edits only while the job waits, as the last reading of the line says.
            guard = (
                functools.partial(self.engine.still_running, job)
                if job.state is JobState.RUNNING
                else functools.partial(self._still_waiting, job.id)
            )
            # Far back, a waiting line's first place update falls at its own point of its interval (``wait_at``).
            phase = zlib.crc32(job.id.encode()) / 2**32
            pace = None if job.state is JobState.RUNNING else self._places_pace.turn
            line = self._lines[job.id] = StatusLine(delivery, redirect, self._every, guard, phase, pace)
            line.running = job.state is JobState.RUNNING
        return line

    async def _still_waiting(self, job_id: str) -> bool:
        return self.engine.position(job_id) is not None

    async def _close(self, job: Job) -> bool:
        """Close the job's line here, if it has one (whether it had)."""
        line = self._lines.pop(job.id, None)
        if line is None:
            return False
        await line.close()
        return True

    def running_text(self, job: Job) -> str:
        """ "Editing… 40 s so far, usually about 95 s" (no estimate without enough history)."""
        usual = self.engine.usual_seconds(job)
        elapsed = time.time() - (job.started_at or time.time())
        if elapsed < 1:
            state = _t("🎨 Editing… usually {usual}.", usual=about(usual)) if usual is not None else _t("🎨 Editing…")
        elif usual is not None and self.engine.longer_than_usual(elapsed, usual):
            state = _t(
                "🎨 Editing… {elapsed} so far; this one is taking longer than usual ({usual}).",
                elapsed=so_far(elapsed),
                usual=about(usual),
            )
        elif usual is not None:
            state = _t("🎨 Editing… {elapsed} so far, usually {usual}.", elapsed=so_far(elapsed), usual=about(usual))
        else:
            state = _t("🎨 Editing… {elapsed} so far.", elapsed=so_far(elapsed))
        return status_text(job, state)

    def preview_text(self, job: Job, index: int) -> str:
        """ "Editing… a first look (2 of 3); the finished image will replace it." """
        total = job.request.options.get(PARTIAL_IMAGES)
        state = _t(
            # Translators: a live preview of a running edit: {number} of {total} partial images.
            "🎨 Editing… a first look ({number} of {total}); the finished image will replace it.",
            number=index + 1,
            total=total if isinstance(total, int) and total > index else index + 1,
        )
        return status_text(job, state)

    def queued_text(self, job: Job, place: int) -> str:
        """ "Queued — position 3, result in about 4 min" (no estimate without enough history)."""
        wait = self.engine.wait_seconds(job, place)
        if place == 1:
            state = (
                _t("⏳ Queued — next in line, result in {wait}.", wait=about(wait))
                if wait is not None
                else _t("⏳ Queued — next in line.")
            )
        else:
            state = (
                _t("⏳ Queued — position {place}, result in {wait}.", place=place, wait=about(wait))
                if wait is not None
                else _t("⏳ Queued — position {place}.", place=place)
            )
        return status_text(job, state)

    async def job_moved(self, job: Job, before: JobState, error: AtelierError | None) -> None:
        state = job.state
        if state in (JobState.RUNNING, JobState.DELIVERING):
            self._started.add(job.id)
        else:
            self._started.discard(job.id)  # ended, or back in line
        if state is JobState.RUNNING:
            # Marked started above, before any wait: a reading of the places made before the claim may be
            # told meanwhile, and must not open a waiting line for the job here. This run's line would then
            # be that one (guarded by the job's place, not by this run), and stop at the next reading.
            # A line of the job's wait, or of an earlier run, here (a move it began ends first).
            if await self._close(job):
                # That line may have moved the status while the job was claimed: start where the store says it
                # is now, not where the claim read it, or this line would move it from the old message once more.
                # (With no line here, the row the claim returned is as fresh as a reading now would be.)
                # (A database that fails this reading costs that move, not the running line: it starts from the
                # claim's row.)
                try:
                    current = await self.engine.job(job.id)
                except Exception as exc:
                    log.warning("job=%s: reading where its status is failed (%s); going on from the claim's row",
                                job.id, type(exc).__name__)  # fmt: skip
                    current = None
                if current is not None and current.destination is not None:
                    job = dataclasses.replace(job, destination=current.destination)
            line = self._line(job)
            if line is not None:
                line.update(functools.partial(self.running_text, job), None)
                line.tick(functools.partial(self.running_text, job))
        elif state in (JobState.DELIVERING, JobState.INTERRUPTED) or state.terminal:
            # No throttled update may land on the result, the final outcome or "will resume".
            await self._close(job)

    async def run_lost(self, job: Job) -> None:
        self._started.discard(job.id)  # another process holds it now: its news is no longer this one's
        await self._close(job)

    async def job_preview(self, job: Job, image: OutputImage, index: int) -> None:
        line = self._lines.get(job.id)
        if line is None or not line.running:
            return  # its run's status closed (the result or the failure is on its way): nothing lands after
        picture = PreviewPicture(
            index,
            image.data,
            f"preview-{job.id}-{index + 1}.{image.extension}",
            for_job(job, _t("A first look at: {prompt}", prompt=job.request.prompt)),
            job.request.spoiler,
        )
        line.preview(functools.partial(self.preview_text, job, index), picture)

    async def queue_left(self, job_ids: Sequence[str]) -> None:
        for job_id in job_ids:
            line = self._lines.get(job_id)
            if line is not None and not line.running:
                del self._lines[job_id]
                await line.close()

    async def queue_moved(self, places: Sequence[tuple[Job, int]]) -> None:
        for count, (job, place) in enumerate(places, start=1):
            if count % LINES_AT_A_TIME == 0:
                await asyncio.sleep(0)  # a long line's updates leave room for admissions,
                await self.engine.answers_first()  # and wait for the answers of a burst of commands
            if job.id in self._started:
                continue  # a reading made before its claim: neither a waiting line nor a running one's text
            line = self._line(job)
            if line is None:
                continue
            # Places change with every job that starts; with hundreds waiting, showing each step
            # would be a flood of edits, so a member sees theirs at most every ``STATUS_UPDATE_SECONDS``
            # (less often far back in a long line).
            # A job back in line after its call started cannot be withdrawn: no Cancel that could only say so.
            buttons = (
                functools.partial(cancel_view, job.id, job.request.language)
                if cancellable(job.state, job.restarts)
                else None
            )
            line.wait_at(place, functools.partial(self.queued_text, job), buttons, place_interval(self._every, place))

    async def job_paused(self, job: Job) -> None:
        await self._close(job)
        delivery = self.delivery(job)
        if delivery is not None and not job.request.is_variation:
            await delivery.status(
                status_text(job, _t("⏸️ The bot is restarting; this edit will resume automatically.")),
                cancel_view(job.id, job.request.language) if cancellable(job.state, job.restarts) else None,
            )

    async def tell(self, job: Job, notice: Notice) -> Told | TellLater:
        """The job's final outcome, where its member sees it (the outbox calls this until Discord takes it)."""
        await self._close(job)  # another process may have ended it: nothing of its wait lands after this
        delivery = self.delivery(job)
        if delivery is None:
            return Told("no_destination")  # it failed before the member was answered: the answer said so
        text = outcome_text(job, notice)
        try:
            if job.request.is_variation and await self._cards.refresh(job, delivery):
                return Told("card")  # shown on its group's card; one that can no longer be edited gets the words
            if job.state is JobState.FAILED:
                how = await delivery.failure(text, bool(notice.payload.get("private")))
            else:
                how = await delivery.final(text)
        except discord.HTTPException as exc:
            log.warning("could not report job=%s's %s outcome yet (%s %s)", job.id, job.state, exc.status, exc.code)
            return TellLater(f"HTTP {exc.status} {exc.code}")
        return Told(how)


def outcome_text(job: Job, notice: Notice) -> str:
    """What a job's member reads when it ended without a result: why it failed, or who cancelled it."""
    if job.state is JobState.CANCELLED:
        by = notice.payload.get("by")
        words = (
            _t("🚫 Edit cancelled; nothing was charged.")
            if by is None or int(by) == job.user_id
            else _t("🚫 Edit cancelled by {moderator}; nothing was charged.", moderator=f"<@{int(by)}>")
        )
        return for_job(job, words)
    raw = notice.payload.get("text")
    reason = Text.from_json(raw) if isinstance(raw, dict) else _t("This edit could not be finished.")
    return failure_text(reason, job.request.language)


class DiscordPublisher:
    """Implements the engine's Publisher: posts a finished result as its card, with its buttons."""

    def __init__(self, bot: discord.Client, engine: JobEngine) -> None:
        self.bot = bot
        self.engine = engine
        self._cards = GroupCards(bot, engine)

    async def publish(self, job: Job, media: ResultMedia) -> Posted | NotDelivered | PostFailed:
        # Read again: the status message may have moved (Discord's edit windows) since the job started. A database
        # that does not answer now costs that move, not the paid result: it goes where the job started.
        try:
            current = await self.engine.job(job.id)
        except Exception as exc:
            log.warning("job=%s: reading where its result goes failed (%s); posting where it started", job.id,
                        type(exc).__name__)  # fmt: skip
            current = None
        destination = current.destination if current is not None and current.destination else job.destination
        if destination is None:
            return PostFailed(_t("This edit has nowhere to be shown."), "no destination")
        delivery = Delivery(self.bot, destination, job.user_id, job.request.language)
        parent = await self._parent(job)
        image = media.output
        notes = [*job.notes, image.note or ""]
        text = card_text(job, image, notes, origin_of(job, parent), self.engine.caption_for(job))
        language = job.request.language

        def compose(where: Delivered) -> tuple[discord.ui.LayoutView, list[discord.File]]:
            by_dm = where is Delivered.DIRECT_MESSAGE
            footer = f"-# {for_job(job, DIRECT_MESSAGE_NOTE)}" if by_dm else None
            region = self.engine.model_for(job.guild_id).mask  # Edit region where the server's model can
            buttons = result_buttons(job.id, language, by_direct_message=by_dm, region=region)
            return ResultCard(job, media, text, buttons, footer), card_files(job, media)

        try:
            if job.request.is_variation:
                # A run of a group fills its card; when the card can no longer be edited, it goes on its own.
                posted = await self._cards.publish(job, delivery, image)
                if posted is not None:
                    return posted
                channel_id, message_id, delivered = await delivery.elsewhere(compose)
            else:
                channel_id, message_id, delivered = await delivery.result(compose)
        except DirectMessagesClosedError:
            return NotDelivered("a late private result; the member's direct messages are closed")
        except discord.HTTPException as exc:
            too_large = exc.status == 413 or exc.code == _DISCORD_UPLOAD_TOO_LARGE
            return PostFailed(
                _t(
                    "Discord refused to post the result (HTTP {status}). You were not charged; please try again.",
                    status=exc.status,
                ),
                f"result upload refused: {exc.status} {exc.code} {exc.text[:200]}",
                too_large=too_large,
            )
        return Posted(channel_id, message_id, delivered)

    async def _parent(self, job: Job) -> Job | None:
        """The job a Refine or Reroll came from, for the card's origin line (left out if the database fails now)."""
        if not job.request.parent_job_id:
            return None
        try:
            return await self.engine.job(job.request.parent_job_id)
        except Exception as exc:
            log.warning("job=%s: reading its parent job failed (%s)", job.id, type(exc).__name__)
            return None
