"""Benchmark the real bot against the fakes from ``tests/`` and print a Markdown table.

    python -m bench.run [--api-latency S] [--quick] [--only ack|overhead|throughput|memory|postgres|scale|store]
                        [--runs N] [--baseline PATH] [--json PATH]

Each measure starts its own fake Discord, fake image API and ``python -m bot`` process, so settings
such as ``MAX_CONCURRENT_JOBS`` do not leak between them. Times are ``time.perf_counter`` stamps taken
inside the fakes: when INTERACTION_CREATE is sent, when a request's body has been fully received, and
when the image API got and answered a call. Every wait is bounded; the bot is stopped (or killed) on exit.
With ``--baseline PATH`` the ack and throughput measures also run the bot of an older checkout
(``bench.baseline``), right after this code's, and label each row with the code it ran; the store
measure runs the older code's store, alternating with this one's, when it has the one engine's.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import signal
import statistics
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import psutil

from bench import baseline
from bench.common import (
    MB,
    THIS_CODE,
    Code,
    Report,
    Row,
    RssSampler,
    Settings,
    bot_env,
    burst,
    make_settings,
    mb,
    ms,
    note,
    percentile,
    prompt_of,
    stop_bot,
    wait_acks,
    wait_results,
)
from bench.fakes import TimedDiscord, TimedImageAPI
from bench.postgres import measure_postgres
from bench.scale import measure_scale
from bench.store import measure_store
from tests.fake_discord import FakeDiscord, InteractionHandle
from tests.harness import API_KEY, BOT_TOKEN, ROOT, BotProcess, send_edit

MEASURES = ("ack", "overhead", "throughput", "memory", "postgres", "scale", "store")
ACK_BOUND = 0.05  # the single process's ack p99 target, in seconds


# Harness -----------------------------------------------------------------------------------


@dataclass
class Stack:
    """The fakes and the bot of one measure."""

    discord: TimedDiscord
    api: TimedImageAPI
    bot: BotProcess
    workdir: Path


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
    s: Settings,
    *,
    latency: float,
    output: bytes,
    upload_limit: int,
    extra_env: dict[str, str] | None = None,
    code: Code = THIS_CODE,
) -> AsyncIterator[Stack]:
    """Start the fakes and a ready bot (of ``code``); stop (or kill) the bot and the fakes on the way out."""
    discord = TimedDiscord(token=BOT_TOKEN, attachment_size_limit=upload_limit)
    api = TimedImageAPI(api_key=API_KEY)
    api.latency, api.default_image = latency, output
    with tempfile.TemporaryDirectory(prefix="atelier-bench-") as tmp:
        workdir = Path(tmp)
        await discord.start()
        await api.start()
        env = bot_env(discord, api, workdir, {**s.bot_env, **(extra_env or {})}, code)
        bot = BotProcess(env, workdir, discord)
        try:
            await bot.start(timeout=60)
            assert bot.proc is not None
            async with profiled(bot.proc.pid, s.profile_dir):
                yield Stack(discord, api, bot, workdir)
        finally:
            await stop_bot(bot)
            await api.stop()
            await discord.stop()


def tagged(measure: str, code: Code) -> str:
    """A row's name with the code it ran, when a run compares two (``--baseline``)."""
    return f"{measure} [{code.label}]" if code.label else measure


# 1. Acknowledgement latency -----------------------------------------------------------------


async def measure_ack(s: Settings, report: Report) -> None:
    """``ack_jobs`` commands at once; latency from INTERACTION_CREATE sent to the callback received.
    Once per code (this checkout, and the baseline if given), one after the other."""
    for code in s.codes:
        async with stack(s, latency=s.api_latency, output=s.medium.data, upload_limit=s.upload_limit, code=code) as st:
            handles = await burst(st.discord, s.source.data, s.ack_jobs, tag="ack")
            acks = await wait_acks(st.discord, handles, timeout=30)
            await wait_results(st.discord, handles, timeout=60 + s.ack_jobs * s.api_latency)
        p50, p99, worst = percentile(acks, 50), percentile(acks, 99), max(acks)
        report.details[tagged("ack_seconds", code)] = acks
        report.rows.append(
            Row(
                f"{tagged('Ack latency', code)}, {s.ack_jobs} /edit at once: p99 (p50 {ms(p50)}, max {ms(worst)})",
                ms(p99),
                f"p99 < {ACK_BOUND * 1000:.0f} ms",
                p99 / ACK_BOUND,
                p99 < ACK_BOUND,
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
    async with stack(s, latency=s.api_latency, output=s.medium.data, upload_limit=s.upload_limit) as st:
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
    """``throughput_jobs`` jobs from distinct members at ``MAX_CONCURRENT_JOBS=throughput_concurrency``.
    Once per code (this checkout, and the baseline if given), one after the other."""
    for code in s.codes:
        await throughput_of(s, report, code)


async def throughput_of(s: Settings, report: Report, code: Code) -> None:
    n, k, latency = s.throughput_jobs, s.throughput_concurrency, s.throughput_latency
    ideal = n / k * latency
    env = {"MAX_CONCURRENT_JOBS": str(k)}
    async with stack(s, latency=latency, output=s.medium.data, upload_limit=s.upload_limit, extra_env=env,
                     code=code) as st:  # fmt: skip
        handles = await burst(st.discord, s.source.data, n, tag="throughput")
        await wait_results(st.discord, handles, timeout=60 + 3 * ideal)
        first = min(st.discord.dispatched_at[h.token] for h in handles)
        last = max(st.discord.received_at[st.discord.results[h.token]] for h in handles)
        peak_api = st.api.max_in_flight
        assert st.bot.proc is not None
        # The bot's own CPU time: on a shared machine it says what the bot costs whatever else runs.
        times = psutil.Process(st.bot.proc.pid).cpu_times()
        cpu = times.user + times.system
        starts = sorted(span.start for span in st.api.spans.values())
        ends = sorted(span.end for span in st.api.spans.values())
    total = last - first
    # Where the time beyond the ideal goes: until the slots are full, between a slot freeing and its
    # next call arriving, and from the last answer to the last result.
    gaps = [starts[i] - ends[i - k] for i in range(k, len(starts))]
    details = {
        "total": total,
        "ideal": ideal,
        "api_max_in_flight": peak_api,
        "startup": starts[k - 1] - first if len(starts) >= k else None,
        "mean_slot_gap": statistics.mean(gaps) if gaps else None,
        "tail": last - ends[-1],
        "bot_cpu_seconds": cpu,
    }
    report.details[tagged("throughput", code)] = details
    note(f"{tagged('throughput', code)}: {details}")
    report.rows.append(
        Row(
            f"{tagged('Throughput', code)}, {n} jobs, {latency:g} s API, MAX_CONCURRENT_JOBS={k}: total "
            f"(ideal {ideal:.2f} s; most API calls at once {peak_api}; the bot's CPU {cpu:.1f} s)",
            f"{total:.2f} s",
            "total ÷ ideal ≤ 1.05",
            total / ideal,
            total / ideal <= 1.05,
        )
    )


# 4. Memory -------------------------------------------------------------------------------------


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
        async with stack(s, latency=s.memory_latency, output=image, upload_limit=limit, extra_env=env) as st:
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
    "scale": measure_scale,
    "store": measure_store,
}


async def run(settings: Settings, only: Sequence[str]) -> Report:
    """Run the chosen measures in order; one failing measure is reported, not fatal to the rest."""
    report = Report()
    for name in only:
        started = time.perf_counter()
        try:
            await RUNNERS[name](settings, report)
        except Exception as exc:  # a measure that fails is a row that says so; the others still run
            report.rows.append(Row(f"{name}: did not complete", f"{type(exc).__name__}: {exc}"[:300], "", None, False))
        report.details[f"{name}_wall_seconds"] = time.perf_counter() - started
        note(f"{name} done in {time.perf_counter() - started:.1f} s")
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
    parser.add_argument("--baseline", type=Path, default=None, metavar="PATH",
                        help="a checkout of older code (e.g. git worktree add /tmp/atelier-old 60c95fa): the ack, "
                             "throughput and store measures run it too, in the same run")  # fmt: skip
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> Report:
    """Parse arguments, run, print the table (and write JSON if asked)."""
    args = parse_args(argv)
    if args.profile is not None:
        args.profile.mkdir(parents=True, exist_ok=True)
    bot_env = dict(item.split("=", 1) for item in args.bot_env)
    with tempfile.TemporaryDirectory(prefix="atelier-bench-baseline-") as scratch:
        codes: tuple[Code, ...] = (THIS_CODE,)
        if args.baseline is not None:
            codes = (Code(label=f"this code, {baseline.label(ROOT)}"), baseline.prepare(args.baseline, Path(scratch)))
        settings = make_settings(args.quick, args.api_latency, args.profile, bot_env, codes)
        reports = []
        for number in range(1, args.runs + 1):
            if args.runs > 1:
                note(f"run {number} of {args.runs}")
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
