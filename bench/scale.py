"""PostgreSQL at scale: a queue of 10,000 jobs from 1,000 members, a gateway and four workers.

1. **The queue.** The gateway alone admits ``scale_jobs`` ``/edit`` commands through the fake
   Discord, ``scale_jobs / scale_members`` from each member, round by round (each member's
   first, then each one's second…), as members would send them. Each is a real job: charged,
   its image stored in the database, acknowledged with its status line, waiting in line.
2. **Claims.** Then the workers start and share ``MAX_CONCURRENT_JOBS=scale_slots`` calls
   (``WORKER_SLOTS``: a worker makes at most its share of them, as an operator of several workers
   sets it) to a fake API slow enough (``scale_latency`` s a call) that the queue stays nearly full. Once
   every slot is busy, for ``scale_window`` s, each new call is timed from the moment the slot
   it took was freed (the API answered the call before it, in the same worker) to the moment
   it reached the API: the worker's record of the answer, the claim of the next job in fair
   order over the whole queue (the same transaction), reading its inputs and sending it. It
   bounds the claim from above. The call that freed the slot is the latest call of the same
   worker to end before the claim was made (the job's ``started_at``, stamped as the claim is
   asked).
   (Before the workers start, the gateway is let catch up with the events that building the
   queue sent it: ``caught_up``.)
3. **Admission.** With the queue still full and the workers busy, ``ack_jobs`` more ``/edit``
   at once from new members, from INTERACTION_CREATE to the callback (which carries the
   admitted job's id: the admission's transaction is inside it).
4. **Connections.** ``pg_stat_activity`` for the benchmark's database, read every 50 ms from
   before the gateway starts to after the last process stopped (the reading connection itself
   not counted): the most at once.
"""

from __future__ import annotations

import asyncio
import bisect
import contextlib
import gc
import time
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from dataclasses import dataclass, field

import asyncpg

from bench.common import Report, Row, Settings, burst, ms, note, percentile, wait_acks
from bench.fakes import Span
from bench.postgres import Cluster, cluster
from bot.core.states import JobState
from tests.fake_discord import InteractionHandle
from tests.fake_image_api import make_png
from tests.harness import send_edit
from tests.postgres import fresh_database

CLAIM_BOUND = 0.05
ADMISSION_BOUND = 0.1
CONNECTION_BUDGET = 40
FIRST_MEMBER = 100_000
SEND_AT_ONCE = 100  # commands sent together while the queue is built (members arriving, not one burst)
SETTLED = 0.2  # a /usage answered within this long: the gateway has caught up with its events
WATCH_EVERY = 0.05
CLOCK_EVERY = 0.02
BENCH = "atelier-bench"  # the application_name of the benchmark's own connections, which are not counted


@dataclass
class ConnectionWatch:
    """The most connections to one database at once, as ``pg_stat_activity`` shows them."""

    peak: int = 0
    readings: int = 0

    async def watch(self, conn: asyncpg.Connection) -> None:
        """Read every ``WATCH_EVERY`` s on ``conn`` (a connection to the database watched) until cancelled."""
        query = (
            "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
            "AND application_name IS DISTINCT FROM $1"
        )
        while True:
            self.peak = max(self.peak, int(await conn.fetchval(query, BENCH)))
            self.readings += 1
            await asyncio.sleep(WATCH_EVERY)


@contextlib.asynccontextmanager
async def watching(dsn: str) -> AsyncIterator[ConnectionWatch]:
    """Read ``pg_stat_activity`` for ``dsn``'s database while the block runs."""
    watch = ConnectionWatch()
    conn = await connect(dsn)
    task = asyncio.create_task(watch.watch(conn), name="bench-connection-watch")
    try:
        yield watch
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        await conn.close()


@dataclass
class Clocks:
    """The wall clock (the bot's stamps) read beside ``perf_counter`` (the fakes' stamps) every ``CLOCK_EVERY``
    s, so that each wall stamp is placed by the reading nearest to it.

    One offset read at the end placed the claims wrongly: this machine's wall clock was seen to run ahead
    of the monotonic one in steps of 2-3 ms, 130 ms in half a minute, and in one run every claim seemed to
    come about 2 s after its slot freed. A claim placed late is matched with a later call's end, or with
    none: the row measured the clock, not the claim.
    """

    walls: list[float] = field(default_factory=list)
    offsets: list[float] = field(default_factory=list)  # wall - perf_counter, at each reading

    def read(self) -> None:
        wall, perf = time.time(), time.perf_counter()
        self.walls.append(wall)
        self.offsets.append(wall - perf)

    def to_perf(self, wall: float) -> float:
        """``wall`` (``time.time``) on the ``perf_counter`` scale, by the reading nearest to it."""
        if not self.walls:
            self.read()
        i = bisect.bisect_left(self.walls, wall)
        near = min((j for j in (i - 1, i) if 0 <= j < len(self.walls)), key=lambda j: abs(self.walls[j] - wall))
        return wall - self.offsets[near]


@contextlib.asynccontextmanager
async def clocks() -> AsyncIterator[Clocks]:
    """Read both clocks every ``CLOCK_EVERY`` s while the block runs."""
    read = Clocks()

    async def keep_reading() -> None:
        while True:
            read.read()
            await asyncio.sleep(CLOCK_EVERY)

    task = asyncio.create_task(keep_reading(), name="bench-clocks")
    try:
        yield read
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        read.read()


async def connect(dsn: str) -> asyncpg.Connection:
    """A connection of the benchmark's own, named so that the count leaves it out."""
    return await asyncpg.connect(dsn, server_settings={"application_name": BENCH})


async def count_states(dsn: str, *states: JobState) -> int:
    conn = await connect(dsn)
    try:
        query = "SELECT count(*) FROM jobs WHERE status = ANY($1::text[])"
        return int(await conn.fetchval(query, [state.value for state in states]))
    finally:
        await conn.close()


async def wait_for_count(dsn: str, states: Sequence[JobState], at_least: int, timeout: float, what: str) -> None:
    """Poll the jobs table until ``at_least`` jobs are in ``states``."""
    deadline = time.perf_counter() + timeout
    while (found := await count_states(dsn, *states)) < at_least:
        if time.perf_counter() > deadline:
            raise TimeoutError(f"timed out after {timeout:.0f}s waiting for {what} ({found} of {at_least})")
        await asyncio.sleep(0.2)


async def build_queue(c: Cluster, s: Settings, image: bytes) -> list[InteractionHandle]:
    """``scale_jobs`` commands from ``scale_members`` members, round by round, ``SEND_AT_ONCE`` at a time."""
    members = [FIRST_MEMBER + m for m in range(s.scale_members)]
    for user in members:
        c.discord.add_user(user, f"member{user}")
    per_member = s.scale_jobs // s.scale_members
    orders = [(user, turn) for turn in range(per_member) for user in members]
    handles: list[InteractionHandle] = []
    for start in range(0, len(orders), SEND_AT_ONCE):
        chunk = orders[start : start + SEND_AT_ONCE]
        sent = await asyncio.gather(
            *(send_edit(c.discord, f"scale {user} {turn}: make it blue", [image], user_id=user) for user, turn in chunk)
        )
        await wait_acks(c.discord, sent, timeout=120)
        handles += sent
        if (start // SEND_AT_ONCE) % 20 == 19:
            note(f"scale: {len(handles)} of {len(orders)} commands acknowledged")
    return handles


async def caught_up(c: Cluster, timeout: float) -> float:
    """Wait until the gateway answers a ``/usage`` within ``SETTLED`` s; how long that took.

    Building the queue may leave the gateway behind on its events: each status edit it made
    comes back as a MESSAGE_UPDATE (as Discord sends them to a bot with the messages intent),
    read in order before any new command. The measures are of a queue that is there, not of one
    being built, so they start once a command is answered promptly again. (On the 2-vCPU machine
    it was at once: the first ``/usage`` after 10,000 jobs was answered within 200 ms.)
    """
    started = time.perf_counter()
    while True:
        handle = await c.discord.slash_command("usage", user_id=FIRST_MEMBER)
        (took,) = await wait_acks(c.discord, [handle], timeout=timeout)
        waited = time.perf_counter() - started
        if took < SETTLED:
            return waited
        if waited > timeout:
            raise TimeoutError(f"the gateway did not catch up within {timeout:.0f}s (a /usage took {took:.1f}s)")
        await asyncio.sleep(1.0)


@dataclass(frozen=True)
class Claimed:
    """A job's run as the database has it: who claimed it and when the claim was asked."""

    prompt: str
    holder: str
    started_at: float


async def claims(dsn: str) -> list[Claimed]:
    conn = await connect(dsn)
    try:
        rows = await conn.fetch("SELECT prompt, claimed_by, started_at FROM jobs WHERE started_at IS NOT NULL")
    finally:
        await conn.close()
    return [Claimed(r["prompt"], r["claimed_by"], float(r["started_at"])) for r in rows if r["claimed_by"]]


@dataclass(frozen=True)
class Gap:
    """A slot between two calls: from the API's answer to the claim being asked (``asked``, the worker's
    record of the answer), and from there to the next call reaching the API (``started``: the claim's
    transaction, the job's inputs read, its request sent)."""

    asked: float
    started: float

    @property
    def total(self) -> float:
        return self.asked + self.started


def slot_gaps(
    spans: dict[str, Span],
    claimed: Sequence[Claimed],
    window: tuple[float, float],
    to_perf: Callable[[float], float],
    *,
    any_worker: bool = False,
) -> list[Gap]:
    """For each call that reached the API within ``window`` (``perf_counter``), the time since the API sent the
    answer of the call whose slot it took: the latest call of the same worker to end before its claim was asked
    (``any_worker``: of any worker, which counts a slot one worker freed and another took from its end). The bot
    stamps wall time, the fakes ``perf_counter``: ``to_perf`` places the one on the other (``Clocks``)."""
    ends: dict[str, list[Span]] = {}
    for job in claimed:
        span = spans.get(job.prompt)
        if span is not None:
            ends.setdefault("" if any_worker else job.holder, []).append(span)
    gaps = []
    for job in claimed:
        span = spans.get(job.prompt)
        if span is None or not window[0] <= span.start <= window[1]:
            continue
        asked = to_perf(job.started_at)
        # A call ended before the claim if its answer was made before it. The fake stamps ``sent`` once the
        # write returned to it, which on a busy machine can be after the worker read the answer and asked
        # its claim: the answer left between ``end`` and the claim, so the gap counts from ``end`` (an upper
        # bound), instead of passing that call over for one that ended a whole call earlier.
        freed = [end.sent if end.sent <= asked else end.end
                 for end in ends.get("" if any_worker else job.holder, []) if end.end <= asked]  # fmt: skip
        if freed:
            gaps.append(Gap(asked - max(freed), span.start - asked))
    return gaps


@contextlib.contextmanager
def heap_set_aside() -> Iterator[None]:
    """This process's objects so far out of the garbage collector's way while the block runs.

    The fakes share this process with the 10,000 interactions and requests that building the queue recorded.
    A full collection of them stopped it for 0.5-0.8 s, the fakes with it (seen with ``gc.callbacks``): calls
    and acknowledgements stamped late by the stand-ins for Discord and the API, which never pause for the bot.
    """
    gc.collect()
    gc.freeze()
    try:
        yield
    finally:
        gc.unfreeze()


async def measure_scale(s: Settings, report: Report) -> None:
    """The three rows: claims and admission under a full queue, and the connections of it all."""
    n, members, workers, slots = s.scale_jobs, s.scale_members, s.scale_workers, s.scale_slots
    name = f"PostgreSQL at scale, {n:,} queued from {members:,} members, a gateway and {workers} workers"
    image = make_png(64, 48)
    async with fresh_database() as database, watching(database) as watch, clocks() as clock, cluster(
        s, latency=s.scale_latency, output=image, upload_limit=s.upload_limit, workers=workers,
        database=database, start_workers=False, MAX_CONCURRENT_JOBS=str(slots), WORKER_SLOTS=str(-(-slots // workers)),
    ) as c:  # fmt: skip
        started = time.perf_counter()
        await build_queue(c, s, image)
        await wait_for_count(database, [JobState.QUEUED], n, timeout=120 + n * 0.05, what="the queue")
        built = time.perf_counter() - started
        settled = await caught_up(c, timeout=300)
        note(f"scale: {n} jobs queued in {built:.1f} s, the gateway caught up {settled:.1f} s later; "
             f"starting {workers} workers")  # fmt: skip
        with heap_set_aside():
            await c.start_workers()
            await wait_for_count(database, [JobState.RUNNING], slots, timeout=60, what="every slot busy")
            window = (time.perf_counter(), time.perf_counter() + s.scale_window)
            await asyncio.sleep(s.scale_window)
            queued = await count_states(database, JobState.QUEUED)

            handles = await burst(c.discord, image, s.ack_jobs, first_user=FIRST_MEMBER + members, tag="scale-ack")
            acks = await wait_acks(c.discord, handles, timeout=60)

            # Every call that started in the window must have ended: its span is needed.
            await asyncio.sleep(max(0.0, window[1] + s.scale_latency * 1.5 - time.perf_counter()))
            taken = await claims(database)
            found = slot_gaps(c.api.spans, taken, window, clock.to_perf)
            # The same gaps counted from the latest end of any worker: the smaller for a claim that took a slot
            # another worker freed (what the row counts from that worker's own last end).
            any_worker = [gap.total for gap in slot_gaps(c.api.spans, taken, window, clock.to_perf, any_worker=True)]
    gaps = [gap.total for gap in found]
    report.details["scale"] = {
        "queue_built_seconds": built,
        "gateway_caught_up_seconds": settled,
        "queued_after_window": queued,
        "slot_gaps": gaps,
        "slot_gaps_until_claim_asked": [gap.asked for gap in found],
        "slot_gaps_from_claim_asked_to_call": [gap.started for gap in found],
        "slot_gaps_from_any_worker": any_worker,
        "ack_seconds": acks,
        "peak_connections": watch.peak,
        "connection_readings": watch.readings,
    }
    note(f"scale: queue built in {built:.1f} s, {queued} still queued after the claims' window, "
         f"{len(gaps)} claims timed, peak {watch.peak} connections over {watch.readings} readings")  # fmt: skip
    if not gaps:
        raise RuntimeError("no claim was timed (no call reached the API within the window)")
    parts = {
        "answer to claim asked": [g.asked for g in found],
        "claim asked to call": [g.started for g in found],
        "from the latest end of any worker": any_worker,
    }
    note("scale: slot gaps, " + "; ".join(f"{what} p50 {ms(percentile(v, 50))} p99 {ms(percentile(v, 99))}"
                                          for what, v in parts.items()))  # fmt: skip
    p99 = percentile(gaps, 99)
    report.rows.append(
        Row(
            f"{name}: from a slot freeing to the next job's call, {len(gaps)} claims, "
            f"{slots} slots of {s.scale_latency:g} s: p99 (p50 {ms(percentile(gaps, 50))}, max {ms(max(gaps))})",
            ms(p99), f"p99 < {CLAIM_BOUND * 1000:.0f} ms", p99 / CLAIM_BOUND, p99 < CLAIM_BOUND,
        )
    )  # fmt: skip
    p99 = percentile(acks, 99)
    report.rows.append(
        Row(
            f"{name}: admission (ack), {len(acks)} /edit at once: p99 (p50 {ms(percentile(acks, 50))})",
            ms(p99), f"p99 < {ADMISSION_BOUND * 1000:.0f} ms", p99 / ADMISSION_BOUND, p99 < ADMISSION_BOUND,
        )
    )  # fmt: skip
    report.rows.append(
        Row(
            f"{name}: most connections at once (pg_stat_activity, every {WATCH_EVERY * 1000:.0f} ms, "
            f"from the gateway's start to the last process's stop)",
            str(watch.peak), f"≤ {CONNECTION_BUDGET}", watch.peak / CONNECTION_BUDGET,
            watch.peak <= CONNECTION_BUDGET,
        )
    )  # fmt: skip
