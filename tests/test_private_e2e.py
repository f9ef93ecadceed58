"""Private results end to end: ephemeral status and result, private refines and rerolls, late results by
direct message, closed DMs (undelivered, told next time), and the server's private setting."""

from __future__ import annotations

import asyncio
from typing import Any

from tests.fake_discord import FLAG_IS_COMPONENTS_V2, FakeDiscord, InteractionHandle, RecordedRequest
from tests.fake_image_api import FakeImageAPI, Reply, make_png
from tests.harness import BotProcess, card_buttons, card_text, is_card, money, option, rows, send_edit, wait_rows
from tests.test_refine_e2e import PROMPT_FIELD, SIZE_FIELD, result_button
from tests.test_results_e2e import wait_click_result

EPHEMERAL = 64


async def send_private_edit(fake: FakeDiscord, prompt: str, images: list[bytes], **kw: Any) -> InteractionHandle:
    """``/edit`` with ``private:True`` (the option after the first image)."""
    attachment = fake.add_attachment(images[0], "photo1.png", "image/png")
    options = [option("prompt", prompt, 3), option("image1", attachment["id"], 11), option("private", True, 5)]
    return await fake.slash_command("edit", options, resolved_attachments=[attachment], **kw)


async def private_result(handle: InteractionHandle) -> tuple[RecordedRequest, dict[str, Any]]:
    result = await wait_click_result(handle)
    message = handle.original_message()
    assert message is not None and message["flags"] & EPHEMERAL
    return result, message


def channel_posts(fake: FakeDiscord, start: int = 0) -> list[RecordedRequest]:
    """Bot-token messages, threads or edits in guild channels: what everyone could see."""
    return [
        r
        for r in fake.requests[start:]
        if r.path.startswith("/api/v10/channels/") and r.method in ("POST", "PATCH") and "/users/" not in r.path
    ]


async def test_a_private_edit_and_its_refine_and_reroll_are_seen_only_by_the_member(
    bot: BotProcess, discord_fake: FakeDiscord, image_api: FakeImageAPI
) -> None:
    output = make_png(40, 30, (1, 1, 1))
    image_api.then(Reply(image=output))
    handle = await send_private_edit(discord_fake, "a secret garden", [make_png()])
    ack = await handle.wait_for_callback()
    assert ack.json["type"] == 4 and ack.json["data"]["flags"] & EPHEMERAL
    result, message = await private_result(handle)
    assert result.files[0].data == output
    # The same card as any result, seen by the member alone.
    assert is_card(result) and message["flags"] & FLAG_IS_COMPONENTS_V2
    assert [b["label"] for b in card_buttons(result)] == ["Refine", "Reroll", "Variations", "Info", "Delete"]

    # Reroll of the private result: its answer is private too.
    click = await discord_fake.click_button(message, result_button(message, "Reroll"))
    assert (await click.wait_for_callback()).json["data"]["flags"] & EPHEMERAL
    reroll, _ = await private_result(click)
    assert f"reroll of `{result_button(message, 'Reroll').rsplit(':', 1)[1]}`" in card_text(reroll)

    # Refine of the private result: the form's answer is the private status, then the result; no thread.
    refine = await discord_fake.click_button(message, result_button(message, "Refine"))
    form = (await refine.wait_for_callback()).json["data"]
    submit = await discord_fake.submit_modal(
        form["custom_id"], {PROMPT_FIELD: "more roses", SIZE_FIELD: ["auto"]}, message=message
    )
    assert (await submit.wait_for_callback()).json["data"]["flags"] & EPHEMERAL
    refined, _ = await private_result(submit)
    assert f"refined from `{result_button(message, 'Refine').rsplit(':', 1)[1]}`" in card_text(refined)
    assert [p.data for p in image_api.calls[2].images] == [output]
    assert channel_posts(discord_fake) == []
    rows = await wait_rows(
        bot.env, "SELECT origin, private, delivered FROM jobs ORDER BY created_at", lambda r: r[-1][2] is not None
    )
    assert rows == [("command", 1, "private"), ("reroll", 1, "private"), ("refine", 1, "private")]

    # Delete works on a private result too: through the click's token, the only way to reach it.
    delete = await discord_fake.click_button(message, result_button(message, "Delete"))
    deleted = await delete.wait_for_webhook("DELETE")
    assert deleted.path.endswith("/messages/@original") and int(message["id"]) not in discord_fake.messages


async def test_another_member_cannot_refine_or_reroll_a_private_result(
    bot: BotProcess, discord_fake: FakeDiscord, image_api: FakeImageAPI
) -> None:
    handle = await send_private_edit(discord_fake, "mine alone", [make_png()])
    _, message = await private_result(handle)
    for label in ("Refine", "Reroll"):
        other = await discord_fake.click_button(
            message, result_button(message, label), user_id=discord_fake.OTHER_USER_ID
        )
        answer = (await other.wait_for_callback()).json
        assert answer["type"] == 4 and answer["data"]["flags"] & EPHEMERAL
        assert "private to the member who asked" in answer["data"]["content"]
    assert len(image_api.calls) == 1 and len(await money(bot.env)) == 1


async def test_a_late_private_result_is_sent_by_direct_message(
    bot: BotProcess, discord_fake: FakeDiscord, image_api: FakeImageAPI
) -> None:
    output = make_png(33, 22, (2, 2, 2))
    expired = asyncio.Event()  # the call lasts until the token has expired, however slow the machine
    image_api.then(Reply(image=output, until=expired))
    handle = await send_private_edit(discord_fake, "slow and private", [make_png()])
    await image_api.wait_for_started(1)
    discord_fake.expire_interaction(handle.token)
    expired.set()
    dm = await discord_fake.wait_for_request(lambda r: r.method == "POST" and r.path.endswith("/users/@me/channels"))
    assert dm.json == {"recipient_id": discord_fake.USER_ID}
    dm_channel = int(dm.response["id"])
    sent = await discord_fake.wait_for_request(
        lambda r: r.method == "POST" and r.path == f"/api/v10/channels/{dm_channel}/messages" and r.ok
    )
    assert sent.files[0].data == output and sent.headers["Authorization"] == f"Bot {discord_fake.token}"
    assert is_card(sent) and "15-minute limit" in card_text(sent) and "/history" in card_text(sent)
    # Refine and Reroll from a DM would fall outside the server's limits: only Info and Delete are there.
    assert [b["label"] for b in card_buttons(sent)] == ["Info", "Delete"]
    assert not [r for r in channel_posts(discord_fake) if f"/channels/{dm_channel}/" not in r.path]
    rows = await wait_rows(bot.env, "SELECT status, delivered FROM jobs", lambda r: r[0][0] == "succeeded")
    assert rows == [("succeeded", "direct_message")]


async def test_closed_dms_leave_a_late_private_result_undelivered_and_the_member_is_told_next_time(
    bot: BotProcess, discord_fake: FakeDiscord, image_api: FakeImageAPI
) -> None:
    discord_fake.closed_dms.add(discord_fake.USER_ID)
    expired = asyncio.Event()  # the call lasts until the token has expired, however slow the machine
    image_api.then(Reply(until=expired))
    handle = await send_private_edit(discord_fake, "never arrives", [make_png()])
    await image_api.wait_for_started(1)
    discord_fake.expire_interaction(handle.token)
    expired.set()
    refused = await discord_fake.wait_for_request(lambda r: r.method == "POST" and r.status == 403, 15)
    assert refused.response["code"] == 50007
    rows = await wait_rows(bot.env, "SELECT status, delivered FROM jobs", lambda r: r[0][0] == "succeeded")
    assert rows == [("succeeded", "undelivered")]
    assert await money(bot.env) == [("never arrives", "charge")]  # made, so not refunded

    usage = await discord_fake.slash_command("usage", [])
    first = await usage.wait_for_callback()
    assert first.json["data"]["flags"] & EPHEMERAL and "usage" in first.json["data"]["content"]
    notice = await usage.wait_for_webhook("POST")
    assert notice.json["flags"] & EPHEMERAL
    assert "could not reach you" in notice.json["content"] and "never arrives" in notice.json["content"]
    await wait_rows(bot.env, "SELECT job_id FROM notices WHERE shown_at IS NOT NULL", lambda r: len(r) == 1)
    # Told once: the next command gets no notice ...
    again = await discord_fake.slash_command("usage", [])
    await again.wait_for_callback()
    # ... which shows once a later result is lost too: the command after that is told of it alone.
    expired = asyncio.Event()
    image_api.then(Reply(until=expired))
    lost = await send_private_edit(discord_fake, "lost as well", [make_png()])
    await image_api.wait_for_started(2)
    discord_fake.expire_interaction(lost.token)
    expired.set()
    await wait_rows(
        bot.env, "SELECT delivered FROM jobs WHERE prompt = 'lost as well'", lambda r: r == [("undelivered",)]
    )
    later = await discord_fake.slash_command("usage", [])
    second_notice = await later.wait_for_webhook("POST")
    assert "lost as well" in second_notice.json["content"] and "never arrives" not in second_notice.json["content"]
    assert again.followups() == []


async def test_a_notice_being_told_as_the_bot_stops_is_sent_and_recorded_as_told(
    bot: BotProcess, discord_fake: FakeDiscord, image_api: FakeImageAPI
) -> None:
    discord_fake.closed_dms.add(discord_fake.USER_ID)
    expired = asyncio.Event()  # the call lasts until the token has expired, however slow the machine
    image_api.then(Reply(until=expired))
    handle = await send_private_edit(discord_fake, "told at the stop", [make_png()])
    await image_api.wait_for_started(1)
    discord_fake.expire_interaction(handle.token)
    expired.set()
    await wait_rows(bot.env, "SELECT delivered FROM jobs", lambda r: r == [("undelivered",)])
    # Discord rate-limits the notice once: discord.py waits a second to send it again, and the bot stops meanwhile.
    discord_fake.fail_next(
        "POST", r"/webhooks/", 429, {"retry_after": 1.0}, only=lambda r: "told at the stop" in str(r.json)
    )
    usage = await discord_fake.slash_command("usage", [])
    await discord_fake.wait_for_request(lambda r: usage._mine(r) and r.status == 429)
    assert await bot.stop() == 0
    (notice,) = usage.followups()
    assert "told at the stop" in notice["content"]
    assert await rows(bot.env, "SELECT COUNT(*) FROM notices WHERE shown_at IS NOT NULL") == [(1,)]


async def test_the_server_setting_can_forbid_or_force_private_results(
    bot: BotProcess, discord_fake: FakeDiscord, image_api: FakeImageAPI
) -> None:
    async def set_private(value: str) -> str:
        handle = await discord_fake.slash_command(
            "atelier",
            [{"type": 1, "name": "limits", "options": [option("private", value, 3)]}],
            user_id=discord_fake.OWNER_ID,
        )
        return str((await handle.wait_for_callback()).json["data"]["content"])

    assert "Private results: **never** *(set here)*" in await set_private("never")
    refused = await send_private_edit(discord_fake, "hide it", [make_png()])
    answer = (await refused.wait_for_callback()).json["data"]
    assert answer["flags"] & EPHEMERAL and "doesn't allow private results" in answer["content"]
    assert image_api.calls == [] and await money(bot.env) == []

    assert "Private results: **always**" in await set_private("always")
    forced = await send_edit(discord_fake, "public by default", [make_png()])
    assert (await forced.wait_for_callback()).json["data"]["flags"] & EPHEMERAL
    await private_result(forced)
    assert channel_posts(discord_fake) == []
