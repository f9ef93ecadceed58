"""The buttons on every result, end to end: 🔁 Reroll (and what it links back to) and 🗑 Delete."""

from __future__ import annotations

from typing import Any

from tests.fake_discord import FakeDiscord, InteractionHandle, RecordedRequest
from tests.fake_image_api import FakeImageAPI, Reply, make_png
from tests.harness import (
    BotProcess,
    card_buttons,
    card_text,
    money,
    rows,
    send_edit,
    wait_inputs_released,
    wait_result,
    wait_rows,
)
from tests.test_refine_e2e import result_button, stored, submit_refine, wait_thread_result

EPHEMERAL = 64


def link(fake: FakeDiscord, message: dict[str, Any]) -> str:
    return f"https://discord.com/channels/{fake.GUILD_ID}/{message['channel_id']}/{message['id']}"


async def a_result(
    fake: FakeDiscord, api: FakeImageAPI, images: list[bytes], output: bytes, **kw: Any
) -> tuple[InteractionHandle, dict[str, Any]]:
    api.then(Reply(image=output))
    handle = await send_edit(fake, "a lighthouse at dusk", images, **kw)
    await wait_result(handle)
    message = handle.original_message()
    assert message is not None
    return handle, message


async def wait_click_result(click: InteractionHandle, timeout: float = 20) -> RecordedRequest:
    """The edit that put a result image on a click's answer."""
    return await click.fake.wait_for_request(
        lambda r: click._mine(r) and r.method == "PATCH" and bool(r.files) and r.ok, timeout
    )


async def test_reroll_sends_the_same_inputs_instruction_and_size_again_and_links_back(
    bot: BotProcess, discord_fake: FakeDiscord, image_api: FakeImageAPI
) -> None:
    images = [make_png(30, 20, (1, 1, 1)), make_png(30, 20, (2, 2, 2))]
    _, message = await a_result(discord_fake, image_api, images, make_png(60, 40, (3, 3, 3)), size="2048x1360")
    again = make_png(60, 40, (4, 4, 4))
    image_api.then(Reply(image=again))

    click = await discord_fake.click_button(message, result_button(message, "Reroll"))
    ack = await click.wait_for_callback()
    # Answered where the result is, for everyone, like the result it rerolls.
    assert ack.json["type"] == 4 and not ack.json["data"].get("flags", 0) & EPHEMERAL
    assert "Rerolling" in ack.json["data"]["content"]
    result = await wait_click_result(click)
    assert result.files[0].data == again
    assert f"reroll of {link(discord_fake, message)}" in card_text(result)
    assert [b["label"] for b in card_buttons(result)] == ["Refine", "Reroll", "Variations", "Info", "Delete"]
    first, second = image_api.calls
    assert [p.data for p in second.images] == [p.data for p in first.images] == images
    assert second.field("prompt") == first.field("prompt") == "a lighthouse at dusk"
    assert second.field("size") == "2048x1360"
    jobs = await wait_rows(
        bot.env,
        "SELECT id, origin, parent_job_id, status FROM jobs ORDER BY created_at",
        lambda r: r[1][3] != "delivering",
    )
    assert [(kind, status) for _, kind, _, status in jobs] == [("command", "succeeded"), ("reroll", "succeeded")]
    assert jobs[1][2] == jobs[0][0]
    # Charged like any other edit.
    assert await money(bot.env) == [("a lighthouse at dusk", "charge"), ("a lighthouse at dusk", "charge")]


async def test_reroll_of_a_result_in_a_thread_stays_in_the_thread_and_refine_links_back(
    bot: BotProcess, discord_fake: FakeDiscord, image_api: FakeImageAPI
) -> None:
    _, message = await a_result(discord_fake, image_api, [make_png()], make_png(50, 50, (5, 5, 5)))
    await submit_refine(discord_fake, message, "add a storm")
    thread_id = int(message["id"])
    refined = await wait_thread_result(discord_fake, thread_id)
    assert f"refined from {link(discord_fake, message)}" in card_text(refined)
    in_thread = stored(discord_fake, refined)
    click = await discord_fake.click_button(in_thread, result_button(in_thread, "Reroll"))
    await click.wait_for_callback()
    assert click.payload["channel_id"] == str(thread_id)
    result = await wait_click_result(click)
    answer = click.original_message()
    assert answer is not None and int(answer["channel_id"]) == thread_id
    assert f"reroll of {link(discord_fake, in_thread)}" in card_text(result)
    # The reroll of the refine sent the refine's input (the first result) and instruction again.
    assert [p.data for p in image_api.calls[2].images] == [p.data for p in image_api.calls[1].images]
    assert image_api.calls[2].field("prompt") == "add a storm"


async def test_reroll_after_the_inputs_are_gone_says_so_privately_and_offers_refine(
    bot_process: BotProcess, bot_env: dict[str, str], discord_fake: FakeDiscord, image_api: FakeImageAPI
) -> None:
    bot_env["INPUT_RETENTION_HOURS"] = "0"  # nothing is kept after a job ends
    await bot_process.start()
    output = make_png(44, 44, (6, 6, 6))
    _, message = await a_result(discord_fake, image_api, [make_png()], output)
    await wait_rows(bot_env, "SELECT status FROM jobs", lambda r: r == [("succeeded",)])
    # The end of the job's inputs' window is recorded just after the job's end: wait for it, as a member would.
    await wait_inputs_released(bot_env)
    click = await discord_fake.click_button(message, result_button(message, "Reroll"))
    answer = (await click.wait_for_callback()).json
    assert answer["type"] == 4 and answer["data"].get("flags", 0) & EPHEMERAL, answer
    assert "The original images of edits are not kept on this bot" in answer["data"]["content"]
    (offer,) = answer["data"]["components"][0]["components"]
    assert offer["label"] == "Refine"
    assert (
        offer["custom_id"]
        == f"atelier:refine-from:v1:{message['channel_id']}:{message['id']}:"
        + result_button(message, "Reroll").rsplit(":", 1)[1]
    )
    assert len(image_api.calls) == 1 and len(await money(bot_env)) == 1  # no call, no charge
    # The offered Refine opens the form for that result, and refines it.
    reply = click.followups()[0] if click.followups() else click.original_message()
    assert reply is not None
    refine = await discord_fake.click_button(reply, offer["custom_id"])
    form = (await refine.wait_for_callback()).json
    assert form["type"] == 9
    await discord_fake.submit_modal(
        form["data"]["custom_id"],
        {"atelier-refine-prompt": "brighter", "atelier-refine-size": ["auto"]},
        channel_id=int(message["channel_id"]),
    )
    await wait_thread_result(discord_fake, int(message["id"]))
    assert [p.data for p in image_api.calls[1].images] == [output]


async def test_reroll_goes_through_the_same_limits(
    bot_process: BotProcess, bot_env: dict[str, str], discord_fake: FakeDiscord, image_api: FakeImageAPI
) -> None:
    bot_env["USER_DAILY_LIMIT"] = "1"
    await bot_process.start()
    _, message = await a_result(discord_fake, image_api, [make_png()], make_png())
    click = await discord_fake.click_button(message, result_button(message, "Reroll"))
    answer = (await click.wait_for_callback()).json["data"]
    assert answer["flags"] & EPHEMERAL and "used 1 of your 1 edits" in answer["content"]
    assert len(image_api.calls) == 1 and len(await money(bot_env)) == 1


async def test_delete_removes_only_that_result_for_its_requester_and_keeps_the_ledger(
    bot: BotProcess, discord_fake: FakeDiscord, image_api: FakeImageAPI
) -> None:
    _handle, message = await a_result(discord_fake, image_api, [make_png()], make_png(50, 50, (9, 9, 9)))
    await submit_refine(discord_fake, message, "iteration two")
    thread_id = int(message["id"])
    in_thread = stored(discord_fake, await wait_thread_result(discord_fake, thread_id))
    delete = result_button(message, "Delete")

    # Another member may not delete it: refused privately, nothing deleted.
    start = len(discord_fake.requests)
    other = await discord_fake.click_button(message, delete, user_id=discord_fake.OTHER_USER_ID)
    refusal = (await other.wait_for_callback()).json
    assert refusal["type"] == 4 and refusal["data"]["flags"] & EPHEMERAL
    assert "Only the member who asked" in refusal["data"]["content"]
    assert not [r for r in discord_fake.requests[start:] if r.method == "DELETE"]

    click = await discord_fake.click_button(message, delete)
    ack = await click.wait_for_callback()
    assert ack.json["type"] == 6  # the click is acknowledged without a message of its own
    deleted = await click.wait_for_webhook("DELETE")
    assert deleted.path.endswith("/messages/@original") and deleted.ok
    assert int(message["id"]) not in discord_fake.messages
    # The thread and its other iteration stay; the ledger keeps both jobs.
    assert int(in_thread["id"]) in discord_fake.messages and thread_id in discord_fake.channels
    deletions = await wait_rows(bot.env, "SELECT job_id, deleted_by FROM result_deletions", bool)
    jobs = await rows(bot.env, "SELECT id, status FROM jobs ORDER BY created_at")
    assert [status for _, status in jobs] == ["succeeded", "succeeded"]
    assert deletions == [(jobs[0][0], discord_fake.USER_ID)]


async def test_a_moderator_may_delete_someone_elses_result(
    bot: BotProcess, discord_fake: FakeDiscord, image_api: FakeImageAPI
) -> None:
    _, message = await a_result(discord_fake, image_api, [make_png()], make_png())
    click = await discord_fake.click_button(message, result_button(message, "Delete"), user_id=discord_fake.OWNER_ID)
    await click.wait_for_webhook("DELETE")
    assert int(message["id"]) not in discord_fake.messages
