"""What every measure shares: the settings of a run, its rows, and the helpers that drive the bot.

``bench.run`` (the single-process measures and the entry point) and ``bench.postgres`` (the
PostgreSQL measures) both import this module and nothing of each other, so imports flow one way.
"""

from __future__ import annotations

import asyncio
import math
import sys
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil

from bench.fakes import TimedDiscord, TimedImageAPI
from bench.images import sized_png
from tests.fake_discord import MIB, FakeDiscord, InteractionHandle
from tests.harness import BotProcess, bot_environment, send_edit

MB = 1_000_000
POLL = 0.02


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
class Code:
    """The bot a single-process measure runs: this checkout, or an older one (``--baseline``).

    ``pythonpath`` replaces the harness's (this checkout); ``label`` names the code in its rows.
    """

    label: str = ""
    pythonpath: str | None = None


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
    # PostgreSQL at scale: a queue of ``scale_jobs`` from ``scale_members`` over a gateway and
    # ``scale_workers`` workers sharing ``scale_slots`` API calls of ``scale_latency`` s each; claims are
    # watched for ``scale_window`` s once every slot is busy.
    scale_jobs: int = 10_000
    scale_members: int = 1_000
    scale_workers: int = 4
    scale_slots: int = 16
    scale_latency: float = 2.0
    scale_window: float = 30.0
    # The store alone: ``store_jobs`` admissions at once, ``store_repeats`` times per code and database.
    store_jobs: int = 400
    store_repeats: int = 5
    profile_dir: Path | None = None
    # Extra environment for every bot process (``--bot-env``), e.g. MALLOC_ARENA_MAX=2.
    bot_env: Mapping[str, str] = field(default_factory=dict)
    # The code the single-process ack, throughput and store measures run: this checkout, and the baseline if asked.
    codes: tuple[Code, ...] = (Code(),)


THIS_CODE = Code()


def make_settings(
    quick: bool,
    api_latency: float | None,
    profile_dir: Path | None = None,
    bot_env: Mapping[str, str] | None = None,
    codes: tuple[Code, ...] = (THIS_CODE,),
) -> Settings:
    """Full-size settings, or tiny ones that finish in seconds."""
    common: dict[str, Any] = {"profile_dir": profile_dir, "bot_env": dict(bot_env or {}), "codes": codes}
    if not quick:
        return Settings(
            quick=False,
            api_latency=1.0 if api_latency is None else api_latency,
            source=Image("1 MB in", 1536, 1024, 1 * MB),
            medium=Image("3 MB out", 2048, 1152, 3 * MB),
            large=Image("12 MB out (re-encode)", 3840, 2160, 12 * MB),
            upload_limit=10 * MIB,
            **common,
        )
    return Settings(
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
        scale_jobs=200,
        scale_members=20,
        scale_slots=4,
        scale_latency=0.5,
        scale_window=3.0,
        store_jobs=20,
        store_repeats=1,
        **common,
    )


@dataclass
class Row:
    """One line of the table; ``ratio`` is the quantity the target bounds (p99 ÷ its bound, bot ÷ floor,
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


# Driving the bot -------------------------------------------------------------------------------


def bot_env(
    discord: FakeDiscord, api: TimedImageAPI, workdir: Path, extra: Mapping[str, str], code: Code = THIS_CODE
) -> dict[str, str]:
    """The bot's environment, as the tests build it, plus benchmark settings (and another checkout's path)."""
    env = bot_environment(
        discord.api_base, api.base, workdir / "data", USER_DAILY_LIMIT="0", USER_MAX_ACTIVE="1000", **extra
    )
    if code.pythonpath is not None:
        env["PYTHONPATH"] = code.pythonpath
    return env


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


async def wait_acks(discord: TimedDiscord, handles: Sequence[InteractionHandle], timeout: float) -> list[float]:
    """Wait for every command's acknowledgement; each one's latency, INTERACTION_CREATE sent to callback received."""
    await wait_until(lambda: all(h.token in discord.callbacks for h in handles), timeout, f"{len(handles)} acks")
    return [discord.received_at[discord.callbacks[h.token]] - discord.dispatched_at[h.token] for h in handles]


async def wait_results(discord: TimedDiscord, handles: Sequence[InteractionHandle], timeout: float) -> None:
    """Wait for every job's result upload, or fail with the bot's last words."""
    await wait_until(lambda: all(h.token in discord.results for h in handles), timeout, f"{len(handles)} results")


def prompt_of(handle: InteractionHandle) -> str:
    return str(handle.payload["data"]["options"][0]["value"])


# Figures ---------------------------------------------------------------------------------------


def percentile(values: Sequence[float], p: float) -> float:
    """Nearest-rank percentile."""
    ordered = sorted(values)
    return ordered[max(0, math.ceil(p / 100 * len(ordered)) - 1)]


def ms(seconds: float) -> str:
    return f"{seconds * 1000:.1f} ms"


def mb(count: float) -> str:
    return f"{count / MB:.1f} MB"


def note(text: str) -> None:
    """A progress line on stderr (the table alone goes to stdout)."""
    print(f"# {text}", file=sys.stderr, flush=True)


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
