"""Community operations end to end: limits, fairness, cancel, restarts, late delivery, admin commands."""

from __future__ import annotations

import asyncio
import signal
from typing import Any

import pytest

from tests.fake_discord import FakeDiscord, InteractionHandle
from tests.fake_image_api import FakeImageAPI, Reply, make_png
from tests.harness import (
    BotProcess,
    card_buttons,
    card_text,
    is_card,
    send_edit,
    settled,
    wait_final_text,
    wait_inputs_released,
    wait_result,
)

EPHEMERAL = 64


async def refusal(handle: InteractionHandle) -> str:
    """The ephemeral refusal a command got as its first answer."""
    callback = await handle.wait_for_callback()
    data = callback.json["data"]
    assert data.get("flags", 0) & EPHEMERAL, data
    return str(data["content"])


async def start(bot: BotProcess, env: dict[str, str], **settings: str) -> None:
    env.update(settings)
    await bot.start()


def prompts(api: FakeImageAPI) -> list[str | None]:
    return [call.field("prompt") for call in api.calls]


async def admin(
    fake: FakeDiscord, sub: str, options: list[dict[str, Any]] | None = None, **kw: Any
) -> InteractionHandle:
    return await fake.slash_command("atelier", [{"type": 1, "name": sub, "options": options or []}], **kw)


async def test_third_edit_is_refused_at_a_daily_limit_of_two(
    bot_process: BotProcess, bot_env: dict[str, str], discord_fake: FakeDiscord, image_api: FakeImageAPI
) -> None:
    await start(bot_process, bot_env, USER_DAILY_LIMIT="2")
    for n in range(2):
        await wait_result(await send_edit(discord_fake, f"edit {n}", [make_png()]))
    text = await refusal(await send_edit(discord_fake, "edit 3", [make_png()]))
    assert "used 2 of your 2 edits for today" in text and "resets at 00:00 UTC" in text
    assert len(image_api.calls) == 2
    usage = await discord_fake.slash_command("usage", [])
    report = await refusal(usage)
    assert "2 of 2 edits used, **0 left**" in report


async def test_a_failed_edit_is_refunded(
    bot_process: BotProcess, bot_env: dict[str, str], discord_fake: FakeDiscord, image_api: FakeImageAPI
) -> None:
    await start(bot_process, bot_env, USER_DAILY_LIMIT="1")
    image_api.then(Reply(kind="error", status=400, body={"error": {"message": "nope"}}))
    await wait_final_text(await send_edit(discord_fake, "fails", [make_png()]), "❌")
    # A bad input is refunded too.
    bad = await send_edit(discord_fake, "bad", [b"not an image"])
    await bad.wait_for_webhook("POST")
    await wait_result(await send_edit(discord_fake, "works", [make_png()]))
    assert prompts(image_api) == ["fails", "works"]


async def test_two_simultaneous_edits_at_a_limit_of_one_cannot_both_run(
    bot_process: BotProcess, bot_env: dict[str, str], discord_fake: FakeDiscord, image_api: FakeImageAPI
) -> None:
    await start(bot_process, bot_env, USER_DAILY_LIMIT="1", USER_MAX_ACTIVE="5")
    first, second = await asyncio.gather(
        send_edit(discord_fake, "one", [make_png()]), send_edit(discord_fake, "two", [make_png()])
    )
    callbacks = [await first.wait_for_callback(), await second.wait_for_callback()]
    refused = [c for c in callbacks if c.json["data"].get("flags", 0) & EPHEMERAL]
    assert len(refused) == 1 and "used 1 of your 1 edits" in refused[0].json["data"]["content"]
    accepted = first if refused[0] is callbacks[1] else second
    await wait_result(accepted)
    # Once the store has every job ended, nothing is left to reach the API: the refused one was never a job.
    assert await settled(bot_env) == [("one" if accepted is first else "two", "succeeded", "charge")]
    assert len(image_api.calls) == 1


async def test_twenty_members_at_once_never_exceed_the_concurrency_limit(
    bot_process: BotProcess, bot_env: dict[str, str], discord_fake: FakeDiscord, image_api: FakeImageAPI
) -> None:
    await start(bot_process, bot_env, MAX_CONCURRENT_JOBS="4")
    image_api.latency = 0.3
    users = [discord_fake.USER_ID + 1000 + n for n in range(20)]
    for user in users:
        discord_fake.add_user(user, f"member{user}")
    handles = await asyncio.gather(*(send_edit(discord_fake, f"from {u}", [make_png()], user_id=u) for u in users))
    results = await asyncio.gather(*(wait_result(h, timeout=30) for h in handles))
    assert all(r.files for r in results)
    assert image_api.max_in_flight == 4
    assert len(image_api.calls) == 20


async def test_round_robin_member_b_overtakes_member_a(
    bot_process: BotProcess, bot_env: dict[str, str], discord_fake: FakeDiscord, image_api: FakeImageAPI
) -> None:
    await start(bot_process, bot_env, MAX_CONCURRENT_JOBS="1", USER_MAX_ACTIVE="5")
    image_api.latency = 0.3
    b_asked = asyncio.Event()
    image_api.then(Reply(until=b_asked))  # A's first holds the only slot until B is in line
    a, b = discord_fake.USER_ID, discord_fake.OTHER_USER_ID
    a_jobs = [await send_edit(discord_fake, f"A{n}", [make_png()], user_id=a) for n in range(1, 6)]
    for handle in a_jobs:
        await handle.wait_for_webhook("PATCH")  # queued (its images are in) before B asks
    b_job = await send_edit(discord_fake, "B1", [make_png()], user_id=b)
    await wait_final_text(b_job, "Queued")
    b_asked.set()
    await wait_result(b_job, timeout=30)
    # A's jobs are in line in the order each got its images in, which a busy machine may shuffle: wait for all.
    await asyncio.gather(*(wait_result(handle, timeout=30) for handle in a_jobs))
    order = prompts(image_api)
    # A's first took the free slot; when it freed, B (never served yet) went before A's second.
    assert order.index("B1") == 1, order
    assert sorted(order) == ["A1", "A2", "A3", "A4", "A5", "B1"], order
    # Waiting jobs showed their place in the queue on the acknowledged message.
    shown = [
        str(r.json.get("content"))
        for handle in a_jobs
        for r in handle.webhook_requests()
        if r.method == "PATCH" and r.json and "Queued —" in str(r.json.get("content"))
    ]
    assert len(shown) >= 3 and any("position" in s for s in shown), shown


async def test_cancel_withdraws_a_queued_job_at_no_cost(
    bot_process: BotProcess, bot_env: dict[str, str], discord_fake: FakeDiscord, image_api: FakeImageAPI
) -> None:
    await start(bot_process, bot_env, MAX_CONCURRENT_JOBS="1", USER_DAILY_LIMIT="2", USER_MAX_ACTIVE="5")
    release = asyncio.Event()  # the first call holds the slot until the cancel is done, however slow the machine
    image_api.then(Reply(until=release))
    running = await send_edit(discord_fake, "slow", [make_png()])
    await image_api.wait_for_started(1)
    queued = await send_edit(discord_fake, "to cancel", [make_png()])
    await queued.wait_for_callback()
    message = queued.original_message()
    assert message is not None
    custom_id = message["components"][0]["components"][0]["custom_id"]
    assert custom_id.startswith("atelier:cancel:v1:")
    # Someone else may not cancel it.
    other = await discord_fake.click_button(message, custom_id, user_id=discord_fake.OTHER_USER_ID)
    assert "Only the member who asked" in await refusal(other)
    click = await discord_fake.click_button(message, custom_id)
    callback = await click.wait_for_callback()
    assert callback.json["type"] == 7 and "cancelled" in callback.json["data"]["content"], callback.json
    assert callback.json["data"]["components"] == []
    release.set()
    await wait_result(running)
    # The cancelled job was not charged: a second edit still fits the limit of two. With one slot, it runs
    # after anything still in line: had the cancelled job run, the API would have seen it before.
    await wait_result(await send_edit(discord_fake, "second", [make_png()]))
    assert prompts(image_api) == ["slow", "second"]
    await wait_inputs_released(bot_env)


async def test_queued_and_running_jobs_survive_sigterm_and_resume(
    bot_process: BotProcess, bot_env: dict[str, str], discord_fake: FakeDiscord, image_api: FakeImageAPI
) -> None:
    await start(bot_process, bot_env, MAX_CONCURRENT_JOBS="1", USER_MAX_ACTIVE="5", SHUTDOWN_GRACE_SECONDS="0.5")
    image_api.then(Reply(kind="hang"))
    running = await send_edit(discord_fake, "running", [make_png()])
    await image_api.wait_for_started(1)
    queued = await send_edit(discord_fake, "queued", [make_png()])
    await queued.wait_for_webhook("PATCH")  # its queue position
    code = await bot_process.stop(signal.SIGTERM, timeout=15)
    assert code == 0
    log = bot_process.log()
    assert "2 job(s) will resume after the restart" in log
    for handle in (running, queued):
        texts = [str(r.json.get("content")) for r in handle.webhook_requests() if r.method == "PATCH" and r.json]
        assert any("will resume automatically" in t for t in texts), texts
    await bot_process.start()
    await wait_result(running, timeout=20)
    await wait_result(queued, timeout=20)
    assert prompts(image_api) == ["running", "running", "queued"]
    await wait_inputs_released(bot_env)


async def test_a_crash_retries_a_running_job_once_and_runs_queued_ones(
    bot_process: BotProcess, bot_env: dict[str, str], discord_fake: FakeDiscord, image_api: FakeImageAPI
) -> None:
    await start(bot_process, bot_env, MAX_CONCURRENT_JOBS="1", USER_MAX_ACTIVE="5")
    image_api.then(Reply(kind="hang"))
    running = await send_edit(discord_fake, "running", [make_png()])
    await image_api.wait_for_started(1)
    queued = await send_edit(discord_fake, "queued", [make_png()])
    await queued.wait_for_webhook("PATCH")
    await bot_process.stop(signal.SIGKILL)
    await bot_process.start()
    await wait_result(running, timeout=20)
    await wait_result(queued, timeout=20)
    assert prompts(image_api) == ["running", "running", "queued"]


async def test_a_job_interrupted_by_two_crashes_fails_with_a_message(
    bot_process: BotProcess, bot_env: dict[str, str], discord_fake: FakeDiscord, image_api: FakeImageAPI
) -> None:
    await start(bot_process, bot_env, USER_DAILY_LIMIT="1")
    image_api.then(Reply(kind="hang"), Reply(kind="hang"))
    handle = await send_edit(discord_fake, "doomed", [make_png()])
    for attempt in (1, 2):
        await image_api.wait_for_started(attempt)
        await bot_process.stop(signal.SIGKILL)
        await bot_process.start()
    failed = await wait_final_text(handle, "stopped twice")
    assert "not charged" in failed.json["content"]
    await wait_result(await send_edit(discord_fake, "refunded", [make_png()]))


async def test_a_result_after_the_token_expired_is_posted_to_the_channel(
    bot: BotProcess, discord_fake: FakeDiscord, image_api: FakeImageAPI
) -> None:
    output = make_png(44, 33, (4, 4, 4))
    expired = asyncio.Event()  # the call lasts until the token has expired, however slow the machine
    image_api.then(Reply(image=output, until=expired))
    handle = await send_edit(discord_fake, "slow one", [make_png()])
    await image_api.wait_for_started(1)
    discord_fake.expire_interaction(handle.token)
    expired.set()
    posted = await discord_fake.wait_for_request(
        lambda r: (
            r.method == "POST" and r.path == f"/api/v10/channels/{discord_fake.CHANNEL_ID}/messages" and bool(r.files)
        ),
        15,
    )
    assert posted.files[0].data == output
    # A card names its member in its text: with the mention allowed for them alone, it pings them only.
    assert is_card(posted) and not posted.json.get("content")
    assert f"<@{discord_fake.USER_ID}>" in card_text(posted)
    assert posted.json["allowed_mentions"] == {"parse": [], "users": [discord_fake.USER_ID]}
    assert [int(u["id"]) for u in discord_fake.messages[int(posted.response["id"])]["mentions"]] == [
        discord_fake.USER_ID
    ]
    assert posted.headers["Authorization"] == f"Bot {discord_fake.token}"
    assert card_buttons(posted)[0]["custom_id"].startswith("atelier:refine:v1:")


@pytest.mark.parametrize("setting", ["ALLOWED_CHANNEL_IDS", "ALLOWED_ROLE_IDS"])
async def test_disallowed_channel_or_role_is_refused_and_says_where(
    bot_process: BotProcess, bot_env: dict[str, str], discord_fake: FakeDiscord, image_api: FakeImageAPI, setting: str
) -> None:
    allowed = discord_fake.OTHER_CHANNEL_ID if setting == "ALLOWED_CHANNEL_IDS" else discord_fake.MODERATOR_ROLE_ID
    await start(bot_process, bot_env, **{setting: str(allowed)})
    text = await refusal(await send_edit(discord_fake, "x", [make_png()]))
    assert f"<#{allowed}>" in text if setting == "ALLOWED_CHANNEL_IDS" else f"<@&{allowed}>" in text
    assert image_api.calls == []
    if setting == "ALLOWED_CHANNEL_IDS":
        await wait_result(await send_edit(discord_fake, "ok", [make_png()], channel_id=allowed))
    else:
        await wait_result(await send_edit(discord_fake, "ok", [make_png()], user_id=discord_fake.OWNER_ID))


async def test_direct_messages_are_off_unless_allowed(
    bot: BotProcess, discord_fake: FakeDiscord, image_api: FakeImageAPI
) -> None:
    text = await refusal(await send_edit(discord_fake, "x", [make_png()], guild_id=None))
    assert "servers only" in text
    assert image_api.calls == []


async def test_budget_refuses_even_exempt_members(
    bot_process: BotProcess, bot_env: dict[str, str], discord_fake: FakeDiscord, image_api: FakeImageAPI
) -> None:
    await start(bot_process, bot_env, DAILY_BUDGET_USD="0.05", PRICE_PER_IMAGE="0.03")
    await wait_result(await send_edit(discord_fake, "one", [make_png()], user_id=discord_fake.OWNER_ID))
    text = await refusal(await send_edit(discord_fake, "two", [make_png()], user_id=discord_fake.OWNER_ID))
    assert "budget" in text and "$0.03 of $0.05" in text
    assert len(image_api.calls) == 1


async def test_admin_changes_a_limit_and_it_holds_after_a_restart(
    bot: BotProcess, discord_fake: FakeDiscord, image_api: FakeImageAPI
) -> None:
    denied = await admin(discord_fake, "limits", [{"name": "user_daily", "type": 4, "value": 1}])
    assert "Manage Server" in await refusal(denied)
    changed = await admin(
        discord_fake, "limits", [{"name": "user_daily", "type": 4, "value": 1}], user_id=discord_fake.OWNER_ID
    )
    text = await refusal(changed)
    assert "Limits updated" in text and "Edits per member per day: **1** *(set here)*" in text
    await bot.stop()
    await bot.start()
    await wait_result(await send_edit(discord_fake, "first", [make_png()]))
    assert "used 1 of your 1 edits" in await refusal(await send_edit(discord_fake, "second", [make_png()]))
    shown = await refusal(await admin(discord_fake, "limits", user_id=discord_fake.OWNER_ID))
    assert "Limits in this server" in shown and "**1** *(set here)*" in shown


async def test_admin_stats_report_jobs_spend_and_busiest_members(
    bot: BotProcess, discord_fake: FakeDiscord, image_api: FakeImageAPI
) -> None:
    await wait_result(await send_edit(discord_fake, "ok", [make_png()]))
    image_api.then(Reply(kind="error", status=400, body={"error": {"message": "no"}}))
    await wait_final_text(await send_edit(discord_fake, "bad", [make_png()]), "❌")
    text = await refusal(await admin(discord_fake, "stats", user_id=discord_fake.OWNER_ID))
    assert "**2** today" in text and "1 succeeded, 1 failed" in text
    assert "Success rate (7 days): **50%**" in text
    assert "Spend today, all servers: **$0.03**" in text
    assert f"<@{discord_fake.USER_ID}> (2)" in text


async def test_refine_goes_through_the_same_limits(
    bot_process: BotProcess, bot_env: dict[str, str], discord_fake: FakeDiscord, image_api: FakeImageAPI
) -> None:
    await start(bot_process, bot_env, USER_DAILY_LIMIT="1")
    handle = await send_edit(discord_fake, "first", [make_png()])
    await wait_result(handle)
    message = handle.original_message()
    assert message is not None
    button = card_buttons(message)[0]["custom_id"]
    assert button.startswith("atelier:refine:v1:")
    click = await discord_fake.click_button(message, button)
    modal = (await click.wait_for_callback()).json["data"]
    submit = await discord_fake.submit_modal(
        modal["custom_id"], {"atelier-refine-prompt": "more", "atelier-refine-size": "auto"}, message=message
    )
    assert "used 1 of your 1 edits" in await refusal(submit)
    assert len(image_api.calls) == 1
    assert not [r for r in discord_fake.requests if r.path.endswith("/threads")]


async def test_a_moderator_may_cancel_someone_elses_queued_job(
    bot_process: BotProcess, bot_env: dict[str, str], discord_fake: FakeDiscord, image_api: FakeImageAPI
) -> None:
    await start(bot_process, bot_env, MAX_CONCURRENT_JOBS="1")
    release = asyncio.Event()  # the first call holds the slot until the cancel is done, however slow the machine
    image_api.then(Reply(until=release))
    running = await send_edit(discord_fake, "slow", [make_png()])
    await image_api.wait_for_started(1)
    queued = await send_edit(discord_fake, "spam", [make_png()], user_id=discord_fake.OTHER_USER_ID)
    await queued.wait_for_callback()
    message = queued.original_message()
    assert message is not None
    click = await discord_fake.click_button(
        message, message["components"][0]["components"][0]["custom_id"], user_id=discord_fake.OWNER_ID
    )
    callback = await click.wait_for_callback()
    assert callback.json["type"] == 7
    assert f"cancelled by <@{discord_fake.OWNER_ID}>" in callback.json["data"]["content"]
    release.set()
    await wait_result(running)
    # With one slot, a later edit runs after anything still in line: had the cancelled job run, the API
    # would have seen it before this one.
    await wait_result(await send_edit(discord_fake, "later", [make_png()]))
    assert prompts(image_api) == ["slow", "later"]


async def test_guild_daily_limit_applies_to_everyone(
    bot_process: BotProcess, bot_env: dict[str, str], discord_fake: FakeDiscord, image_api: FakeImageAPI
) -> None:
    await start(bot_process, bot_env, GUILD_DAILY_LIMIT="1")
    await wait_result(await send_edit(discord_fake, "one", [make_png()]))
    text = await refusal(await send_edit(discord_fake, "two", [make_png()], user_id=discord_fake.OTHER_USER_ID))
    assert "This server has used all 1 of its edits for today" in text


async def test_direct_messages_work_when_allowed(
    bot_process: BotProcess, bot_env: dict[str, str], discord_fake: FakeDiscord, image_api: FakeImageAPI
) -> None:
    await start(bot_process, bot_env, ALLOW_DMS="true")
    output = make_png(30, 20, (5, 5, 5))
    image_api.then(Reply(image=output))
    handle = await send_edit(discord_fake, "in a DM", [make_png()], guild_id=None)
    result = await wait_result(handle)
    assert result.files[0].data == output
    assert handle.payload["channel"]["type"] == 1  # a DM channel
