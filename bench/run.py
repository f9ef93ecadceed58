"""Benchmark the real bot against the fakes from ``tests/`` and print a Markdown table.

    python -m bench.run [--api-latency S] [--quick] [--only ack|overhead|throughput|memory] [--json PATH]

Each measure starts its own fake Discord, fake image API and ``python -m bot`` process, so settings
such as ``MAX_CONCURRENT_JOBS`` do not leak between them. Times are ``time.perf_counter`` stamps taken
inside the fakes: when INTERACTION_CREATE is sent, when a request's body has been fully received, and
when the image API got and answered a call. Every wait is bounded; the bot is stopped (or killed) on exit.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import math
import os
import signal
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import psutil

from bench.fakes import TimedDiscord, TimedImageAPI
from bench.images import sized_png
from bench.postgres import measure_postgres
from tests.fake_discord import MIB, FakeDiscord, InteractionHandle
from tests.harness import API_KEY, BOT_TOKEN, ROOT, BotProcess, bot_environment, send_edit

MB = 1_000_000
POLL = 0.02
MEASURES = ("ack", "overhead", "throughput", "memory", "postgres")
EXTRA_BOT_ENV: dict[str, str] = {}  # from --bot-env, for experiments (e.g. MALLOC_ARENA_MAX=2)


@dataclass(frozen=True)
class Image:
    """A benchmark image: its name in the table and how to make it."""

    label: str
    width: int
    height: int
    target: int

    @property
    def data(self) -> bytes:
        return sized_png(self.width, self.height, self.target)


@dataclass(frozen=True)
class Settings:
    """Everything a run depends on; ``quick`` shrinks sizes and counts for the smoke test."""

    quick: bool
    api_latency: float
    source: Image
    medium: Image
    large: Image
    upload_limit: int
    ack_jobs: int = 50
    overhead_runs: int = 5
    throughput_jobs: int = 200
    throughput_concurrency: int = 8
    throughput_latency: float = 1.0
    memory_jobs: int = 16
    memory_latency: float = 2.0
    memory_image: Image = field(default_factory=lambda: Image("3840×2160 PNG", 3840, 2160, 12 * MB))
    claim_jobs: int = 30
    profile_dir: Path | None = None


def make_settings(quick: bool, api_latency: float | None, profile_dir: Path | None = None) -> Settings:
    """Full-size settings, or tiny ones that finish in seconds."""
    if not quick:
        return Settings(
            profile_dir=profile_dir,
            quick=False,
            api_latency=1.0 if api_latency is None else api_latency,
            source=Image("1 MB in", 1536, 1024, 1 * MB),
            medium=Image("3 MB out", 2048, 1152, 3 * MB),
            large=Image("12 MB out (re-encode)", 3840, 2160, 12 * MB),
            upload_limit=10 * MIB,
        )
    return Settings(
        profile_dir=profile_dir,
        quick=True,
        api_latency=0.05 if api_latency is None else api_latency,
        source=Image("20 kB in", 160, 120, 20_000),
        medium=Image("60 kB out", 256, 144, 60_000),
        large=Image("300 kB out (re-encode)", 640, 360, 300_000),
        upload_limit=200_000,
        ack_jobs=8,
        overhead_runs=2,
        throughput_jobs=6,
        throughput_concurrency=2,
        throughput_latency=0.2,
        memory_jobs=4,
        memory_latency=0.5,
        claim_jobs=3,
        memory_image=Image("384×216 PNG", 384, 216, 100_000),
    )


@dataclass
class Row:
    """One line of the table; ``ratio`` is the quantity the target bounds (p99 ÷ 100 ms, bot ÷ floor,
    total ÷ ideal, peak ÷ budget)."""

    measure: str
    value: str
    target: str = ""
    ratio: float | None = None
    passed: bool | None = None


@dataclass
class Report:
    """What a run produced: the table rows and the raw numbers behind them."""

    rows: list[Row] = field(default_factory=list)
    details: dict[str, Any] = field(default_factory=dict)


# Harness -----------------------------------------------------------------------------------


@dataclass
class Stack:
    """The fakes and the bot of one measure."""

    discord: TimedDiscord
    api: TimedImageAPI
    bot: BotProcess
    workdir: Path


def bot_env(discord: FakeDiscord, api: TimedImageAPI, workdir: Path, extra: dict[str, str]) -> dict[str, str]:
    """The bot's environment, as the tests build it, plus benchmark settings."""
    return bot_environment(
        discord.api_base, api.base, workdir / "data", USER_DAILY_LIMIT="0", USER_MAX_ACTIVE="1000", **extra
    )


@contextlib.asynccontextmanager
async def profiled(pid: int, profile_dir: Path | None) -> AsyncIterator[None]:
    """Record the bot with py-spy (collapsed stacks, per thread) while the block runs, if asked."""
    if profile_dir is None:
        yield
        return
    out = profile_dir / f"bot-{pid}.txt"
    spy = await asyncio.create_subprocess_exec(
        "py-spy", "record", "--pid", str(pid), "--rate", "250", "--threads", "--format", "raw", "-o", str(out),
        stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL,
    )  # fmt: skip
    try:
        yield
    finally:
        with contextlib.suppress(ProcessLookupError):
            spy.send_signal(signal.SIGINT)
        try:
            async with asyncio.timeout(30):
                await spy.wait()
        except TimeoutError:
            spy.kill()
            await spy.wait()
        print(f"# profile: {out}", file=sys.stderr, flush=True)


@contextlib.asynccontextmanager
async def stack(
    *,
    latency: float,
    output: bytes,
    upload_limit: int,
    extra_env: dict[str, str] | None = None,
    profile_dir: Path | None = None,
) -> AsyncIterator[Stack]:
    """Start the fakes and a ready bot; stop (or kill) the bot and the fakes on the way out."""
    discord = TimedDiscord(token=BOT_TOKEN, attachment_size_limit=upload_limit)
    api = TimedImageAPI(api_key=API_KEY)
    api.latency, api.default_image = latency, output
    with tempfile.TemporaryDirectory(prefix="atelier-bench-") as tmp:
        workdir = Path(tmp)
        await discord.start()
        await api.start()
        bot = BotProcess(bot_env(discord, api, workdir, {**EXTRA_BOT_ENV, **(extra_env or {})}), workdir, discord)
        try:
            await bot.start(timeout=60)
            assert bot.proc is not None
            async with profiled(bot.proc.pid, profile_dir):
                yield Stack(discord, api, bot, workdir)
        finally:
            await stop_bot(bot)
            await api.stop()
            await discord.stop()


async def stop_bot(bot: BotProcess) -> None:
    """SIGTERM, then SIGKILL if it will not go; never raises."""
    try:
        await bot.stop(timeout=30)
    except (AssertionError, ProcessLookupError):
        pass
    finally:
        if bot.proc is not None and bot.proc.returncode is None:
            bot.proc.kill()
            await bot.proc.wait()


async def wait_until(done: Callable[[], bool], timeout: float, what: str) -> None:
    """Poll ``done`` every 20 ms; raise TimeoutError naming ``what`` after ``timeout`` seconds."""
    deadline = time.perf_counter() + timeout
    while not done():
        if time.perf_counter() > deadline:
            raise TimeoutError(f"timed out after {timeout:.0f}s waiting for {what}")
        await asyncio.sleep(POLL)


async def burst(
    discord: FakeDiscord, image: bytes, count: int, *, first_user: int = 10_000, tag: str = "job"
) -> list[InteractionHandle]:
    """``count`` /edit commands from ``count`` distinct members, sent as fast as the gateway takes them."""
    users = [first_user + n for n in range(count)]
    for user in users:
        discord.add_user(user, f"member{user}")
    return list(
        await asyncio.gather(
            *(send_edit(discord, f"{tag} {n}: make it blue", [image], user_id=u) for n, u in enumerate(users))
        )
    )


async def wait_results(discord: TimedDiscord, handles: Sequence[InteractionHandle], timeout: float) -> None:
    """Wait for every job's result upload, or fail with the bot's last words."""
    await wait_until(lambda: all(h.token in discord.results for h in handles), timeout, f"{len(handles)} results")


def prompt_of(handle: InteractionHandle) -> str:
    return str(handle.payload["data"]["options"][0]["value"])


def percentile(values: Sequence[float], p: float) -> float:
    """Nearest-rank percentile."""
    ordered = sorted(values)
    return ordered[max(0, math.ceil(p / 100 * len(ordered)) - 1)]


def ms(seconds: float) -> str:
    return f"{seconds * 1000:.1f} ms"


def mb(count: float) -> str:
    return f"{count / MB:.1f} MB"


# 1. Acknowledgement latency -----------------------------------------------------------------


async def measure_ack(s: Settings, report: Report) -> None:
    """``ack_jobs`` commands at once; latency from INTERACTION_CREATE sent to the callback received."""
    async with stack(
        latency=s.api_latency, output=s.medium.data, upload_limit=s.upload_limit, profile_dir=s.profile_dir
    ) as st:
        handles = await burst(st.discord, s.source.data, s.ack_jobs, tag="ack")
        await wait_until(lambda: all(h.token in st.discord.callbacks for h in handles), 30, "acks")
        acks = [
            st.discord.received_at[st.discord.callbacks[h.token]] - st.discord.dispatched_at[h.token] for h in handles
        ]
        await wait_results(st.discord, handles, timeout=60 + s.ack_jobs * s.api_latency)
    p50, p99, worst = percentile(acks, 50), percentile(acks, 99), max(acks)
    report.details["ack_seconds"] = acks
    report.rows.append(
        Row(
            f"Ack latency, {s.ack_jobs} /edit at once: p99 (p50 {ms(p50)}, max {ms(worst)})",
            ms(p99),
            "p99 < 100 ms",
            p99 / 0.1,
            p99 < 0.1,
        )
    )


# 2. Overhead per job, and the floor -----------------------------------------------------------


@dataclass(frozen=True)
class Timing:
    """One job: interaction sent to result received, and the API's share of it."""

    total: float
    api: float

    @property
    def overhead(self) -> float:
        return self.total - self.api


def timing(st: Stack, handle: InteractionHandle, index: int) -> Timing:
    total = st.discord.received_at[index] - st.discord.dispatched_at[handle.token]
    return Timing(total, st.api.spans[prompt_of(handle)].seconds)


async def bot_job(st: Stack, source: bytes, tag: str, timeout: float) -> Timing:
    """One /edit through the bot, alone."""
    (handle,) = await burst(st.discord, source, 1, first_user=20_000, tag=tag)
    await wait_results(st.discord, [handle], timeout)
    return timing(st, handle, st.discord.results[handle.token])


class Floor:
    """``python -m bench.floor`` as a subprocess fed one job per line."""

    def __init__(self, st: Stack) -> None:
        self.st = st
        self.proc: asyncio.subprocess.Process | None = None

    async def __aenter__(self) -> Floor:
        self.proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "bench.floor", cwd=ROOT, stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE, env={**os.environ, "PYTHONPATH": str(ROOT)},
        )  # fmt: skip
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self.proc is None:
            return
        if self.proc.stdin is not None:
            self.proc.stdin.close()
        try:
            async with asyncio.timeout(10):
                await self.proc.wait()
        except TimeoutError:
            self.proc.kill()
            await self.proc.wait()

    async def job(self, source: bytes, tag: str, timeout: float) -> Timing:
        """One edit's network work through the floor script, timed like the bot's."""
        assert self.proc is not None and self.proc.stdin is not None and self.proc.stdout is not None
        discord, api = self.st.discord, self.st.api
        handle = await send_edit(discord, f"{tag}: make it blue", [source], user_id=FakeDiscord.USER_ID)
        (attachment,) = handle.payload["data"]["resolved"]["attachments"].values()
        spec = {
            "id": handle.id,
            "callback_url": f"{discord.api_base}/interactions/{handle.id}/{handle.token}/callback",
            "attachment_url": attachment["url"],
            "api_url": f"{api.base}/images/edits",
            "api_key": API_KEY,
            "model": api.model,
            "prompt": prompt_of(handle),
            "webhook_url": f"{discord.api_base}/webhooks/{discord.APP_ID}/{handle.token}/messages/@original",
        }
        discord.dispatched_at[handle.token] = time.perf_counter()
        self.proc.stdin.write(json.dumps(spec).encode() + b"\n")
        await self.proc.stdin.drain()
        async with asyncio.timeout(timeout):
            line = (await self.proc.stdout.readline()).decode().strip()
        if not line.startswith("done"):
            raise RuntimeError(f"floor failed: {line or 'exited'}")
        # The fake may refuse an over-limit upload (413) only after receiving all of it: still timed.
        return timing(self.st, handle, discord.file_patches[handle.token])


async def measure_overhead(s: Settings, report: Report) -> None:
    """Sequential jobs per output size: the bot, then the floor on the same fakes; medians."""
    cases = [s.medium, s.large]
    timeout = 60 + s.api_latency * 2
    bot: dict[str, list[Timing]] = {c.label: [] for c in cases}
    floor: dict[str, list[Timing]] = {c.label: [] for c in cases}
    async with stack(
        latency=s.api_latency, output=s.medium.data, upload_limit=s.upload_limit, profile_dir=s.profile_dir
    ) as st:
        for case in cases:
            st.api.default_image = case.data
            await bot_job(st, s.source.data, f"warm-up {case.label}", timeout)
            for n in range(s.overhead_runs):
                bot[case.label].append(await bot_job(st, s.source.data, f"bot {case.label} {n}", timeout))
        await stop_bot(st.bot)  # the floor replaces it on the same fakes
        async with Floor(st) as script:
            for case in cases:
                st.api.default_image = case.data
                await script.job(s.source.data, f"floor warm-up {case.label}", timeout)
                for n in range(s.overhead_runs):
                    floor[case.label].append(await script.job(s.source.data, f"floor {case.label} {n}", timeout))
    for case in cases:
        add_overhead_rows(report, f"{s.source.label} / {case.label}", bot[case.label], floor[case.label],
                          gated=case is s.medium)  # fmt: skip


def add_overhead_rows(report: Report, name: str, bot: list[Timing], floor: list[Timing], gated: bool) -> None:
    """Median overhead of bot and floor, and their ratio (the 1.2 target applies to the 3 MB case)."""
    bot_overhead = statistics.median(t.overhead for t in bot)
    floor_overhead = statistics.median(t.overhead for t in floor)
    api = statistics.median(t.api for t in bot)
    ratio = bot_overhead / floor_overhead
    report.details[f"overhead {name}"] = {"bot": [asdict(t) for t in bot], "floor": [asdict(t) for t in floor]}
    report.rows.append(
        Row(
            f"Overhead per job, {name} (median of {len(bot)}, API {api:.2f} s excluded): bot / floor",
            f"{ms(bot_overhead)} / {ms(floor_overhead)}",
            "bot ÷ floor ≤ 1.2" if gated else "(no target)",
            ratio,
            ratio <= 1.2 if gated else None,
        )
    )


# 3. Throughput ---------------------------------------------------------------------------------


async def measure_throughput(s: Settings, report: Report) -> None:
    """``throughput_jobs`` jobs from distinct members at ``MAX_CONCURRENT_JOBS=throughput_concurrency``."""
    n, k, latency = s.throughput_jobs, s.throughput_concurrency, s.throughput_latency
    ideal = n / k * latency
    env = {"MAX_CONCURRENT_JOBS": str(k)}
    async with stack(
        latency=latency, output=s.medium.data, upload_limit=s.upload_limit, extra_env=env, profile_dir=s.profile_dir
    ) as st:
        handles = await burst(st.discord, s.source.data, n, tag="throughput")
        await wait_results(st.discord, handles, timeout=60 + 3 * ideal)
        first = min(st.discord.dispatched_at[h.token] for h in handles)
        last = max(st.discord.received_at[st.discord.results[h.token]] for h in handles)
        peak_api = st.api.max_in_flight
        starts = sorted(span.start for span in st.api.spans.values())
        ends = sorted(span.end for span in st.api.spans.values())
    total = last - first
    # Where the time beyond the ideal goes: until the slots are full, between a slot freeing and its
    # next call arriving, and from the last answer to the last result.
    gaps = [starts[i] - ends[i - k] for i in range(k, len(starts))]
    report.details["throughput"] = {
        "total": total,
        "ideal": ideal,
        "api_max_in_flight": peak_api,
        "startup": starts[k - 1] - first if len(starts) >= k else None,
        "mean_slot_gap": statistics.mean(gaps) if gaps else None,
        "tail": last - ends[-1],
    }
    print(f"# throughput: {report.details['throughput']}", file=sys.stderr, flush=True)
    report.rows.append(
        Row(
            f"Throughput, {n} jobs, {latency:g} s API, MAX_CONCURRENT_JOBS={k}: total (ideal {ideal:.2f} s; "
            f"most API calls at once {peak_api})",
            f"{total:.2f} s",
            "total ÷ ideal ≤ 1.05",
            total / ideal,
            total / ideal <= 1.05,
        )
    )


# 4. Memory -------------------------------------------------------------------------------------


class RssSampler:
    """Samples the RSS of a process and its children every 20 ms on a thread (the loop may be busy)."""

    def __init__(self, pid: int) -> None:
        self.process = psutil.Process(pid)
        self.peak = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def sample(self) -> int:
        try:
            procs = [self.process, *self.process.children(recursive=True)]
            return sum(p.memory_info().rss for p in procs)
        except psutil.Error:
            return 0

    def _run(self) -> None:
        while not self._stop.wait(POLL):
            self.peak = max(self.peak, self.sample())

    def __enter__(self) -> RssSampler:
        self.peak = self.sample()
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=5)


async def measure_memory(s: Settings, report: Report) -> None:
    """Peak bot RSS with ``memory_jobs`` big PNG results in flight, with and without re-encoding."""
    image = s.memory_image.data
    n = s.memory_jobs
    in_flight = n * len(image)
    budget = 100 * MB + 2 * in_flight
    variants = [("fits the upload limit", max(s.upload_limit, 2 * len(image))),
                ("over the upload limit (re-encode)", min(s.upload_limit, len(image) - 1))]  # fmt: skip
    for name, limit in variants:
        env = {"MAX_CONCURRENT_JOBS": str(n)}
        async with stack(
            latency=s.memory_latency, output=image, upload_limit=limit, extra_env=env, profile_dir=s.profile_dir
        ) as st:
            assert st.bot.proc is not None
            sampler = RssSampler(st.bot.proc.pid)
            baseline = sampler.sample()
            with sampler:
                handles = await burst(st.discord, s.source.data, n, tag="memory")
                await wait_results(st.discord, handles, timeout=120 + 4 * s.memory_latency)
            uploaded = sum(st.discord.upload_bytes[st.discord.results[h.token]] for h in handles)
        peak = sampler.peak
        report.details[f"memory {name}"] = {"baseline": baseline, "peak": peak, "in_flight": in_flight,
                                             "uploaded": uploaded}  # fmt: skip
        report.rows.append(
            Row(
                f"Peak RSS, {n} × {s.memory_image.label} in flight, {name} (baseline {mb(baseline)}, "
                f"outputs {n} × {mb(len(image))} = {mb(in_flight)}, uploaded {mb(uploaded)})",
                mb(peak),
                f"≤ 100 MB + 2 × outputs = {mb(budget)}",
                peak / budget,
                peak <= budget,
            )
        )


# Table and entry point ------------------------------------------------------------------------


def median_rows(reports: Sequence[Report]) -> list[Row]:
    """Each figure as the median of the runs: the row of the run whose ratio is the median one.

    Rows are matched by position (every run measures the same things in the same order); the
    chosen row keeps its own value and details, and says what the other runs gave.
    """
    rows: list[Row] = []
    for runs in zip(*(r.rows for r in reports), strict=False):
        ranked = sorted(runs, key=lambda r: (r.ratio is None, r.ratio or 0.0))
        middle = ranked[(len(ranked) - 1) // 2] if len(runs) % 2 else ranked[len(ranked) // 2 - 1]
        if len(runs) > 1 and all(r.ratio is not None for r in runs):
            ratios = ", ".join(f"{r.ratio:.2f}" for r in runs)
            middle = Row(f"{middle.measure} [median of {len(runs)} runs; ratios {ratios}]", middle.value,
                         middle.target, middle.ratio, middle.passed)  # fmt: skip
        rows.append(middle)
    return rows


def table(rows: Sequence[Row]) -> str:
    """The rows as a Markdown table."""
    lines = ["| measure | value | target | ratio | pass/miss |", "|---|---|---|---|---|"]
    for r in rows:
        ratio = "" if r.ratio is None else f"{r.ratio:.2f}"
        verdict = "" if r.passed is None else ("pass" if r.passed else "**miss**")
        lines.append(f"| {r.measure} | {r.value} | {r.target} | {ratio} | {verdict} |")
    return "\n".join(lines)


RUNNERS: dict[str, Callable[[Settings, Report], Awaitable[None]]] = {
    "ack": measure_ack,
    "overhead": measure_overhead,
    "throughput": measure_throughput,
    "memory": measure_memory,
    "postgres": measure_postgres,
}


async def run(settings: Settings, only: Sequence[str]) -> Report:
    """Run the chosen measures in order; one failing measure is reported, not fatal to the rest."""
    report = Report()
    for name in only:
        started = time.perf_counter()
        try:
            await RUNNERS[name](settings, report)
        except (TimeoutError, AssertionError, RuntimeError, KeyError) as exc:
            report.rows.append(Row(f"{name}: did not complete", f"{type(exc).__name__}: {exc}"[:300], "", None, False))
        report.details[f"{name}_wall_seconds"] = time.perf_counter() - started
        print(f"# {name} done in {time.perf_counter() - started:.1f} s", file=sys.stderr, flush=True)
    return report


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.run", description=__doc__.split("\n")[0])
    parser.add_argument("--api-latency", type=float, default=None,
                        help="seconds the fake API takes per call in the ack and overhead measures "
                             "(default 1.0; 0.05 with --quick)")  # fmt: skip
    parser.add_argument("--quick", action="store_true", help="tiny sizes and a few jobs (smoke test)")
    parser.add_argument("--only", choices=MEASURES, action="append", help="run only this measure (repeatable)")
    parser.add_argument("--json", type=Path, default=None, help="also write the results as JSON here")
    parser.add_argument("--runs", type=int, default=1,
                        help="repeat the run N times; print each figure's median (publish 3)")  # fmt: skip
    parser.add_argument("--bot-env", action="append", default=[], metavar="KEY=VALUE",
                        help="extra environment for the bot process (repeatable)")  # fmt: skip
    parser.add_argument("--profile", type=Path, default=None, metavar="DIR",
                        help="record the bot with py-spy (collapsed stacks) into DIR")  # fmt: skip
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> Report:
    """Parse arguments, run, print the table (and write JSON if asked)."""
    args = parse_args(argv)
    settings = make_settings(args.quick, args.api_latency, args.profile)
    if args.profile is not None:
        args.profile.mkdir(parents=True, exist_ok=True)
    EXTRA_BOT_ENV.update(item.split("=", 1) for item in args.bot_env)
    reports = []
    for number in range(1, args.runs + 1):
        if args.runs > 1:
            print(f"# run {number} of {args.runs}", file=sys.stderr, flush=True)
        reports.append(asyncio.run(run(settings, args.only or MEASURES)))
    report = Report(rows=median_rows(reports), details={"runs": [r.details for r in reports]})
    print(table(report.rows), flush=True)
    if args.json is not None:
        data = {
            "settings": asdict(settings),
            "rows": [asdict(r) for r in report.rows],
            "runs": [[asdict(row) for row in r.rows] for r in reports],
            "details": report.details,
        }
        args.json.write_text(json.dumps(data, indent=2, default=str))
    return report


if __name__ == "__main__":
    main()
