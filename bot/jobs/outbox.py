"""The outbox: final outcomes owed to members, told until Discord takes them.

The move that ends a job records, in the same transaction, that its member must be told
(``bot.store``): a failure's reason, a cancel. The process that made the move tells at once,
right after its status line for the job is closed, so the final word comes last. If it
cannot (a rate limit, an outage, a crash), any process tells later: a notice nobody is
telling (its teller's lease lapsed, or its teller is gone) is claimed like a job, by exactly
one process, and tried again with a growing pause. A notice is done only when Discord took
it, or when it was handed to the fallback path: the member is then told at their next use
of the bot (``bot.jobs.notices``). Every process drains what is pending when it starts.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Collection

from bot.core.job import Job
from bot.core.records import Notice
from bot.errors import UnexpectedError
from bot.ports import NoticeTeller, TellLater, Told
from bot.retries import SHORT_PAUSES, asked_again
from bot.scheduler import Scheduler
from bot.store.store import Store

log = logging.getLogger(__name__)

DRAIN_EVERY = 5.0
FIRST_RETRY = 2.0
LONGEST_PAUSE = 120.0
# After this many tries (about four minutes), the member is told at their next use instead.
MOST_TRIES = 7
NEXT_USE = "next_use"


class Outbox:
    """Tells members the final outcomes owed to them, through the frontend's ``NoticeTeller``."""

    def __init__(
        self,
        store: Store,
        holder: str,
        scheduler: Scheduler,
        gone: Callable[[set[str]], Awaitable[set[str]]],
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._store = store
        self._holder = holder
        self._scheduler = scheduler
        self._gone = gone
        self._clock = clock
        self._teller: NoticeTeller | None = None
        self._wake = asyncio.Event()
        self._telling: set[asyncio.Task[None]] = set()  # this process's own final words, being told

    def attach(self, teller: NoticeTeller) -> None:
        self._teller = teller

    def start(self) -> None:
        """Drain now and every ``DRAIN_EVERY`` seconds (sooner when told there is something)."""
        self._scheduler.schedule("outbox", self._drain_forever())

    def wake(self) -> None:
        self._wake.set()

    async def tell_own(self, job_id: str) -> None:
        """Tell, in a task of its own, the member of a job this process just ended (its notice is this
        process's first). The job's run goes on at once: a rate-limited token must not hold its slot."""
        if self._teller is None:
            return  # no frontend yet: the drain after start-up tells it
        task = self._scheduler.spawn(f"tell-{job_id}", self._tell_own(job_id))
        self._telling.add(task)
        task.add_done_callback(self._telling.discard)

    async def finish(self, timeout: float) -> None:
        """Let the final words this process is telling reach Discord (at most ``timeout`` s): a stop tells the
        members of the jobs it ended before it cancels what is left."""
        if self._telling:
            await asyncio.wait(set(self._telling), timeout=timeout)

    async def _tell_own(self, job_id: str) -> None:
        taken = await self._store.take_own_notice(job_id, self._holder, self._clock())
        if taken is not None:
            await self._tell(*taken)

    async def drain(self, holders: Collection[str] = ()) -> int:
        """Tell every notice that is due and that no live process is telling; how many were tried."""
        if self._teller is None:
            return 0
        tried = 0
        while True:
            gone = await self._gone(set(holders))
            batch = await self._store.claim_notices(self._holder, self._clock(), gone)
            for notice, job in batch:
                await self._tell(notice, job)
            tried += len(batch)
            if len(batch) < 10:
                return tried

    async def _tell(self, notice: Notice, job: Job) -> None:
        assert self._teller is not None
        try:
            outcome: Told | TellLater = await self._teller.tell(job, notice)
        except Exception as exc:  # a bug in the teller: logged; the notice is tried again later
            UnexpectedError.capture(exc, f"telling the outcome of job {job.id}")
            outcome = TellLater("unexpected error")
        # Discord has answered: that is recorded even if a stop cancels this task now (the store finishes what it
        # was given before it closes), or whoever drains the outbox next would tell the member a second time.
        await asyncio.shield(self._record_for_sure(notice, job, outcome))

    async def _record_for_sure(self, notice: Notice, job: Job, outcome: Told | TellLater) -> None:
        """``_record``, asked again while the database fails it, within the notice's lease: unrecorded, the told
        notice would be told a second time once its lease lapsed."""
        await asked_again(
            lambda: self._record(notice, job, outcome), SHORT_PAUSES,
            f"job={job.id}: recording that its outcome was told", log,
        )  # fmt: skip

    async def _record(self, notice: Notice, job: Job, outcome: Told | TellLater) -> None:
        now = self._clock()
        if isinstance(outcome, Told):
            await self._store.notice_done(job.id, self._holder, outcome.how, now)
            if outcome.how == NEXT_USE:  # handed to the member's next use of the bot
                await self._announce_next_use(job)
            return
        if notice.attempts >= MOST_TRIES:
            log.warning(
                "job=%s could not report its %s outcome after %d tries (%s); its member is told at their next use",
                job.id, notice.outcome, notice.attempts, outcome.reason,
            )  # fmt: skip
            await self._store.notice_done(job.id, self._holder, NEXT_USE, now)
            await self._announce_next_use(job)
            return
        pause = min(LONGEST_PAUSE, FIRST_RETRY * 2 ** (notice.attempts - 1))
        log.info(
            "job=%s could not report its %s outcome yet (%s); trying again in %.0f s",
            job.id, notice.outcome, outcome.reason, pause,
        )  # fmt: skip
        await self._store.notice_later(job.id, self._holder, now + pause)

    async def _announce_next_use(self, job: Job) -> None:
        """Tell every gateway that ``job``'s member is owed a notice at their next use. Also when the record found
        the notice done already: that is a try after one whose answer was lost, whose notice may not have gone out.
        (One too many costs a gateway one reading of the member's notices.)"""
        await self._store.notify(f"notices:{job.user_id}")

    async def _drain_forever(self) -> None:
        while True:
            try:
                await self.drain(await self._store.holders_of_notices())
            except Exception as exc:  # the next round tries again
                UnexpectedError.capture(exc, "draining the outbox")
            self._wake.clear()
            try:
                async with asyncio.timeout(DRAIN_EVERY):
                    await self._wake.wait()
            except TimeoutError:
                pass
