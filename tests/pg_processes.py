"""Programs the multi-process tests run as separate OS processes against one PostgreSQL database.

    python -m tests.pg_processes admit URL COUNT AT  # COUNT simultaneous admissions of one member, at time AT
    python -m tests.pg_processes claim URL         # claim and finish jobs until the queue stays empty

Each prints one JSON line with what it did. ``admit`` goes through the real engine
(``JobEngine.submit``, the PostgreSQL admission path); ``claim`` through the store's claim.
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from bot.config import Config
from bot.media.editor import Editor
from bot.engine import JobEngine
from bot.errors import AtelierError
from bot.provider.client import APIAnswer, Attempt, ImageEditRequest, ImageEditResult
from bot.media.images import OutputImage
from bot.inputs import DatabaseInputStore
from bot.core.job import Destination, Job, JobKind, JobRequest
from bot.servers.limits import Requester
from bot.ports import Posted, PostFailed
from bot.postgres_store import PostgresJobStore
from bot.core.states import JobState
from tests.fake_image_api import make_png

PNG = make_png(8, 8)


class Quiet:
    """Notifier and publisher that show nothing (these processes have no members to tell)."""

    async def job_moved(self, job: Job, before: JobState, error: AtelierError | None) -> None:
        pass

    async def queue_moved(self, places: Sequence[tuple[Job, int]]) -> None:
        pass

    async def job_paused(self, job: Job) -> None:
        pass

    async def publish(self, job: Job, image: OutputImage) -> Posted | PostFailed:
        return Posted(1, 1)


class NoAPI:
    async def call(self, request: ImageEditRequest, attempts: list[Attempt] | None = None) -> APIAnswer:
        raise AssertionError("an admitting process never calls the API")

    async def decode(self, answer: APIAnswer) -> ImageEditResult:
        raise AssertionError("an admitting process never decodes")


class Upload:
    async def announce(self, job: Job) -> Destination:
        return Destination(upload_limit=8_000_000, data={})

    async def fetch(self) -> list[tuple[str, bytes]]:
        return [("image1", PNG)]


async def admit(url: str, count: int, start_at: float) -> dict[str, int]:
    config = Config(
        discord_token="t" * 24, image_api_key="k" * 24, data_dir=Path("unused"), database_url=url,
        user_daily_limit=10, user_max_active=1000,
    )  # fmt: skip
    store = PostgresJobStore(url, pool_size=10)
    engine = JobEngine(config, store, NoAPI(), DatabaseInputStore(store, 1 << 30), Editor())
    await engine.open()
    await engine.start(Quiet(), Quiet(), admit=True, work=False)
    who = Requester(1, 10, 100, None, frozenset(), is_manager=False)

    async def one(n: int) -> bool:
        request = JobRequest(JobKind.EDIT, 1, 10, 100, f"edit {n}", None, 1)
        try:
            await engine.submit(request, who, Upload())
        except AtelierError:
            return False
        return True

    await asyncio.sleep(max(0.0, start_at - time.time()))  # every process fires at the same moment
    accepted = await asyncio.gather(*(one(n) for n in range(count)))
    await engine.stop(1.0)
    await engine.close()
    return {"accepted": sum(accepted), "refused": count - sum(accepted)}


async def claim(url: str) -> dict[str, list[str]]:
    store = PostgresJobStore(url, pool_size=2)
    await store.open()
    taken: list[str] = []
    idle_since = time.monotonic()
    while time.monotonic() - idle_since < 1.0:
        job = await store.claim_next(f"claimer-{id(store)}", time.time(), 30.0, 1000)
        if job is None:
            await asyncio.sleep(0.01)
            continue
        idle_since = time.monotonic()
        taken.append(job.id)
        await store.move_job(job.id, JobState.RUNNING, JobState.DELIVERING, {}, refund=False)
        await store.move_job(job.id, JobState.DELIVERING, JobState.SUCCEEDED, {}, refund=False)
    await store.close()
    return {"taken": taken}


def main(argv: Sequence[str]) -> None:
    what, url = argv[0], argv[1]
    result = asyncio.run(admit(url, int(argv[2]), float(argv[3])) if what == "admit" else claim(url))
    print(json.dumps(result), flush=True)


if __name__ == "__main__":
    main(sys.argv[1:])
