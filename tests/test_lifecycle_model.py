"""A model-based test of the job engine: random interleavings, invariants checked after every step.

hypothesis drives the real engine (lifecycle, admission, dispatcher, delivery, recovery, retention,
the SQLite store and the input store on disk) through random sequences of: submit; a reroll of a
result; an input that fails or arrives; cancel by the owner, another member or a moderator; API
success, failure or timeout; a refused delivery; a result its member cannot be reached for; the
retention window passing; SIGTERM; a crash; restart; drain. Only the edges are stand-ins, each a
small class here: the API (a call waits until the test answers it), the member's side (inputs,
notices, posts).

A crash is modelled faithfully: each run of the engine has its own event loop, and a crash simply
stops driving that loop, so no handler, no "finally" and no notice of the dead engine ever runs;
the store's thread finishes whatever transaction it had begun, as a disk would.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import shutil
import sqlite3
import tempfile
import time
from collections import Counter
from collections.abc import Awaitable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from bot.inputs import ENDED_FILE, InputStore
from bot.sqlite_store import SQLiteJobStore
from hypothesis import event, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule

from bot.config import Config
from bot.core.job import Delivered, Destination, Job, JobKind, JobRequest, utc_day
from bot.core.states import JobState, cancellable
from bot.engine import JobEngine
from bot.errors import APITimeoutError, AtelierError, BadRequestError, CancelRefusedError, InputError, InputsGoneError
from bot.media.editor import Editor
from bot.media.images import OutputImage
from bot.ports import Move, NotDelivered, Posted, PostFailed, ResultMedia
from bot.provider.client import APIAnswer, Attempt, AttemptOutcome, ImageEditRequest, ImageEditResult
from bot.servers.limits import Requester
from tests.fake_image_api import make_png

T = TypeVar("T")

MEMBERS = (1, 2, 3)
MODERATOR = 9
GUILD = 10
PNG = make_png(16, 12)
SLOTS = 1
RETENTION_HOURS = 1.0
# Room for the kept inputs of about three jobs, so the cap is reached often.
RETENTION_CAP = 3 * (len(PNG) + 120)
STEP_TIMEOUT = 10.0


@dataclass
class GatedAPI:
    """The image API: each call waits until the test answers it. Calls are known by job id (a reroll
    asks the same as its parent), read from the dispatcher's task name."""

    pending: dict[str, asyncio.Future[str]] = field(default_factory=dict)
    called: list[str] = field(default_factory=list)

    async def call(
        self, request: ImageEditRequest, attempts: list[Attempt] | None = None, on_partial: object = None
    ) -> APIAnswer:
        task = asyncio.current_task()
        assert task is not None and task.get_name().startswith("atelier-job-")
        label = task.get_name().removeprefix("atelier-job-")
        self.called.append(label)
        future: asyncio.Future[str] = asyncio.get_running_loop().create_future()
        self.pending[label] = future
        started = time.time()

        def record(outcome: AttemptOutcome, billed: bool) -> None:
            if attempts is not None:
                attempts.append(Attempt(1, started, time.time() - started, outcome, billed))

        try:
            answer = await future
        except asyncio.CancelledError:
            record(AttemptOutcome.INTERRUPTED, True)
            raise
        finally:
            # Only our own: a later run may have called again with the same label.
            if self.pending.get(label) is future:
                del self.pending[label]
        if answer == "fail":
            record(AttemptOutcome.REJECTED, False)
            raise BadRequestError("The image service rejected the request: no.")
        if answer == "timeout":
            record(AttemptOutcome.TIMEOUT, True)
            raise APITimeoutError(1.0)
        record(AttemptOutcome.SUCCEEDED, True)
        return APIAnswer(body=b"{}", api_seconds=0.01, attempts=1, request_id=None)

    async def decode(self, answer: APIAnswer) -> ImageEditResult:
        return ImageEditResult(OutputImage(PNG, "image/png", 16, 12), None, answer.api_seconds, 1)


@dataclass
class Member:
    """What members were told: final outcomes per job, and "will resume" notices."""

    finals: Counter[str] = field(default_factory=Counter)
    resume_promised: set[str] = field(default_factory=set)
    fail_next_post: bool = False
    unreachable_next_post: bool = False
    posted: list[str] = field(default_factory=list)

    async def job_moved(self, job: Job, before: JobState, error: AtelierError | None) -> None:
        # A cancelled job's outcome is the canceller's reply (the cancel rule counts it), as in cogs/.
        if job.state.terminal and job.state is not JobState.CANCELLED and job.destination is not None:
            self.finals[job.id] += 1
        if job.state is JobState.INTERRUPTED:
            self.resume_promised.add(job.id)

    async def queue_moved(self, places: Sequence[tuple[Job, int]]) -> None:
        pass

    async def job_paused(self, job: Job) -> None:
        self.resume_promised.add(job.id)

    async def publish(self, job: Job, media: ResultMedia) -> Posted | NotDelivered | PostFailed:
        if self.fail_next_post:
            self.fail_next_post = False
            return PostFailed("Discord refused to post the result.", "scripted refusal")
        if self.unreachable_next_post:
            self.unreachable_next_post = False
            return NotDelivered("scripted: direct messages closed")
        self.posted.append(job.id)
        return Posted(channel_id=100, message_id=len(self.posted))


class Source:
    """One member's request: announced at once; its images arrive at once, or when the test says."""

    def __init__(self, label: str, announce_fails: bool, images: str) -> None:
        self.label = label
        self.announce_fails = announce_fails
        self.arrival = images  # "now", "bad" (arrive at once, unusable) or "later"
        self.job_id: str | None = None
        self.images: asyncio.Future[bool] | None = None

    async def announce(self, job: Job) -> Destination:
        self.job_id = job.id
        if self.announce_fails:
            raise InputError("Discord did not accept my answer to this command.")
        return Destination(upload_limit=8_000_000, data={"label": self.label})

    async def fetch(self) -> list[tuple[str, bytes]]:
        self.images = asyncio.get_running_loop().create_future()
        if self.arrival != "later":
            self.images.set_result(self.arrival == "now")
        if not await self.images:
            raise InputError("image1 is not an image.")
        return [("image1", PNG)]


@dataclass
class Run:
    """One life of the engine: its loop, its engine, the requests it is preparing."""

    loop: asyncio.AbstractEventLoop
    engine: JobEngine
    store: SQLiteJobStore
    submits: dict[str, tuple[Source, asyncio.Task[Job]]] = field(default_factory=dict)

    def run(self, work: Awaitable[T]) -> T:
        return self.loop.run_until_complete(asyncio.wait_for(work, STEP_TIMEOUT))


def _where(task: asyncio.Task[Any]) -> list[str]:
    return [f"{f.f_code.co_name}:{f.f_lineno}" for f in task.get_stack(limit=20)]


def pick(data: st.DataObject, items: Sequence[T]) -> T | None:
    """One of ``items`` (``None`` if there is none), drawn as a position in a fixed range.

    How many there are depends on the engine's timing, and hypothesis needs every draw to have
    the same range when it replays a sequence, or it reports "inconsistent data generation" (a
    flaky test, not an engine bug). For the same reason the rules that need one are always
    enabled (no precondition on the engine's state) and do nothing when there is none.
    """
    position = data.draw(st.integers(0, 15))
    return items[position % len(items)] if items else None


async def _settled(tasks: Sequence[asyncio.Task[Any]]) -> None:
    await asyncio.gather(*tasks, return_exceptions=True)


class EngineModel(RuleBasedStateMachine):
    """Drives the engine and checks the lifecycle's invariants after every step."""

    def __init__(self) -> None:
        super().__init__()
        self.root = Path(tempfile.mkdtemp(prefix="atelier-model-"))
        self.config = Config(
            discord_token="t" * 24,
            image_api_key="k" * 24,
            data_dir=self.root,
            max_concurrent_jobs=SLOTS,
            user_max_active=3,
            user_daily_limit=None,
            shutdown_grace_seconds=0.05,
            input_retention_hours=RETENTION_HOURS,
            input_retention_bytes=RETENTION_CAP,
        )
        self.later = 0.0  # how far the model's clock is ahead of the real one (the retention window passing)
        self.api = GatedAPI()
        self.member = Member()
        self.observed: Counter[str] = Counter()  # job id -> terminal moves the lifecycle's observers heard of
        self.labels = itertools.count(1)
        self.raised: Counter[str] = Counter()  # job id -> errors raised to the caller after acceptance
        self.current: Run | None = None
        self.dead: list[Run] = []
        self.start()

    # Runs of the engine --------------------------------------------------------------------------

    def start(self) -> None:
        loop = asyncio.new_event_loop()
        store = SQLiteJobStore(self.config.db_file)

        async def build() -> JobEngine:
            engine = JobEngine(self.config, store, self.api, InputStore(self.root / "inputs"), Editor())
            engine.lifecycle.observe(self)
            engine.retention.clock = self.now
            await engine.open()
            await engine.start(self.member, self.member)
            return engine

        engine = loop.run_until_complete(build())
        self.current = Run(loop, engine, store)
        # What a restart promised must hold: every job told "will resume" is back in line or running.
        for job_id in self.member.resume_promised:
            job = engine.lifecycle.get(job_id)
            assert job is not None and job.state in (JobState.QUEUED, JobState.RUNNING), (job_id, job)
        self.member.resume_promised.clear()
        self.settle()

    def job_moved(self, move: Move) -> None:
        """An observer of the lifecycle, as metrics and the audit trail are."""
        if move.job.state.terminal:
            self.observed[move.job.id] += 1

    def now(self) -> float:
        return time.time() + self.later

    @property
    def run(self) -> Run:
        assert self.current is not None
        return self.current

    @property
    def engine(self) -> JobEngine:
        return self.run.engine

    def teardown(self) -> None:
        if self.current is not None:
            self.crash_now()
        shutil.rmtree(self.root, ignore_errors=True)

    def crash_now(self) -> None:
        """The process dies: its loop never runs again; the store's thread ends its transaction."""
        run, self.current = self.run, None
        run.loop.set_exception_handler(lambda loop, context: None)  # its pending tasks are simply gone
        self.dead.append(run)  # kept, so its coroutines are not even finalised while the model runs
        thread = run.store._thread
        assert thread is not None
        thread.stop()
        self.api.pending.clear()

    def settle(self) -> None:
        """Run the engine until it waits only on the test: API answers, images, or nothing."""
        run = self.run

        def quiet() -> bool:
            lifecycle = run.engine.lifecycle
            for source, task in run.submits.values():
                if not task.done() and (source.images is None or source.images.done()):
                    return False
            running = lifecycle.jobs(JobState.RUNNING)
            if any(j.id not in self.api.pending for j in running):
                return False
            if lifecycle.jobs(JobState.DELIVERING):
                return False
            ready = lifecycle.queue.has_ready() or any(
                j.id not in lifecycle.queue for j in lifecycle.jobs(JobState.QUEUED)
            )
            return not (ready and len(running) < SLOTS)

        async def wait() -> None:
            calm = 0
            while calm < 3:
                await asyncio.sleep(0.002)
                calm = calm + 1 if quiet() else 0

        try:
            run.run(wait())
        except TimeoutError:
            lifecycle = run.engine.lifecycle
            jobs = [(j.id, j.request.prompt, j.state.value) for j in lifecycle.jobs()]
            message = (
                f"the engine did not settle: jobs={jobs} queue={lifecycle.queue.positions()} "
                f"ready={lifecycle.queue.has_ready()} api={sorted(self.api.pending)} "
                f"submits={[(lbl, t.done(), s.images) for lbl, (s, t) in run.submits.items()]} "
                f"tasks={[(t.get_name(), _where(t)) for t in asyncio.all_tasks(run.loop)]}"
            )
            raise AssertionError(message) from None
        for label, (source, task) in list(run.submits.items()):
            if task.done():
                del run.submits[label]
                if task.exception() is not None and source.job_id is not None:
                    self.raised[source.job_id] += 1

    # Rules ---------------------------------------------------------------------------------------

    @rule(
        member=st.sampled_from(MEMBERS),
        announce_fails=st.booleans(),
        images=st.sampled_from(["now", "now", "now", "later", "bad"]),
    )
    def submit(self, member: int, announce_fails: bool, images: str) -> None:
        label = f"job-{next(self.labels)}"
        source = Source(label, announce_fails and member == 3, images)
        request = JobRequest(JobKind.EDIT, member, GUILD, 100, label, None, 1)
        who = Requester(member, GUILD, 100, None, frozenset(), is_manager=False)

        async def submit() -> Job:
            return await self.engine.submit(request, who, source)

        task = self.run.loop.create_task(submit())
        self.run.submits[label] = (source, task)
        self.settle()

    def _results(self) -> list[str]:
        return [row[0] for row in self._store_rows("SELECT id FROM jobs WHERE status = 'succeeded' ORDER BY id")]

    @rule(data=st.data(), member=st.sampled_from(MEMBERS), announce_fails=st.booleans())
    def reroll(self, data: st.DataObject, member: int, announce_fails: bool) -> None:
        parent_id = pick(data, self._results())
        if parent_id is None:
            return
        label = f"reroll-{next(self.labels)}"
        source = Source(label, announce_fails and member == 3, "now")
        who = Requester(member, GUILD, 100, None, frozenset(), is_manager=False)
        kept = self.run.run(self.engine.inputs_kept(parent_id))
        event(f"reroll with inputs {'kept' if kept else 'gone'}")

        async def reroll() -> Job:
            parent = await self.engine.result_for(parent_id, member)
            try:
                return await self.engine.reroll(parent, who, source)
            except InputsGoneError:
                assert not kept and source.job_id is None  # refused before anything was charged
                raise

        task = self.run.loop.create_task(reroll())
        self.run.submits[label] = (source, task)
        self.settle()

    def _fetching(self) -> list[Source]:
        return [s for s, _ in self.run.submits.values() if s.images is not None and not s.images.done()]

    @rule(data=st.data(), usable=st.booleans())
    def images_arrive(self, data: st.DataObject, usable: bool) -> None:
        source = pick(data, self._fetching())
        if source is None:
            return
        assert source.images is not None
        source.images.set_result(usable)
        self.settle()

    def _unfinished(self) -> list[Job]:
        # Waiting jobs first: hypothesis favours the first choices, and those are the interesting cancels.
        order = list(JobState)
        return sorted(self.engine.lifecycle.jobs(), key=lambda j: (j.state is JobState.RUNNING, order.index(j.state)))

    @rule(data=st.data(), who=st.sampled_from(["owner", "other", "moderator"]))
    def cancel(self, data: st.DataObject, who: str) -> None:
        job = pick(data, self._unfinished())
        if job is None:
            return
        by = {"owner": job.user_id, "other": job.user_id % 3 + 1, "moderator": MODERATOR}[who]
        before = job.state
        event(f"cancel {before} by {who}")
        try:
            cancelled = self.run.run(self.engine.cancel(job.id, by, is_moderator=who == "moderator"))
        except CancelRefusedError:
            assert who == "other" or not cancellable(before, job.restarts) or self.engine.lifecycle.get(job.id) is None
        else:
            assert who != "other" and cancellable(before, job.restarts) and cancelled.state is JobState.CANCELLED
            self.member.finals[job.id] += 1  # the canceller's reply is the outcome the member sees
        self.settle()

    def _calls(self) -> list[str]:
        return sorted(self.api.pending)

    @rule(data=st.data(), answer=st.sampled_from(["ok", "ok", "fail", "timeout"]))
    def api_answers(self, data: st.DataObject, answer: str) -> None:
        label = pick(data, self._calls())
        if label is None:
            return
        self.api.pending[label].set_result(answer)
        self.settle()

    @rule()
    def next_post_is_refused(self) -> None:
        self.member.fail_next_post = True

    @rule()
    def next_member_is_unreachable(self) -> None:
        self.member.unreachable_next_post = True

    @rule()
    def the_retention_window_passes(self) -> None:
        self.later += RETENTION_HOURS * 3600 + 1
        self.run.run(self.engine.retention.sweep())
        self.settle()

    @rule()
    def sigterm_and_restart(self) -> None:
        run = self.run
        event(f"sigterm with {sorted({j.state.value for j in run.engine.lifecycle.jobs()})}")
        run.run(run.engine.stop(self.config.shutdown_grace_seconds))
        # What the frontend's tasks do after a stop: the interaction tasks still preparing end.
        for _source, task in run.submits.values():
            task.cancel()
        run.run(_settled([t for _, t in run.submits.values()]))
        run.run(run.engine.close())
        pending = [t for t in asyncio.all_tasks(run.loop) if not t.done()]
        for task in pending:
            task.cancel()
        run.run(_settled(pending))
        run.loop.close()
        self.current = None
        self.api.pending.clear()
        self.start()

    @rule()
    def crash_and_restart(self) -> None:
        event(f"crash with {sorted({j.state.value for j in self.engine.lifecycle.jobs()})}")
        self.crash_now()
        # A crash tells nobody anything: promises made by the dead engine were made before it died.
        self.start()

    @rule()
    def drain(self) -> None:
        """Answer everything successfully until nothing is left unfinished."""
        self.member.fail_next_post = False
        self.member.unreachable_next_post = False
        for _ in range(200):
            for source in self._fetching():
                assert source.images is not None
                source.images.set_result(True)
            for future in list(self.api.pending.values()):
                future.set_result("ok")
            self.settle()
            if not self._unfinished():
                break
        assert not self._unfinished(), self._unfinished()
        assert self._store_rows("SELECT id FROM jobs WHERE status NOT IN ('succeeded','failed','cancelled')") == []

    # Invariants ----------------------------------------------------------------------------------

    def _store_rows(self, sql: str) -> list[tuple[Any, ...]]:
        with contextlib.closing(sqlite3.connect(self.config.db_file)) as db:
            return list(db.execute(sql))

    @invariant()
    def every_job_is_in_exactly_one_state(self) -> None:
        if self.current is None:
            return
        stored = dict(self._store_rows("SELECT id, status FROM jobs"))
        lifecycle = self.engine.lifecycle
        for job_id, status in stored.items():
            state = JobState(status)
            held = lifecycle.get(job_id)
            if state.terminal:
                assert held is None, (job_id, state, held)
            else:
                assert held is not None and held.state is state, (job_id, state, held)
        assert {j.id for j in lifecycle.jobs()} <= set(stored)
        assert all(lifecycle.get(job_id) is not None for job_id in self._queue_ids())

    def _queue_ids(self) -> list[str]:
        return list(self.engine.lifecycle.queue.positions())

    @invariant()
    def money_matches_the_jobs_and_no_job_is_refunded_twice(self) -> None:
        if self.current is None:
            return
        jobs = self._store_rows("SELECT id, user_id, guild_id, status, cost_usd, guild_key FROM jobs")
        money = self._store_rows("SELECT job_id, entry, amount_usd FROM money")
        charges = Counter(job_id for job_id, entry, _ in money if entry == "charge")
        refunds = Counter(job_id for job_id, entry, _ in money if entry == "refund")
        assert set(charges) == {j[0] for j in jobs} and max(charges.values(), default=1) == 1
        assert max(refunds.values(), default=1) == 1
        for job_id, _user, _guild, status, _cost, _key in jobs:
            assert (job_id in refunds) == (status in ("failed", "cancelled")), (job_id, status)
        # A result that could not reach its member was made: it stays charged.
        for (job_id,) in self._store_rows(f"SELECT id FROM jobs WHERE delivered = '{Delivered.UNDELIVERED}'"):
            assert job_id not in refunds, job_id
        users: Counter[int] = Counter()
        guilds: Counter[int] = Counter()
        spend = 0.0
        for _job_id, user, guild, status, cost, own_key in jobs:
            if status not in ("failed", "cancelled"):
                users[user] += 1
                guilds[guild] += 1
                spend += 0 if own_key else cost  # the budget counts the operator's key only
        ledger_users, ledger_guilds, ledger_spend = self.engine.lifecycle.ledger.totals(utc_day(time.time()))
        assert ledger_users == {u: n for u, n in users.items() if n}
        assert ledger_guilds == {g: n for g, n in guilds.items() if n}
        assert abs(ledger_spend - spend) < 1e-9

    def _folders(self) -> dict[str, Path]:
        root = self.root / "inputs"
        return {p.name: p for p in root.iterdir()} if root.exists() else {}

    @invariant()
    def only_unfinished_jobs_and_results_within_retention_keep_their_images(self) -> None:
        if self.current is None:
            return
        unfinished = {j.id for j in self.engine.lifecycle.jobs()}
        status = dict(self._store_rows("SELECT id, status FROM jobs"))
        oldest = self.now() - RETENTION_HOURS * 3600
        for job_id, folder in self._folders().items():
            if job_id in unfinished:
                continue
            # An ended job's images stay only if it succeeded, and only within the window.
            assert status.get(job_id) == "succeeded", (job_id, status.get(job_id))
            assert float((folder / ENDED_FILE).read_text()) > oldest, job_id
            assert self.run.run(self.engine.inputs_kept(job_id)), job_id
            event("an ended job's images are kept")

    @invariant()
    def retained_inputs_never_exceed_the_cap(self) -> None:
        if self.current is None:
            return
        unfinished = {j.id for j in self.engine.lifecycle.jobs()}
        kept = sum(
            f.stat().st_size
            for job_id, folder in self._folders().items()
            if job_id not in unfinished
            for f in folder.iterdir()
        )
        assert kept <= RETENTION_CAP, kept

    @invariant()
    def a_cancelled_job_never_reaches_the_api(self) -> None:
        if self.current is None:
            return
        for (job_id,) in self._store_rows("SELECT id FROM jobs WHERE status = 'cancelled'"):
            assert job_id not in self.api.called, job_id

    @invariant()
    def every_requester_is_told_exactly_one_final_outcome(self) -> None:
        if self.current is None:
            return
        for job_id, status in self._store_rows("SELECT id, status FROM jobs"):
            told = self.member.finals[job_id] + self.raised[job_id]
            assert told == (1 if JobState(status).terminal else 0), (job_id, status, told)

    @invariant()
    def observers_hear_of_each_end_once_and_only_of_real_ends(self) -> None:
        if self.current is None:
            return
        status = dict(self._store_rows("SELECT id, status FROM jobs"))
        assert max(self.observed.values(), default=1) == 1, self.observed
        assert all(JobState(status[job_id]).terminal for job_id in self.observed)


EngineModel.TestCase.settings = settings(max_examples=50, stateful_step_count=60, deadline=None)
TestEngineModel = EngineModel.TestCase


def test_the_model_can_fail_on_a_double_refund(tmp_path: Path) -> None:
    """The money invariant is not vacuous: a second refund row for one job is caught."""
    db = sqlite3.connect(tmp_path / "m.sqlite3")
    db.execute("CREATE TABLE money (job_id TEXT, entry TEXT, amount_usd REAL, PRIMARY KEY (job_id, entry))")
    db.execute("INSERT INTO money VALUES ('a', 'refund', 0.03)")
    try:
        db.execute("INSERT INTO money VALUES ('a', 'refund', 0.03)")
    except sqlite3.IntegrityError:
        pass
    else:  # pragma: no cover
        raise AssertionError("the primary key must refuse a second refund")
