"""Input retention: how long an ended job's inputs stay for Reroll, within the window and the disk cap."""

from __future__ import annotations

import asyncio
import io
import os
import time
from collections.abc import Sequence
from pathlib import Path

from bot.inputs import ENDED_FILE, InputStore
from bot.retention import MARK_BYTES, Retention
from bot.sqlite_store import SQLiteJobStore
from PIL import Image

from bot.config import Config
from bot.core.job import Destination, Job, JobKind, JobRequest
from bot.core.states import JobState
from bot.engine import JobEngine
from bot.errors import AtelierError
from bot.media.editor import Editor
from bot.media.images import OutputImage, PreparedImage
from bot.ports import Posted
from bot.provider.client import APIAnswer, Attempt, ImageEditRequest, ImageEditResult
from bot.servers.limits import Requester
from tests.fake_image_api import make_png

PNG = make_png(8, 8)


def noise_png(side: int) -> bytes:
    buffer = io.BytesIO()
    Image.frombytes("RGB", (side, side), os.urandom(side * side * 3)).save(buffer, format="PNG")
    return buffer.getvalue()


def kept_on_disk(root: Path) -> int:
    """Bytes of the job folders under ``root`` marked as kept after their job ended."""
    total = 0
    for folder in list(root.iterdir()):
        try:
            if (folder / ENDED_FILE).exists():
                total += sum(f.stat().st_size for f in folder.iterdir())
        except FileNotFoundError:  # deleted while we looked: it no longer counts
            continue
    return total


def folder_names(root: Path) -> list[str]:
    return sorted(p.name for p in root.iterdir())


def job(job_id: str, state: JobState) -> Job:
    request = JobRequest(JobKind.EDIT, 1, 10, 100, "x", None, 1)
    return Job(job_id, request, state, time.time(), "2026-01-01", 0.03)


async def saved(inputs: InputStore, job_id: str, data: bytes = PNG) -> None:
    await inputs.save(job_id, [PreparedImage(data, "image/png", 8, 8)])


async def test_a_result_is_kept_for_the_window_then_swept(tmp_path: Path) -> None:
    inputs = InputStore(tmp_path)
    now = [1000.0]
    retention = Retention(inputs, hours=24, cap_bytes=10**6, clock=lambda: now[0])
    await saved(inputs, "a1")
    await retention.job_ended(job("a1", JobState.SUCCEEDED))
    assert retention.is_kept("a1") and await inputs.load("a1") is not None
    now[0] += 24 * 3600 - 1
    assert await retention.sweep() == 0 and retention.is_kept("a1")
    now[0] += 2
    assert not retention.is_kept("a1")  # past the window even before the sweep comes
    assert await retention.sweep() == 1
    assert not (tmp_path / "a1").exists() and retention.kept_bytes == 0


async def test_failed_and_cancelled_jobs_lose_their_inputs_at_once(tmp_path: Path) -> None:
    inputs = InputStore(tmp_path)
    retention = Retention(inputs, hours=24, cap_bytes=10**6)
    for job_id, state in (("f1", JobState.FAILED), ("c1", JobState.CANCELLED)):
        await saved(inputs, job_id)
        await retention.job_ended(job(job_id, state))
        assert not (tmp_path / job_id).exists() and not retention.is_kept(job_id)


async def test_zero_hours_keeps_nothing(tmp_path: Path) -> None:
    inputs = InputStore(tmp_path)
    retention = Retention(inputs, hours=0, cap_bytes=10**6)
    await saved(inputs, "s1")
    await retention.job_ended(job("s1", JobState.SUCCEEDED))
    assert not (tmp_path / "s1").exists()


async def test_a_restart_rebuilds_the_index_and_drops_what_ended_unmarked(tmp_path: Path) -> None:
    inputs = InputStore(tmp_path)
    now = [5000.0]
    first = Retention(inputs, hours=1, cap_bytes=10**6, clock=lambda: now[0])
    await saved(inputs, "old1")
    await first.job_ended(job("old1", JobState.SUCCEEDED))
    now[0] += 1800
    await saved(inputs, "new1")
    await first.job_ended(job("new1", JobState.SUCCEEDED))
    await saved(inputs, "run1")  # still unfinished: never touched
    await saved(inputs, "lost1")  # ended in a crash before it was marked: not known to be a result
    now[0] += 1800 + 1  # old1 is now past its hour, new1 is not
    second = Retention(inputs, hours=1, cap_bytes=10**6, clock=lambda: now[0])
    await second.load({"run1"})
    assert second.kept() == ["new1"]
    assert folder_names(tmp_path) == ["new1", "run1"]


async def test_the_oldest_go_first_when_the_cap_is_reached(tmp_path: Path) -> None:
    inputs = InputStore(tmp_path)
    await saved(inputs, "probe")
    folder = await inputs.size("probe")
    await inputs.delete("probe")
    assert folder is not None
    retention = Retention(inputs, hours=24, cap_bytes=3 * (folder + MARK_BYTES))
    for n in range(6):
        await saved(inputs, f"j{n}")
        await retention.job_ended(job(f"j{n}", JobState.SUCCEEDED))
    assert retention.kept() == ["j3", "j4", "j5"]
    assert kept_on_disk(tmp_path) == retention.kept_bytes <= retention.cap_bytes


class InstantAPI:
    async def call(self, request: ImageEditRequest, attempts: list[Attempt] | None = None) -> APIAnswer:
        return APIAnswer(body=b"{}", api_seconds=0.0, attempts=1, request_id=None)

    async def decode(self, answer: APIAnswer) -> ImageEditResult:
        return ImageEditResult(OutputImage(PNG, "image/png", 8, 8), None, 0.0, 1)


class Watcher:
    """Notifier and publisher: after every result, the kept inputs on disk are measured against the cap."""

    def __init__(self, root: Path, cap: int) -> None:
        self.root = root
        self.cap = cap
        self.ended: list[str] = []
        self.failures: list[str] = []
        self.peak = 0  # the most kept inputs on disk seen after any job ended
        self._moved = asyncio.Event()

    async def wait_for(self, ended: int) -> None:
        async with asyncio.timeout(30):
            while len(self.ended) < ended:
                self._moved.clear()
                await self._moved.wait()

    async def job_moved(self, job: Job, before: JobState, error: AtelierError | None) -> None:
        # The engine swallows a notifier's exceptions, so what is seen is recorded and checked after.
        if job.state.terminal:
            self.ended.append(job.id)
            if job.state is not JobState.SUCCEEDED:
                self.failures.append(f"{job.id} {job.state}: {error}")
            self.peak = max(self.peak, kept_on_disk(self.root))
            self._moved.set()

    async def queue_moved(self, places: Sequence[tuple[Job, int]]) -> None:
        pass

    async def job_paused(self, job: Job) -> None:
        pass

    async def publish(self, job: Job, image: OutputImage) -> Posted:
        return Posted(100, 1)


class Upload:
    def __init__(self, data: bytes) -> None:
        self.data = data

    async def announce(self, job: Job) -> Destination:
        return Destination(upload_limit=10_000_000)

    async def fetch(self) -> list[tuple[str, bytes]]:
        return [("image1", self.data)]


async def test_retained_inputs_stay_within_the_disk_cap_under_1000_finished_jobs(tmp_path: Path) -> None:
    images = [noise_png(side) for side in (24, 40, 56, 72, 88)]  # ~2 to ~23 KB each
    cap = 400_000
    config = Config(
        discord_token="t" * 24,
        image_api_key="k" * 24,
        data_dir=tmp_path,
        max_concurrent_jobs=8,
        user_max_active=1000,
        user_daily_limit=None,
        input_retention_bytes=cap,
    )
    root = tmp_path / "inputs"
    watcher = Watcher(root, cap)
    engine = JobEngine(config, SQLiteJobStore(config.db_file), InstantAPI(), InputStore(root), Editor())
    await engine.open()
    await engine.start(watcher, watcher)
    try:
        for batch in range(20):
            submits = []
            for n in range(50):
                who = Requester(1 + n % 7, 10, 100, None, frozenset(), is_manager=False)
                request = JobRequest(JobKind.EDIT, who.user_id, 10, 100, f"job {batch}-{n}", None, 1)
                submits.append(engine.submit(request, who, Upload(images[(batch + n) % len(images)])))
            await asyncio.gather(*submits)
            await watcher.wait_for(50 * (batch + 1))
    finally:
        await engine.stop(1.0)
        await engine.close()
    assert len(watcher.ended) == 1000 and watcher.failures == []
    assert watcher.peak <= cap
    # The cap was reached, and the inputs that stayed are those of the jobs that ended last.
    assert watcher.peak > cap - max(len(i) for i in images) - 1000
    kept = engine.retention.kept()
    assert kept == watcher.ended[-len(kept) :]
    assert folder_names(root) == sorted(kept)
    assert kept_on_disk(root) == engine.retention.kept_bytes <= cap
