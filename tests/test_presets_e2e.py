"""Style presets end to end: admins manage them, members pick one, the API, caption and ledger show it."""

from __future__ import annotations

from typing import Any

from tests.fake_discord import FakeDiscord, InteractionHandle
from tests.fake_image_api import FakeImageAPI, make_png
from tests.harness import BotProcess, card_text, option, rows, send_edit, wait_result, wait_rows
from tests.test_message_edit_e2e import fields, open_form, submit
from tests.test_refine_e2e import result_button
from tests.test_results_e2e import wait_click_result

EPHEMERAL = 64
WATERCOLOUR = "…, as a loose watercolour painting on textured paper"


async def presets(fake: FakeDiscord, sub: str, options: list[dict[str, Any]] | None = None, **kw: Any) -> str:
    """Run ``/atelier presets <sub>``; its private answer."""
    group = {"type": 2, "name": "presets", "options": [{"type": 1, "name": sub, "options": options or []}]}
    handle = await fake.slash_command("atelier", [group], **kw)
    data = (await handle.wait_for_callback()).json["data"]
    assert data["flags"] & EPHEMERAL, data
    return str(data["content"])


async def add(fake: FakeDiscord, name: str, text: str, **kw: Any) -> str:
    kw.setdefault("user_id", fake.OWNER_ID)
    return await presets(fake, "add", [option("name", name, 3), option("text", text, 3)], **kw)


async def styled_edit(fake: FakeDiscord, prompt: str, style: str) -> InteractionHandle:
    attachment = fake.add_attachment(make_png(), "photo1.png", "image/png")
    options = [option("prompt", prompt, 3), option("image1", attachment["id"], 11), option("style", style, 3)]
    return await fake.slash_command("edit", options, resolved_attachments=[attachment])


async def test_admins_add_list_and_remove_styles_and_members_cannot(bot: BotProcess, discord_fake: FakeDiscord) -> None:
    assert "Manage Server" in await add(discord_fake, "noir", "in film noir style", user_id=discord_fake.USER_ID)
    assert await add(discord_fake, "Watercolour", WATERCOLOUR) == (
        "✅ Added the style **watercolour**: , as a loose watercolour painting on textured paper"
    )
    replaced = await add(discord_fake, "watercolour", "as a wet watercolour")
    assert replaced.startswith("✅ Replaced the style **watercolour**") and "It was: , as a loose" in replaced
    listed = await presets(discord_fake, "list", user_id=discord_fake.OWNER_ID)
    assert "(1 of at most 25)" in listed and "**watercolour**: as a wet watercolour" in listed
    assert "can't be a style name" in await add(discord_fake, "!!", "x")
    assert "at most 500 characters" in await add(discord_fake, "long", "y" * 501)
    for n in range(24):
        assert (await add(discord_fake, f"style {n}", f"text {n}")).startswith("✅")
    assert "already has 25 styles" in await add(discord_fake, "one too many", "z")
    removed = await presets(discord_fake, "remove", [option("name", "Watercolour", 3)], user_id=discord_fake.OWNER_ID)
    assert removed == "🗑️ Removed the style **watercolour**."
    assert "no style called" in await presets(
        discord_fake, "remove", [option("name", "watercolour", 3)], user_id=discord_fake.OWNER_ID
    )
    await bot.stop()
    await bot.start()  # kept in the database
    assert "(24 of at most 25)" in await presets(discord_fake, "list", user_id=discord_fake.OWNER_ID)


async def test_a_style_is_added_to_the_instruction_shown_in_the_caption_and_kept_for_a_reroll(
    bot: BotProcess, discord_fake: FakeDiscord, image_api: FakeImageAPI
) -> None:
    await add(discord_fake, "Watercolour", WATERCOLOUR)
    await add(discord_fake, "noir", "in the style of a 1940s film noir still")
    complete = await discord_fake.autocomplete(
        "edit", [option("prompt", "x", 3), {"name": "style", "type": 3, "value": "WAT", "focused": True}]
    )
    choices = (await complete.wait_for_callback()).json["data"]["choices"]
    assert choices == [
        {"name": "watercolour — , as a loose watercolour painting on textured paper", "value": "watercolour"}
    ]

    handle = await styled_edit(discord_fake, "make the sky purple.", "watercolour")
    result = await wait_result(handle)
    wanted = "make the sky purple, as a loose watercolour painting on textured paper"
    assert image_api.calls[0].field("prompt") == wanted
    assert "> make the sky purple." in card_text(result) and "🎨 watercolour" in card_text(result)
    jobs = await wait_rows(bot.env, "SELECT prompt, style, style_text FROM jobs", lambda r: len(r) == 1)
    assert jobs == [("make the sky purple.", "watercolour", ", as a loose watercolour painting on textured paper")]

    # Removing the style later does not change what a reroll of this result asks for.
    await presets(discord_fake, "remove", [option("name", "watercolour", 3)], user_id=discord_fake.OWNER_ID)
    message = handle.original_message()
    assert message is not None
    click = await discord_fake.click_button(message, result_button(message, "Reroll"))
    await wait_click_result(click)
    assert image_api.calls[1].field("prompt") == wanted


async def test_an_unknown_style_is_refused_privately_without_a_call(
    bot: BotProcess, discord_fake: FakeDiscord, image_api: FakeImageAPI
) -> None:
    await add(discord_fake, "noir", "in film noir style")
    handle = await styled_edit(discord_fake, "x", "pastel")
    data = (await handle.wait_for_callback()).json["data"]
    assert data["flags"] & EPHEMERAL and "no style called `pastel`" in data["content"] and "`noir`" in data["content"]
    assert image_api.calls == [] and await rows(bot.env, "SELECT id FROM jobs") == []


async def test_the_edit_images_form_offers_the_servers_styles(
    bot: BotProcess, discord_fake: FakeDiscord, image_api: FakeImageAPI
) -> None:
    await add(discord_fake, "noir", "in the style of a film noir still")
    message = await discord_fake.add_message(files=[(make_png(), "a.png", "image/png")])
    _, form = await open_form(discord_fake, message)
    style = fields(form)["atelier-style"]["component"]
    assert [o["value"] for o in style["options"]] == ["noir"] and style.get("required") is False
    await submit(discord_fake, form, message, "a rainy street", **{"atelier-style": ["noir"]})
    await image_api.wait_for_calls(1)
    assert image_api.calls[0].field("prompt") == "a rainy street, in the style of a film noir still"
    # And /edit without a style is untouched.
    await wait_result(await send_edit(discord_fake, "plain", [make_png()]))
    assert image_api.calls[1].field("prompt") == "plain"
