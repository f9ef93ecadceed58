"""Several processes on one PostgreSQL: the admission race, no double run, a gateway with workers, a
worker killed mid-job, a rolling restart, shard ranges.

Real processes, a real PostgreSQL (a fresh database per test), the fake Discord and the fake image
API on loopback. PostgreSQL only, by nature: several processes share one store, and SQLite is one
process's file (a second process on it is refused). The all-in-one bot's tests run on both databases.
"""

from __future__ import annotations

import asyncio
import json
import signal
import sys
import time
from collections.abc import AsyncIterator, Generator
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from bot.core.job import Job, JobRequest, utc_day
from bot.core.quota import Quota
from bot.core.records import StoredImage
from bot.core.states import JobState
from bot.store.database import open_and_migrate
from bot.store.postgres import PostgresDatabase
from bot.store.script import Op, execute, fetch_value
from bot.store.store import Store
from tests.fake_discord import FakeDiscord, InteractionHandle
from tests.fake_image_api import FakeImageAPI, Reply, make_png
from tests.harness import API_KEY, BOT_TOKEN, ROOT, BotProcess, bot_environment, option, send_edit, wait_result
from tests.postgres import fresh_database


@pytest.fixture
async def database() -> AsyncIterator[str]:
    async with fresh_database() as url:
        yield url


async def rows(url: str, sql: str, *args: Any) -> list[asyncpg.Record]:
    conn = await asyncpg.connect(url)
    try:
        return list(await conn.fetch(sql, *args))
    finally:
        await conn.close()


async def poll(read: Any, expected: Any, timeout: float = 10) -> None:
    """Read until ``read()`` gives ``expected`` (as tuples), or fail with what it gave last."""
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        got = [tuple(r) for r in await read()]
        if got == expected:
            return
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"expected {expected}, got {got}")
        await asyncio.sleep(0.05)


async def run_program(*args: str, timeout: float = 60) -> dict[str, Any]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "tests.pg_processes", *args, cwd=ROOT,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    async with asyncio.timeout(timeout):
        out, err = await proc.communicate()
    assert proc.returncode == 0, err.decode()[-3000:]
    result: dict[str, Any] = json.loads(out.decode().strip().splitlines()[-1])
    return result


async def migrated(database: str) -> Store:
    """The store of ``database``, migrated and open (the caller closes it)."""
    store = Store(PostgresDatabase(database, pool_size=2))
    await open_and_migrate(store.database)
    return store


async def queue_jobs(store: Store, count: int, members: int) -> None:
    """``count`` queued jobs from ``members`` members, in acceptance order, with their inputs."""
    now = time.time()
    for n in range(count):
        job = Job(f"job{n:03d}", JobRequest("edit", n % members, 10, 100, f"p{n}", None, 1), JobState.ACCEPTED,
                  now + n * 0.001, utc_day(now), 30_000, holder="seed")  # fmt: skip
        assert await store.admit(job, Quota(now), now + 60) is None
        await store.save_inputs(job.id, [StoredImage(b"png", "image/png", 1, 1)], 1 << 30)
        for current, target in ((JobState.ACCEPTED, JobState.PREPARING), (JobState.PREPARING, JobState.QUEUED)):
            values = {"queued_at": now} if target is JobState.QUEUED else {}
            await store.move(job.id, current, target, values, refund=False, holder="seed", now=now)


async def test_four_processes_times_fifty_requests_sell_exactly_the_daily_limit_of_ten(database: str) -> None:
    await (await migrated(database)).database.close()  # migrate once, before the race
    start_at = f"{time.time() + 4:.3f}"
    results = await asyncio.gather(*(run_program("admit", database, "50", start_at) for _ in range(4)))
    assert sum(r["accepted"] for r in results) == 10
    assert sum(r["refused"] for r in results) == 190
    charged = await rows(database, "SELECT COUNT(*) FROM money WHERE entry = 'charge'")
    assert charged[0][0] == 10


async def test_five_hundred_jobs_claimed_by_four_workers_each_run_exactly_once(database: str) -> None:
    store = await migrated(database)
    await queue_jobs(store, 500, 37)
    await store.database.close()
    results = await asyncio.gather(*(run_program("claim", database) for _ in range(4)))
    taken = [job_id for r in results for job_id in r["taken"]]
    assert len(taken) == 500 and len(set(taken)) == 500
    assert sum(1 for r in results if r["taken"]) >= 2, "the work was shared"
    done = await rows(database, "SELECT COUNT(*) FROM jobs WHERE status = $1", JobState.SUCCEEDED.value)
    assert done[0][0] == 500


class Cluster:
    """One gateway and some workers against the fakes and one database."""

    def __init__(self, fake: FakeDiscord, api: FakeImageAPI, workdir: Path, database: str, **settings: str) -> None:
        self.env = bot_environment(
            fake.api_base, api.base, workdir / "data", DATABASE_URL=database, IMAGE_API_TIMEOUT="20",
            USER_MAX_ACTIVE="20", **settings,
        )  # fmt: skip
        self.fake = fake
        self.workdir = workdir
        self.gateway = BotProcess(self.env, workdir, fake, role="gateway", name="gateway")
        self.workers: list[BotProcess] = []

    def worker(self, n: int) -> BotProcess:
        while len(self.workers) <= n:
            index = len(self.workers)
            self.workers.append(BotProcess(self.env, self.workdir, self.fake, role="worker", name=f"worker{index}"))
        return self.workers[n]

    async def stop(self) -> None:
        for process in [*self.workers, self.gateway]:
            await process.stop()
        for process in [*self.workers, self.gateway]:
            log = process.log()
            assert BOT_TOKEN not in log and API_KEY not in log


@pytest.fixture
async def cluster_factory(
    discord_fake: FakeDiscord, image_api: FakeImageAPI, tmp_path: Path, database: str
) -> AsyncIterator[Any]:
    made: list[Cluster] = []

    def make(**settings: str) -> Cluster:
        cluster = Cluster(discord_fake, image_api, tmp_path, database, **settings)
        made.append(cluster)
        return cluster

    yield make
    for cluster in made:
        await cluster.stop()


async def edits_from_members(fake: FakeDiscord, members: int, each: int) -> list[InteractionHandle]:
    users = [fake.USER_ID + 2000 + n for n in range(members)]
    for user in users:
        fake.add_user(user, f"member{user}")
    requests = [send_edit(fake, f"{user}-{k}", [make_png()], user_id=user) for k in range(each) for user in users]
    return list(await asyncio.gather(*requests))


async def test_a_gateway_and_two_workers_deliver_forty_jobs_from_ten_members_each_once(
    cluster_factory: Any, discord_fake: FakeDiscord, image_api: FakeImageAPI, database: str
) -> None:
    cluster = cluster_factory(MAX_CONCURRENT_JOBS="3")
    image_api.latency = 0.2
    await cluster.gateway.start()
    for n in range(2):
        await cluster.worker(n).start()
    handles = await edits_from_members(discord_fake, 10, 4)
    results = await asyncio.gather(*(wait_result(h, timeout=60) for h in handles))
    assert all([f.filename.split("-")[0] for f in r.files] == ["atelier", "input"] for r in results)
    prompts = [call.field("prompt") for call in image_api.calls]
    assert len(prompts) == 40 and len(set(prompts)) == 40
    assert image_api.max_in_flight <= 3
    # Each result was posted once, and by a worker: the gateway makes no API calls.
    for handle in handles:
        assert sum(1 for r in handle.webhook_requests() if r.files and 200 <= r.status < 300) == 1
    assert "image API attempt" not in cluster.gateway.log()
    assert any("image API attempt" in w.log() for w in cluster.workers)
    # Which workers share the work is not asserted: a worker whose call ends claims the next job itself, so
    # one that won every first claim (the other slower to start on a busy machine) keeps them all, rightly.
    # That any worker runs any job is shown by the take-over tests below.
    money = await rows(database, "SELECT entry, COUNT(*) FROM money GROUP BY entry")
    assert {r[0]: r[1] for r in money} == {"charge": 40}


async def test_worker_slots_leave_the_second_slot_to_the_second_worker(
    cluster_factory: Any, discord_fake: FakeDiscord, image_api: FakeImageAPI, database: str
) -> None:
    # Two calls in all, one per worker: the worker that starts first takes one job, not both, and keeps
    # the other slot free for the next worker, which takes the job waiting. (Without WORKER_SLOTS, the first
    # worker claims both as they are queued, and the second finds nothing to do.)
    cluster = cluster_factory(MAX_CONCURRENT_JOBS="2", WORKER_SLOTS="1")
    answer = asyncio.Event()
    image_api.then(Reply(until=answer), Reply(until=answer))
    await cluster.gateway.start()
    await cluster.worker(0).start()
    handles = await edits_from_members(discord_fake, 2, 1)
    await image_api.wait_for_started(1, timeout=15)
    await poll(
        lambda: rows(database, "SELECT status, COUNT(*) FROM jobs GROUP BY status ORDER BY status"),
        [(JobState.QUEUED.value, 1), (JobState.RUNNING.value, 1)],
        timeout=15,
    )
    await cluster.worker(1).start()
    await image_api.wait_for_started(2, timeout=15)
    holders = await rows(database, "SELECT claimed_by FROM jobs WHERE status = $1", JobState.RUNNING.value)
    assert len(holders) == 2 and len({r[0] for r in holders}) == 2, holders
    answer.set()
    await asyncio.gather(*(wait_result(h, timeout=30) for h in handles))
    assert image_api.max_in_flight == 2
    money = await rows(database, "SELECT entry, COUNT(*) FROM money GROUP BY entry")
    assert {r[0]: r[1] for r in money} == {"charge": 2}


async def test_a_worker_killed_mid_job_has_its_job_finished_by_the_other_once_charged(
    cluster_factory: Any, discord_fake: FakeDiscord, image_api: FakeImageAPI, database: str
) -> None:
    cluster = cluster_factory(MAX_CONCURRENT_JOBS="2", JOB_LEASE_SECONDS="2")
    await cluster.gateway.start()
    for n in range(2):
        await cluster.worker(n).start()
    image_api.then(Reply(kind="hang"))
    handle = await send_edit(discord_fake, "survivor", [make_png()])
    await image_api.wait_for_started(1, timeout=20)
    (holder,) = await rows(database, "SELECT claimed_by FROM jobs WHERE status = 'running'")
    pid = int(holder[0].split(":")[1])
    (victim,) = [w for w in cluster.workers if w.proc is not None and w.proc.pid == pid]
    await victim.stop(signal.SIGKILL)
    result = await wait_result(handle, timeout=30)
    assert result.files
    assert [c.field("prompt") for c in image_api.calls] == ["survivor", "survivor"]
    # The job's end is recorded a moment after its result is posted.
    await poll(lambda: rows(database, "SELECT status, restarts FROM jobs"), [("succeeded", 1)])
    (job,) = await rows(database, "SELECT id FROM jobs")
    money = await rows(database, "SELECT entry FROM money WHERE job_id = $1", job["id"])
    assert [r[0] for r in money] == ["charge"]
    attempts = await rows(database, "SELECT run, outcome, may_be_billed FROM api_attempts ORDER BY run")
    # Each claim is a run: the first (killed mid-call, maybe billed), then the take-over that succeeded.
    assert [(r[0], r[1], r[2]) for r in attempts] == [(1, "interrupted", 1), (2, "succeeded", 1)]


async def test_a_rolling_restart_of_the_workers_loses_nothing_and_the_gateway_keeps_answering(
    cluster_factory: Any, discord_fake: FakeDiscord, image_api: FakeImageAPI
) -> None:
    cluster = cluster_factory(MAX_CONCURRENT_JOBS="2", SHUTDOWN_GRACE_SECONDS="10")
    image_api.latency = 0.3
    await cluster.gateway.start()
    for n in range(2):
        await cluster.worker(n).start()
    handles: list[InteractionHandle] = []
    acked: list[float] = []

    async def stream() -> None:
        for n in range(24):
            sent = time.perf_counter()
            handle = await send_edit(discord_fake, f"job {n}", [make_png()], user_id=discord_fake.USER_ID + 3000 + n)
            await handle.wait_for_callback(timeout=5)
            acked.append(time.perf_counter() - sent)
            handles.append(handle)
            await asyncio.sleep(0.15)  # pacing: a steady stream of edits; nothing is asserted from it

    async def restart_workers() -> None:
        for worker in cluster.workers:
            await asyncio.sleep(0.8)  # pacing: restart while edits keep coming; nothing is asserted from it
            assert await worker.stop(signal.SIGTERM, timeout=20) == 0
            await worker.start()

    for n in range(24):
        discord_fake.add_user(discord_fake.USER_ID + 3000 + n, f"m{n}")
    await asyncio.gather(stream(), restart_workers())
    results = await asyncio.gather(*(wait_result(h, timeout=60) for h in handles))
    assert len(results) == 24 and all(r.files for r in results)
    prompts = [c.field("prompt") for c in image_api.calls]
    assert sorted(set(prompts)) == sorted(f"job {n}" for n in range(24))
    assert len(prompts) == 24, "nothing ran twice: each stopping worker finished its calls"
    assert max(acked) < 3.0


async def test_a_gateway_runs_only_its_shards(
    discord_fake: FakeDiscord, image_api: FakeImageAPI, tmp_path: Path, database: str
) -> None:
    env = bot_environment(
        discord_fake.api_base, image_api.base, tmp_path / "data", DATABASE_URL=database, SHARD_COUNT="2",
        SHARD_IDS="1",
    )  # fmt: skip
    gateway = BotProcess(env, tmp_path, discord_fake, role="gateway", name="gateway")
    try:
        await gateway.start()
        assert discord_fake.identify is not None and discord_fake.identify["shard"] == [1, 2]
    finally:
        await gateway.stop()


async def test_a_worker_without_postgresql_explains_and_exits(
    discord_fake: FakeDiscord, image_api: FakeImageAPI, tmp_path: Path
) -> None:
    """Without PostgreSQL, by nature: a worker is refused when the store would be SQLite's one-process file."""
    env = bot_environment(discord_fake.api_base, image_api.base, tmp_path / "data")
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "bot", "worker", env=env, cwd=tmp_path,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    async with asyncio.timeout(30):
        _, err = await proc.communicate()
    assert proc.returncode == 2 and b"needs PostgreSQL" in err


async def test_metrics_and_health_of_a_gateway_and_a_worker_see_the_shared_queue(
    cluster_factory: Any, discord_fake: FakeDiscord, image_api: FakeImageAPI
) -> None:
    from tests.harness import free_port
    from tests.test_metrics_e2e import get, scrape_until, until

    async def healthy(port: int) -> bool:
        return (await get(port, "/healthz"))[0] == 200

    cluster = cluster_factory(MAX_CONCURRENT_JOBS="2")
    ports = {"gateway": free_port(), "worker": free_port()}
    cluster.gateway.env = {**cluster.env, "METRICS_PORT": str(ports["gateway"])}
    worker = cluster.worker(0)
    worker.env = {**cluster.env, "METRICS_PORT": str(ports["worker"])}
    await cluster.gateway.start()
    # No worker yet: the job waits, and the gateway's metrics see it in the shared queue (read every 5 s).
    first = await send_edit(discord_fake, "counted 0", [make_png()])
    waiting = await scrape_until(
        ports["gateway"], lambda m: m["atelier_queue_depth"] == 1 and m["atelier_queue_oldest_wait_seconds"] > 0
    )
    assert waiting["atelier_queue_depth"] == 1 and 0 < waiting["atelier_queue_oldest_wait_seconds"] < 30
    await worker.start()
    await wait_result(first)
    for n in range(1, 3):
        await wait_result(await send_edit(discord_fake, f"counted {n}", [make_png()]))
    # Every process reads the shared totals: the gateway made no call, yet reports the day's spend.
    spend = 'atelier_spend_today_usd{key="operator"}'
    gateway = await scrape_until(ports["gateway"], lambda m: m.get(spend) == pytest.approx(0.09), timeout=15)
    assert gateway[spend] == pytest.approx(0.09) and gateway["atelier_queue_depth"] == 0
    assert gateway["atelier_queue_oldest_wait_seconds"] == 0
    # The last job's end is counted as it is recorded, a moment after its result is posted.
    succeeded = 'atelier_jobs_total{kind="edit",outcome="succeeded"}'
    worker_metrics = await scrape_until(
        ports["worker"], lambda m: m.get(spend) == pytest.approx(0.09) and m.get(succeeded) == 3, timeout=15
    )
    assert worker_metrics[spend] == pytest.approx(0.09) and worker_metrics[succeeded] == 3
    # A worker has no gateway: it is healthy while its loop runs and the database answers.
    assert (await get(ports["worker"], "/healthz"))[0] == 200
    # The gateway is healthy once discord.py says it is ready (after the servers stream in).
    await until(lambda: healthy(ports["gateway"]), timeout=10)


async def test_a_reroll_runs_on_any_worker_from_the_inputs_kept_in_the_database(
    cluster_factory: Any, discord_fake: FakeDiscord, image_api: FakeImageAPI, database: str
) -> None:
    from tests.test_presets_e2e import add, styled_edit
    from tests.test_refine_e2e import result_button
    from tests.test_results_e2e import wait_click_result

    cluster = cluster_factory(MAX_CONCURRENT_JOBS="2")
    await cluster.gateway.start()
    for n in range(2):
        await cluster.worker(n).start()
    # A style added through the gateway is known to the process that admits the next edit.
    assert (await add(discord_fake, "noir", "in the style of a 1940s film noir still")).startswith("✅")
    handle = await styled_edit(discord_fake, "a harbour at night.", "noir")
    await wait_result(handle, timeout=30)
    message = handle.original_message()
    assert message is not None
    # The finished job's input is kept for a reroll: the row, marked once the job's end is recorded.
    await poll(lambda: rows(database, "SELECT COUNT(*) FROM input_sets WHERE ended_at IS NOT NULL"), [(1,)])
    click = await discord_fake.click_button(message, result_button(message, "Reroll"))
    result = await wait_click_result(click, timeout=30)
    assert result.files
    first, second = image_api.calls
    assert [p.data for p in second.images] == [p.data for p in first.images]
    noir = "a harbour at night, in the style of a 1940s film noir still"
    assert second.field("prompt") == first.field("prompt") == noir


async def test_variations_run_by_two_workers_fill_one_card_without_dropping_an_output(
    cluster_factory: Any, discord_fake: FakeDiscord, image_api: FakeImageAPI, database: str
) -> None:
    cluster = cluster_factory(MAX_CONCURRENT_JOBS="4")
    await cluster.gateway.start()
    for n in range(2):
        await cluster.worker(n).start()
    release = asyncio.Event()
    image_api.then(*(Reply(image=make_png(60, 40, (n, n, n)), until=release) for n in range(1, 5)))
    attachment = discord_fake.add_attachment(make_png(30, 20), "photo1.png", "image/png")
    options = [option("prompt", "four runs", 3), option("image1", attachment["id"], 11), option("variations", 4, 4)]
    handle = await discord_fake.slash_command("edit", options, resolved_attachments=[attachment])
    await image_api.wait_for_started(4, timeout=30)
    release.set()  # the four runs end together, on two workers: their rebuilds of the card take turns
    succeeded = "SELECT id FROM jobs WHERE status = 'succeeded' ORDER BY variant"
    runs: list[asyncpg.Record] = []
    async with asyncio.timeout(30):
        while len(runs := await rows(database, succeeded)) < 4:  # noqa: ASYNC110  # other processes write it
            await asyncio.sleep(0.1)
    message = handle.original_message()
    assert message is not None
    names = {a["url"]: a["filename"] for a in message["attachments"]}
    gallery = [c for c in message["components"][0]["components"] if c["type"] == 12]
    assert [names[item["media"]["url"]] for item in gallery[0]["items"]] == [f"atelier-{r['id']}.png" for r in runs]
    money = await rows(database, "SELECT entry, COUNT(*) FROM money GROUP BY entry")
    assert {r[0]: r[1] for r in money} == {"charge": 4}


async def test_writes_of_megabytes_leave_a_connection_for_admissions_and_claims(database: str) -> None:
    """Heavy scripts (a job's images) take at most all of a process's connections but two (here, a pool of
    two: one), so an admission, a claim or a move never waits behind a burst of uploads being saved."""
    store = await migrated(database)  # a pool of two connections
    blocker = await asyncpg.connect(database)
    heavies: list[asyncio.Task[None]] = []
    try:
        await blocker.execute("SELECT pg_advisory_lock(4242)")

        def stuck() -> Generator[Op, Any, None]:
            yield from execute("SELECT pg_advisory_xact_lock(4242)")  # waits until the blocker lets go

        heavies = [asyncio.create_task(store.database.run(stuck(), heavy=True)) for _ in range(2)]
        waiting = "SELECT COUNT(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted"
        for _ in range(500):  # until a heavy script waits on its connection (10 s at most)
            if await blocker.fetchval(waiting):
                break
            await asyncio.sleep(0.02)
        else:
            raise AssertionError("no heavy script reached the database")
        async with asyncio.timeout(10):  # the light script finds the connection the heavy ones may not take
            assert await store.database.run(fetch_value("SELECT 1 AS one")) == 1
        assert not any(task.done() for task in heavies)
    finally:
        await blocker.execute("SELECT pg_advisory_unlock(4242)")
        async with asyncio.timeout(10):
            await asyncio.gather(*heavies)
        await blocker.close()
        await store.database.close()
