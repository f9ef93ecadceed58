"""/history end to end: a member's last jobs, 10 a page, and Refine or Reroll of one of them."""

from __future__ import annotations

from typing import Any

from tests.fake_discord import FakeDiscord, InteractionHandle
from tests.fake_image_api import FakeImageAPI, Reply, make_png
from tests.harness import BotProcess, is_channel_post, money, send_edit, wait_final_text, wait_result, wait_rows
from tests.test_refine_e2e import PROMPT_FIELD, SIZE_FIELD, wait_thread_result

EPHEMERAL = 64


async def history(fake: FakeDiscord, **kw: Any) -> tuple[InteractionHandle, dict[str, Any]]:
    handle = await fake.slash_command("history", [], **kw)
    callback = await handle.wait_for_callback()
    assert callback.json["type"] == 4 and callback.json["data"]["flags"] & EPHEMERAL
    message = handle.original_message()
    assert message is not None
    return handle, message


def entries(message: dict[str, Any]) -> str:
    (embed,) = message["embeds"]
    return str(embed["description"])


def buttons(message: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {c["label"]: c for row in message["components"] for c in row["components"] if c["type"] == 2}


def pick_options(message: dict[str, Any]) -> tuple[str, list[dict[str, Any]]]:
    (select,) = [c for row in message["components"] for c in row["components"] if c["type"] == 3]
    return select["custom_id"], select["options"]


async def test_history_lists_ten_a_page_newest_first_with_outcomes_and_links(
    bot: BotProcess, discord_fake: FakeDiscord, image_api: FakeImageAPI
) -> None:
    results = []
    for n in range(11):
        handle = await send_edit(discord_fake, f"edit number {n}", [make_png()])
        await wait_result(handle)
        results.append(handle)
    image_api.then(Reply(kind="error", status=400, body={"error": {"message": "no"}}))
    role = discord_fake.ARTIST_ROLE_ID
    await wait_final_text(await send_edit(discord_fake, f"@everyone <@&{role}> look at this", [make_png()]), "❌")
    await wait_rows(bot.env, "SELECT status FROM jobs", lambda r: all(s in ("succeeded", "failed") for (s,) in r))
    # Someone else's jobs are not listed.
    await wait_result(await send_edit(discord_fake, "not mine", [make_png()], user_id=discord_fake.OTHER_USER_ID))

    handle, page1 = await history(discord_fake)
    text = entries(page1)
    assert text.count("**") == 20 and "**1.**" in text and "**10.**" in text and "not mine" not in text
    first_line = text.splitlines()[0]
    assert "@\u200beveryone" in first_line and f"<@&{role}>" not in first_line  # mentions neutralised
    assert "❌ failed · refunded" in text.splitlines()[1]
    newest_result = results[-1].original_message()
    assert newest_result is not None
    jump = f"https://discord.com/channels/{discord_fake.GUILD_ID}/{newest_result['channel_id']}/{newest_result['id']}"
    assert f"[jump]({jump})" in text.splitlines()[3] and "$0.03" in text.splitlines()[3]
    assert "edit number 10" in text and "edit number 1\n" not in text
    page_buttons = buttons(page1)
    assert page_buttons["Previous"]["disabled"] is True and page_buttons["Next"].get("disabled") is not True
    user = discord_fake.USER_ID
    assert page_buttons["Next"]["custom_id"] == f"atelier:history:v1:{user}:1:n"

    # Next page: the two oldest, and no next page after it.
    turn = await discord_fake.click_button(page1, page_buttons["Next"]["custom_id"])
    updated = (await turn.wait_for_callback()).json
    assert updated["type"] == 7
    page2 = discord_fake.messages[int(page1["id"])]
    assert "**11.**" in entries(page2) and "**12.**" in entries(page2) and "edit number 0" in entries(page2)
    assert buttons(page2)["Next"]["disabled"] is True
    back = await discord_fake.click_button(page2, buttons(page2)["Previous"]["custom_id"])
    await back.wait_for_callback()
    assert "**1.**" in entries(discord_fake.messages[int(page1["id"])])


async def test_history_buttons_work_after_a_restart_and_refuse_other_members(
    bot: BotProcess, discord_fake: FakeDiscord, image_api: FakeImageAPI
) -> None:
    for n in range(11):
        await wait_result(await send_edit(discord_fake, f"job {n}", [make_png()]))
    _, page1 = await history(discord_fake)
    next_id = buttons(page1)["Next"]["custom_id"]
    other = await discord_fake.click_button(page1, next_id, user_id=discord_fake.OTHER_USER_ID)
    refusal = (await other.wait_for_callback()).json
    assert (
        refusal["type"] == 4 and refusal["data"]["flags"] & EPHEMERAL and "another member" in refusal["data"]["content"]
    )
    await bot.stop()
    await bot.start()
    turn = await discord_fake.click_button(page1, next_id)
    assert (await turn.wait_for_callback()).json["type"] == 7
    assert "job 0" in entries(discord_fake.messages[int(page1["id"])])


async def test_history_offers_refine_and_reroll_of_an_entry(
    bot: BotProcess, discord_fake: FakeDiscord, image_api: FakeImageAPI
) -> None:
    source = make_png(30, 30, (3, 3, 3))
    output = make_png(60, 60, (4, 4, 4))
    image_api.then(Reply(image=output))
    first = await send_edit(discord_fake, "a fox in snow", [source], size="2048x1360")
    await wait_result(first)
    result = first.original_message()
    assert result is not None
    # Offered once the job's end is recorded, a moment after its result is posted.
    await wait_rows(bot.env, "SELECT status FROM jobs", lambda r: r == [("succeeded",)])
    _, page = await history(discord_fake)
    custom_id, options = pick_options(page)
    assert custom_id == f"atelier:history-pick:v1:{discord_fake.USER_ID}:0"
    assert [o["label"] for o in options] == ["Refine 1: a fox in snow", "Reroll 1: a fox in snow"]

    # Reroll: the same inputs again, its status where the result is, pointed to privately.
    start = len(discord_fake.requests)
    reroll = await discord_fake.click_button(page, custom_id, component_type=3, values=[options[1]["value"]])
    ack = (await reroll.wait_for_callback()).json
    assert ack["type"] == 4 and ack["data"]["flags"] & EPHEMERAL
    status = await discord_fake.wait_for_request(lambda r: is_channel_post(r, discord_fake.CHANNEL_ID), start=start)
    assert "Rerolling" in status.json["content"]
    await image_api.wait_for_calls(2)
    assert [p.data for p in image_api.calls[1].images] == [source] and image_api.calls[1].field("size") == "2048x1360"

    # Refine: the form for that result; its submission refines the result's image in its thread.
    refine = await discord_fake.click_button(page, custom_id, component_type=3, values=[options[0]["value"]])
    form = (await refine.wait_for_callback()).json
    assert form["type"] == 9
    assert form["data"]["custom_id"].startswith(f"atelier:refine-modal:v1:{result['channel_id']}:{result['id']}:")
    await discord_fake.submit_modal(
        form["data"]["custom_id"], {PROMPT_FIELD: "at night", SIZE_FIELD: ["auto"]}, channel_id=discord_fake.CHANNEL_ID
    )
    await wait_thread_result(discord_fake, int(result["id"]))
    assert [p.data for p in image_api.calls[2].images] == [output]
    await wait_rows(bot.env, "SELECT status FROM jobs", lambda r: all(s == "succeeded" for (s,) in r))
    assert len(await money(bot.env)) == 3


async def test_history_offers_no_reroll_once_the_inputs_are_gone(
    bot_process: BotProcess, bot_env: dict[str, str], discord_fake: FakeDiscord, image_api: FakeImageAPI
) -> None:
    bot_env["INPUT_RETENTION_HOURS"] = "0"
    await bot_process.start()
    await wait_result(await send_edit(discord_fake, "kept nothing", [make_png()]))
    await wait_rows(bot_env, "SELECT status FROM jobs", lambda r: r[0][0] == "succeeded")
    # Asked at once: the inputs are deleted just after the job's end is written, and Reroll is not offered
    # in between either (nothing is kept once a job ends).
    _, page = await history(discord_fake)
    _, options = pick_options(page)
    assert [o["label"] for o in options] == ["Refine 1: kept nothing"]
