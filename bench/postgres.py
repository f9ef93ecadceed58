"""The benchmark's PostgreSQL measures: one gateway and two workers on a fresh database.

- admission: 50 ``/edit`` at once through the gateway, INTERACTION_CREATE to callback, p99;
- claim: jobs sent one at a time to idle workers, from the moment a job is queued
  (``queued_at``, stamped in its transaction) to its claim (``started_at``), p99;
- throughput: 200 jobs, 1 s API, ``MAX_CONCURRENT_JOBS=8`` split over the two workers;
- memory: the peak RSS of each worker with 16 × 4K outputs in flight over the two.
"""

from __future__ import annotations

import asyncio
import contextlib
import tempfile
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import asyncpg

from bench.common import (
    Report,
    Row,
    RssSampler,
    Settings,
    bot_env,
    burst,
    mb,
    ms,
    percentile,
    stop_bot,
    wait_acks,
    wait_results,
)
from bench.fakes import TimedDiscord, TimedImageAPI
from tests.fake_image_api import make_png
from tests.harness import API_KEY, BOT_TOKEN, BotProcess
from tests.postgres import fresh_database


@dataclass
class Cluster:
    discord: TimedDiscord
    api: TimedImageAPI
    gateway: BotProcess
    workers: list[BotProcess]
    database: str

    async def start_workers(self) -> None:
        """Start the workers not started yet, all at once (as ``docker compose up --scale worker=N`` does),
        until each is ready."""
        await asyncio.gather(*(process.start(timeout=60) for process in self.workers if process.proc is None))


@contextlib.asynccontextmanager
async def cluster(
    s: Settings,
    *,
    latency: float,
    output: bytes,
    upload_limit: int,
    workers: int = 2,
    database: str | None = None,
    start_workers: bool = True,
    **env: str,
) -> AsyncIterator[Cluster]:
    """Fakes, a fresh database (or ``database``), one gateway and ``workers`` workers, all ready (the workers
    later, by ``Cluster.start_workers``, unless ``start_workers``); all stopped on the way out."""
    discord = TimedDiscord(token=BOT_TOKEN, attachment_size_limit=upload_limit)
    api = TimedImageAPI(api_key=API_KEY)
    api.latency, api.default_image = latency, output
    async with contextlib.AsyncExitStack() as stack:
        if database is None:
            database = await stack.enter_async_context(fresh_database())
        workdir = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="atelier-bench-pg-")))
        await discord.start()
        await api.start()
        environment = bot_env(discord, api, workdir, {**s.bot_env, "DATABASE_URL": database, **env})
        gateway = BotProcess(environment, workdir, discord, role="gateway", name="gateway")
        processes = [
            BotProcess(environment, workdir, discord, role="worker", name=f"worker{n}") for n in range(workers)
        ]
        c = Cluster(discord, api, gateway, processes, database)
        try:
            await gateway.start(timeout=60)
            if start_workers:
                await c.start_workers()
            yield c
        finally:
            for process in [*processes, gateway]:
                await stop_bot(process)
            await api.stop()
            await discord.stop()


async def measure_postgres(s: Settings, report: Report) -> None:
    """The four PostgreSQL rows."""
    # Admission with the money in the database.
    async with cluster(s, latency=s.api_latency, output=s.medium.data, upload_limit=s.upload_limit) as c:
        handles = await burst(c.discord, s.source.data, s.ack_jobs, tag="pg-ack")
        acks = await wait_acks(c.discord, handles, timeout=60)
        await wait_results(c.discord, handles, timeout=60 + s.ack_jobs * s.api_latency)
        p99 = percentile(acks, 99)
        report.details["pg_ack_seconds"] = acks
        report.rows.append(
            Row(
                f"PostgreSQL: admission (ack), {s.ack_jobs} /edit at once through a gateway: p99 "
                f"(p50 {ms(percentile(acks, 50))})",
                ms(p99), "p99 < 100 ms", p99 / 0.1, p99 < 0.1,
            )
        )  # fmt: skip

        # From queued to claimed by an idle worker: one job at a time, the workers idle in between.
        small = make_png(64, 48)
        waits = []
        for n in range(s.claim_jobs):
            (handle,) = await burst(c.discord, small, 1, first_user=40_000 + n, tag=f"pg-claim-{n}")
            await wait_results(c.discord, [handle], timeout=30)
        conn = await asyncpg.connect(c.database)
        try:
            rows = await conn.fetch("SELECT started_at - queued_at FROM jobs WHERE prompt LIKE 'pg-claim-%'")
        finally:
            await conn.close()
        waits = [float(r[0]) for r in rows]
        p99 = percentile(waits, 99)
        report.details["pg_claim_seconds"] = waits
        report.rows.append(
            Row(
                f"PostgreSQL: from enqueue to claim by an idle worker, {len(waits)} jobs: p99 "
                f"(p50 {ms(percentile(waits, 50))})",
                ms(p99), "p99 < 100 ms", p99 / 0.1, p99 < 0.1,
            )
        )  # fmt: skip

    # Throughput over two workers.
    n, k, latency = s.throughput_jobs, s.throughput_concurrency, s.throughput_latency
    ideal = n / k * latency
    async with cluster(
        s, latency=latency, output=s.medium.data, upload_limit=s.upload_limit, MAX_CONCURRENT_JOBS=str(k)
    ) as c:
        handles = await burst(c.discord, s.source.data, n, tag="pg-throughput")
        await wait_results(c.discord, handles, timeout=60 + 3 * ideal)
        first = min(c.discord.dispatched_at[h.token] for h in handles)
        last = max(c.discord.received_at[c.discord.results[h.token]] for h in handles)
        peak_api = c.api.max_in_flight
    total = last - first
    report.details["pg_throughput"] = {"total": total, "ideal": ideal, "api_max_in_flight": peak_api}
    report.rows.append(
        Row(
            f"PostgreSQL: throughput, {n} jobs, {latency:g} s API, MAX_CONCURRENT_JOBS={k} over 2 workers "
            f"(ideal {ideal:.2f} s; most API calls at once {peak_api})",
            f"{total:.2f} s", "total ÷ ideal ≤ 1.05", total / ideal, total / ideal <= 1.05,
        )
    )  # fmt: skip

    # A worker's peak memory, the same budget as one process.
    image = s.memory_image.data
    jobs = s.memory_jobs
    async with cluster(
        s, latency=s.memory_latency, output=image, upload_limit=max(s.upload_limit, 2 * len(image)),
        MAX_CONCURRENT_JOBS=str(jobs),
    ) as c:  # fmt: skip
        samplers = [RssSampler(w.proc.pid) for w in c.workers if w.proc is not None]
        baselines = [sampler.sample() for sampler in samplers]
        with contextlib.ExitStack() as running:
            for sampler in samplers:
                running.enter_context(sampler)
            handles = await burst(c.discord, s.source.data, jobs, tag="pg-memory")
            await wait_results(c.discord, handles, timeout=120 + 4 * s.memory_latency)
        logs = [w.log() for w in c.workers]
    for number, (sampler, baseline, log) in enumerate(zip(samplers, baselines, logs, strict=True)):
        handled = log.count(" outcome=succeeded images=")  # one line per finished job
        budget = 100 * 1_000_000 + 2 * handled * len(image)
        report.rows.append(
            Row(
                f"PostgreSQL: peak RSS of worker {number + 1}, {handled} of {jobs} × {s.memory_image.label} "
                f"(baseline {mb(baseline)})",
                mb(sampler.peak), f"≤ 100 MB + 2 × its outputs = {mb(budget)}", sampler.peak / budget,
                sampler.peak <= budget,
            )
        )  # fmt: skip
    await asyncio.sleep(0)
