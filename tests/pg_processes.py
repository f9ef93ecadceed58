"""Programs the multi-process tests run as separate OS processes against one PostgreSQL database.

    python -m tests.pg_processes admit URL COUNT AT  # COUNT simultaneous admissions of one member, at time AT
    python -m tests.pg_processes claim URL         # claim and finish jobs until the queue stays empty

Each prints one JSON line with what it did. ``admit`` goes through the real engine
(``JobEngine.submit``, the store's admission); ``claim`` through the store's claim and fenced moves.
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from bot.config import Config
from bot.core.attempts import Attempt
from bot.core.job import Destination, Job, JobRequest
from bot.core.records import ClaimTerms, Fence, Notice
from bot.core.states import JobState
from bot.engine import JobEngine
from bot.errors import AtelierError
from bot.i18n import Text
from bot.media.editor import Editor
from bot.ports import FrontendParts, Posted, PostFailed, ResultMedia, TellLater, Told
from bot.provider.client import APIAnswer, ImageEditResult, ProviderRequest
from bot.servers.limits import Requester
from bot.store.database import open_and_migrate
from bot.store.postgres import PostgresDatabase
from bot.store.store import Store
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

    async def run_lost(self, job: Job) -> None:
        pass

    async def queue_left(self, job_ids: Sequence[str]) -> None:
        pass

    async def tell(self, job: Job, notice: Notice) -> Told | TellLater:
        return Told("quiet")

    async def publish(self, job: Job, media: ResultMedia) -> Posted | PostFailed:
        return Posted(1, 1)


class NoAPI:
    async def call(
        self, request: ProviderRequest, attempts: list[Attempt] | None = None, on_partial: object = None
    ) -> APIAnswer:
        raise AssertionError("an admitting process never calls the API")

    async def decode(self, answer: APIAnswer) -> ImageEditResult:
        raise AssertionError("an admitting process never decodes")


class Upload:
    async def announce(self, job: Job, note: Text | None = None) -> Destination:
        return Destination(upload_limit=8_000_000, data={})

    async def fetch(self) -> list[tuple[str, bytes]]:
        return [("image1", PNG)]


async def admit(url: str, count: int, start_at: float) -> dict[str, int]:
    config = Config(
        discord_token="t" * 24, image_api_key="k" * 24, data_dir=Path("unused"), database_url=url,
        user_daily_limit=10, user_max_active=1000,
    )  # fmt: skip
    quiet = Quiet()
    engine = JobEngine(config, Store(PostgresDatabase(url, pool_size=10)), NoAPI(), Editor())
    await engine.open()
    await engine.start(FrontendParts(quiet, quiet, quiet), admit=True, work=False)
    who = Requester(1, 10, 100, None, frozenset(), is_manager=False)

    async def one(n: int) -> bool:
        request = JobRequest("edit", 1, 10, 100, f"edit {n}", None, 1)
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
    database = PostgresDatabase(url, pool_size=2)
    await open_and_migrate(database)
    store = Store(database)
    me = f"claimer-{id(store)}"
    await database.hold(me)
    taken: list[str] = []
    idle_since = time.monotonic()
    while time.monotonic() - idle_since < 1.0:
        job = await store.claim(ClaimTerms(me, time.time(), 30.0, 1000))
        if not isinstance(job, Job):
            await asyncio.sleep(0.01)
            continue
        idle_since = time.monotonic()
        taken.append(job.id)
        fence = Fence(me, job.run)
        for current, target in ((JobState.RUNNING, JobState.DELIVERING), (JobState.DELIVERING, JobState.SUCCEEDED)):
            moved = await store.move(job.id, current, target, {}, refund=False, holder=me, now=time.time(), fence=fence)
            assert moved.job is not None
    await database.close()
    return {"taken": taken}


def main(argv: Sequence[str]) -> None:
    what, url = argv[0], argv[1]
    result = asyncio.run(admit(url, int(argv[2]), float(argv[3])) if what == "admit" else claim(url))
    print(json.dumps(result), flush=True)


if __name__ == "__main__":
    main(sys.argv[1:])
