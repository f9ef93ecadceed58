"""Metrics and health end to end: scrape ``/metrics`` and ``/healthz`` while the real bot works, and
check the numbers against what the fakes saw happen; the Dockerfile's HEALTHCHECK command against it."""

from __future__ import annotations

import asyncio
import json
import re
import sys
from collections.abc import Callable
from typing import Any

import aiohttp
from prometheus_client.parser import text_string_to_metric_families

from tests.fake_discord import FakeDiscord
from tests.fake_image_api import FakeImageAPI, Reply, make_png
from tests.harness import ROOT, BotProcess, free_port, leaked_secrets, send_edit, wait_final_text, wait_result


async def get(port: int, path: str) -> tuple[int, str]:
    async with aiohttp.ClientSession() as session, session.get(f"http://127.0.0.1:{port}{path}") as response:
        return response.status, await response.text()


async def scrape_until(port: int, done: Callable[[dict[str, float]], bool], timeout: float = 10) -> dict[str, float]:
    """Scrape until ``done`` holds (or the timeout passes: the last scrape, for the assertions to show)."""
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        samples = await scrape(port)
        if done(samples) or asyncio.get_running_loop().time() > deadline:
            return samples
        await asyncio.sleep(0.05)


async def scrape(port: int) -> dict[str, float]:
    """Every sample as ``name{label="value",…}`` -> value; and no secret anywhere in the page."""
    status, text = await get(port, "/metrics")
    assert status == 200
    assert leaked_secrets(text) == []
    samples: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            labels = ",".join(f'{k}="{v}"' for k, v in sorted(sample.labels.items()))
            samples[f"{sample.name}{{{labels}}}" if labels else sample.name] = sample.value
    return samples


async def until(check: Any, timeout: float = 15) -> None:
    async with asyncio.timeout(timeout):
        while True:
            if await check():
                return
            await asyncio.sleep(0.1)


async def run_healthcheck(command: list[str], port: int, path: str) -> int:
    """Run the HEALTHCHECK command as Docker would; its exit status."""
    process = await asyncio.create_subprocess_exec(*command, env={"METRICS_PORT": str(port), "PATH": path})
    async with asyncio.timeout(20):
        return await process.wait()


async def test_metrics_count_what_happened_during_a_run(
    bot_process: BotProcess, bot_env: dict[str, str], discord_fake: FakeDiscord, image_api: FakeImageAPI
) -> None:
    port = free_port()
    bot_env.update(METRICS_PORT=str(port), MAX_CONCURRENT_JOBS="1", USER_MAX_ACTIVE="5", IMAGE_API_MAX_RETRIES="1")
    await bot_process.start()
    before = await scrape(port)
    assert before["atelier_queue_depth"] == 0 and before["atelier_jobs_running"] == 0
    assert before["atelier_queue_oldest_wait_seconds"] == 0
    assert before["atelier_notices_pending"] == 0 and before["atelier_notice_oldest_pending_seconds"] == 0
    # Series the alert rules rate exist at 0 before anything happens (a counter born at 1 shows no increase).
    assert before['atelier_jobs_total{kind="edit",outcome="succeeded"}'] == 0
    assert before['atelier_jobs_total{kind="imagine",outcome="failed"}'] == 0
    assert before['atelier_api_attempts_total{result="body_cut_off"}'] == 0
    # Limits that are not configured have no series (a rule comparing with one matches nothing).
    limits = ("atelier_daily_budget_usd", "atelier_provider_balance_warn_usd", "atelier_provider_balance_floor_usd")
    assert [name for name in before if name.startswith(limits)] == []
    info = next(k for k in before if k.startswith("atelier_build_info{"))
    assert 'version="0.1.0"' in info and 'discord_py="2.7.' in info and "python=" in info

    # One slow success holds the only slot while a second job waits behind it.
    release = asyncio.Event()  # held until the reading below, however slow the machine; then 1.5 s more
    image_api.then(Reply(delay=1.5, until=release))
    slow = await send_edit(discord_fake, "slow", [make_png()])
    await image_api.wait_for_started(1)
    waiting = await send_edit(discord_fake, "waiting", [make_png()])
    await waiting.wait_for_webhook("PATCH")  # its place in line: it is queued
    during = await scrape(port)
    assert during["atelier_jobs_running"] == 1 and during["atelier_queue_depth"] == 1
    # The waiting job's time in line so far: more than nothing, less than the whole test.
    assert 0 < during["atelier_queue_oldest_wait_seconds"] < 10
    # Discord rate-limits one status edit: discord.py waits, retries, and the bot counts it.
    discord_fake.fail_next("PATCH", r"/webhooks/", 429, {"retry_after": 0.05}, times=1)
    release.set()
    await wait_result(slow)
    await wait_result(waiting)

    # A refusal the API explains, a safety refusal, and a quick 5xx that the retry gets past.
    image_api.then(Reply(kind="error", status=400, body={"error": {"message": "bad request"}}))
    await wait_final_text(await send_edit(discord_fake, "rejected", [make_png()]), "❌")
    image_api.then(Reply(kind="error", status=400, body={"error": {"message": "blocked by the safety system"}}))
    await wait_final_text(await send_edit(discord_fake, "unsafe", [make_png()]), "❌")
    image_api.then(Reply(kind="error", status=503, body={"error": {"message": "overloaded"}}))
    await wait_result(await send_edit(discord_fake, "retried", [make_png()]))

    # The last result is on Discord a moment before its job is recorded as succeeded.
    after = await scrape_until(port, lambda s: s.get('atelier_jobs_total{kind="edit",outcome="succeeded"}') == 3)
    assert after['atelier_jobs_total{kind="edit",outcome="succeeded"}'] == 3
    assert after['atelier_jobs_total{kind="edit",outcome="failed"}'] == 2
    assert after['atelier_job_failures_total{error="BadRequestError"}'] == 1
    assert after['atelier_job_failures_total{error="SafetyRejectedError"}'] == 1
    assert after['atelier_api_attempts_total{result="succeeded"}'] == 3
    assert after['atelier_api_attempts_total{result="rejected"}'] == 1
    assert after['atelier_api_attempts_total{result="safety_refused"}'] == 1
    assert after['atelier_api_attempts_total{result="server_error_fast"}'] == 1
    assert len(image_api.calls) == 6
    assert after["atelier_job_wait_seconds_count"] == 5  # every job that reached the API
    assert after["atelier_job_run_seconds_count"] == 5
    assert after["atelier_api_call_seconds_count"] == 3  # the calls that brought an answer
    assert after["atelier_api_call_seconds_sum"] >= 1.5  # the slow one alone took that long
    assert after['atelier_jobs_by_model_total{model="gpt-image-2-vip"}'] == 3
    # Charged on acceptance, refunded on failure: three successes at $0.03 on the operator's key.
    assert abs(after['atelier_spend_today_usd{key="operator"}'] - 0.09) < 1e-9
    assert after['atelier_spend_today_usd{key="server"}'] == 0
    assert after["atelier_discord_rate_limits_total"] == 1
    assert after["atelier_queue_depth"] == 0 and after["atelier_jobs_running"] == 0
    assert after["atelier_queue_oldest_wait_seconds"] == 0


async def test_healthz_follows_the_gateway_and_the_docker_healthcheck_uses_it(
    bot_process: BotProcess, bot_env: dict[str, str], discord_fake: FakeDiscord
) -> None:
    port = free_port()
    bot_env["METRICS_PORT"] = str(port)
    await bot_process.start()

    async def healthy() -> bool:
        return (await get(port, "/healthz"))[0] == 200

    await until(healthy)
    status, body = await get(port, "/healthz")
    assert '"database": "ok"' in body and '"gateway": "ok"' in body
    healthcheck = dockerfile_healthcheck()
    assert await run_healthcheck(healthcheck, port, bot_env["PATH"]) == 0

    # A gateway that cannot resume: discord.py waits 5 s before identifying again; meanwhile 503.
    await discord_fake.drop_connection(resumable=False)

    async def unhealthy() -> bool:
        return (await get(port, "/healthz"))[0] == 503

    await until(unhealthy)
    status, body = await get(port, "/healthz")
    assert status == 503 and "gateway" in body and "disconnected" in body
    assert await run_healthcheck(healthcheck, port, bot_env["PATH"]) != 0
    await discord_fake.wait_until_ready(20)
    await until(healthy)

    await bot_process.stop()
    assert await run_healthcheck(healthcheck, port, bot_env["PATH"]) != 0


async def test_no_metrics_server_unless_a_port_is_set(bot: BotProcess) -> None:
    assert "metrics and health on" not in bot.log()


def dockerfile_healthcheck() -> list[str]:
    """The Dockerfile's HEALTHCHECK command, run with this interpreter instead of the image's ``python``."""
    text = (ROOT / "Dockerfile").read_text()
    match = re.search(r"^HEALTHCHECK .*?CMD (\[.*?\])\s*$", text.replace("\\\n", " "), re.MULTILINE)
    assert match is not None, "the Dockerfile has no HEALTHCHECK in exec form"
    command: list[str] = json.loads(match.group(1))
    assert command[0] == "python" and "/healthz" in " ".join(command)
    return [sys.executable, *command[1:]]
