"""Refine and "Edit images" with more images and options, end to end: the forms as Discord shows them, files added
in a form reaching the image API in order, the same checks as /edit's attachments before any charge, and the
"only me" and "spoiler" choices."""

from __future__ import annotations

import io
from typing import Any

from PIL import Image

from tests.fake_discord import FakeDiscord, InteractionHandle
from tests.fake_image_api import FakeImageAPI, Reply, make_png
from tests.harness import BotProcess, is_channel_post, option, rows, send_edit, wait_result, wait_rows
from tests.test_message_edit_e2e import open_form
from tests.test_presets_e2e import add
from tests.test_refine_e2e import PROMPT_FIELD, SIZE_FIELD, first_result, open_refine, wait_thread_result
from tests.test_results_e2e import wait_click_result

EPHEMERAL = 64
IMAGES_FIELD = "atelier-images"
OPTIONS_FIELD = "atelier-options"
STYLE_FIELD = "atelier-style"


def fields(form: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """The form's Labels by their component's custom_id, in the form's order."""
    return {c["component"]["custom_id"]: c for c in form["components"] if c["type"] == 18}


def options_of(form: dict[str, Any]) -> dict[str, bool]:
    """The options field's choices and whether each is shown ticked."""
    group = fields(form)[OPTIONS_FIELD]["component"]
    assert group["type"] == 22 and group["required"] is False and group["min_values"] == 0
    assert group["max_values"] == len(group["options"])
    return {o["value"]: bool(o.get("default")) for o in group["options"]}


def png(n: int) -> bytes:
    return make_png(24 + n, 16 + n, (n * 30 % 256, 60, 120))


def jpeg(width: int, height: int) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (width, height), (200, 90, 30)).save(buffer, format="JPEG", quality=90)
    return buffer.getvalue()


def uploaded(fake: FakeDiscord, *files: bytes | tuple[bytes, str, str | None]) -> list[dict[str, Any]]:
    """Files a member adds in a form, hosted on the fake CDN: the payloads Discord resolves."""
    payloads = []
    for n, file in enumerate(files, start=1):
        data, name, kind = file if isinstance(file, tuple) else (file, f"added{n}.png", "image/png")
        payloads.append(fake.add_attachment(data, name, kind))
    return payloads


async def refine(
    fake: FakeDiscord, message: dict[str, Any], prompt: str, **values: Any
) -> tuple[dict[str, Any], InteractionHandle]:
    """Open Refine on ``message`` and send its form with ``values`` (the rest left as shown); the form and the send."""
    tampered = values.pop("tampered", False)
    _, form = await open_refine(fake, message)
    answers = {PROMPT_FIELD: prompt, SIZE_FIELD: ["auto"], **values}
    return form, await fake.submit_modal(form["custom_id"], answers, message=message, tampered=tampered)


async def refused_privately(handle: InteractionHandle) -> str:
    """The private refusal a form's send was answered with."""
    answer = (await handle.wait_for_callback()).json
    assert answer["type"] == 4 and answer["data"]["flags"] & EPHEMERAL, answer
    return str(answer["data"]["content"])


# The forms ---------------------------------------------------------------------------------------------------------


async def test_the_refine_form_asks_for_images_and_options_within_five_fields(
    bot: BotProcess, discord_fake: FakeDiscord, image_api: FakeImageAPI
) -> None:
    message = await first_result(discord_fake, image_api, make_png(60, 40))
    _, form = await open_refine(discord_fake, message)
    # No style without presets: four fields, the fake took the form (it refuses what Discord refuses).
    labels = fields(form)
    assert list(labels) == [PROMPT_FIELD, IMAGES_FIELD, SIZE_FIELD, OPTIONS_FIELD]
    upload = labels[IMAGES_FIELD]
    assert upload["label"] == "Add images"
    assert upload["description"] == "Optional: image2 to image10, in the order you add them"
    assert upload["component"] == {
        "type": 19,
        "custom_id": IMAGES_FIELD,
        "min_values": 0,
        "max_values": 9,
        "required": False,
    }
    assert options_of(form) == {"only-me": False, "spoiler": False}
    assert form["custom_id"] in discord_fake.forms

    # With the server's styles, the style select makes five: Discord's most.
    await add(discord_fake, "noir", "in the style of a film noir still")
    _, styled = await open_refine(discord_fake, message)
    assert list(fields(styled)) == [PROMPT_FIELD, IMAGES_FIELD, SIZE_FIELD, STYLE_FIELD, OPTIONS_FIELD]
    assert len(styled["components"]) == 5


async def test_only_me_is_offered_only_where_the_server_lets_members_choose(
    bot: BotProcess, discord_fake: FakeDiscord, image_api: FakeImageAPI
) -> None:
    async def set_private(value: str) -> None:
        handle = await discord_fake.slash_command(
            "atelier",
            [{"type": 1, "name": "limits", "options": [option("private", value, 3)]}],
            user_id=discord_fake.OWNER_ID,
        )
        assert "Private results" in (await handle.wait_for_callback()).json["data"]["content"]

    message = await first_result(discord_fake, image_api, make_png(60, 40))
    chat = await discord_fake.add_message("look", files=[(png(1), "a.png", "image/png")])
    await set_private("never")
    _, form = await open_refine(discord_fake, message)
    assert options_of(form) == {"spoiler": False}
    _, edit_form = await open_form(discord_fake, chat)
    assert options_of(edit_form) == {"spoiler": False}
    # A tampered "only me" is refused as /edit's private is, before anything is charged.
    _, sent = await refine(discord_fake, message, "hide it", **{OPTIONS_FIELD: ["only-me"]}, tampered=True)
    assert "doesn't allow private results" in await refused_privately(sent)

    await set_private("always")  # every result is private anyway: nothing to choose
    _, form = await open_refine(discord_fake, message)
    assert options_of(form) == {"spoiler": False}
    _, edit_form = await open_form(discord_fake, chat)
    assert options_of(edit_form) == {"spoiler": False} and "only you" in edit_form["title"]

    await set_private("allowed")
    _, edit_form = await open_form(discord_fake, chat)
    assert options_of(edit_form) == {"only-me": False, "spoiler": False}
    assert len(image_api.calls) == 1
    assert await rows(bot.env, "SELECT origin FROM jobs") == [("command",)]


# Added images --------------------------------------------------------------------------------------------------------


async def test_images_added_to_a_refine_follow_the_result_in_the_order_they_were_added(
    bot: BotProcess, discord_fake: FakeDiscord, image_api: FakeImageAPI
) -> None:
    result_image = make_png(60, 40, (1, 1, 1))
    message = await first_result(discord_fake, image_api, result_image)
    hat, scarf, boots = png(2), jpeg(30, 20), png(4)
    files = uploaded(discord_fake, (hat, "hat.png", "image/png"), (scarf, "scarf.jpg", "image/jpeg"), boots)
    output = make_png(60, 40, (5, 5, 5))
    image_api.then(Reply(image=output))

    _, sent = await refine(discord_fake, message, "put the hat from image2 on him", **{IMAGES_FIELD: files})
    result = await wait_thread_result(discord_fake, int(message["id"]))
    assert result.files[0].data == output
    call = image_api.calls[1]
    assert [p.data for p in call.images] == [result_image, hat, scarf, boots]
    assert [p.content_type for p in call.images] == ["image/png", "image/png", "image/jpeg", "image/png"]
    assert call.field("prompt") == "put the hat from image2 on him"
    jobs = await wait_rows(
        bot.env,
        "SELECT origin, input_count, status FROM jobs ORDER BY created_at",
        lambda found: found[-1][2] == "succeeded",
    )
    assert jobs == [("command", 1, "succeeded"), ("refine", 4, "succeeded")]
    pointer = await sent.wait_for_webhook("PATCH")  # the form's private answer points at the thread
    assert f"/{message['id']}/" in pointer.json["content"]
    status = await discord_fake.wait_for_request(lambda r: is_channel_post(r, int(message["id"])))
    assert "Fetching the images" in status.json["content"]


async def test_edit_images_adds_the_uploads_after_the_messages_own_images(
    bot: BotProcess, discord_fake: FakeDiscord, image_api: FakeImageAPI
) -> None:
    first, second, linked = png(1), png(2), png(3)
    message = await discord_fake.add_message(
        "my cat and my garden",
        files=[(first, "cat.png", "image/png"), (second, "garden.png", "image/png")],
        embeds=[discord_fake.image_embed(linked)],
    )
    _, form = await open_form(discord_fake, message)
    labels = fields(form)
    assert list(labels) == [PROMPT_FIELD, IMAGES_FIELD, SIZE_FIELD, OPTIONS_FIELD]
    upload = labels[IMAGES_FIELD]
    assert upload["component"]["max_values"] == 7 and upload["component"]["min_values"] == 0
    assert upload["description"] == "Optional: image4 to image10, in the order you add them"

    added = [png(4), png(5)]
    output = make_png(50, 30, (7, 8, 9))
    image_api.then(Reply(image=output))
    start = len(discord_fake.requests)
    answers = {
        PROMPT_FIELD: "the cat from image1 in image4",
        SIZE_FIELD: ["auto"],
        IMAGES_FIELD: uploaded(discord_fake, *added),
    }
    await discord_fake.submit_modal(form["custom_id"], answers, channel_id=int(message["channel_id"]))
    status = await discord_fake.wait_for_request(lambda r: is_channel_post(r, discord_fake.CHANNEL_ID), start=start)
    assert int(status.json["message_reference"]["message_id"]) == int(message["id"])
    (call,) = await image_api.wait_for_calls(1, timeout=20)
    assert [p.data for p in call.images] == [first, second, linked, *added]
    jobs = await wait_rows(bot.env, "SELECT origin, input_count, status FROM jobs", lambda f: f[0][2] == "succeeded")
    assert jobs == [("message", 5, "succeeded")]


# The same checks as /edit ------------------------------------------------------------------------------------------


async def test_a_bad_file_in_a_refine_is_refused_privately_and_costs_nothing(
    bot: BotProcess, discord_fake: FakeDiscord, image_api: FakeImageAPI
) -> None:
    message = await first_result(discord_fake, image_api, make_png(60, 40))

    # What Discord says of a file is checked before the job is accepted: no thread, no job, no charge.
    (notes,) = uploaded(discord_fake, (b"%PDF-1.7 my notes", "notes.pdf", "application/pdf"))
    _, sent = await refine(discord_fake, message, "x", **{IMAGES_FIELD: [notes]})
    assert "image2 is not an image (png, jpeg or webp work best)." in await refused_privately(sent)
    huge = {**uploaded(discord_fake, png(1))[0], "size": 60_000_000}  # Discord's word: a 60 MB upload
    big_files = [uploaded(discord_fake, png(2))[0], huge]
    _, sent = await refine(discord_fake, message, "x", **{IMAGES_FIELD: big_files})
    assert "image3 is 60 MB; files up to 52 MB are accepted." in await refused_privately(sent)
    assert not [r for r in discord_fake.requests if r.path.endswith("/threads")]
    assert await rows(bot.env, "SELECT origin FROM jobs") == [("command",)]

    # What only the bytes tell (damaged, a decompression bomb) is /edit's check after the download: the job
    # fails before any API call and its charge is refunded; the member is told privately.
    bomb = io.BytesIO()
    Image.new("1", (20000, 20000)).save(bomb, format="PNG")  # a small file of 400 megapixels
    (bad,) = uploaded(discord_fake, (bomb.getvalue(), "tiny.png", "image/png"))
    _, sent = await refine(discord_fake, message, "x", **{IMAGES_FIELD: [bad]})
    told = await sent.wait_for_webhook("POST", timeout=20)
    assert told.json["flags"] & EPHEMERAL and "image2 is too large to decode safely" in told.json["content"]
    money = await wait_rows(
        bot.env,
        "SELECT j.origin, m.entry FROM money m JOIN jobs j ON j.id = m.job_id ORDER BY j.created_at, m.entry",
        lambda found: len(found) == 3,
    )
    assert money == [("command", "charge"), ("refine", "charge"), ("refine", "refund")]
    assert len(image_api.calls) == 1

    # The next refine works.
    output = make_png(60, 40, (6, 6, 6))
    image_api.then(Reply(image=output))
    added = png(7)
    start = len(discord_fake.requests)
    await refine(discord_fake, message, "now with this", **{IMAGES_FIELD: uploaded(discord_fake, added)})
    result = await wait_thread_result(discord_fake, int(message["id"]), start=start)
    assert result.files[0].data == output and image_api.calls[1].images[1].data == added


async def test_too_many_images_are_refused_before_any_charge(
    bot: BotProcess, discord_fake: FakeDiscord, image_api: FakeImageAPI
) -> None:
    # A message with ten images leaves no room: the form has no Add images field.
    full = await discord_fake.add_message(files=[(png(n), f"p{n}.png", "image/png") for n in range(10)])
    _, form = await open_form(discord_fake, full)
    assert IMAGES_FIELD not in fields(form)

    # Eight images leave room for two; the message gains a linked picture while the form is open.
    message = await discord_fake.add_message(files=[(png(n), f"p{n}.png", "image/png") for n in range(8)])
    _, form = await open_form(discord_fake, message)
    assert fields(form)[IMAGES_FIELD]["component"]["max_values"] == 2
    discord_fake.messages[int(message["id"])]["embeds"] = [discord_fake.image_embed(png(9))]
    answers = {PROMPT_FIELD: "a collage", IMAGES_FIELD: uploaded(discord_fake, png(10), png(11))}
    sent = await discord_fake.submit_modal(form["custom_id"], answers, channel_id=int(message["channel_id"]))
    assert "That makes 11 images, and an edit takes at most 10." in await refused_privately(sent)

    # Refine takes nine more at most: only a tampered client sends ten.
    result = await first_result(discord_fake, image_api, make_png(60, 40))
    ten = uploaded(discord_fake, *[png(n) for n in range(10)])
    _, sent = await refine(discord_fake, result, "x", **{IMAGES_FIELD: ten}, tampered=True)
    assert "That makes 11 images" in await refused_privately(sent)
    assert await rows(bot.env, "SELECT origin FROM jobs") == [("command",)]
    assert len(image_api.calls) == 1


# The options -------------------------------------------------------------------------------------------------------


async def test_spoiler_is_stored_and_offered_again_on_the_spoilered_result(
    bot: BotProcess, discord_fake: FakeDiscord, image_api: FakeImageAPI
) -> None:
    message = await first_result(discord_fake, image_api, make_png(60, 40))
    image_api.then(Reply(image=make_png(60, 40, (2, 2, 2))))
    form, _ = await refine(discord_fake, message, "something scary", **{OPTIONS_FIELD: ["spoiler"]})
    assert options_of(form) == {"only-me": False, "spoiler": False}
    result = await wait_thread_result(discord_fake, int(message["id"]))
    jobs = await wait_rows(
        bot.env, "SELECT origin, spoiler, private FROM jobs ORDER BY created_at", lambda f: len(f) == 2
    )
    assert jobs == [("command", 0, 0), ("refine", 1, 0)]

    # The spoilered result's Refine form shows spoiler ticked; left alone, the refinement is a spoiler too.
    spoilered = discord_fake.messages[int(result.path.rsplit("/", 1)[1])]
    image_api.then(Reply(image=make_png(60, 40, (3, 3, 3))))
    form, _ = await refine(discord_fake, spoilered, "scarier")
    assert options_of(form) == {"only-me": False, "spoiler": True}
    await image_api.wait_for_calls(3, timeout=20)
    jobs = await wait_rows(bot.env, "SELECT spoiler FROM jobs ORDER BY created_at", lambda f: len(f) == 3)
    assert jobs == [(0,), (1,), (1,)]

    # "Edit images" suggests a spoiler when the message hides its own image behind one.
    secret = await discord_fake.add_message(files=[(png(1), "SPOILER_secret.png", "image/png")])
    _, edit_form = await open_form(discord_fake, secret)
    assert options_of(edit_form) == {"only-me": False, "spoiler": True}


async def test_only_me_makes_a_public_results_refinement_private(
    bot: BotProcess, discord_fake: FakeDiscord, image_api: FakeImageAPI
) -> None:
    result_image = make_png(60, 40, (1, 1, 1))
    message = await first_result(discord_fake, image_api, result_image)
    output = make_png(60, 40, (4, 4, 4))
    image_api.then(Reply(image=output))
    added = png(3)
    start = len(discord_fake.requests)
    values = {OPTIONS_FIELD: ["only-me"], IMAGES_FIELD: uploaded(discord_fake, added)}
    _, sent = await refine(discord_fake, message, "just for me", **values)
    ack = (await sent.wait_for_callback()).json
    assert ack["type"] == 4 and ack["data"]["flags"] & EPHEMERAL and "Fetching the images" in ack["data"]["content"]
    refined = await wait_click_result(sent)
    assert refined.files[0].data == output
    original = sent.original_message()
    assert original is not None and original["flags"] & EPHEMERAL
    assert [p.data for p in image_api.calls[1].images] == [result_image, added]
    # Nothing anyone else could see: no thread, no post, no edit in the channel.
    assert not [r for r in discord_fake.requests[start:] if r.path.startswith("/api/v10/channels/")]
    jobs = await wait_rows(
        bot.env,
        "SELECT origin, private, delivered, input_count FROM jobs ORDER BY created_at",
        lambda f: f[-1][2] is not None,
    )
    assert jobs == [("command", 0, "posted", 1), ("refine", 1, "private", 2)]

    # A private result's refinement stays private: its form offers no "only me", and it is answered privately.
    private_result = discord_fake.messages[int(original["id"])]
    image_api.then(Reply(image=make_png(60, 40, (5, 5, 5))))
    form, again = await refine(discord_fake, private_result, "still mine")
    assert options_of(form) == {"spoiler": False}
    assert (await again.wait_for_callback()).json["data"]["flags"] & EPHEMERAL
    await wait_click_result(again)
    jobs = await wait_rows(bot.env, "SELECT private FROM jobs ORDER BY created_at", lambda f: len(f) == 3)
    assert jobs == [(0,), (1,), (1,)]


async def test_the_edit_images_options_make_it_private_and_a_spoiler(
    bot: BotProcess, discord_fake: FakeDiscord, image_api: FakeImageAPI
) -> None:
    image_api.then(Reply(image=make_png(40, 40, (1, 2, 3))))
    message = await discord_fake.add_message(files=[(png(1), "a.png", "image/png")])
    _, form = await open_form(discord_fake, message)
    answers = {PROMPT_FIELD: "mine, hidden", OPTIONS_FIELD: ["only-me", "spoiler"]}
    sent = await discord_fake.submit_modal(form["custom_id"], answers, channel_id=int(message["channel_id"]))
    assert (await sent.wait_for_callback()).json["data"]["flags"] & EPHEMERAL
    await wait_click_result(sent)
    jobs = await wait_rows(bot.env, "SELECT private, spoiler, delivered FROM jobs", lambda f: f[0][2] is not None)
    assert jobs == [(1, 1, "private")]


async def test_an_edit_attachment_that_says_it_is_no_image_is_refused_before_any_charge(
    bot: BotProcess, discord_fake: FakeDiscord, image_api: FakeImageAPI
) -> None:
    """/edit's attachments pass the same check as the forms' files."""
    handle = await send_edit(
        discord_fake,
        "x",
        [png(1), b"%PDF-1.7"],
        filenames=["a.png", "notes.pdf"],
        content_types=["image/png", "application/pdf"],
    )
    assert "image2 is not an image" in await refused_privately(handle)
    assert await rows(bot.env, "SELECT id FROM jobs") == [] and image_api.calls == []
    assert (await wait_result(await send_edit(discord_fake, "fine", [png(1)]))).files
