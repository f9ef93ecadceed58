"""Refine end to end: button, modal, thread, chaining, and all of it after a restart."""

from __future__ import annotations

from typing import Any

from tests.fake_discord import FakeDiscord, InteractionHandle, RecordedRequest
from tests.fake_image_api import FakeImageAPI, Reply, make_png
from tests.harness import BotProcess, card_buttons, send_edit, wait_result, wait_rows

PROMPT_FIELD = "atelier-refine-prompt"
SIZE_FIELD = "atelier-refine-size"
IMAGES_FIELD = "atelier-images"
OPTIONS_FIELD = "atelier-options"


def result_button(message: dict[str, Any], label: str) -> str:
    """The custom_id of a result's button (Refine, Reroll, Info or Delete), wherever the card puts it."""
    (button,) = [b for b in card_buttons(message) if b["label"] == label]
    return str(button["custom_id"])


def refine_button(message: dict[str, Any]) -> str:
    return result_button(message, "Refine")


async def open_refine(fake: FakeDiscord, message: dict[str, Any]) -> tuple[InteractionHandle, dict[str, Any]]:
    """Click Refine on ``message``; return the click and the modal the bot answered with."""
    click = await fake.click_button(message, refine_button(message))
    callback = await click.wait_for_callback()
    assert callback.json["type"] == 9, callback.json
    return click, callback.json["data"]


async def submit_refine(
    fake: FakeDiscord, message: dict[str, Any], prompt: str, size: str = "auto", **kw: Any
) -> InteractionHandle:
    _, modal = await open_refine(fake, message)
    # The size comes from a select, which Discord submits as a list of values.
    return await fake.submit_modal(
        modal["custom_id"], {PROMPT_FIELD: prompt, SIZE_FIELD: [size]}, message=message, **kw
    )


async def wait_thread_result(fake: FakeDiscord, channel_id: int, start: int = 0) -> RecordedRequest:
    """The bot-token edit that put a result image on a message in ``channel_id``."""
    return await fake.wait_for_request(
        lambda r: (
            r.method == "PATCH"
            and r.path.startswith(f"/api/v10/channels/{channel_id}/messages/")
            and bool(r.files)
            and r.status == 200
        ),
        20,
        start=start,
    )


async def ledger(env: dict[str, str], finished: int) -> list[tuple[Any, ...]]:
    """(id, origin, parent_job_id, status) of every job once ``finished`` jobs are recorded as ended (the
    record follows the upload)."""
    return await wait_rows(
        env,
        "SELECT id, origin, parent_job_id, status FROM jobs ORDER BY created_at",
        lambda rows: sum(1 for row in rows if row[3] in ("succeeded", "failed")) >= finished,
    )


def stored(fake: FakeDiscord, request: RecordedRequest) -> dict[str, Any]:
    return fake.messages[int(request.path.rsplit("/", 1)[1])]


async def first_result(fake: FakeDiscord, api: FakeImageAPI, output: bytes) -> dict[str, Any]:
    api.then(Reply(image=output))
    handle = await send_edit(fake, "a castle on a hill", [make_png(40, 40)])
    await wait_result(handle)
    message = handle.original_message()
    assert message is not None
    return message


async def test_refine_modal_asks_for_text_and_a_size(
    bot: BotProcess, discord_fake: FakeDiscord, image_api: FakeImageAPI
) -> None:
    message = await first_result(discord_fake, image_api, make_png(60, 40))
    _, modal = await open_refine(discord_fake, message)
    assert (
        modal["custom_id"]
        == f"atelier:refine-modal:v1:{message['channel_id']}:{message['id']}:"
        + refine_button(message).rsplit(":", 1)[1]
    )
    labels = [c for c in modal["components"] if c["type"] == 18]
    assert [c["component"]["custom_id"] for c in labels] == [PROMPT_FIELD, IMAGES_FIELD, SIZE_FIELD, OPTIONS_FIELD]
    text_input, select = labels[0]["component"], labels[2]["component"]
    assert text_input["type"] == 4 and text_input["required"] is True
    assert select["type"] == 3 and len(select["options"]) <= 25
    assert select["options"][0]["value"] == "auto" and select["options"][0]["default"] is True


async def test_refines_chain_in_one_thread_using_the_previous_output(
    bot: BotProcess, discord_fake: FakeDiscord, image_api: FakeImageAPI
) -> None:
    first_output = make_png(60, 40, (1, 1, 1))
    message = await first_result(discord_fake, image_api, first_output)

    # First refine: a thread is made from the result message.
    second_output = make_png(60, 40, (2, 2, 2))
    image_api.then(Reply(image=second_output))
    submit = await submit_refine(discord_fake, message, "add a dragon", "2048x1360")
    ack = await submit.wait_for_callback()
    assert ack.json["type"] == 4 and ack.json["data"]["flags"] & 64
    thread_request = await discord_fake.wait_for_request(lambda r: r.path.endswith("/threads"), 10)
    assert thread_request.path == f"/api/v10/channels/{message['channel_id']}/messages/{message['id']}/threads"
    assert thread_request.json["name"] == "a castle on a hill"
    assert thread_request.json["auto_archive_duration"] == 10080
    thread_id = int(message["id"])  # Discord gives a thread made from a message the message's id
    result = await wait_thread_result(discord_fake, thread_id)
    assert result.files[0].data == second_output
    call = image_api.calls[1]
    assert [p.data for p in call.images] == [first_output]
    assert call.field("prompt") == "add a dragon" and call.field("size") == "2048x1360"
    assert result.headers["Authorization"] == f"Bot {discord_fake.token}"
    # The ephemeral acknowledgement points at the thread message.
    link = await submit.wait_for_webhook("PATCH")
    assert f"/channels/{discord_fake.GUILD_ID}/{thread_id}/" in link.json["content"]

    # Second refine, from the result in the thread: stays in that thread, no new thread.
    third_output = make_png(60, 40, (3, 3, 3))
    image_api.then(Reply(image=third_output))
    in_thread = stored(discord_fake, result)
    start = len(discord_fake.requests)
    await submit_refine(discord_fake, in_thread, "make it night")
    result2 = await wait_thread_result(discord_fake, thread_id, start=start)
    assert result2.files[0].data == third_output
    assert [p.data for p in image_api.calls[2].images] == [second_output]
    assert "size" not in image_api.calls[2].names
    assert [r for r in discord_fake.requests if r.path.endswith("/threads")] == [thread_request]
    assert refine_button(stored(discord_fake, result2)).startswith("atelier:refine:v1:")

    # The ledger links each refine to the job it refines, so the chain can be followed.
    rows = await ledger(bot.env, finished=3)
    assert [(kind, status) for _, kind, _, status in rows] == [
        ("command", "succeeded"),
        ("refine", "succeeded"),
        ("refine", "succeeded"),
    ]
    assert rows[1][2] == rows[0][0] and rows[2][2] == rows[1][0]
    assert refine_button(stored(discord_fake, result2)) == f"atelier:refine:v1:{rows[2][0]}"


async def test_refine_works_after_a_restart(
    bot: BotProcess, discord_fake: FakeDiscord, image_api: FakeImageAPI
) -> None:
    first_output = make_png(50, 50, (7, 7, 7))
    message = await first_result(discord_fake, image_api, first_output)
    await bot.stop()
    await bot.start()
    image_api.then(Reply(image=make_png(50, 50, (8, 8, 8))))
    await submit_refine(discord_fake, message, "after restart")
    result = await wait_thread_result(discord_fake, int(message["id"]))
    assert [p.data for p in image_api.calls[1].images] == [first_output]
    assert result.files


async def test_modal_submitted_without_the_message_refetches_it(
    bot: BotProcess, discord_fake: FakeDiscord, image_api: FakeImageAPI
) -> None:
    first_output = make_png(50, 50, (9, 9, 9))
    message = await first_result(discord_fake, image_api, first_output)
    _, modal = await open_refine(discord_fake, message)
    await discord_fake.submit_modal(
        modal["custom_id"],
        {PROMPT_FIELD: "no message attached", SIZE_FIELD: []},
        channel_id=int(message["channel_id"]),
    )
    await wait_thread_result(discord_fake, int(message["id"]))
    fetch = [r for r in discord_fake.requests if r.method == "GET" and r.path.endswith(f"/messages/{message['id']}")]
    assert len(fetch) == 1
    assert [p.data for p in image_api.calls[1].images] == [first_output]


async def test_refine_with_an_invalid_size_or_empty_text_is_refused_privately(
    bot: BotProcess, discord_fake: FakeDiscord, image_api: FakeImageAPI
) -> None:
    message = await first_result(discord_fake, image_api, make_png())
    # Only a tampered client can send a size the select does not offer: the bot checks it all the same.
    bad_size = await submit_refine(discord_fake, message, "x", "999x999", tampered=True)
    callback = await bad_size.wait_for_callback()
    assert callback.json["data"]["flags"] & 64 and "not a size" in callback.json["data"]["content"]
    empty = await submit_refine(discord_fake, message, "   ")
    callback = await empty.wait_for_callback()
    assert callback.json["data"]["flags"] & 64 and "prompt is empty" in callback.json["data"]["content"]
    assert len(image_api.calls) == 1
    assert not [r for r in discord_fake.requests if r.path.endswith("/threads")]


async def test_edit_used_inside_a_thread_stays_there_and_refines_there(
    bot: BotProcess, discord_fake: FakeDiscord, image_api: FakeImageAPI
) -> None:
    message = await first_result(discord_fake, image_api, make_png())
    await submit_refine(discord_fake, message, "first")
    thread_id = int(message["id"])
    await wait_thread_result(discord_fake, thread_id)
    handle = await send_edit(discord_fake, "inside the thread", [make_png()], channel_id=thread_id)
    await wait_result(handle)
    original = handle.original_message()
    assert original is not None and int(original["channel_id"]) == thread_id
    start = len(discord_fake.requests)
    await submit_refine(discord_fake, original, "again")
    await wait_thread_result(discord_fake, thread_id, start=start)
    assert len([r for r in discord_fake.requests if r.path.endswith("/threads")]) == 1
