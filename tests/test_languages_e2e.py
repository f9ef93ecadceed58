"""A member who reads Chinese gets Chinese, end to end; their prompt goes to the API as typed.

- The commands are synced with their translations (Discord shows members their own language).
- A ``zh-CN`` member's ``/edit``: status, result caption and buttons in Chinese.
- A refusal by the image service and a refusal at admission (a limit): in that member's language.
- The language is the member's, then the server's (a member whose language has no catalog),
  then English: a member who reads English in a Chinese server reads English.

Expected texts come from the shipped ``zh_CN`` catalog, so a translator's change doesn't break
these tests, and each is checked to be a real translation (not the English).
"""

from __future__ import annotations

import re
from functools import cache
from typing import Any

import pytest
from babel.messages.catalog import Catalog
from babel.messages.pofile import read_po

from bot.i18n import LOCALE_DIR
from tests.fake_discord import FLAG_EPHEMERAL, FakeDiscord, InteractionHandle
from tests.fake_image_api import FakeImageAPI, Reply, make_png
from tests.harness import BotProcess, card_buttons, card_text, send_edit, wait_final_text, wait_result

PROMPT = '把 image1 的天空变成紫色, keep the <@&1> "quotes" as typed'


@cache
def chinese() -> Catalog:
    with (LOCALE_DIR / "zh_CN" / "LC_MESSAGES" / "atelier.po").open("rb") as handle:
        return read_po(handle)


def zh(msgid: str, context: str | None = None, **params: Any) -> str:
    """The shipped Chinese for ``msgid`` (checked to be Chinese), its placeholders filled."""
    message = chinese().get(msgid, context)
    assert message is not None and message.string, msgid
    text = message.string if isinstance(message.string, str) else message.string[0]
    assert re.search(r"[\u4e00-\u9fff]", text), (msgid, text)
    return text.format(**params) if params else text


def pattern(template: str) -> re.Pattern[str]:
    """A translated template as a regex, each placeholder matching anything."""
    parts = re.split(r"\{[a-z_]+\}", template)
    return re.compile(".+?".join(re.escape(part) for part in parts), re.DOTALL)


def content(handle: InteractionHandle) -> str:
    data = handle.callback_data or {}
    return str(data.get("content", ""))


def buttons(message: dict[str, Any]) -> list[str]:
    return [b["label"] for b in card_buttons(message)]


@pytest.fixture
def env_for_languages(bot_env: dict[str, str]) -> dict[str, str]:
    bot_env.update(USER_DAILY_LIMIT="1", MAX_CONCURRENT_JOBS="1")
    return bot_env


async def test_commands_are_synced_with_their_translations(
    env_for_languages: dict[str, str], bot_process: BotProcess, discord_fake: FakeDiscord
) -> None:
    await bot_process.start()
    synced = {c["name"]: c for c in discord_fake.global_commands}
    edit = synced["edit"]
    assert edit["description_localizations"]["zh-CN"] == zh("Edit or combine images with an instruction")
    assert edit["name_localizations"]["zh-CN"] == zh("edit", "command name")
    prompt = next(o for o in edit["options"] if o["name"] == "prompt")
    assert prompt["name_localizations"]["zh-CN"] == zh("prompt", "option name")
    # Traditional Chinese reads its own catalog, not the Simplified one.
    if "zh-TW" in edit["description_localizations"]:
        assert edit["description_localizations"]["zh-TW"] != edit["description_localizations"]["zh-CN"]
    # Discord checked every name and description (the fake refuses what Discord refuses).
    assert "Invalid Form Body" not in bot_process.log()


async def test_a_chinese_member_gets_chinese_and_their_prompt_goes_as_typed(
    env_for_languages: dict[str, str], bot_process: BotProcess, discord_fake: FakeDiscord, image_api: FakeImageAPI
) -> None:
    await bot_process.start()

    # A refusal by the image service: the failure is in Chinese; the job is refunded.
    image_api.then(Reply(kind="error", status=400, body={"error": {"message": "Rejected by the safety system"}}))
    refused = await send_edit(discord_fake, PROMPT, [make_png()], locale="zh-CN")
    template = zh("The image service refused this request: {reason}")
    failed = await wait_final_text(refused, template.split("{reason}")[0])
    assert pattern(template).search(str(failed.json["content"])), failed.json["content"]

    # A size the model does not take: refused privately, all of it in Chinese (nothing charged).
    bad_size = await send_edit(discord_fake, PROMPT, [make_png()], size="1024x1024", locale="zh-CN")
    await bad_size.wait_for_callback()
    expected = zh(
        "`{size}` is not a size the image service supports for {model}: {problem}",
        size="1024x1024",
        model="gpt-image-2-vip",
        problem=zh("pick one from the list (start typing, e.g. 2048 or 16:9), or leave size empty for auto."),
    )
    assert content(bad_size) == f"❌ {expected}"
    assert (bad_size.callback_data or {}).get("flags", 0) & FLAG_EPHEMERAL

    # A successful edit: acknowledgement, caption and buttons in Chinese.
    handle = await send_edit(discord_fake, PROMPT, [make_png()], size="1280x1280", locale="zh-CN")
    await handle.wait_for_callback()
    assert zh("📥 Fetching your images…") in content(handle)
    result = await wait_result(handle)
    caption = card_text(result)
    assert zh("(asked {size})", size="1280x1280") in caption
    assert buttons(result.json) == [
        zh("Refine", "button"),
        zh("Reroll", "button"),
        zh("Variations", "button"),
        zh("Info", "button"),
        zh("Delete", "button"),
    ]
    # The prompt, never translated: to the API exactly as typed (the caption quotes it, mentions neutralised).
    assert image_api.calls[-1].field("prompt") == PROMPT
    assert "把 image1 的天空变成紫色" in caption

    # Over the daily limit: the refusal is private and in the member's language.
    limit = zh("You've used {used} of your {limit} edits for today; the limit {resets}.")
    over = await send_edit(discord_fake, "again", [make_png()], locale="zh-CN")
    await over.wait_for_callback()
    assert (over.callback_data or {}).get("flags", 0) & FLAG_EPHEMERAL
    assert pattern(limit).search(content(over)), content(over)
    assert len(image_api.calls) == 2


async def test_the_servers_language_when_the_members_has_no_catalog_and_english_for_english(
    env_for_languages: dict[str, str], bot_process: BotProcess, discord_fake: FakeDiscord, image_api: FakeImageAPI
) -> None:
    discord_fake.guild_locale = "zh-CN"
    await bot_process.start()
    first = await send_edit(discord_fake, "one", [make_png()], locale="en-US")
    await wait_result(first)
    limit = zh("You've used {used} of your {limit} edits for today; the limit {resets}.")

    korean = await send_edit(discord_fake, "two", [make_png()], locale="ko")
    await korean.wait_for_callback()
    assert pattern(limit).search(content(korean)), content(korean)

    english = await send_edit(discord_fake, "three", [make_png()], locale="en-US")
    await english.wait_for_callback()
    assert content(english).startswith("❌ You've used 1 of your 1 edits for today; the limit resets at 00:00 UTC")
    assert len(image_api.calls) == 1


async def test_the_audit_channel_speaks_the_servers_language(
    bot_process: BotProcess, discord_fake: FakeDiscord, image_api: FakeImageAPI
) -> None:
    from tests.test_audit_e2e import AUDIT, set_audit_channel

    discord_fake.guild_locale = "zh-CN"
    await bot_process.start()
    await set_audit_channel(discord_fake)
    # The member reads English; the audit channel is the whole server's, so it is in Chinese.
    handle = await send_edit(discord_fake, "paint the barn red", [make_png()], locale="en-US")
    result = await wait_result(handle)
    assert buttons(result.json) == ["Refine", "Reroll", "Variations", "Info", "Delete"]  # the member's own language
    succeeded = zh("✅ **succeeded**")
    post = await discord_fake.wait_for_request(
        lambda r: (
            r.method == "POST"
            and r.path == f"/api/v10/channels/{AUDIT}/messages"
            and isinstance(r.json, dict)
            and succeeded in str(r.json.get("content"))
        ),
        timeout=15,
    )
    content = str(post.json["content"])
    assert "paint the barn red" in content  # the instruction, as typed
    assert pattern(zh("job `{job}`")).search(content), content
    assert post.json["allowed_mentions"] == {"parse": []}
