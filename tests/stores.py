"""The store on either database, for tests: open one, make jobs, move them along, hear its notices.

``open_store("sqlite" | "postgres", tmp_path)`` opens ``Store(SQLiteDatabase(…))`` or
``Store(PostgresDatabase(…))`` on a fresh database (``tests.postgres``), migrated as the bot
migrates it; the ``store`` fixture in ``conftest.py`` runs a test once on each.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from bot.core.job import Job, JobRequest, utc_day
from bot.core.quota import Quota
from bot.core.records import Fence
from bot.core.states import JobState
from bot.store.database import Database, open_and_migrate
from bot.store.postgres import PostgresDatabase
from bot.store.script import fetch, fetch_value
from bot.store.sqlite import SQLiteDatabase
from bot.store.store import Store
from tests.databases import DATABASES
from tests.postgres import fresh_database

__all__ = ["DATABASES"]
NOON = 1795608000.0  # 2026-11-25 12:00 UTC
PRICE = 30_000  # micro-dollars: $0.03
LEASE = 30.0
GATEWAY = "gateway"  # the holder that admits jobs in these tests


@asynccontextmanager
async def fresh(database: str, tmp_path: Path, name: str = "atelier") -> AsyncIterator[Callable[[], Database]]:
    """A new, empty ``database`` (``sqlite`` under ``tmp_path``, or ``postgres``), as a maker of connections
    to it (each unopened): a test may open, close and open it again, as a restarted bot would."""
    if database == "sqlite":
        yield lambda: SQLiteDatabase(tmp_path / f"{name}.sqlite3")
        return
    assert database == "postgres", database
    async with fresh_database() as url:
        yield lambda: PostgresDatabase(url, pool_size=5)


@asynccontextmanager
async def open_store(database: str, tmp_path: Path, name: str = "atelier") -> AsyncIterator[Store]:
    """A migrated store on a fresh ``database``, closed at the end."""
    async with fresh(database, tmp_path, name) as connect:
        opened = connect()
        await open_and_migrate(opened)
        try:
            yield Store(opened)
        finally:
            await opened.close()


def make_job(
    job_id: str,
    user_id: int,
    at: float = NOON,
    guild_id: int | None = 10,
    *,
    cost: int = PRICE,
    holder: str | None = GATEWAY,
    guild_key: bool = False,
) -> Job:
    """An accepted job, as admission makes it (held by ``holder``)."""
    request = JobRequest("edit", user_id, guild_id, 100, f"prompt of {job_id}", None, 1)
    return Job(
        id=job_id,
        request=request,
        state=JobState.ACCEPTED,
        created_at=at,
        charge_day=utc_day(at),
        cost=cost,
        model="gpt-image-2-vip",
        guild_key=guild_key,
        holder=holder,
    )


async def admit(store: Store, job: Job, quota: Quota | None = None) -> Job:
    """Admit ``job`` (no limit unless ``quota`` says so); it must pass."""
    refused = await store.admit(job, quota or Quota(job.created_at), job.created_at + LEASE)
    assert refused is None, refused
    return job


async def add(store: Store, job: Job, state: JobState = JobState.QUEUED) -> Job:
    """A job admitted and moved along to ``state`` (accepted, preparing or queued), as admission would."""
    current = await admit(store, job)
    for step in (JobState.PREPARING, JobState.QUEUED):
        if current.state is state:
            break
        current = await step_to(store, current, step)
    assert current.state is state
    return current


async def step_to(store: Store, job: Job, target: JobState, **values: Any) -> Job:
    """Move ``job`` to ``target`` as its holder would (fenced by its holder and run); it must happen."""
    result = await store.move(
        job.id,
        job.state,
        target,
        values,
        refund=target in (JobState.FAILED, JobState.CANCELLED),
        holder=job.holder or GATEWAY,
        now=job.created_at,
        fence=Fence(job.holder, job.run),
    )
    assert result.job is not None, f"{job.id} did not move {job.state} -> {target}"
    return result.job


async def query(store: Store, sql: str, **params: Any) -> list[dict[str, Any]]:
    """Rows of a read straight from the database (what a test checks beside the store's own answers)."""
    return [dict(row) for row in await store.database.run(fetch(sql, **params), write=False)]


async def value(store: Store, sql: str, **params: Any) -> Any:
    return await store.database.run(fetch_value(sql, **params), write=False)


class Heard:
    """The notices a store delivers to this process, as payloads, in the order they arrive."""

    def __init__(self, store: Store) -> None:
        self._store = store
        self._queue: asyncio.Queue[str] = asyncio.Queue()
        store.on_notice(self._queue.put_nowait)

    async def since_last(self) -> list[str]:
        """Every notice heard since the last call: a marker is sent last, and notices arrive in the
        order their transactions committed (on SQLite at once, after the commit; on PostgreSQL by
        ``LISTEN``), so all of them are in when it comes."""
        await self._store.notify("marker")
        seen = []
        async with asyncio.timeout(10):
            while (payload := await self._queue.get()) != "marker":
                if payload != "reconnected":  # the session connection's own news, not a move's
                    seen.append(payload)
        return seen


def clock(start: float) -> tuple[list[float], Callable[[], float]]:
    """A clock a test moves by hand: ``now[0] += 60``."""
    now = [start]
    return now, lambda: now[0]
