"""The result card end to end: one Components V2 message with the output large, the inputs small, the prompt and
details, the parent's link and the buttons; Info; spoilers (the option, a server's spoiler channels, the audit
channel's previews); old results' buttons; the upload limit; private cards."""

from __future__ import annotations

import io
from typing import Any

from PIL import Image

from tests.fake_discord import FLAG_IS_COMPONENTS_V2, FakeDiscord, InteractionHandle, RecordedRequest
from tests.fake_image_api import FakeImageAPI, Reply, make_png
from tests.harness import (
    MEDIA_GALLERY,
    SECTION,
    THUMBNAIL,
    BotProcess,
    card_buttons,
    card_media,
    card_text,
    components_of,
    option,
    send_edit,
    wait_result,
    wait_rows,
)
from tests.test_audit_e2e import AUDIT, wait_audit_entries
from tests.test_edit_e2e import noise_png
from tests.test_operations_e2e import EPHEMERAL, admin, refusal
from tests.test_refine_e2e import result_button, stored, submit_refine, wait_thread_result
from tests.test_results_e2e import link, wait_click_result


def job_of(message: dict[str, Any]) -> str:
    """The job id a result's buttons carry."""
    return result_button(message, "Delete").rsplit(":", 1)[1]


def jpeg_size(data: bytes) -> tuple[int, int]:
    with Image.open(io.BytesIO(data)) as image:
        assert image.format == "JPEG"
        return image.size


async def a_card(
    fake: FakeDiscord, api: FakeImageAPI, prompt: str, images: list[bytes], output: bytes, **kw: Any
) -> tuple[InteractionHandle, RecordedRequest, dict[str, Any]]:
    api.then(Reply(image=output))
    handle = await send_edit(fake, prompt, images, **kw)
    result = await wait_result(handle)
    message = handle.original_message()
    assert message is not None
    return handle, result, message


async def click_info(fake: FakeDiscord, message: dict[str, Any], **kw: Any) -> dict[str, Any]:
    """Press Info on ``message``; the data of its answer (private, always)."""
    click = await fake.click_button(message, result_button(message, "Info"), **kw)
    answer = (await click.wait_for_callback()).json
    assert answer["type"] == 4 and answer["data"]["flags"] & EPHEMERAL, answer
    return dict(answer["data"])


async def test_a_result_is_one_card_the_output_large_the_inputs_small_the_details_and_the_buttons(
    bot: BotProcess, discord_fake: FakeDiscord, image_api: FakeImageAPI
) -> None:
    output = make_png(60, 40, (3, 3, 3))
    inputs = [make_png(400, 300, (1, 1, 1)), make_png(200, 500, (2, 2, 2))]
    handle, result, message = await a_card(
        discord_fake, image_api, "put the cat from image1 into image2", inputs, output, size="2048x1360"
    )
    job = job_of(message)

    # The status message itself became the card: one edit sets the V2 flag and clears the content.
    assert result.path.endswith("/messages/@original") or result.path.endswith(f"/messages/{message['id']}")
    assert result.json["flags"] & FLAG_IS_COMPONENTS_V2 and result.json["content"] is None
    assert [(f.filename, f.data == output) for f in result.files] == [
        (f"atelier-{job}.png", True),
        (f"input-{job}-image1.jpg", False),
        (f"input-{job}-image2.jpg", False),
    ]
    # The inputs' copies are small JPEGs of the inputs, their shape kept.
    assert jpeg_size(result.files[1].data) == (320, 240) and jpeg_size(result.files[2].data) == (128, 320)

    # One container: the output's gallery first, then the texts, the inputs' thumbnails, the buttons.
    (card,) = result.json["components"]
    assert card["type"] == 17
    kinds = [c["type"] for c in card["components"]]
    assert kinds == [MEDIA_GALLERY, 10, 10, 14, SECTION, SECTION, 1, 1]  # two rows of buttons
    media = card_media(result)
    assert [(kind, item["media"]["url"], item.get("spoiler", False)) for kind, item in media] == [
        (MEDIA_GALLERY, f"attachment://atelier-{job}.png", False),
        (THUMBNAIL, f"attachment://input-{job}-image1.jpg", False),
        (THUMBNAIL, f"attachment://input-{job}-image2.jpg", False),
    ]
    text = card_text(result)
    assert "> put the cat from image1 into image2" in text
    assert "60×40 (asked 2048x1360)" in text and f"<@{discord_fake.USER_ID}>" in text and "gpt-image-2-vip" in text
    assert "**image1** · 400×300" in text and "**image2** · 200×500" in text
    assert [(b["label"], b["custom_id"]) for b in card_buttons(result)] == [
        ("Refine", f"atelier:refine:v1:{job}"),
        ("Reroll", f"atelier:reroll:v1:{job}"),
        ("Variations", f"atelier:variations:v1:{job}"),
        ("Info", f"atelier:info:v1:{job}"),
        ("Delete", f"atelier:delete:v1:{job}"),
    ]
    assert len(components_of(result)) <= 40
    # As Discord keeps it: no content, the pictures resolved to the message's own files.
    assert message["content"] == "" and message["flags"] & FLAG_IS_COMPONENTS_V2
    names = {a["filename"]: a["url"] for a in message["attachments"]}
    assert card_media(message)[0][1]["media"]["url"] == names[f"atelier-{job}.png"]
    assert not handle.followups()


async def test_a_refine_card_links_its_parent_and_refine_takes_the_output_never_an_input_copy(
    bot: BotProcess, discord_fake: FakeDiscord, image_api: FakeImageAPI
) -> None:
    output = make_png(50, 50, (5, 5, 5))
    _, _, message = await a_card(discord_fake, image_api, "a castle", [make_png(80, 80, (9, 9, 9))], output)
    await submit_refine(discord_fake, message, "add a storm")
    refined = await wait_thread_result(discord_fake, int(message["id"]))
    # The API got the card's output, not the small copy of its input beside it.
    assert [p.data for p in image_api.calls[1].images] == [output]
    assert refined.json["flags"] & FLAG_IS_COMPONENTS_V2
    assert f"refined from {link(discord_fake, message)}" in card_text(refined)
    # The refine's own input (the first result) shows small on its card.
    in_thread = stored(discord_fake, refined)
    assert [kind for kind, _ in card_media(in_thread)] == [MEDIA_GALLERY, THUMBNAIL]


async def test_ten_inputs_go_in_one_strip_so_the_card_stays_within_ten_files(
    bot: BotProcess, discord_fake: FakeDiscord, image_api: FakeImageAPI
) -> None:
    inputs = [make_png(40 + n, 30, (n, n, n)) for n in range(10)]
    _, result, message = await a_card(discord_fake, image_api, "a collage", inputs, make_png(70, 70))
    job = job_of(message)
    assert [f.filename for f in result.files] == [f"atelier-{job}.png", f"inputs-{job}.jpg"]
    # Every input side by side in a strip 160 pixels high (these are small: never enlarged), 4 pixels apart.
    assert jpeg_size(result.files[1].data) == (sum(40 + n for n in range(10)) + 9 * 4, 160)
    assert [item["media"]["url"] for _, item in card_media(result)] == [
        f"attachment://atelier-{job}.png",
        f"attachment://inputs-{job}.jpg",
    ]
    text = card_text(result)
    assert all(f"image{n} {40 + n - 1}×30" in text for n in range(1, 11))


async def test_info_tells_whoever_sees_a_result_privately_with_the_full_prompt_inputs_chain_cost_and_retries(
    bot: BotProcess, discord_fake: FakeDiscord, image_api: FakeImageAPI
) -> None:
    prompt = "a lighthouse at dusk, " + "with gulls " * 60  # longer than the card quotes
    inputs = [make_png(40, 30, (1, 1, 1)), make_png(30, 40, (2, 2, 2))]
    _, _, message = await a_card(discord_fake, image_api, prompt.strip(), inputs, make_png(60, 40), size="2048x1360")
    job = job_of(message)
    # A job's end is recorded a moment after its card is posted; Info tells it from then on.
    await wait_rows(bot.env, "SELECT status FROM jobs", lambda r: r == [("succeeded",)])

    info = await click_info(discord_fake, message)
    assert info["embeds"][0]["description"] == prompt.strip()
    content = info["content"]
    assert f"job `{job}`" in content and f"<@{discord_fake.USER_ID}>" in content
    assert "asked 2048x1360, made 60×40" in content and "Style: none" in content and "gpt-image-2-vip" in content
    assert f"**image1** 40×30, {len(inputs[0])} B" in content and f"**image2** 30×40, {len(inputs[1])} B" in content
    assert "Cost: $0.03" in content and "No retry" in content and "Waited" in content
    # Anyone who sees a public result may ask.
    other = await click_info(discord_fake, message, user_id=discord_fake.OTHER_USER_ID)
    assert f"job `{job}`" in other["content"]

    # A refine that took two calls (the first rate-limited): the chain and the retry are told.
    image_api.then(
        Reply(kind="error", status=429, body={"error": {"message": "slow down"}}, headers={"Retry-After": "0"})
    )
    await submit_refine(discord_fake, message, "brighter")
    refined = stored(discord_fake, await wait_thread_result(discord_fake, int(message["id"])))
    await wait_rows(bot.env, "SELECT status FROM jobs", lambda r: r == [("succeeded",), ("succeeded",)])
    info = await click_info(discord_fake, refined)
    assert f"Refined from {link(discord_fake, message)}" in info["content"]
    assert "Retried: 2 calls to the image service" in info["content"]


async def test_info_on_a_private_result_answers_its_member_only(
    bot: BotProcess, discord_fake: FakeDiscord, image_api: FakeImageAPI
) -> None:
    attachment = discord_fake.add_attachment(make_png(), "photo1.png", "image/png")
    options = [option("prompt", "a secret", 3), option("image1", attachment["id"], 11), option("private", True, 5)]
    handle = await discord_fake.slash_command("edit", options, resolved_attachments=[attachment])
    result = await wait_click_result(handle)
    message = handle.original_message()
    assert message is not None and message["flags"] & EPHEMERAL and message["flags"] & FLAG_IS_COMPONENTS_V2
    # The same card, privately: the output and the input, the same buttons.
    assert [kind for kind, _ in card_media(result)] == [MEDIA_GALLERY, THUMBNAIL]
    assert [b["label"] for b in card_buttons(result)] == ["Refine", "Reroll", "Variations", "Info", "Delete"]
    assert "a secret" in (await click_info(discord_fake, message))["embeds"][0]["description"]
    other = await discord_fake.click_button(message, result_button(message, "Info"), user_id=discord_fake.OTHER_USER_ID)
    refused = (await other.wait_for_callback()).json["data"]
    assert refused["flags"] & EPHEMERAL and "private to the member who asked" in refused["content"]
    assert "a secret" not in str(refused)


async def test_the_spoiler_option_hides_the_output_and_the_inputs_and_a_reroll_keeps_it(
    bot: BotProcess, discord_fake: FakeDiscord, image_api: FakeImageAPI
) -> None:
    image_api.then(Reply(image=make_png(50, 50)))
    attachment = discord_fake.add_attachment(make_png(), "photo1.png", "image/png")
    options = [option("prompt", "a surprise", 3), option("image1", attachment["id"], 11), option("spoiler", True, 5)]
    handle = await discord_fake.slash_command(
        "edit", options, resolved_attachments=[attachment], channel_id=discord_fake.OTHER_CHANNEL_ID
    )
    result = await wait_result(handle)
    assert [(kind, item.get("spoiler")) for kind, item in card_media(result)] == [
        (MEDIA_GALLERY, True),
        (THUMBNAIL, True),
    ]
    message = handle.original_message()
    assert message is not None
    click = await discord_fake.click_button(message, result_button(message, "Reroll"))
    reroll = await wait_click_result(click)
    assert all(item.get("spoiler") for _, item in card_media(reroll))
    # /imagine takes the option too.
    imagined = await discord_fake.slash_command("imagine", [option("prompt", "a fox", 3), option("spoiler", True, 5)])
    assert [item.get("spoiler") for _, item in card_media(await wait_result(imagined))] == [True]
    # Without it, nothing is hidden.
    _, plain, _ = await a_card(discord_fake, image_api, "plain", [make_png()], make_png(), channel_id=AUDIT)
    assert not any(item.get("spoiler") for _, item in card_media(plain))


async def test_spoiler_channels_make_every_result_there_a_spoiler_threads_and_audit_previews_too(
    bot: BotProcess, discord_fake: FakeDiscord, image_api: FakeImageAPI
) -> None:
    channel = discord_fake.CHANNEL_ID
    settings = [
        {"name": "spoiler_channels", "type": 3, "value": f"<#{channel}>"},
        {"name": "audit_channel", "type": 7, "value": str(AUDIT)},
    ]
    shown = await refusal(await admin(discord_fake, "settings", settings, user_id=discord_fake.OWNER_ID))
    assert f"Spoiler channels (their threads too): <#{channel}>" in shown

    _, result, message = await a_card(discord_fake, image_api, "in the spoiler channel", [make_png()], make_png())
    assert [item.get("spoiler") for _, item in card_media(result)] == [True, True]
    # In a thread of a spoiler channel too.
    await submit_refine(discord_fake, message, "again")
    thread = int(message["id"])
    refined = stored(discord_fake, await wait_thread_result(discord_fake, thread))
    _, in_thread, _ = await a_card(
        discord_fake, image_api, "in its thread", [make_png()], make_png(), channel_id=thread
    )
    assert all(item.get("spoiler") for _, item in card_media(in_thread))
    # Elsewhere, results are not spoilers.
    _, elsewhere, other = await a_card(discord_fake, image_api, "elsewhere", [make_png()], make_png(), channel_id=AUDIT)
    assert not any(item.get("spoiler") for _, item in card_media(elsewhere))

    # The audit channel's previews of spoilers are spoilers (a classic message: Discord's SPOILER_ names).
    posts = await wait_audit_entries(discord_fake, 4)
    previews = {f.filename.rsplit("-", 1)[1].removesuffix(".webp"): f.filename for p in posts for f in p.files}
    assert previews[job_of(message)].startswith("SPOILER_preview-")
    assert previews[job_of(refined)].startswith("SPOILER_preview-")
    assert previews[job_of(other)].startswith("preview-")

    # Cleared, the channel's results are as their members ask.
    none = [{"name": "spoiler_channels", "type": 3, "value": "none"}]
    shown = await refusal(await admin(discord_fake, "settings", none, user_id=discord_fake.OWNER_ID))
    assert "Spoiler channels (their threads too): none" in shown
    _, after, _ = await a_card(discord_fake, image_api, "after", [make_png()], make_png())
    assert not any(item.get("spoiler") for _, item in card_media(after))


async def test_an_old_result_without_a_card_still_refines_rerolls_and_deletes(
    bot: BotProcess, discord_fake: FakeDiscord, image_api: FakeImageAPI
) -> None:
    first = make_png(44, 44, (4, 4, 4))
    _, _, card = await a_card(discord_fake, image_api, "an old one", [make_png()], first)
    job = job_of(card)
    # A result as the bot posted them before cards: text, the image, one row of buttons.
    old = await discord_fake.add_message(
        f"> an old one\n-# 44×44 · <@{discord_fake.USER_ID}>",
        files=[(first, f"atelier-{job}.png", "image/png")],
        author_id=discord_fake.BOT_USER_ID,
    )
    old["components"] = [
        {
            "type": 1,
            "components": [
                {"type": 2, "style": 1, "label": "Refine", "custom_id": f"atelier:refine:v1:{job}"},
                {"type": 2, "style": 2, "label": "Reroll", "custom_id": f"atelier:reroll:v1:{job}"},
                {"type": 2, "style": 4, "label": "Delete", "custom_id": f"atelier:delete:v1:{job}"},
            ],
        }
    ]
    await bot.stop()
    await bot.start()  # buttons are matched by their ids, whichever process posted them
    assert f"job `{job}`" in (await click_info(discord_fake, card))["content"]  # Info too, after the restart

    image_api.then(Reply(image=make_png(45, 45)))
    await submit_refine(discord_fake, old, "refined from the old message")
    await wait_thread_result(discord_fake, int(old["id"]))
    assert [p.data for p in image_api.calls[-1].images] == [first]

    click = await discord_fake.click_button(old, f"atelier:reroll:v1:{job}")
    assert card_buttons(await wait_click_result(click))  # answered with a card of its own

    delete = await discord_fake.click_button(old, f"atelier:delete:v1:{job}")
    await delete.wait_for_webhook("DELETE")
    assert int(old["id"]) not in discord_fake.messages


async def test_a_card_over_the_upload_limit_is_reencoded_to_fit_with_its_inputs(
    bot: BotProcess, discord_fake: FakeDiscord, image_api: FakeImageAPI
) -> None:
    discord_fake.attachment_size_limit = 300_000
    output = noise_png(800, 800)  # ~1.9 MB: re-encoded and scaled down to fit
    inputs = [noise_png(320, 320), noise_png(320, 320)]  # their copies: ~60 KB each (noise does not compress)
    handle, result, _ = await a_card(discord_fake, image_api, "x", inputs, output)
    assert result.ok and len(result.files) == 3
    # Fitted with room for the copies: the first upload fits, none is refused as too large.
    assert sum(len(f.data) for f in result.files) <= 300_000
    assert not [r for r in handle.webhook_requests() if r.status == 413]
    assert result.files[0].data != output and "upload limit" in card_text(result)
