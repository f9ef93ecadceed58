""" "Edit images" on a message, end to end: the images already in the chat, a form, a reply."""

from __future__ import annotations

from typing import Any

from tests.fake_discord import DROP, FakeDiscord, InteractionHandle
from tests.fake_image_api import FakeImageAPI, Reply, make_png
from tests.harness import (
    BotProcess,
    card_buttons,
    is_channel_post,
    is_message_edit_with_file,
    money,
    rows,
    wait_rows,
)

EPHEMERAL = 64
PROMPT_FIELD = "atelier-refine-prompt"
SIZE_FIELD = "atelier-refine-size"
IMAGES_FIELD = "atelier-images"
OPTIONS_FIELD = "atelier-options"
COMMAND = "Edit images"


def png(n: int) -> bytes:
    return make_png(20 + n, 10 + n, (n * 20 % 256, 40, 90))


async def open_form(fake: FakeDiscord, message: dict[str, Any], **kw: Any) -> tuple[InteractionHandle, dict[str, Any]]:
    """Run "Edit images" on ``message``; the click and the form the bot answered with."""
    click = await fake.message_command(COMMAND, message, **kw)
    callback = await click.wait_for_callback()
    assert callback.json["type"] == 9, callback.json
    return click, callback.json["data"]


def fields(form: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """The form's labels by their component's custom_id."""
    return {c["component"]["custom_id"]: c for c in form["components"] if c["type"] == 18}


async def submit(
    fake: FakeDiscord, form: dict[str, Any], message: dict[str, Any], prompt: str, **values: Any
) -> InteractionHandle:
    answers: dict[str, str | list[str]] = {PROMPT_FIELD: prompt, SIZE_FIELD: [values.pop("size", "auto")]}
    answers.update(values)
    return await fake.submit_modal(form["custom_id"], answers, channel_id=int(message["channel_id"]))


async def test_edit_images_uses_the_attachments_then_the_embeds_and_replies_without_pinging(
    bot: BotProcess, discord_fake: FakeDiscord, image_api: FakeImageAPI
) -> None:
    first, second, linked = png(1), png(2), png(3)
    output = make_png(50, 30, (7, 8, 9))
    image_api.then(Reply(image=output))
    message = await discord_fake.add_message(
        "my cat and my garden",
        files=[(first, "cat.png", "image/png"), (b"%PDF-1.4", "notes.pdf", "application/pdf"), (second, "g.png", None)],
        embeds=[discord_fake.image_embed(linked)],
    )
    _, form = await open_form(discord_fake, message)
    assert form["custom_id"] == f"atelier:message-modal:v1:{message['channel_id']}:{message['id']}"
    labels = fields(form)
    assert list(labels) == [PROMPT_FIELD, IMAGES_FIELD, SIZE_FIELD, OPTIONS_FIELD]  # no style: the server has none
    assert labels[PROMPT_FIELD]["description"] == "The message's 3 images are image1 to image3, in order"
    start = len(discord_fake.requests)

    answer = await submit(discord_fake, form, message, "put the cat from image1 into image2", size="2048x1360")
    ack = await answer.wait_for_callback()
    assert ack.json["type"] == 4 and ack.json["data"]["flags"] & EPHEMERAL
    status = await discord_fake.wait_for_request(lambda r: is_channel_post(r, discord_fake.CHANNEL_ID), start=start)
    reference = status.json["message_reference"]
    assert int(reference["message_id"]) == int(message["id"]) and reference["fail_if_not_exists"] is False
    # A reply that pings nobody: Discord pings the replied-to author only with replied_user true.
    assert status.json["allowed_mentions"] == {"parse": []}
    assert status.json["components"][0]["components"][0]["custom_id"].startswith("atelier:cancel:v1:")
    result = await discord_fake.wait_for_request(
        lambda r: is_message_edit_with_file(r, discord_fake.CHANNEL_ID), 20, start=start
    )
    assert result.path.endswith(f"/messages/{status.response['id']}") and result.files[0].data == output
    posted = discord_fake.messages[int(status.response["id"])]
    assert posted["referenced_message"]["id"] == message["id"] and posted["mentions"] == []
    assert [b["label"] for b in card_buttons(result)] == ["Refine", "Reroll", "Variations", "Info", "Delete"]
    # The three images, small, beside the result: the message's own links expire.
    assert [f.filename.split("-")[0] for f in result.files] == ["atelier", "input", "input", "input"]
    pointer = await answer.wait_for_webhook("PATCH")
    assert posted["id"] in pointer.json["content"]

    (call,) = image_api.calls
    assert [p.data for p in call.images] == [first, second, linked]
    assert call.field("prompt") == "put the cat from image1 into image2" and call.field("size") == "2048x1360"
    jobs = await wait_rows(bot.env, "SELECT origin, status, input_count FROM jobs", lambda r: r[0][1] == "succeeded")
    assert jobs == [("message", "succeeded", 3)]
    assert await money(bot.env) == [("put the cat from image1 into image2", "charge")]


async def test_more_than_ten_images_uses_the_first_ten_and_says_so(
    bot: BotProcess, discord_fake: FakeDiscord, image_api: FakeImageAPI
) -> None:
    images = [png(n) for n in range(12)]
    message = await discord_fake.add_message(files=[(data, f"p{n}.png", "image/png") for n, data in enumerate(images)])
    _, form = await open_form(discord_fake, message)
    description = fields(form)[PROMPT_FIELD]["description"]
    assert description == "The message's 10 images are image1 to image10, in order (the first 10 of 12)"
    start = len(discord_fake.requests)
    await submit(discord_fake, form, message, "a collage")
    status = await discord_fake.wait_for_request(lambda r: is_channel_post(r, discord_fake.CHANNEL_ID), start=start)
    assert "the first 10; 2 more were left out" in status.json["content"]
    await image_api.wait_for_calls(1)
    assert [p.data for p in image_api.calls[0].images] == images[:10]


async def test_a_message_without_a_usable_image_is_explained_privately(
    bot: BotProcess, discord_fake: FakeDiscord, image_api: FakeImageAPI
) -> None:
    message = await discord_fake.add_message("just words", files=[(b"%PDF-1.4", "a.pdf", "application/pdf")])
    start = len(discord_fake.requests)
    click = await discord_fake.message_command(COMMAND, message)
    callback = await click.wait_for_callback()
    assert callback.json["type"] == 4 and callback.json["data"]["flags"] & EPHEMERAL
    assert "no image I can use" in callback.json["data"]["content"]
    assert [r.path for r in discord_fake.requests[start:] if "/callback" not in r.path] == []
    assert image_api.calls == [] and await rows(bot.env, "SELECT id FROM jobs") == []


async def test_a_channel_the_bot_cannot_read_is_explained_privately(
    bot: BotProcess, discord_fake: FakeDiscord, image_api: FakeImageAPI
) -> None:
    message = await discord_fake.add_message(
        files=[(png(1), "a.png", "image/png")], channel_id=discord_fake.OTHER_CHANNEL_ID
    )
    discord_fake.hidden_channels.add(discord_fake.OTHER_CHANNEL_ID)
    start = len(discord_fake.requests)
    click = await discord_fake.message_command(COMMAND, message)
    callback = await click.wait_for_callback()
    assert callback.json["data"]["flags"] & EPHEMERAL and "can't read this channel" in callback.json["data"]["content"]
    assert [r.path for r in discord_fake.requests[start:] if "/callback" not in r.path] == []
    assert image_api.calls == [] and await rows(bot.env, "SELECT id FROM jobs") == []


async def test_a_blocked_channel_is_refused_before_the_form(
    bot_process: BotProcess, bot_env: dict[str, str], discord_fake: FakeDiscord, image_api: FakeImageAPI
) -> None:
    bot_env["ALLOWED_CHANNEL_IDS"] = str(discord_fake.OTHER_CHANNEL_ID)
    await bot_process.start()
    message = await discord_fake.add_message(files=[(png(1), "a.png", "image/png")])
    click = await discord_fake.message_command(COMMAND, message)
    callback = await click.wait_for_callback()
    assert callback.json["type"] == 4 and callback.json["data"]["flags"] & EPHEMERAL
    assert f"<#{discord_fake.OTHER_CHANNEL_ID}>" in callback.json["data"]["content"]
    assert image_api.calls == [] and await rows(bot_env, "SELECT id FROM jobs") == []


async def test_edit_images_privately_shows_status_and_result_only_to_the_member(
    bot: BotProcess, discord_fake: FakeDiscord, image_api: FakeImageAPI
) -> None:
    output = make_png(40, 40, (1, 2, 3))
    image_api.then(Reply(image=output))
    message = await discord_fake.add_message(files=[(png(1), "a.png", "image/png")])
    _, form = await open_form(discord_fake, message)
    start = len(discord_fake.requests)
    answer = await submit(discord_fake, form, message, "only for me", **{OPTIONS_FIELD: ["only-me"]})
    ack = await answer.wait_for_callback()
    assert ack.json["type"] == 4 and ack.json["data"]["flags"] & EPHEMERAL
    assert "Fetching the message's images" in ack.json["data"]["content"]
    result = await answer.wait_for_webhook("PATCH", timeout=20, start=start)
    while not result.files:
        result = await answer.wait_for_webhook("PATCH", timeout=20, start=result.index + 1)
    assert result.files[0].data == output
    original = answer.original_message()
    assert original is not None and original["flags"] & EPHEMERAL
    assert not [r for r in discord_fake.requests[start:] if is_channel_post(r, discord_fake.CHANNEL_ID)]
    jobs = await wait_rows(bot.env, "SELECT private, delivered FROM jobs", lambda r: r[0][1] is not None)
    assert jobs == [(1, "private")]


async def test_a_pointer_to_the_status_whose_connection_drops_costs_only_the_pointer(
    bot: BotProcess, discord_fake: FakeDiscord, image_api: FakeImageAPI
) -> None:
    """The status is posted in the channel; the connection drops under the edit that points the member's private
    answer at it. That costs the pointer only: the job runs and its result lands on the status, charged once.
    Before, the error counted as the status never posted: the job failed and was refunded, and the posted
    status stayed on "Fetching" with its Cancel button."""
    output = make_png(50, 30, (7, 8, 9))
    image_api.then(Reply(image=output))
    message = await discord_fake.add_message("my cat", files=[(png(1), "cat.png", "image/png")])
    _, form = await open_form(discord_fake, message)
    start = len(discord_fake.requests)
    discord_fake.fail_next("PATCH", r"/messages/@original$", DROP)
    await submit(discord_fake, form, message, "a hat on the cat")
    status = await discord_fake.wait_for_request(lambda r: is_channel_post(r, discord_fake.CHANNEL_ID), start=start)
    result = await discord_fake.wait_for_request(
        lambda r: is_message_edit_with_file(r, discord_fake.CHANNEL_ID), 20, start=start
    )
    assert result.path.endswith(f"/messages/{status.response['id']}") and result.files[0].data == output
    await wait_rows(bot.env, "SELECT status FROM jobs", lambda r: r == [("succeeded",)])
    assert await money(bot.env) == [("a hat on the cat", "charge")]
