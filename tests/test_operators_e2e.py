"""Operators' capabilities end to end: the balance watch, models and their sizes, the fallback breaker,
and servers' own API keys; the secrecy of every new secret."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from cryptography.fernet import Fernet

from tests.fake_balance import FakeBalance
from tests.fake_discord import FakeDiscord, RecordedRequest
from tests.fake_image_api import FakeImageAPI, Reply, make_png
from tests.harness import (
    API_KEY,
    PROVIDER_TOKEN,
    SECRET_KEY,
    SECRETS,
    SERVER_KEY,
    BotProcess,
    card_text,
    free_port,
    rows,
    send_edit,
    wait_final_text,
    wait_result,
)
from tests.test_audit_e2e import AUDIT, set_audit_channel
from tests.test_metrics_e2e import scrape, scrape_until
from tests.test_operations_e2e import admin, refusal

TWO_MODELS = "gpt-image-2-vip=0.03,gpt-image-2-all=0.02"


def channel_posts(fake: FakeDiscord, channel_id: int, needle: str) -> list[RecordedRequest]:
    return [
        r
        for r in fake.requests
        if r.method == "POST"
        and r.path == f"/api/v10/channels/{channel_id}/messages"
        and needle in str((r.json or {}).get("content"))
    ]


async def wait_post(fake: FakeDiscord, channel_id: int, needle: str, timeout: float = 10) -> RecordedRequest:
    return await fake.wait_for_request(
        lambda r: (
            r.method == "POST"
            and r.path == f"/api/v10/channels/{channel_id}/messages"
            and needle in str((r.json or {}).get("content"))
        ),
        timeout,
    )


def files_holding(root: Path, secret: bytes) -> list[Path]:
    """Every file under ``root`` whose bytes contain ``secret``."""
    return [path for path in root.rglob("*") if path.is_file() and secret in path.read_bytes()]


# The balance watch -------------------------------------------------------------------------------


@pytest.fixture
async def balance() -> AsyncIterator[FakeBalance]:
    fake = FakeBalance(PROVIDER_TOKEN, dollars=50.0)
    await fake.start()
    yield fake
    await fake.stop()


async def test_the_balance_watch_warns_once_refuses_below_the_floor_and_recovers(
    bot_process: BotProcess,
    bot_env: dict[str, str],
    discord_fake: FakeDiscord,
    image_api: FakeImageAPI,
    balance: FakeBalance,
) -> None:
    port = free_port()
    bot_env.update(
        PROVIDER_BALANCE_URL=balance.url,
        PROVIDER_ACCESS_TOKEN=PROVIDER_TOKEN,
        BALANCE_WARN_USD="10",
        BALANCE_FLOOR_USD="2",
        BALANCE_POLL_SECONDS="0.2",
        METRICS_PORT=str(port),
        MAX_CONCURRENT_JOBS="1",
        USER_MAX_ACTIVE="5",
    )
    await bot_process.start()
    await set_audit_channel(discord_fake)
    await balance.wait_for_polls(1)
    assert balance.requests[0]["Authorization"] == f"Bearer {PROVIDER_TOKEN}"
    await wait_result(await send_edit(discord_fake, "rich", [make_png()]))

    balance.dollars = 5.0
    warning = await wait_post(discord_fake, AUDIT, "balance is low")
    assert "$5.00" in warning.json["content"] and "$10.00" in warning.json["content"]
    polls = len(balance.requests)
    await balance.wait_for_polls(polls + 3)
    assert len(channel_posts(discord_fake, AUDIT, "balance is low")) == 1  # once per crossing
    assert bot_process.log().count("is below BALANCE_WARN_USD") == 1

    # One job runs, one waits; then the balance falls below the floor. The running call holds the only slot
    # until the checks below are done, however slow the machine.
    release = asyncio.Event()
    image_api.then(Reply(until=release))
    running = await send_edit(discord_fake, "running", [make_png()])
    await image_api.wait_for_started(2)
    queued = await send_edit(discord_fake, "queued", [make_png()])
    await queued.wait_for_webhook("PATCH")
    balance.dollars = 1.0
    await wait_post(discord_fake, AUDIT, "below the floor")
    calls = len(image_api.calls)
    text = await refusal(await send_edit(discord_fake, "refused", [make_png()], user_id=discord_fake.OTHER_USER_ID))
    assert "New edits are paused" in text
    assert (await scrape(port))["atelier_provider_balance_usd"] == 1.0
    release.set()
    await wait_result(running)
    await wait_result(queued)  # accepted before the floor: it still runs
    assert len(image_api.calls) == calls + 1

    balance.dollars = 20.0
    await wait_post(discord_fake, AUDIT, "new edits are accepted again")
    await wait_result(await send_edit(discord_fake, "topped up", [make_png()], user_id=discord_fake.OTHER_USER_ID))

    balance.status = 500
    failures = len(balance.requests)
    await balance.wait_for_polls(failures + 2)
    assert "provider balance check failed: HTTP 500" in bot_process.log()
    await wait_result(await send_edit(discord_fake, "unknown is not low", [make_png()]))


# Models, sizes and the fallback ---------------------------------------------------------------------


async def test_a_server_picks_its_model_and_sizes_are_checked_per_model(
    bot_process: BotProcess, bot_env: dict[str, str], discord_fake: FakeDiscord, image_api: FakeImageAPI
) -> None:
    bot_env["IMAGE_MODELS"] = TWO_MODELS
    image_api.models = {"gpt-image-2-all"}
    await bot_process.start()
    # The default (first listed) takes only the 30-size table.
    text = await refusal(await send_edit(discord_fake, "square", [make_png()], size="1024x1024"))
    assert "not a size the image service supports for gpt-image-2-vip" in text
    assert image_api.calls == []

    choices = await discord_fake.autocomplete(
        "atelier",
        [{"type": 1, "name": "settings", "options": [{"name": "model", "type": 3, "value": "", "focused": True}]}],
        user_id=discord_fake.OWNER_ID,
    )
    offered = [c["value"] for c in (await choices.wait_for_callback()).json["data"]["choices"]]
    assert offered == ["default", "gpt-image-2-vip", "gpt-image-2-all"]
    picked = await admin(
        discord_fake,
        "settings",
        [{"name": "model", "type": 3, "value": "gpt-image-2-all"}],
        user_id=discord_fake.OWNER_ID,
    )
    assert "Image model: **gpt-image-2-all** ($0.02 an image) *(set here)*" in await refusal(picked)

    handle = await send_edit(discord_fake, "square", [make_png()], size="1024x1024")
    result = await wait_result(handle)
    call = image_api.calls[-1]
    assert call.field("model") == "gpt-image-2-all" and call.field("size") == "1024x1024"
    assert "gpt-image-2-all" in card_text(result)  # the card names the model
    assert await rows(bot_env, "SELECT model, cost FROM jobs WHERE prompt = 'square'") == [("gpt-image-2-all", 20_000)]
    for size, why in (("1000x1000", "multiples of 16"), ("3840x1024", "3 times"), ("4096x2304", "3840")):
        assert why in await refusal(await send_edit(discord_fake, "odd", [make_png()], size=size))
    assert len(image_api.calls) == 1
    wrong = await admin(
        discord_fake, "settings", [{"name": "model", "type": 3, "value": "dall-e-9"}], user_id=discord_fake.OWNER_ID
    )
    assert "not a model this bot allows" in await refusal(wrong)


async def test_fast_failures_send_new_jobs_to_the_fallback_for_a_while(
    bot_process: BotProcess, bot_env: dict[str, str], discord_fake: FakeDiscord, image_api: FakeImageAPI
) -> None:
    port = free_port()
    bot_env.update(
        IMAGE_MODELS=TWO_MODELS,
        IMAGE_FALLBACK_MODEL="gpt-image-2-all",
        IMAGE_FALLBACK_SECONDS="3",
        IMAGE_API_MAX_RETRIES="1",
        METRICS_PORT=str(port),
    )
    image_api.models = {"gpt-image-2-all"}
    await bot_process.start()
    await set_audit_channel(discord_fake)
    down = Reply(kind="error", status=502, body={"error": {"message": "upstream connect error"}})
    image_api.then(down, down)  # the first job's call and its one retry: two fast failures in a row
    await wait_final_text(await send_edit(discord_fake, "primary down", [make_png()]), "❌")
    assert [c.field("model") for c in image_api.calls] == ["gpt-image-2-vip", "gpt-image-2-vip"]
    assert "model gpt-image-2-vip failed fast 2 times in a row; new jobs go to gpt-image-2-all" in bot_process.log()

    result = await wait_result(await send_edit(discord_fake, "on the fallback", [make_png()], size="2048x1152"))
    assert image_api.calls[-1].field("model") == "gpt-image-2-all"
    assert "gpt-image-2-all" in card_text(result)
    assert await rows(bot_env, "SELECT model, cost FROM jobs WHERE prompt = 'on the fallback'") == [
        ("gpt-image-2-all", 20_000)
    ]
    audit = await wait_post(discord_fake, AUDIT, "gpt-image-2-all (fallback)")
    assert "on the fallback" in audit.json["content"]

    # The bot's own clock closes the breaker after IMAGE_FALLBACK_SECONDS: its gauge says when.
    fallback = 'atelier_model_fallback_active{model="gpt-image-2-vip"}'
    closed = await scrape_until(port, lambda s: s.get(fallback) == 0, timeout=15)
    assert closed[fallback] == 0
    await wait_result(await send_edit(discord_fake, "primary again", [make_png()]))
    assert image_api.calls[-1].field("model") == "gpt-image-2-vip"


# Servers' own keys -----------------------------------------------------------------------------


async def test_without_a_secret_key_the_command_says_the_operator_has_not_enabled_it(
    bot: BotProcess, discord_fake: FakeDiscord
) -> None:
    handle = await discord_fake.slash_command(
        "atelier", [{"type": 2, "name": "key", "options": [{"type": 1, "name": "set", "options": []}]}],
        user_id=discord_fake.OWNER_ID,
    )  # fmt: skip
    assert "operator hasn't enabled" in await refusal(handle)


async def key_command(fake: FakeDiscord, sub: str, **kw: Any) -> Any:
    return await fake.slash_command(
        "atelier", [{"type": 2, "name": "key", "options": [{"type": 1, "name": sub, "options": []}]}], **kw
    )


async def test_a_server_key_is_stored_encrypted_used_for_its_jobs_and_outside_the_budget(
    bot_process: BotProcess, bot_env: dict[str, str], discord_fake: FakeDiscord, image_api: FakeImageAPI
) -> None:
    port = free_port()
    # DEBUG logs every gateway event, the key form's submission included: the log must still not hold it.
    bot_env.update(ATELIER_SECRET_KEY=SECRET_KEY, DAILY_BUDGET_USD="0.03", LOG_LEVEL="DEBUG", METRICS_PORT=str(port))
    image_api.api_keys = {SERVER_KEY}
    await bot_process.start()

    assert "Manage Server" in await refusal(await key_command(discord_fake, "set"))
    opened = await key_command(discord_fake, "set", user_id=discord_fake.OWNER_ID)
    callback = await opened.wait_for_callback()
    assert callback.json["type"] == 9 and callback.json["data"]["custom_id"] == "atelier:server-key-modal:v1"
    field = callback.json["data"]["components"][0]
    assert field["type"] == 18 and field["component"]["custom_id"] == "atelier-server-key"  # a ui.Label
    submitted = await discord_fake.submit_modal(
        "atelier:server-key-modal:v1", {"atelier-server-key": SERVER_KEY}, user_id=discord_fake.OWNER_ID
    )
    assert "own API key is set" in await refusal(submitted)

    # At rest: encrypted with ATELIER_SECRET_KEY, and in no file in clear.
    ((encrypted,),) = await rows(bot_env, "SELECT encrypted FROM guild_keys")
    assert Fernet(SECRET_KEY.encode()).decrypt(encrypted.encode()).decode() == SERVER_KEY
    assert files_holding(Path(bot_env["DATA_DIR"]), SERVER_KEY.encode()) == []

    # The server's jobs use it, and a budget of one image does not stop them.
    for n in range(3):
        await wait_result(await send_edit(discord_fake, f"own key {n}", [make_png()]))
    assert [c.headers["Authorization"] for c in image_api.calls] == [f"Bearer {SERVER_KEY}"] * 3
    assert await rows(bot_env, "SELECT COUNT(*) FROM jobs WHERE guild_key = 1") == [(3,)]
    metrics = await scrape(port)
    assert abs(metrics['atelier_spend_today_usd{key="server"}'] - 0.09) < 1e-9
    assert metrics['atelier_spend_today_usd{key="operator"}'] == 0
    shown = await refusal(await admin(discord_fake, "settings", user_id=discord_fake.OWNER_ID))
    assert f"this server's own key (set by <@{discord_fake.OWNER_ID}>)" in shown

    # After a restart the key is read back from the store.
    await bot_process.stop()
    await bot_process.start()
    await wait_result(await send_edit(discord_fake, "after restart", [make_png()]))
    assert image_api.calls[-1].headers["Authorization"] == f"Bearer {SERVER_KEY}"

    # Refused by the provider: the member is told their admins know; the admin who set it is told privately
    # (no audit channel here), once; the operator's log does not call it the operator's problem.
    image_api.api_keys = set()
    failed = await wait_final_text(await send_edit(discord_fake, "refused key", [make_png()]), "❌")
    assert "This server's own image API key was refused" in failed.json["content"]
    dm = await discord_fake.wait_for_request(lambda r: r.method == "POST" and r.path == "/api/v10/users/@me/channels")
    assert int(dm.json["recipient_id"]) == discord_fake.OWNER_ID
    alert = "own image API key was refused** by the image service"
    told = await discord_fake.wait_for_request(
        lambda r: r.method == "POST" and alert in str((r.json or {}).get("content"))
    )
    assert "HTTP 401" in told.json["content"]
    # The admins are not told twice: the decision is made (and logged) as the job ends, before its
    # member hears of it; the one alert was posted above.
    await wait_final_text(await send_edit(discord_fake, "refused again", [make_png()]), "❌")
    log = bot_process.log()
    assert log.count("telling its admins that their own API key failed") == 1
    assert len([r for r in discord_fake.requests if alert in str(r.json)]) == 1
    assert "a server's own API key was refused" in log and "image API needs the operator" not in log

    # Cleared: the bot's key again, and the operator's budget counts again.
    cleared = await key_command(discord_fake, "clear", user_id=discord_fake.OWNER_ID)
    assert "was removed" in await refusal(cleared)
    assert await rows(bot_env, "SELECT COUNT(*) FROM guild_keys") == [(0,)]
    await wait_result(await send_edit(discord_fake, "operator's key", [make_png()]))
    assert image_api.calls[-1].headers["Authorization"] == f"Bearer {API_KEY}"
    assert "budget" in await refusal(await send_edit(discord_fake, "over budget", [make_png()]))

    # The debug log saw the form's payload and every secret's use; none of them is in it.
    assert "atelier:server-key-modal:v1" in log and "[redacted]" in log
    assert [s for s in SECRETS if s in bot_process.log()] == []
