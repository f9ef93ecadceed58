"""The job lifecycle end to end: the wrong answers the old engine gave, each a regression test.

1. Cancel, then a restart: the cancelled job is neither told "will resume" nor run nor refunded twice.
2. Round-robin with one busy slot: the member who asked while the slot was busy goes next.
3. A failure between admission and the queue (Discord refusing an answer, inputs that can't be saved)
   ends the job failed and refunded; nothing stays charged or "active".
4. An unexpected error in a button gets the one apology with an error reference, logged under it.
"""

from __future__ import annotations

import asyncio
import re
import signal
from typing import Any

from tests.fake_discord import FakeDiscord, InteractionHandle
from tests.fake_image_api import FakeImageAPI, Reply, make_png
from tests.harness import BotProcess, dialect, execute, send_edit, settled, wait_final_text, wait_result
from tests.test_refine_e2e import submit_refine

EPHEMERAL = 64


async def start(bot: BotProcess, env: dict[str, str], **settings: str) -> None:
    env.update(settings)
    await bot.start()


def cancel_button(handle: InteractionHandle) -> tuple[dict[str, Any], str]:
    message = handle.original_message()
    assert message is not None
    custom_id = message["components"][0]["components"][0]["custom_id"]
    assert custom_id.startswith("atelier:cancel:v1:")
    return message, custom_id


def contents(handle: InteractionHandle) -> list[str]:
    return [str(r.json.get("content")) for r in handle.webhook_requests() if r.method == "PATCH" and r.json]


async def block_inputs(env: dict[str, str]) -> None:
    """Make every save of job inputs fail, as a full disk would: the database refuses their rows (a trigger,
    in each database's own words)."""
    if dialect(env) == "sqlite":
        await execute(
            env, "CREATE TRIGGER no_inputs BEFORE INSERT ON job_inputs BEGIN SELECT RAISE(ABORT, 'disk is full'); END"
        )
        return
    await execute(
        env,
        "CREATE FUNCTION no_inputs() RETURNS trigger LANGUAGE plpgsql AS "
        "$$ BEGIN RAISE EXCEPTION 'disk is full' USING ERRCODE = 'disk_full'; END $$",
        "CREATE TRIGGER no_inputs BEFORE INSERT ON job_inputs FOR EACH ROW EXECUTE FUNCTION no_inputs()",
    )


async def usage_text(fake: FakeDiscord) -> str:
    callback = await (await fake.slash_command("usage", [])).wait_for_callback()
    return str(callback.json["data"]["content"])


async def test_a_cancelled_job_is_not_resumed_nor_refunded_twice_after_a_stop(
    bot_process: BotProcess, bot_env: dict[str, str], discord_fake: FakeDiscord, image_api: FakeImageAPI
) -> None:
    await start(bot_process, bot_env, MAX_CONCURRENT_JOBS="1", USER_MAX_ACTIVE="5", SHUTDOWN_GRACE_SECONDS="0.5")
    image_api.then(Reply(kind="hang"))
    first = await send_edit(discord_fake, "first", [make_png()])
    await image_api.wait_for_started(1)
    second = await send_edit(discord_fake, "second", [make_png()])
    await wait_final_text(second, "Queued")
    message, custom_id = cancel_button(second)
    click = await discord_fake.click_button(message, custom_id)
    assert "cancelled" in (await click.wait_for_callback()).json["data"]["content"]

    assert await bot_process.stop(signal.SIGTERM, timeout=15) == 0
    assert any("will resume automatically" in text for text in contents(first))
    # The member who was told "cancelled" is never told it will resume.
    assert not any("will resume" in text for text in contents(second))
    assert "1 job(s) will resume after the restart" in bot_process.log()

    await bot_process.start()
    await wait_result(first, timeout=20)
    assert [c.field("prompt") for c in image_api.calls] == ["first", "first"]
    ledger = await settled(bot_env)
    assert ledger == [("first", "succeeded", "charge"), ("second", "cancelled", "charge+refund")]
    assert "Today: 1 of 25 edits used" in await usage_text(discord_fake)


async def test_with_one_busy_slot_the_member_who_waited_goes_before_a_second_job(
    bot_process: BotProcess, bot_env: dict[str, str], discord_fake: FakeDiscord, image_api: FakeImageAPI
) -> None:
    await start(bot_process, bot_env, MAX_CONCURRENT_JOBS="1", USER_MAX_ACTIVE="5")
    b_asked = asyncio.Event()
    image_api.then(Reply(until=b_asked))  # A's first holds the only slot until B is in line
    a, b = discord_fake.USER_ID, discord_fake.OTHER_USER_ID
    a1 = await send_edit(discord_fake, "A1", [make_png()], user_id=a)
    await image_api.wait_for_started(1)
    a2 = await send_edit(discord_fake, "A2", [make_png()], user_id=a)
    await wait_final_text(a2, "Queued")  # A's second is in line before B asks
    b1 = await send_edit(discord_fake, "B1", [make_png()], user_id=b)
    await wait_final_text(b1, "Queued")
    b_asked.set()
    for handle in (a1, a2, b1):
        await wait_result(handle, timeout=20)
    assert [c.field("prompt") for c in image_api.calls] == ["A1", "B1", "A2"]


async def test_discord_refusing_the_refine_status_ends_the_job_refunded(
    bot_process: BotProcess, bot_env: dict[str, str], discord_fake: FakeDiscord, image_api: FakeImageAPI
) -> None:
    await start(bot_process, bot_env, USER_DAILY_LIMIT="2")
    first = await send_edit(discord_fake, "a castle", [make_png(40, 40)])
    await wait_result(first)
    message = first.original_message()
    assert message is not None
    # The status message in the new thread is refused (Missing Permissions): after the charge, before the queue.
    discord_fake.fail_next("POST", r"/channels/\d+/messages$", 403, {"code": 50013, "message": "Missing Permissions"})
    submit = await submit_refine(discord_fake, message, "add a moat")
    refusal = await submit.wait_for_webhook("POST")
    assert refusal.json["flags"] & EPHEMERAL and "refused to start the refinement" in refusal.json["content"]
    ledger = await settled(bot_env)
    assert ledger == [("a castle", "succeeded", "charge"), ("add a moat", "failed", "charge+refund")]
    assert len(image_api.calls) == 1
    # The refund is real: the member still has the second of their two edits.
    assert "1 of 2 edits used, **1 left**" in await usage_text(discord_fake)
    await wait_result(await send_edit(discord_fake, "another", [make_png()]))


async def test_a_refused_acknowledgement_ends_the_edit_refunded(
    bot_process: BotProcess, bot_env: dict[str, str], discord_fake: FakeDiscord, image_api: FakeImageAPI
) -> None:
    await start(bot_process, bot_env, USER_DAILY_LIMIT="1")
    discord_fake.fail_next("POST", r"/interactions/\d+/[^/]+/callback$", 400, {"code": 50035, "message": "bad"})
    handle = await send_edit(discord_fake, "refused", [make_png()])
    answer = await discord_fake.wait_for_request(
        lambda r: r.path.endswith(f"/{handle.token}/callback") and 200 <= r.status < 300, 10
    )
    assert answer.json["data"]["flags"] & EPHEMERAL and "did not accept my answer" in answer.json["data"]["content"]
    assert await settled(bot_env) == [("refused", "failed", "charge+refund")]
    assert image_api.calls == []
    await wait_result(await send_edit(discord_fake, "accepted", [make_png()]))


async def test_inputs_that_cannot_be_saved_end_the_job_refunded_with_one_apology(
    bot_process: BotProcess, bot_env: dict[str, str], discord_fake: FakeDiscord, image_api: FakeImageAPI
) -> None:
    bot_process.tracebacks_expected = True
    await start(bot_process, bot_env, USER_DAILY_LIMIT="1")
    await bot_process.stop()
    await block_inputs(bot_env)  # in the database the first start made
    await bot_process.start()
    handle = await send_edit(discord_fake, "unlucky", [make_png()])
    apology = await wait_final_text(handle, "error reference")
    reference = re.search(r"error reference `([0-9a-f]+)`", apology.json["content"])
    assert reference is not None and "Nothing was charged" in apology.json["content"]
    log = bot_process.log()
    assert f"(reference {reference.group(1)})" in log and "Traceback" in log
    assert await settled(bot_env) == [("unlucky", "failed", "charge+refund")]
    assert image_api.calls == []
    assert "0 of 1 edit used, **1 left**" in await usage_text(discord_fake)


async def test_an_unexpected_error_in_a_button_gets_the_one_apology_with_a_reference(
    bot_process: BotProcess, bot_env: dict[str, str], discord_fake: FakeDiscord, image_api: FakeImageAPI
) -> None:
    bot_process.tracebacks_expected = True
    await start(bot_process, bot_env, MAX_CONCURRENT_JOBS="1", USER_MAX_ACTIVE="5")
    release = asyncio.Event()  # the first call holds the slot until the cancel is done, however slow the machine
    image_api.then(Reply(until=release))
    running = await send_edit(discord_fake, "slow", [make_png()])
    await image_api.wait_for_started(1)
    queued = await send_edit(discord_fake, "queued", [make_png()])
    await wait_final_text(queued, "Queued")
    message, custom_id = cancel_button(queued)
    # Discord refuses the button's answer with an error discord.py does not retry: a bug's path.
    discord_fake.fail_next("POST", r"/interactions/\d+/[^/]+/callback$", 400, {"code": 50035, "message": "bad"})
    click = await discord_fake.click_button(message, custom_id)
    answer = await discord_fake.wait_for_request(
        lambda r: r.path.endswith(f"/{click.token}/callback") and 200 <= r.status < 300, 10
    )
    data = answer.json["data"]
    assert data["flags"] & EPHEMERAL
    reference = re.search(r"error reference `([0-9a-f]+)`", data["content"])
    assert reference is not None
    assert f"(reference {reference.group(1)})" in bot_process.log()
    release.set()
    await wait_result(running)
    # The cancel itself took effect: once nothing is unfinished, the queued job never ran.
    assert await settled(bot_env) == [("slow", "succeeded", "charge"), ("queued", "cancelled", "charge+refund")]
    assert [c.field("prompt") for c in image_api.calls] == ["slow"]
