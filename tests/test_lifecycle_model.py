"""A model-based test of the job engine, on SQLite and on PostgreSQL: random interleavings, and after every
step the store compared with what a model of the rules expects.

hypothesis drives the real engine (``JobEngine`` over the real store: admission and its limits, the
lifecycle, the dispatcher's claims, delivery, leases and take-overs, the outbox) through random sequences
of: a member's request (accepted or refused by a limit), images that arrive late or unusable, cancels,
the API's answers and Discord's (a result posted, refused, or not reachable; final words rate-limited),
time passing (the cooldown, midnight, leases), a stop and restart, a crash and restart (also right after a
job ended, before its member was told), and, on PostgreSQL with two engines sharing the database, an
engine that stalls past its lease while the other takes its jobs over, then comes back.

The model keeps its own expectation of every job (whether it is accepted and by which limit it is refused,
its state, its charge and refund in micro-dollars, its runs and the API attempt each leaves on record, how
its member is told), computed from the rules in ``bot.core.states`` and ``bot.servers.limits``, never read
back from the engine. What it observes are the edges: which job the API was called for, by which engine,
and what Discord was shown. ``problems`` compares the store (plain SQL, and the store's read API for the
day's totals) with it after every step.

Only the edges are stand-ins, each a small class here: the image API (a call waits until the test answers
it), Discord (posts, final words), a member's images. Time is the test's clock (``JobEngine(clock=...)``).
The engine's own timers (lease renewal, take-over, the outbox's drain) fire when the test's time passes,
as they would: the test calls what the timer would, and their real-time waits are pushed far out of reach,
so that nothing happens at a moment hypothesis does not choose.

A crash is modelled faithfully: each life of an engine has an event loop of its own, and a crash simply
stops driving it, so no handler, ``finally`` or notice of the dead engine ever runs. On PostgreSQL the
server ends its sessions (as it does when a process dies), which releases its holder lock.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import shutil
import sqlite3
import sys
import tempfile
import time
from collections import Counter, defaultdict
from collections.abc import Awaitable, Iterator, Sequence
from contextlib import AsyncExitStack, contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, ClassVar, Protocol, TypeVar

import asyncpg
import pytest
from cryptography.fernet import Fernet
from hypothesis import HealthCheck, currently_in_test_context, event, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, rule, run_state_machine_as_test

import bot.jobs.admission
import bot.jobs.dispatcher
import bot.jobs.keeper
import bot.jobs.outbox
import bot.jobs.places
from bot.config import Config
from bot.core.attempts import Attempt, AttemptOutcome
from bot.core.job import Destination, Job, JobRequest, utc_day
from bot.core.quota import DayUsage, Limit, LimitReachedError, next_reset
from bot.core.records import Notice, Totals
from bot.core.states import JobState
from bot.engine import JobEngine
from bot.errors import APITimeoutError, AtelierError, BadRequestError, CancelRefusedError, InputError
from bot.i18n import Text, _t
from bot.jobs.keeper import TAKE_OVER_EVERY
from bot.jobs.outbox import DRAIN_EVERY, LONGEST_PAUSE, MOST_TRIES
from bot.media.editor import Editor
from bot.media.images import OutputImage
from bot.ports import FrontendParts, Move, NotDelivered, Posted, PostFailed, ResultMedia, TellLater, Told
from bot.provider.client import APIAnswer, ImageEditResult, ProviderRequest
from bot.servers.limits import Requester
from bot.store.database import Database
from bot.store.postgres import PostgresDatabase
from bot.store.sqlite import SQLiteDatabase
from bot.store.store import Store
from tests.fake_image_api import make_png
from tests.notifiers import QuietNotifier
from tests.postgres import fresh_database

T = TypeVar("T")
S = JobState

# The limits, small so that each is reached often. Money in micro-dollars: six jobs fit the day's budget.
PRICE = 33_333
BUDGET = 200_000
DAILY = 2
GUILD_DAILY = 4
MAX_ACTIVE = 2
COOLDOWN = 5.0
LEASE = 600.0
MEMBERS = (1, 2, 3)
MANAGER = 3  # Manage Server: none of the member limits, still the server's limit and the budget
MODERATOR = 9
GUILDS = (10, 20, 30)
OWN_KEY_GUILD = 20  # made with the server's own API key: outside the operator's budget
GUILD_OF = {1: 10, 2: 20, 3: 30}  # where each member's usage is read (every member and every server once)
# Twenty minutes before midnight UTC: the day changes within a run.
START = datetime(2026, 11, 25, 23, 40, tzinfo=UTC).timestamp()
PNG = make_png(16, 12)
GRACE = 0.05  # SHUTDOWN_GRACE_SECONDS: the gated API never answers within it
TURN = 0.001  # how long each engine's loop runs between two looks at it
CALM_TURNS = 3
STEP_TIMEOUT = 20.0
STUCK_AFTER = 1.5  # a job its member's turn allows that waits this long while a slot is free: a missed wake
OK, FAIL, TIMEOUT, DIES = "ok", "fail", "timeout", "fail, then the engine dies before telling"
STOP, CRASH, STALL, STALL_PAST_LEASE, RESUME = "stop", "crash", "stall", "stall past its lease", "resume"
POSTED, REFUSED, UNREACHABLE = "posted", "refused", "unreachable"
# The engine's timers, as the test's time passing fires them (their real-time waits are patched away).
TAKE_OVER_SECONDS = TAKE_OVER_EVERY
DRAIN_SECONDS = DRAIN_EVERY


# The edges ------------------------------------------------------------------------------------------


class Clock:
    """The test's time: every engine reads it; only rules move it."""

    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


@dataclass
class Call:
    """One API call: it waits until the test answers it."""

    label: str
    future: asyncio.Future[str]
    run: ModelRun | None = None  # the run the model saw start with it


class GatedAPI:
    """One engine's image API: a call waits for the test; the attempt it leaves is recorded as the real client does."""

    def __init__(self, clock: Clock) -> None:
        self.clock = clock
        self.calls: list[Call] = []

    async def call(
        self, request: ProviderRequest, attempts: list[Attempt] | None = None, on_partial: object = None
    ) -> APIAnswer:
        call = Call(request.prompt, asyncio.get_running_loop().create_future())
        self.calls.append(call)
        started = self.clock()

        def record(outcome: AttemptOutcome) -> None:
            if attempts is not None:
                attempts.append(Attempt(1, started, self.clock() - started, outcome, outcome.may_be_billed))

        try:
            answer = await call.future
        except asyncio.CancelledError:
            record(AttemptOutcome.INTERRUPTED)
            raise
        if answer == FAIL:
            record(AttemptOutcome.REJECTED)
            raise BadRequestError(_t("The image service rejected the request."), log_detail="scripted refusal")
        if answer == TIMEOUT:
            record(AttemptOutcome.TIMEOUT)
            raise APITimeoutError(300.0)
        record(AttemptOutcome.SUCCEEDED)
        return APIAnswer(body=b"{}", api_seconds=1.0, attempts=1)

    async def decode(self, answer: APIAnswer) -> ImageEditResult:
        return ImageEditResult(OutputImage(PNG, "image/png", 16, 12), None, answer.api_seconds, 1)


@dataclass
class Discord:
    """What members were shown, whichever engine showed it, and what the engines' observers heard."""

    posts: Counter[str] = field(default_factory=Counter)  # label -> results posted
    posted_by: dict[str, str] = field(default_factory=dict)  # label -> the engine life that posted it
    told: Counter[str] = field(default_factory=Counter)  # label -> final words Discord took
    tries: Counter[str] = field(default_factory=Counter)  # label -> final words tried
    refuse: int = 0  # how many of the next final words Discord rate-limits
    post_as: dict[str, str] = field(default_factory=dict)  # label -> how its result's post goes
    ends_heard: Counter[str] = field(default_factory=Counter)  # label -> terminal moves the observers heard of

    def job_moved(self, move: Move) -> None:
        """An observer of every engine's lifecycle, as metrics and the audit trail are."""
        if move.job.state.terminal:
            self.ends_heard[move.job.request.prompt] += 1


class Frontend(QuietNotifier):
    """One engine's Discord side (notifier, publisher, teller), showing what ``Discord`` records."""

    def __init__(self, life: str, discord: Discord) -> None:
        self.life = life
        self.discord = discord
        self.die_at_tell = False  # the process dies as it starts to tell a final word
        self.dying: str | None = None

    async def publish(self, job: Job, media: ResultMedia) -> Posted | NotDelivered | PostFailed:
        label = job.request.prompt
        how = self.discord.post_as.pop(label, POSTED)
        if how == REFUSED:
            return PostFailed(_t("Discord refused to post the result."), "scripted refusal")
        if how == UNREACHABLE:
            return NotDelivered("scripted: direct messages closed")
        self.discord.posts[label] += 1
        self.discord.posted_by[label] = self.life
        return Posted(channel_id=100, message_id=sum(self.discord.posts.values()))

    async def tell(self, job: Job, notice: Notice) -> Told | TellLater:
        if job.destination is None:
            return Told("no_destination")  # as cogs/ does: the command's own answer said it
        label = job.request.prompt
        self.discord.tries[label] += 1
        if self.die_at_tell:
            self.dying = label
            await asyncio.get_running_loop().create_future()  # the process dies here: never answered
        if self.discord.refuse:
            self.discord.refuse -= 1
            return TellLater("HTTP 429")
        self.discord.told[label] += 1
        return Told("edited")


class Source:
    """One member's request: answered at once; its images come at once, or when the test says."""

    def __init__(self, label: str, announce_fails: bool, images: str) -> None:
        self.label = label
        self.announce_fails = announce_fails
        self.images = images  # "now", "bad" (at once, not an image) or "later"
        self.job_id: str | None = None
        self.arrival: asyncio.Future[bool] | None = None

    async def announce(self, job: Job, note: Text | None = None) -> Destination:
        self.job_id = job.id
        if self.announce_fails:
            raise InputError(_t("Discord did not take the answer to this command."))
        return Destination(upload_limit=8_000_000, data={"label": self.label})

    async def fetch(self) -> list[tuple[str, bytes]]:
        usable = self.images == "now"
        if self.images == "later":
            self.arrival = asyncio.get_running_loop().create_future()
            usable = await self.arrival
        return [("image1", PNG if usable else b"not an image at all")]

    @property
    def fetching(self) -> bool:
        return self.arrival is not None and not self.arrival.done()


# The model ------------------------------------------------------------------------------------------

INTERRUPTED = ("interrupted", True)
ATTEMPT_OF = {OK: ("succeeded", True), FAIL: ("rejected", False), TIMEOUT: ("timeout", True)}
# How a member learns a job's end: its posted result, the command's own answer (it failed before the member
# was answered), the canceller's reply, a final word from the outbox, or at their next use of the bot.
POST, RAISE, REPLY, TELLER, NEXT_USE = "post", "raise", "reply", "teller", "next_use"
HOW = {POST: "posted", RAISE: "no_destination", REPLY: "cancel_reply", NEXT_USE: "next_use"}


@dataclass
class ModelRun:
    """One claim of a job, and so one API call."""

    number: int
    life: str  # the engine life that claimed it
    attempt: tuple[str, bool] | None = None  # the attempt on record once the run ended: (outcome, may be billed)
    taken: bool = False  # its job was taken over (its life stalled past its lease, or died): the run is lost
    answer: tuple[str, str] | None = None  # answered while its life stalled: (answer, post)
    came_back: bool = False  # taken, and its life resumed: the lost run gave its own account of the call

    def attempts_on_record(self) -> list[set[tuple[str, bool]]]:
        """What each attempt on record for this run may be: none while its call is in flight, how it ended
        once it ended. A run taken over has the take-over's record of its call as possibly billed, replaced
        by the lost run's own account if its life comes back (its call then abandoned, or answered before
        the lost run learnt it was lost; a failure it cannot record, since it moves nothing)."""
        if not self.taken:
            return [] if self.attempt is None else [{self.attempt}]
        if not self.came_back:
            return [{INTERRUPTED}]
        abandoned = {("abandoned", True)}
        if self.answer is None:
            return [abandoned]
        return [abandoned | ({("succeeded", True)} if self.answer[0] == OK else {INTERRUPTED})]


@dataclass
class ModelJob:
    """What the model expects of one accepted job."""

    label: str
    member: int
    guild: int
    created_at: float
    admitted_by: str
    state: JobState
    job_id: str | None = None
    restarts: int = 0
    holder: str | None = None  # the engine life that holds it under a lease (preparing or running)
    lease_until: float = 0.0
    runs: list[ModelRun] = field(default_factory=list)
    told_by: str | None = None
    shown: bool = False  # a next-use notice shown to its member
    images: bool | None = None  # images that came while its holder stalled: usable or not

    @property
    def day(self) -> str:
        return utc_day(self.created_at)

    @property
    def own_key(self) -> bool:
        return self.guild == OWN_KEY_GUILD

    @property
    def cost(self) -> int:
        return PRICE

    @property
    def refunded(self) -> bool:
        return self.state in (S.FAILED, S.CANCELLED)

    @property
    def waiting(self) -> bool:
        return self.state in (S.PREPARING, S.QUEUED)


class Model:
    """The expected state, from the rules: limits, moves, money, runs, notices."""

    def __init__(self, cap: int) -> None:
        self.cap = cap  # MAX_CONCURRENT_JOBS, across every engine
        self.jobs: dict[str, ModelJob] = {}

    # Admission: bot.servers.limits.quota_for, in the order a refusal names the limits.
    def verdict(self, member: int, guild: int, now: float) -> Limit | None:
        day = utc_day(now)
        today = [j for j in self.jobs.values() if j.day == day and not j.refunded]
        if guild != OWN_KEY_GUILD and sum(j.cost for j in today if not j.own_key) + PRICE > BUDGET:
            return Limit.BUDGET
        if sum(1 for j in today if j.guild == guild) >= GUILD_DAILY:
            return Limit.GUILD
        if member == MANAGER:
            return None
        if sum(1 for j in self.jobs.values() if j.member == member and not j.state.terminal) >= MAX_ACTIVE:
            return Limit.ACTIVE
        if sum(1 for j in today if j.member == member) >= DAILY:
            return Limit.DAILY
        last = self.last_accepted(member, now)
        if last is not None and last > now - COOLDOWN:
            return Limit.COOLDOWN
        return None

    def last_accepted(self, member: int, now: float) -> float | None:
        return max(
            (j.created_at for j in self.jobs.values() if j.member == member and j.created_at >= now - 86400),
            default=None,
        )

    def accept(self, label: str, member: int, guild: int, now: float, life: str, images: str, announced: bool) -> None:
        job = ModelJob(label, member, guild, now, life, S.PREPARING, holder=life, lease_until=now + LEASE)
        self.jobs[label] = job
        if not announced:
            self.end(job, S.FAILED, RAISE)
        elif images != "later":
            self.prepared(job, images == "now")

    def prepared(self, job: ModelJob, usable: bool) -> None:
        if usable:
            job.state, job.holder = S.QUEUED, None
        else:
            self.end(job, S.FAILED, TELLER)

    def end(self, job: ModelJob, state: JobState, told_by: str) -> None:
        job.state, job.told_by, job.holder = state, told_by, None

    # Claims: each member's first waiting job is their head; a head that is queued may start.
    def heads(self) -> list[ModelJob]:
        first: dict[int, ModelJob] = {}
        for job in sorted(self.jobs.values(), key=lambda j: j.created_at):
            if job.waiting:
                first.setdefault(job.member, job)
        return list(first.values())

    def claim_due(self, a_worker_is_free: bool) -> bool:
        """Whether the engines must start a job now: a queued head, a free slot, an engine with room for it."""
        running = sum(1 for j in self.jobs.values() if j.state is S.RUNNING)
        return a_worker_is_free and running < self.cap and any(j.state is S.QUEUED for j in self.heads())

    def claimed(self, label: str, life: str, now: float) -> ModelRun:
        """The API was called for ``label`` by ``life``: it was claimed, in a new run."""
        job = self.jobs.get(label)
        assert job is not None, f"the API was called for {label}, a job the model never accepted"
        assert job.state is S.QUEUED, f"the API was called for {label} ({life}), which the model has {job.state}"
        blocking = [
            j.label
            for j in self.jobs.values()
            if j.member == job.member and j.state is S.PREPARING and j.created_at < job.created_at
        ]
        assert not blocking, f"{label} started before its member's earlier {blocking}, whose images are not ready"
        # The cap (MAX_CONCURRENT_JOBS, across every engine) counts the calls of live leases: the model's own
        # count, from its own leases, never the engine's.
        live = sorted(j.label for j in self.jobs.values() if j.state is S.RUNNING and j.lease_until >= now)
        assert len(live) < self.cap, f"{label} ({life}) started while {live} held all {self.cap} slots"
        run = ModelRun(len(job.runs) + 1, life)
        job.runs.append(run)
        job.state, job.holder, job.lease_until = S.RUNNING, life, now + LEASE
        return run

    def answered(self, job: ModelJob, run: ModelRun, answer: str, post: str) -> None:
        run.attempt = ATTEMPT_OF[answer]
        if answer != OK or post == REFUSED:
            self.end(job, S.FAILED, TELLER)
        else:
            self.end(job, S.SUCCEEDED, POST if post == POSTED else NEXT_USE)

    # Stops, crashes, leases: bot.jobs.recovery's rules, the same whoever applies them.
    def interrupted(self, job: ModelJob, taken: bool) -> None:
        """A stop, a crash or a take-over caught ``job`` in its API call: it may have been billed; back in line once."""
        run = job.runs[-1]
        run.attempt, run.taken = INTERRUPTED, taken
        if job.restarts == 0:
            job.state, job.holder, job.restarts = S.QUEUED, None, 1
        else:
            self.end(job, S.FAILED, TELLER)

    def held_by(self, life: str) -> list[ModelJob]:
        return [j for j in self.jobs.values() if j.holder == life]

    def stopped(self, life: str) -> None:
        """``life`` stops: its calls are interrupted, its jobs still waiting for images fail."""
        for job in self.held_by(life):
            if job.state is S.RUNNING:
                self.interrupted(job, taken=False)
            else:
                self.end(job, S.FAILED, TELLER)

    def taken_over(self, jobs: Sequence[ModelJob]) -> None:
        """Another engine resumes or ends ``jobs``: a running one is back in line once, a preparing one (its
        images never saved) fails."""
        for job in jobs:
            if job.state is S.RUNNING:
                self.interrupted(job, taken=True)
            else:
                self.end(job, S.FAILED, TELLER)

    def lapsed(self, lives: Sequence[str], now: float) -> list[ModelJob]:
        return [j for j in self.jobs.values() if j.holder in lives and j.lease_until < now]

    def renewed(self, life: str, now: float) -> None:
        for job in self.held_by(life):
            job.lease_until = now + LEASE

    def owed_at_next_use(self, member: int, discord: Discord) -> list[ModelJob]:
        """Jobs whose member is told at their next use: a result that could not reach them, or a final word
        Discord refused ``MOST_TRIES`` times."""
        return [
            j
            for j in self.jobs.values()
            if j.member == member
            and not j.shown
            and (
                j.told_by == NEXT_USE
                or (j.told_by == TELLER and not discord.told[j.label] and discord.tries[j.label] >= MOST_TRIES)
            )
        ]

    def usage(self, member: int, guild: int, now: float) -> DayUsage:
        day = utc_day(now)
        today = [j for j in self.jobs.values() if j.day == day and not j.refunded]
        return DayUsage(
            user_today=sum(1 for j in today if j.member == member),
            guild_today=sum(1 for j in today if j.guild == guild),
            spend_today=sum(j.cost for j in today if not j.own_key),
            user_active=sum(1 for j in self.jobs.values() if j.member == member and not j.state.terminal),
            user_last_accepted=self.last_accepted(member, now),
        )


# The invariants: the store against the model ----------------------------------------------------------

SNAPSHOT_SQL = {
    "jobs": "SELECT id, prompt, status, user_id, guild_id, created_at, charge_day, cost, guild_key, restarts, run "
    "FROM jobs",
    "money": "SELECT job_id, entry, user_id, guild_id, day, amount FROM money",
    "notices": "SELECT job_id, outcome, done_at, how, shown_at FROM notices",
    "attempts": "SELECT job_id, run, attempt, outcome, may_be_billed FROM api_attempts",
}


@dataclass
class Snapshot:
    """The store as plain rows, and the day's totals as the store's read API gives them (``usage`` per member,
    asked where ``GUILD_OF`` says)."""

    rows: dict[str, list[dict[str, Any]]]
    usage: dict[int, DayUsage] = field(default_factory=dict)
    totals: Totals | None = None


def problems(model: Model, snapshot: Snapshot, discord: Discord, calls: Counter[str], now: float) -> list[str]:
    """Every way the store (and what members were shown) differs from what the model expects."""
    found: list[str] = []
    jobs = {str(row["prompt"]): row for row in snapshot.rows["jobs"]}
    if set(jobs) != set(model.jobs):
        found.append(f"jobs in the store {sorted(jobs)} are not the jobs accepted {sorted(model.jobs)}")
    money: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for row in snapshot.rows["money"]:
        money[str(row["job_id"])].append(row)
    notices: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for row in snapshot.rows["notices"]:
        notices[str(row["job_id"])].append(row)
    attempts: dict[tuple[str, int], list[dict[str, Any]]] = defaultdict(list)
    for row in snapshot.rows["attempts"]:
        attempts[(str(row["job_id"]), int(row["run"]))].append(row)
    known = {str(row["id"]) for row in snapshot.rows["jobs"]}
    if set(money) - known or set(notices) - known or {job_id for job_id, _ in attempts} - known:
        found.append("money, notices or attempts of jobs that are not in the store")
    for job in model.jobs.values():
        row = jobs.get(job.label)
        if row is None:
            continue
        job_id = str(row["id"])
        found += _job_problems(job, row)
        found += _money_problems(job, money.pop(job_id, []))
        found += _notice_problems(job, notices.pop(job_id, []), discord)
        found += _attempt_problems(job, job_id, attempts, calls)
        if discord.ends_heard[job.label] != int(job.state.terminal):
            found.append(f"{job.label} ({job.state}): observers heard of its end {discord.ends_heard[job.label]} times")
    found += _total_problems(model, snapshot, now)
    return found


def _job_problems(job: ModelJob, row: dict[str, Any]) -> list[str]:
    found = []
    seen = (row["status"], int(row["restarts"]), int(row["run"]))
    if seen != (job.state.value, job.restarts, len(job.runs)):
        found.append(
            f"{job.label} is (status, restarts, runs) {seen}; the model expects "
            f"{(job.state.value, job.restarts, len(job.runs))}"
        )
    asked = (int(row["user_id"]), int(row["guild_id"]), float(row["created_at"]), row["charge_day"])
    if asked != (job.member, job.guild, job.created_at, job.day):
        found.append(f"{job.label} was recorded as {asked}, not {(job.member, job.guild, job.created_at, job.day)}")
    if (int(row["cost"]), bool(row["guild_key"])) != (job.cost, job.own_key):
        found.append(f"{job.label} costs {row['cost']} (own key {row['guild_key']}), not {job.cost} ({job.own_key})")
    return found


def _money_problems(job: ModelJob, rows: list[dict[str, Any]]) -> list[str]:
    entries = Counter(str(row["entry"]) for row in rows)
    found = []
    if entries != Counter({"charge": 1, "refund": int(job.refunded)}):
        found.append(
            f"{job.label} ({job.state}) has money entries {dict(entries)}: one charge, and one refund "
            "only if it failed or was cancelled"
        )
    expected = (job.cost, job.day, job.member, job.guild)
    for row in rows:
        if (int(row["amount"]), row["day"], int(row["user_id"]), int(row["guild_id"])) != expected:
            found.append(f"{job.label}'s {row['entry']} is {row}, not {job.cost} on {job.day}")
    return found


def _notice_problems(job: ModelJob, rows: list[dict[str, Any]], discord: Discord) -> list[str]:
    label = job.label
    posts, told = discord.posts[label], discord.told[label]
    if posts > 1 or told > 1 or posts + told > 1:
        return [f"{label}'s member was shown {posts} results and told {told} final words"]
    if not job.state.terminal:
        return [f"{label} ({job.state}) is unfinished, yet has a notice or was told"] if rows or posts or told else []
    if len(rows) != 1:
        return [f"{label} ({job.state}) has {len(rows)} notices: every ended job has one, told or pending"]
    notice = rows[0]
    done, how = notice["done_at"] is not None, notice["how"]
    if notice["outcome"] != job.state.value:
        return [f"{label}'s notice says {notice['outcome']}, the job {job.state}"]
    if posts and (job.told_by != POST or discord.posted_by.get(label) != job.runs[-1].life):
        return [
            f"{label} was posted by {discord.posted_by.get(label)}; the model expects {job.told_by} from "
            f"{job.runs[-1].life if job.runs else None}"
        ]
    if job.told_by == TELLER:
        if told:
            ok = done and how == "edited"
        elif done:  # handed to the member's next use after Discord refused it MOST_TRIES times
            ok = (
                how == NEXT_USE and discord.tries[label] >= MOST_TRIES and (notice["shown_at"] is not None) == job.shown
            )
        else:
            ok = True  # pending: the outbox tells it
    else:
        expected = HOW[job.told_by or ""]
        ok = done and how == expected and (posts == 1) == (job.told_by == POST) and not told
        if job.told_by == NEXT_USE:
            ok = ok and (notice["shown_at"] is not None) == job.shown
    if not ok:
        return [
            f"{label} ({job.state}, told by {job.told_by}): its notice is done={done} how={how} "
            f"shown={notice['shown_at']}, and Discord showed {posts} results, {told} final words"
        ]
    return []


def _attempt_problems(
    job: ModelJob, job_id: str, attempts: dict[tuple[str, int], list[dict[str, Any]]], calls: Counter[str]
) -> list[str]:
    found = []
    if calls[job.label] != len(job.runs):
        found.append(f"{job.label} ({job.state}) reached the API {calls[job.label]} times in {len(job.runs)} runs")
    numbers = {run for j, run in attempts if j == job_id}
    if numbers - {run.number for run in job.runs}:
        found.append(f"{job.label} has attempts of runs {sorted(numbers)}, the model knows {len(job.runs)}")
    for run in job.runs:
        rows = attempts.get((job_id, run.number), [])
        seen = [(str(r["outcome"]), bool(r["may_be_billed"])) for r in rows]
        expected = run.attempts_on_record()
        if len(seen) != len(expected) or not all(one in allowed for one, allowed in zip(seen, expected, strict=False)):
            found.append(
                f"{job.label} run {run.number} ({run.life}, taken={run.taken}) left attempts {seen}, "
                f"not one of each of {expected}"
            )
    return found


def _total_problems(model: Model, snapshot: Snapshot, now: float) -> list[str]:
    found = []
    for member, seen in snapshot.usage.items():
        expected = model.usage(member, GUILD_OF[member], now)
        if seen != expected:
            found.append(f"member {member}'s usage in server {GUILD_OF[member]} is {seen}, not {expected}")
    if snapshot.totals is not None:
        day = utc_day(now)
        today = [j for j in model.jobs.values() if j.day == day and not j.refunded]
        expected_totals = (
            sum(1 for j in model.jobs.values() if j.state is S.QUEUED),
            sum(1 for j in model.jobs.values() if j.state is S.RUNNING),
            sum(j.cost for j in today if not j.own_key),
            sum(j.cost for j in today if j.own_key),
        )
        t = snapshot.totals
        if (t.queued, t.running, t.operator_spend, t.server_spend) != expected_totals:
            found.append(
                f"totals (queued, running, operator spend, server spend) are "
                f"{(t.queued, t.running, t.operator_spend, t.server_spend)}, not {expected_totals}"
            )
    return found


# Engines, each life on a loop of its own ---------------------------------------------------------------

# Where a task waits on the database or a worker thread (busy), rather than on the test (parked).
_BUSY_IN = ("/bot/store/", "/asyncpg/", "/asyncio/threads.py")
# Tasks that never change a job: places in line (they only tell the notifier) and PostgreSQL's session.
_NEVER_BUSY = ("atelier-engine-places", "atelier-postgres-session")


def _frames(task: asyncio.Task[Any]) -> Iterator[Any]:
    """The frames of the coroutines ``task`` is suspended in, outermost first (``get_stack`` gives one only)."""
    inner: Any = task.get_coro()
    while inner is not None:
        frame = getattr(inner, "cr_frame", None) or getattr(inner, "gi_frame", None)
        if frame is not None:
            yield frame
        inner = getattr(inner, "cr_await", None) or getattr(inner, "gi_yieldfrom", None)


def _parked(task: asyncio.Task[Any]) -> bool:
    """Whether ``task`` waits for the test (an answer, images, a timer pushed out of reach), not for work."""
    if task.done() or task.get_name() in _NEVER_BUSY:
        return True
    waiter = task._fut_waiter  # type: ignore[attr-defined]
    if waiter is None or waiter.done():  # ready to run, or woken: its step is on the loop's queue
        return False
    return not any(part in frame.f_code.co_filename for frame in _frames(task) for part in _BUSY_IN)


async def _ended(tasks: Sequence[asyncio.Task[Any]]) -> None:
    await asyncio.gather(*tasks, return_exceptions=True)


def _where(task: asyncio.Task[Any]) -> str:
    return f"{task.get_name()}@" + ">".join(f"{f.f_code.co_name}:{f.f_lineno}" for f in _frames(task))


class Life:
    """One life of one engine (a process, from its start to its stop or death), on an event loop of its own."""

    LIVE, STALLED, DEAD, STOPPED = "live", "stalled", "dead", "stopped"

    def __init__(
        self,
        name: str,
        loop: asyncio.AbstractEventLoop,
        engine: JobEngine,
        database: Database,
        api: GatedAPI,
        frontend: Frontend,
    ) -> None:
        self.name = name
        self.loop = loop
        self.engine = engine
        self.database = database
        self.api = api
        self.frontend = frontend
        self.state = Life.LIVE
        self.submits: dict[str, tuple[Source, asyncio.Task[Job]]] = {}
        self.seen = 0  # API calls the model has seen

    def run(self, work: Awaitable[T]) -> T:
        """Drive this loop (only this one) until ``work`` is done."""
        return self.loop.run_until_complete(asyncio.wait_for(work, STEP_TIMEOUT))

    def turn(self) -> None:
        self.loop.run_until_complete(asyncio.sleep(TURN))

    def busy(self) -> list[asyncio.Task[Any]]:
        return [task for task in asyncio.all_tasks(self.loop) if not _parked(task)]

    def runs_in_flight(self) -> int:
        return sum(1 for task in asyncio.all_tasks(self.loop) if task.get_name().startswith("atelier-engine-job-"))

    def pending_calls(self) -> list[Call]:
        return [call for call in self.api.calls if not call.future.done()]

    def fetching(self) -> list[tuple[str, Source]]:
        return [(label, source) for label, (source, _) in sorted(self.submits.items()) if source.fetching]

    def die(self) -> None:
        """Never driven again: whatever it was doing simply stops."""
        self.state = Life.DEAD
        self.loop.set_exception_handler(lambda loop, context: None)  # its pending tasks are gone with it

    def close(self) -> None:
        """After a stop: end what is left of the frontend's tasks and close the loop."""
        for _ in range(10):
            pending = [task for task in asyncio.all_tasks(self.loop) if not task.done()]
            if not pending:
                break
            for task in pending:
                task.cancel()
            self.loop.run_until_complete(_ended(pending))
        self.loop.close()

    def discard(self) -> None:
        """At the end of an example: what a dead (or abandoned) life was doing is dropped, running nothing of it
        on a loop (closing its coroutines now, rather than whenever they are collected)."""
        self.loop.set_exception_handler(lambda loop, context: None)
        for task in asyncio.all_tasks(self.loop):
            with contextlib.suppress(BaseException):
                task.get_coro().close()
        self.loop.close()


class Backend(Protocol):
    """One database the machine runs the engines on."""

    engines: int  # how many engines share it
    cap: int  # MAX_CONCURRENT_JOBS

    def config(self, **values: Any) -> Config: ...
    def database(self, life: str) -> Database: ...
    def crash(self, life: Life) -> None: ...
    def rows(self) -> dict[str, list[dict[str, Any]]]: ...
    def close(self, lives: Sequence[Life]) -> None: ...


# One request: who, where, which engine, and how its images come ("+": Discord drops the command's answer).
Request = tuple[int, int, int, str]
REQUESTS = st.lists(
    st.tuples(
        st.sampled_from(MEMBERS),
        st.sampled_from(GUILDS),
        st.integers(0, 1),
        st.sampled_from(["now", "now", "now", "later", "later", "bad", "now+"]),
    ),
    min_size=1,
    max_size=4,
)


def _event(text: str) -> None:
    """A line of hypothesis's statistics (rules are called outside hypothesis too, by the tests below)."""
    if currently_in_test_context():
        event(text)


def pick(data: st.DataObject, items: Sequence[T]) -> T | None:
    """One of ``items`` (``None`` if there is none), drawn as a position in a fixed range.

    How many there are depends on what happened, and hypothesis needs every draw to have the same
    range when it replays a sequence, or it reports "inconsistent data generation". For the same
    reason the rules are always enabled (no precondition on the engine's state) and do nothing when
    nothing applies.
    """
    position = data.draw(st.integers(0, 15))
    return items[position % len(items)] if items else None


class LoggedErrors(logging.Handler):
    """Errors the engine logged (a bug caught in a task, a notice handler that raised)."""

    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.records: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(f"{record.name}: {record.getMessage()}")


@contextmanager
def engine_timers_out_of_reach(monkeypatch: pytest.MonkeyPatch) -> Iterator[LoggedErrors]:
    """The engine's timers wait in real time; push them out of reach, so that only the test's time fires them
    (the rules call what they would call), and collect the errors the engine logs."""
    for module, name in (
        (bot.jobs.keeper, "TAKE_OVER_EVERY"),
        (bot.jobs.outbox, "DRAIN_EVERY"),
        (bot.jobs.places, "PLACES_EVERY"),
        (bot.jobs.dispatcher, "SAFETY_POLL"),
    ):
        monkeypatch.setattr(module, name, 1e6)
    # A burst's jobs beyond the slots wait (in real time) for the jobs ahead of them, and the slots' jobs for
    # the burst's answers: a matter of when images are fetched, tested end to end; here each job fetches as
    # soon as it is admitted (a wait in real time would make the examples depend on the machine's speed).
    monkeypatch.setattr(bot.jobs.admission, "ANSWERS_FIRST_SECONDS", 0.0)
    monkeypatch.setattr(bot.jobs.admission, "AHEAD_WAITS_SECONDS", 0.0)
    errors = LoggedErrors()
    logger = logging.getLogger("bot")
    logger.addHandler(errors)
    try:
        yield errors
    finally:
        logger.removeHandler(errors)


# The machine --------------------------------------------------------------------------------------------


class EngineModel(RuleBasedStateMachine):
    """Drives the engines, keeps the model, and checks the store against it after every step."""

    errors: ClassVar[LoggedErrors]

    def __init__(self, backend: Backend) -> None:
        super().__init__()
        self.backend = backend
        self.clock = Clock(START)
        self.discord = Discord()
        self.model = Model(backend.cap)
        self.config = backend.config(
            discord_token="t" * 24,
            image_api_key="k" * 24,
            max_concurrent_jobs=backend.cap,
            user_max_active=MAX_ACTIVE,
            user_daily_limit=DAILY,
            guild_daily_limit=GUILD_DAILY,
            daily_budget=BUDGET,
            price_per_image=PRICE,
            user_cooldown_seconds=COOLDOWN,
            job_lease_seconds=LEASE,
            shutdown_grace_seconds=GRACE,
            secret_key=Fernet.generate_key().decode(),
        )
        self.labels = itertools.count(1)
        self.serial = itertools.count(1)
        self.lives: list[Life] = []  # every life, for the teardown
        self.loop_errors: list[str] = []
        self.key_set = False
        self.errors.records.clear()
        self.slots: list[Life] = []  # the current life of each engine
        for slot in range(backend.engines):
            self.slots.append(self.start_life(slot))
        self.settle()

    # Lives ------------------------------------------------------------------------------------------

    def start_life(self, slot: int) -> Life:
        name = f"{'AB'[slot]}{next(self.serial)}"
        loop = asyncio.new_event_loop()
        loop.set_exception_handler(lambda _loop, context: self.loop_errors.append(f"{name}: {context['message']}"))
        database = self.backend.database(name)
        api = GatedAPI(self.clock)
        frontend = Frontend(name, self.discord)

        self.expect_take_over()  # its start takes over what nobody holds

        async def build() -> JobEngine:
            engine = JobEngine(self.config, Store(database), api, Editor(), clock=self.clock)
            engine.lifecycle.observe(self.discord)
            await engine.open()
            if not self.key_set:
                await engine.set_guild_key(OWN_KEY_GUILD, "sk-the-servers-own-key", by=MODERATOR)
            # Its start takes over what no live engine holds, and drains the outbox.
            await engine.start(FrontendParts(frontend, frontend, frontend))
            return engine

        engine = loop.run_until_complete(asyncio.wait_for(build(), STEP_TIMEOUT))
        self.key_set = True
        life = Life(name, loop, engine, database, api, frontend)
        self.lives.append(life)
        return life

    def live(self) -> list[Life]:
        return [life for life in self.slots if life.state == Life.LIVE]

    def serving(self, slot: int) -> Life | None:
        """The engine a member's click reaches: the one drawn, or the other if that one does not answer."""
        life = self.slots[slot % len(self.slots)]
        if life.state == Life.LIVE:
            return life
        return next(iter(self.live()), None)

    def busiest(self, position: int) -> Life:
        """An engine by how much it holds, most first: hypothesis favours the first choice, the one that matters."""
        ranked = sorted(self.slots, key=lambda life: -len(self.model.held_by(life.name)))
        return ranked[position % len(ranked)]

    def pending_calls(self) -> list[tuple[Life, Call]]:
        return [
            (life, call)
            for life in self.slots
            if life.state in (Life.LIVE, Life.STALLED)
            for call in life.pending_calls()
        ]

    def teardown(self) -> None:
        try:
            if sys.exc_info()[0] is None and self.live():  # not after a failure: that one is the report
                self.everything_is_answered()
        finally:
            self.backend.close(self.lives)

    # Driving ----------------------------------------------------------------------------------------

    def settle(self) -> None:
        """Drive every live engine until each waits only on the test (an answer, images) or on nothing."""
        began = time.monotonic()
        calm = 0
        stuck: float | None = None
        while calm < CALM_TURNS:
            lives = self.live()
            for life in lives:
                life.turn()
            self.observe()
            busy = [(life.name, task) for life in lives for task in life.busy()]
            due = self.model.claim_due(any(life.runs_in_flight() < self.model.cap for life in lives))
            # A callback still on a loop's queue may be a wake-up on its way (a shielded result passed on, a
            # gathered one): the task it wakes still looks parked, so the turn is not calm until it has run.
            queued = any(life.loop._ready for life in lives)  # type: ignore[attr-defined]
            calm = 0 if busy or due or queued else calm + 1
            now = time.monotonic()
            if due and not busy:
                stuck = stuck or now
                assert now - stuck < STUCK_AFTER, (
                    "a queued job its member's turn allows waits while an API slot is free (a missed wake): "
                    f"heads={[(j.label, j.state.value) for j in self.model.heads()]} "
                    f"running={[j.label for j in self.model.jobs.values() if j.state is S.RUNNING]}"
                )
            else:
                stuck = None
            if now - began > STEP_TIMEOUT:
                raise AssertionError(f"the engines did not settle: busy={[(n, _where(t)) for n, t in busy]}")
        for life in self.live():
            for label, (_source, task) in list(life.submits.items()):
                if task.done():
                    del life.submits[label]
                    error = None if task.cancelled() else task.exception()
                    assert error is None or isinstance(error, AtelierError), f"{label}: {error!r}"

    def observe(self) -> None:
        """The API calls the engines made since the last look: each is a claim of a queued job."""
        for life in self.lives:
            for call in life.api.calls[life.seen :]:
                call.run = self.model.claimed(call.label, life.name, self.clock.now)
            life.seen = len(life.api.calls)

    def pass_time(self, seconds: float) -> None:
        """Time passes: every live engine's timers fire as they would (renew its leases; take over what nobody
        holds; drain the outbox), in that order, so that no live engine loses a lease to time alone."""
        self.clock.now += seconds
        lives = self.live()
        for life in lives:
            life.run(life.engine._keeper.renew())
            self.model.renewed(life.name, self.clock.now)
        if seconds >= TAKE_OVER_SECONDS and lives:
            self.expect_take_over()
            for life in lives:
                life.run(life.engine._keeper.take_over())
        if seconds >= DRAIN_SECONDS:
            for life in lives:
                life.engine._outbox.wake()
        self.settle()

    def expect_take_over(self) -> None:
        """An engine is about to take over what nobody holds: a stalled engine's jobs whose lease lapsed are
        among them (a dead one's are taken as it dies)."""
        stalled = [life.name for life in self.slots if life.state == Life.STALLED]
        lapsed = self.model.lapsed(stalled, self.clock.now)
        if lapsed:
            _event("a stalled engine's jobs taken over")
        self.model.taken_over(lapsed)

    def crash(self, life: Life) -> None:
        """``life``'s process dies; another engine (or its next life) takes its jobs over by the recovery rules."""
        _event(f"a crash with {sorted({j.state.value for j in self.model.held_by(life.name)})} held")
        self.backend.crash(life)
        life.die()
        self.model.taken_over(self.model.held_by(life.name))
        self.expect_take_over()
        slot = self.slots.index(life)
        for other in self.live():
            other.run(other.engine._keeper.take_over())  # it sees the holder gone at its next take-over
        self.slots[slot] = self.start_life(slot)
        self.settle()

    def answer(self, life: Life, call: Call, answer: str, post: str) -> None:
        run = call.run
        assert run is not None
        job = self.model.jobs[call.label]
        if answer == OK and not run.taken:
            self.discord.post_as[call.label] = post
        call.future.set_result(answer)
        if life.state == Life.LIVE and not run.taken:
            self.model.answered(job, run, answer, post)
        else:  # its life stalled: the answer goes on when it resumes (discarded if the run was lost meanwhile)
            run.answer = (answer, post)
            _event(f"a call answered while its engine stalled (lost: {run.taken})")

    def images_arrive(self, life: Life, label: str, source: Source, usable: bool) -> None:
        assert source.arrival is not None
        source.arrival.set_result(usable)
        job = self.model.jobs[label]
        if job.state is S.PREPARING and job.holder == life.name:  # not cancelled, not taken over
            if life.state == Life.LIVE:
                self.model.prepared(job, usable)
            else:
                job.images = usable

    def resume(self, life: Life) -> None:
        """A stalled engine comes back: what came meanwhile goes on for the jobs it still holds; its lease timer,
        long overdue, finds the runs it lost (abandoned: they never move, post or refund anything again)."""
        life.state = Life.LIVE
        for job in self.model.jobs.values():
            for run in job.runs:
                if run.taken and run.life == life.name:
                    run.came_back = True
        for job in self.model.held_by(life.name):
            if job.state is S.PREPARING and job.images is not None:
                self.model.prepared(job, job.images)
            elif job.state is S.RUNNING and job.runs[-1].answer is not None:
                self.model.answered(job, job.runs[-1], *job.runs[-1].answer)
        self.model.renewed(life.name, self.clock.now)
        life.run(life.engine._keeper.renew())
        self.expect_take_over()
        life.run(life.engine._keeper.take_over())
        self.settle()

    def member_uses_the_bot(self, life: Life, member: int) -> None:
        owed = self.model.owed_at_next_use(member, self.discord)
        if owed:  # which members are owed a word is cached, and refreshed by a notice from whichever engine
            deadline = time.monotonic() + STUCK_AFTER
            while not life.engine.notices_waiting(member) and time.monotonic() < deadline:
                for each in self.live():
                    each.turn()
        told = life.run(life.engine.notices_owed(member))
        assert sorted(job.request.prompt for _, job in told) == sorted(j.label for j in owed), (told, owed)
        life.run(life.engine.notices_shown(member, [job for _, job in told]))
        for job in owed:
            job.shown = True
        if owed:
            _event("a member told at their next use")

    def submit(self, member: int, guild: int, slot: int, images: str, announce_fails: bool) -> None:
        """A member asks (a click on whichever engine serves them); the model decides first whether it passes."""
        life = self.serving(slot)
        if life is None:
            return
        self.clock.now += 1  # a click takes a moment: no two jobs are accepted at the same instant
        now = self.clock.now
        label = f"job{next(self.labels):03d}"
        refused = self.model.verdict(member, guild, now)
        if refused is None:
            self.model.accept(label, member, guild, now, life.name, images, announced=not announce_fails)
        source = Source(label, announce_fails, images)
        who = Requester(member, guild, 100, None, frozenset(), is_manager=member == MANAGER)
        request = JobRequest("edit", member, guild, 100, label, None, 1)
        task = life.loop.create_task(life.engine.submit(request, who, source))
        life.submits[label] = (source, task)
        self.settle()
        if refused is not None:
            error = task.exception() if task.done() else None
            assert isinstance(error, LimitReachedError) and error.log_detail == f"refused: {refused} limit", (
                f"{label}: the model expects the {refused} limit to refuse it; the engine: {error!r}"
            )
            assert source.job_id is None
            _event(f"refused by the {refused} limit")
            return
        assert source.job_id is not None, f"{label} was refused ({task}); the model accepts it"
        _event(f"accepted: {self.model.jobs[label].state.value}")
        self.model.jobs[label].job_id = source.job_id
        if announce_fails:
            assert isinstance(task.exception(), InputError), task

    def read_snapshot(self) -> Snapshot:
        life = self.live()[0]
        usage = {}
        for member in MEMBERS:
            who = Requester(member, GUILD_OF[member], 100, None, frozenset(), is_manager=member == MANAGER)
            usage[member] = life.run(life.engine.usage(who))
        return Snapshot(self.backend.rows(), usage, life.run(life.engine.refresh_totals()))

    # Rules ----------------------------------------------------------------------------------------------

    @initialize(requests=REQUESTS)
    def members_ask_first(self, requests: list[Request]) -> None:
        """Every example starts with work in line (a state machine spends most steps on what is there)."""
        self.members_ask(requests)

    @rule(requests=REQUESTS)
    def members_ask(self, requests: list[Request]) -> None:
        """A few requests, one after the other (a click on whichever engine serves each)."""
        for member, guild, slot, images in requests:
            self.submit(member, guild, slot, images.removesuffix("+"), announce_fails=images.endswith("+"))

    @rule(data=st.data(), usable=st.sampled_from([True, True, False]))
    def images_come(self, data: st.DataObject, usable: bool) -> None:
        found = pick(
            data,
            [
                (life, label, source)
                for life in self.slots
                if life.state in (Life.LIVE, Life.STALLED)
                for label, source in life.fetching()
            ],
        )
        if found is None:
            return
        self.images_arrive(*found, usable)
        self.settle()

    @rule(
        data=st.data(),
        who=st.sampled_from(["owner", "owner", "other", "moderator"]),
        reply=st.sampled_from([True, True, False]),
        slot=st.integers(0, 1),
    )
    def cancel(self, data: st.DataObject, who: str, reply: bool, slot: int) -> None:
        # Waiting jobs first: hypothesis favours the first choices, and those are the cancels that happen.
        unfinished = sorted(
            (j for j in self.model.jobs.values() if not j.state.terminal), key=lambda j: (not j.waiting, j.created_at)
        )
        job = pick(data, unfinished)
        life = self.serving(slot)
        if job is None or life is None or job.job_id is None:
            return
        by = {"owner": job.member, "other": job.member % 3 + 1, "moderator": MODERATOR}[who]
        allowed = who != "other" and job.waiting and job.restarts == 0
        _event(f"cancel {job.state.value} (restarts {job.restarts}) by {who}")
        try:
            cancelled = life.run(life.engine.cancel(job.job_id, by, is_moderator=who == "moderator"))
        except CancelRefusedError:
            assert not allowed, f"{job.label} ({job.state}) could not be cancelled by its {who}"
        else:
            assert allowed and cancelled.state is S.CANCELLED, f"{job.label} ({job.state}) cancelled by {who}"
            self.model.end(job, S.CANCELLED, REPLY if reply else TELLER)
            if reply:  # the canceller's answer told the member (else the outbox does, a little later)
                life.run(life.engine.cancel_told(cancelled))
        self.settle()

    @rule(
        data=st.data(),
        answer=st.sampled_from([OK, OK, OK, FAIL, TIMEOUT, DIES]),
        post=st.sampled_from([POSTED, POSTED, REFUSED, UNREACHABLE]),
    )
    def the_api_answers(self, data: st.DataObject, answer: str, post: str) -> None:
        """An API call ends: an image (posted, refused by Discord, or for a member it cannot reach), a refusal,
        a timeout; or a refusal, after which its engine dies as it starts to tell the member."""
        found = pick(data, self.pending_calls())
        if found is None:
            return
        life, call = found
        if answer != DIES or life.state != Life.LIVE or call.run is None or call.run.taken:
            self.answer(life, call, FAIL if answer == DIES else answer, post)
            self.settle()
            return
        # The move that ends the job is recorded, then the process dies as it starts to tell the member: the
        # notice is in the outbox, and the next life of the engine (or the other engine) tells it.
        life.frontend.die_at_tell = True
        self.answer(life, call, FAIL, post)
        self.settle()
        assert life.frontend.dying == call.label, f"{call.label} failed, yet its engine never started to tell it"
        quiet_discord = self.discord.refuse == 0
        self.crash(life)
        if quiet_discord:  # whoever drains the outbox next (the restart does, first thing) tells the member
            assert self.discord.told[call.label] == 1, f"{call.label}'s member was not told after the restart"

    @rule(refusals=st.integers(0, 3), member=st.sampled_from([*MEMBERS, None]), slot=st.integers(0, 1))
    def discord_and_members(self, refusals: int, member: int | None, slot: int) -> None:
        """Discord rate-limits the next ``refusals`` final words; ``member`` uses the bot again (and is told
        what they are owed at their next use)."""
        self.discord.refuse = refusals
        life = self.serving(slot)
        if life is not None and member is not None:
            self.member_uses_the_bot(life, member)
            self.settle()

    @rule(seconds=st.sampled_from([1.0, 4.0, 5.0, 6.0, 300.0, LEASE + 1, -1.0]))
    def time_passes(self, seconds: float) -> None:
        if seconds < 0:  # until just after midnight UTC: the daily counts start again
            seconds = next_reset(self.clock.now) - self.clock.now + 1
        self.pass_time(seconds)

    @rule(trouble=st.sampled_from([STOP, CRASH]), slot=st.integers(0, 1))
    def an_engine_has_trouble(self, trouble: str, slot: int) -> None:
        self.trouble(trouble, self.busiest(slot))

    def trouble(self, trouble: str, life: Life) -> None:
        if trouble == STOP and life.state == Life.LIVE:
            self.stop_and_restart(life)
        elif trouble == CRASH and life.state in (Life.LIVE, Life.STALLED):
            self.crash(life)

    def stop_and_restart(self, life: Life) -> None:
        """SIGTERM: the engine stops (its calls get their grace, then go back in line once), and starts again."""
        _event(f"a stop with {sorted({j.state.value for j in self.model.held_by(life.name)})} held")
        self.model.stopped(life.name)
        self.expect_take_over()  # the stop puts its interrupted jobs back in line, with whatever else nobody holds
        life.run(life.engine.stop(GRACE))
        for _source, task in life.submits.values():  # the frontend's interaction tasks end with the process
            task.cancel()
        life.run(_ended([task for _, task in life.submits.values()]))
        life.run(life.engine.close())
        life.close()
        life.state = Life.STOPPED
        index = self.slots.index(life)
        self.slots[index] = self.start_life(index)
        self.settle()

    def everything_is_answered(self) -> None:
        """Every call answered, every image given, every notice due: each member is told each end exactly once
        (the end of every example that passed its steps)."""
        for life in self.slots:
            if life.state == Life.STALLED:
                self.resume(life)
        self.discord.refuse = 0
        for _ in range(50):
            for life, call in self.pending_calls():
                self.answer(life, call, OK, POSTED)
            for life in self.live():
                for label, source in life.fetching():
                    self.images_arrive(life, label, source, True)
            self.settle()
            if all(j.state.terminal for j in self.model.jobs.values()):
                break
        assert all(j.state.terminal for j in self.model.jobs.values()), [
            (j.label, j.state.value) for j in self.model.jobs.values() if not j.state.terminal
        ]
        for _ in range(3):  # past every retry's pause and every cancel's grace: each drain tells what is due
            self.pass_time(LONGEST_PAUSE + 1)
        for member in MEMBERS:
            self.member_uses_the_bot(self.live()[0], member)
        for job in self.model.jobs.values():
            told = self.discord.posts[job.label] + self.discord.told[job.label] + job.shown
            told += job.told_by in (RAISE, REPLY)
            assert told == 1, f"{job.label} ({job.state}, told by {job.told_by}) was told {told} times"
        self.the_store_is_what_the_model_expects()

    # Invariants -----------------------------------------------------------------------------------------

    @invariant()
    def the_store_is_what_the_model_expects(self) -> None:
        if not self.live():
            return
        calls: Counter[str] = Counter(call.label for life in self.lives for call in life.api.calls)
        found = problems(self.model, self.read_snapshot(), self.discord, calls, self.clock.now)
        for life in self.live():
            lost = [call.label for call in life.pending_calls() if call.run is not None and call.run.taken]
            if lost:
                found.append(f"{life.name} still waits on the calls of runs it lost: {lost}")
        found += self.errors.records + self.loop_errors
        assert not found, "\n".join(found)


class SQLiteEngineModel(EngineModel):
    """One engine, as SQLite serves one process."""

    def __init__(self) -> None:
        super().__init__(SQLiteBackend())


class PostgresEngineModel(EngineModel):
    """Two all-in-one engines sharing the database; either may stall past its lease, and come back."""

    server: ClassVar[PostgresServer]

    def __init__(self) -> None:
        super().__init__(PostgresBackend(self.server))

    @rule(trouble=st.sampled_from([STOP, CRASH, STALL, STALL_PAST_LEASE, RESUME]), slot=st.integers(0, 1))
    def an_engine_has_trouble(self, trouble: str, slot: int) -> None:
        """Besides a stop or a crash: an engine stalls (its loop stops being driven: a long pause, not a death;
        its database session stays, so only its leases tell the other engine that its jobs are nobody's, once
        time passes them), perhaps past its lease at once; or a stalled engine resumes."""
        life = self.busiest(slot)
        if trouble == RESUME:
            stalled = [each for each in self.slots if each.state == Life.STALLED]
            if stalled:
                self.resume(stalled[0])
        elif trouble in (STALL, STALL_PAST_LEASE):
            if self.stall(life) and trouble == STALL_PAST_LEASE:
                self.pass_time(LEASE + 1)
        else:
            self.trouble(trouble, life)

    def stall(self, life: Life) -> bool:
        if life.state != Life.LIVE or len(self.live()) != 2:
            return False
        life.state = Life.STALLED
        _event(f"a stall with {sorted({j.state.value for j in self.model.held_by(life.name)})} held")
        return True


# Backends --------------------------------------------------------------------------------------------


class SQLiteBackend:
    """A new SQLite file for each example."""

    engines = 1
    cap = 1  # one API call at a time: jobs wait in line, and can be cancelled there

    def __init__(self) -> None:
        self.root = Path(tempfile.mkdtemp(prefix="atelier-model-"))
        self.path = self.root / "atelier.sqlite3"

    def config(self, **values: Any) -> Config:
        return Config(data_dir=self.root, database_path=self.path, **values)

    def database(self, life: str) -> Database:
        return SQLiteDatabase(self.path)

    def crash(self, life: Life) -> None:
        # The process dies: the OS closes its file and releases its lock; the store's thread ends the
        # transaction it had begun, as a disk would. Done on a loop of its own: the dead one never runs again.
        assert isinstance(life.database, SQLiteDatabase)
        closer = asyncio.new_event_loop()
        closer.run_until_complete(life.database.close())
        closer.close()

    def rows(self, path: Path | None = None) -> dict[str, list[dict[str, Any]]]:
        db = sqlite3.connect(path or self.path)
        db.row_factory = sqlite3.Row
        try:
            return {name: [dict(row) for row in db.execute(sql)] for name, sql in SNAPSHOT_SQL.items()}
        finally:
            db.close()

    def close(self, lives: Sequence[Life]) -> None:
        for life in lives:
            if life.state in (Life.LIVE, Life.STALLED):
                self.crash(life)
            if life.state != Life.STOPPED:
                life.discard()
        shutil.rmtree(self.root, ignore_errors=True)


class PostgresServer:
    """One database for a whole run, emptied between examples, read on a loop of the test's own."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.stack = AsyncExitStack()
        self.url = self.run(self.stack.enter_async_context(fresh_database()))
        self.conn: asyncpg.Connection = self.run(asyncpg.connect(self.url))

    def run(self, work: Awaitable[T]) -> T:
        return self.loop.run_until_complete(asyncio.wait_for(work, STEP_TIMEOUT))

    def close(self) -> None:
        self.run(self.conn.close())
        self.run(self.stack.aclose())
        self.loop.close()


class PostgresBackend:
    """Each life connects with its own ``application_name``, so that its death can end its sessions."""

    engines = 2
    cap = 2  # either engine may run both calls, or each one

    def __init__(self, server: PostgresServer) -> None:
        self.server = server
        self.server.run(self._empty())

    async def _empty(self) -> None:
        tables = [
            r["tablename"]
            for r in await self.server.conn.fetch(
                "SELECT tablename FROM pg_tables WHERE schemaname = 'public' AND tablename <> 'schema_migrations'"
            )
        ]
        if tables:
            await self.server.conn.execute(f"TRUNCATE {', '.join(tables)}")

    def config(self, **values: Any) -> Config:
        return Config(data_dir=Path("unused"), database_url=self.server.url, **values)

    def database(self, life: str) -> Database:
        # A crash here ends every session of the life at once and for good, and the model asks for the take-over
        # right after: it checks what a take-over does, not how long a free lock must stay free to be believed
        # (``GONE_AFTER``, tested on its own in ``test_store_backends``).
        return PostgresDatabase(f"{self.server.url}?application_name=model-{life}", pool_size=4, gone_after=0.0)

    def crash(self, life: Life) -> None:
        self.server.run(self._end_sessions(f"model-{life.name}"))

    async def _end_sessions(self, application: str) -> None:
        """What the server does when a process dies: its sessions end, and their locks go with them."""
        conn = self.server.conn
        pids = [
            r["pid"]
            for r in await conn.fetch("SELECT pid FROM pg_stat_activity WHERE application_name LIKE $1", application)
        ]
        await conn.execute("SELECT pg_terminate_backend(pid) FROM unnest($1::int[]) AS pid", pids)
        for _ in range(500):
            left = await conn.fetchval(
                "SELECT (SELECT count(*) FROM pg_stat_activity WHERE pid = ANY($1::int[])) "
                "+ (SELECT count(*) FROM pg_locks WHERE pid = ANY($1::int[]))",
                pids,
            )
            if not left:
                return
            await asyncio.sleep(0.01)
        raise AssertionError(f"the sessions of {application} did not end")

    def rows(self) -> dict[str, list[dict[str, Any]]]:
        async def read() -> dict[str, list[dict[str, Any]]]:
            return {name: [dict(r) for r in await self.server.conn.fetch(sql)] for name, sql in SNAPSHOT_SQL.items()}

        return self.server.run(read())

    def close(self, lives: Sequence[Life]) -> None:
        self.server.run(self._end_sessions("model-%"))
        for life in lives:
            if life.state != Life.STOPPED:
                life.discard()


# The tests ---------------------------------------------------------------------------------------------

SQLITE_SETTINGS = settings(
    max_examples=40, stateful_step_count=50, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)
POSTGRES_SETTINGS = settings(
    max_examples=20, stateful_step_count=50, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)


def test_the_engine_follows_the_model_on_sqlite(monkeypatch: pytest.MonkeyPatch) -> None:
    with engine_timers_out_of_reach(monkeypatch) as errors:
        EngineModel.errors = errors
        run_state_machine_as_test(SQLiteEngineModel, settings=SQLITE_SETTINGS)


@pytest.mark.timeout(300)
# A crash is simulated by closing a dead engine's coroutines (``Life.discard``): one closed while it held a pooled
# connection asks asyncpg to release it with no loop to run on, and Python warns when that request is collected.
# The connection goes with the simulated process (its sessions are ended), as a real crash's would.
@pytest.mark.filterwarnings("ignore:coroutine 'PoolConnectionHolder.release' was never awaited:RuntimeWarning")
def test_the_engine_follows_the_model_on_postgres(monkeypatch: pytest.MonkeyPatch) -> None:
    with engine_timers_out_of_reach(monkeypatch) as errors:
        EngineModel.errors = errors
        PostgresEngineModel.server = PostgresServer()
        try:
            run_state_machine_as_test(PostgresEngineModel, settings=POSTGRES_SETTINGS)
        finally:
            PostgresEngineModel.server.close()


# The model can fail: the checker sees a wrong store -----------------------------------------------------


@pytest.fixture
def failed_job(monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[SQLiteEngineModel, Path]]:
    """A machine whose one job failed (charged, refunded, its member told), and a copy of its database."""
    with engine_timers_out_of_reach(monkeypatch) as errors:
        EngineModel.errors = errors
        machine = SQLiteEngineModel()
        try:
            machine.submit(member=1, guild=10, slot=0, images="bad", announce_fails=False)
            machine.the_store_is_what_the_model_expects()  # the true store passes
            copy = machine.backend.root / "copy.sqlite3"
            source, target = sqlite3.connect(machine.backend.path), sqlite3.connect(copy)
            source.backup(target)
            source.close()
            target.close()
            yield machine, copy
        finally:
            machine.teardown()


def _problems_in(machine: SQLiteEngineModel, copy: Path) -> list[str]:
    assert isinstance(machine.backend, SQLiteBackend)
    calls: Counter[str] = Counter(call.label for life in machine.lives for call in life.api.calls)
    return problems(machine.model, Snapshot(machine.backend.rows(copy)), machine.discord, calls, machine.clock.now)


def test_the_model_reports_a_second_refund(failed_job: tuple[SQLiteEngineModel, Path]) -> None:
    machine, copy = failed_job
    db = sqlite3.connect(copy)
    # The store's key refuses a second refund; without it (as a careless migration might leave it) the
    # invariant is what catches one. (The charges' trigger names the table: it goes first.)
    db.executescript(
        "DROP TRIGGER jobs_charge;"
        "CREATE TABLE loose AS SELECT * FROM money; DROP TABLE money; ALTER TABLE loose RENAME TO money;"
        "INSERT INTO money SELECT * FROM money WHERE entry = 'refund';"
    )
    db.commit()
    db.close()
    found = _problems_in(machine, copy)
    assert any("'refund': 2" in line for line in found), found


def test_the_model_reports_an_ended_job_without_its_notice(failed_job: tuple[SQLiteEngineModel, Path]) -> None:
    machine, copy = failed_job
    db = sqlite3.connect(copy)
    db.execute("DELETE FROM notices")
    db.commit()
    db.close()
    found = _problems_in(machine, copy)
    assert any("has 0 notices" in line for line in found), found
