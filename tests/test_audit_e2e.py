"""The audit channel end to end: outcomes posted (batched, never pinging), moderator buttons, blocks, and
the ``/atelier stats`` chart."""

from __future__ import annotations

import asyncio
import io
from typing import Any

from PIL import Image

from tests.fake_discord import DROP, FakeDiscord, RecordedRequest
from tests.fake_image_api import FakeImageAPI, Reply, make_png
from tests.harness import BotProcess, send_edit, wait_final_text, wait_result
from tests.test_operations_e2e import EPHEMERAL, admin, refusal

AUDIT = FakeDiscord.OTHER_CHANNEL_ID


def audit_posts(fake: FakeDiscord) -> list[RecordedRequest]:
    """Outcome posts in the audit channel (not its welcome line, nor the buttons' replies)."""
    return [
        r
        for r in fake.requests
        if r.method == "POST"
        and r.path == f"/api/v10/channels/{AUDIT}/messages"
        and isinstance(r.json, dict)
        and "job `" in str(r.json.get("content"))
    ]


async def wait_audit_entries(fake: FakeDiscord, count: int, timeout: float = 15) -> list[RecordedRequest]:
    """The posts once they hold ``count`` outcomes in all."""
    async with asyncio.timeout(timeout):
        while True:
            posts = audit_posts(fake)
            if sum(str(p.json["content"]).count("job `") for p in posts) >= count:
                return posts
            await asyncio.sleep(0.05)


async def set_audit_channel(fake: FakeDiscord) -> str:
    handle = await admin(
        fake, "settings", [{"name": "audit_channel", "type": 7, "value": str(AUDIT)}], user_id=fake.OWNER_ID
    )
    return await refusal(handle)


def buttons(message: dict[str, Any]) -> list[str]:
    return [c["custom_id"] for row in message["components"] for c in row["components"]]


async def test_every_outcome_is_posted_to_the_audit_channel_without_pinging_anyone(
    bot: BotProcess, discord_fake: FakeDiscord, image_api: FakeImageAPI
) -> None:
    shown = await set_audit_channel(discord_fake)
    assert "Settings updated" in shown and f"Audit channel: <#{AUDIT}>" in shown
    hello = await discord_fake.wait_for_request(
        lambda r: r.method == "POST" and r.path == f"/api/v10/channels/{AUDIT}/messages"
    )
    assert "audit channel" in hello.json["content"] and hello.json["allowed_mentions"]["parse"] == []

    result_image = make_png(640, 480, (30, 160, 90))
    image_api.then(Reply(image=result_image))
    ok = await send_edit(
        discord_fake, f"paint @everyone and <@{discord_fake.OTHER_USER_ID}> as knights", [make_png(), make_png()]
    )
    await wait_result(ok)
    posts = await wait_audit_entries(discord_fake, 1)
    post = posts[0]
    content = post.json["content"]
    assert post.json["allowed_mentions"] == {"parse": []}
    assert post.response["mentions"] == [] and post.response["mention_everyone"] is False
    assert "✅ **succeeded**" in content and f"<@{discord_fake.USER_ID}>" in content
    assert "2 images" in content and "auto → 640×480" in content and "$0.03" in content
    assert "gpt-image-2-vip" in content
    assert "@everyone" not in content and "@\u200beveryone" in content  # the instruction, neutralised
    result = ok.original_message()
    assert result is not None
    jump = f"https://discord.com/channels/{discord_fake.GUILD_ID}/{result['channel_id']}/{result['id']}"
    assert jump in content
    preview = post.files[0]
    assert preview.filename.endswith(".webp") and len(preview.data) < 8_000
    with Image.open(io.BytesIO(preview.data)) as image:
        assert max(image.size) == 160 and image.format == "WEBP"

    image_api.then(Reply(kind="error", status=400, body={"error": {"message": "blocked by the safety system"}}))
    await wait_final_text(await send_edit(discord_fake, "something unsafe", [make_png()]), "❌")
    image_api.then(Reply(kind="error", status=400, body={"error": {"message": "bad mask"}}))
    await wait_final_text(await send_edit(discord_fake, "something broken", [make_png()]), "❌")
    posts = await wait_audit_entries(discord_fake, 3)
    text = "\n".join(p.json["content"] for p in posts)
    assert "🛡️ **refused by the image service's safety system**" in text
    assert "❌ **failed**" in text and "bad mask" in text and text.count("refunded") == 2
    assert all(p.json["allowed_mentions"] == {"parse": []} for p in posts)
    # Resetting the limits leaves the audit channel alone.
    reset = [{"name": "reset", "type": 5, "value": True}]
    await refusal(await admin(discord_fake, "limits", reset, user_id=discord_fake.OWNER_ID))
    shown = await refusal(await admin(discord_fake, "settings", user_id=discord_fake.OWNER_ID))
    assert f"Audit channel: <#{AUDIT}>" in shown


async def test_an_audit_post_whose_connection_drops_is_lost_alone_and_the_next_outcomes_are_posted(
    bot: BotProcess, discord_fake: FakeDiscord, image_api: FakeImageAPI
) -> None:
    """The connection drops under an outcome's post to the audit channel: that post is lost and logged, and the
    next outcome is posted. Before, the error ended the server's posting task as an unexpected error, with any
    entries it held (what waited behind it was posted only when a next outcome started a new task)."""
    await set_audit_channel(discord_fake)
    path = f"/api/v10/channels/{AUDIT}/messages"
    await discord_fake.wait_for_request(lambda r: r.method == "POST" and r.path == path)
    held = discord_fake.hold_next("POST", f"/channels/{AUDIT}/messages$")
    discord_fake.fail_next("POST", f"/channels/{AUDIT}/messages$", DROP)
    image_api.then(Reply(image=make_png(20, 20)), Reply(image=make_png(21, 21)))
    await wait_result(await send_edit(discord_fake, "first", [make_png()]))
    async with asyncio.timeout(15):
        await held.arrived.wait()  # the first outcome's post is on its way
    await wait_result(await send_edit(discord_fake, "second", [make_png()]))
    held.release.set()  # and its connection drops
    post = await discord_fake.wait_for_request(
        lambda r: r.method == "POST" and r.path == path and r.status == 200
        and "second" in str((r.json or {}).get("content")), 15,
    )  # fmt: skip
    assert "job `" in post.json["content"]
    assert "could not post to its audit channel" in bot.log()


async def test_a_busy_server_gets_its_outcomes_batched(
    bot_process: BotProcess, bot_env: dict[str, str], discord_fake: FakeDiscord, image_api: FakeImageAPI
) -> None:
    bot_env.update(MAX_CONCURRENT_JOBS="6")
    await bot_process.start()
    await set_audit_channel(discord_fake)
    users = [discord_fake.USER_ID + 500 + n for n in range(6)]
    for user in users:
        discord_fake.add_user(user, f"member{user}")
    handles = await asyncio.gather(*(send_edit(discord_fake, f"from {u}", [make_png()], user_id=u) for u in users))
    await asyncio.gather(*(wait_result(h) for h in handles))
    posts = await wait_audit_entries(discord_fake, 6)
    # A server's outcomes are posted in the order they came: once a later job's is there, the six are all in
    # (each once), whatever their batches.
    await wait_result(await send_edit(discord_fake, "a later one", [make_png()]))
    later = await wait_audit_entries(discord_fake, 7)
    assert "a later one" in later[-1].json["content"] and later[-1].json["content"].count("job `") == 1
    posts = later[:-1]
    assert sum(p.json["content"].count("job `") for p in posts) == 6
    assert len(posts) < 6, [p.json["content"][:40] for p in posts]
    assert max(p.json["content"].count("job `") for p in posts) > 1
    for post in posts:  # one row of buttons per outcome in the message
        assert len(post.json["components"]) == post.json["content"].count("job `")


async def test_moderators_delete_a_result_and_block_a_member_from_the_audit_channel(
    bot: BotProcess, discord_fake: FakeDiscord, image_api: FakeImageAPI
) -> None:
    await set_audit_channel(discord_fake)
    member = discord_fake.OTHER_USER_ID
    handle = await send_edit(discord_fake, "something to regret", [make_png()], user_id=member)
    await wait_result(handle)
    result = handle.original_message()
    assert result is not None
    post = (await wait_audit_entries(discord_fake, 1))[0]
    message = post.response
    delete_id, block_id = buttons(message)
    assert (
        delete_id.startswith("atelier:audit-delete:v1:")
        and block_id == f"atelier:audit-block:v1:{member}:" + (delete_id.rsplit(":", 1)[1])
    )

    # A member without Manage Messages may not delete.
    denied = await discord_fake.click_button(message, delete_id, user_id=discord_fake.USER_ID)
    assert "Manage Messages" in await refusal(denied)
    click = await discord_fake.click_button(message, delete_id, user_id=discord_fake.OWNER_ID)
    reply = (await click.wait_for_callback()).json["data"]
    assert "deleted the result" in reply["content"] and not reply.get("flags", 0) & EPHEMERAL
    deleted = await discord_fake.wait_for_request(
        lambda r: r.method == "DELETE" and r.path == f"/api/v10/channels/{result['channel_id']}/messages/{result['id']}"
    )
    assert deleted.status == 204 and int(result["id"]) not in discord_fake.messages

    click = await discord_fake.click_button(message, block_id, user_id=discord_fake.OWNER_ID)
    reply = (await click.wait_for_callback()).json["data"]
    assert f"<@{member}> can no longer use Atelier here" in reply["content"]
    calls = len(image_api.calls)
    refused = await refusal(await send_edit(discord_fake, "again", [make_png()], user_id=member))
    assert "blocked" in refused
    settings = await refusal(await admin(discord_fake, "settings", user_id=discord_fake.OWNER_ID))
    assert f"Blocked members: <@{member}>" in settings

    # The block holds after a restart; unblocking lets the member back in.
    await bot.stop()
    await bot.start()
    assert "blocked" in await refusal(await send_edit(discord_fake, "still?", [make_png()], user_id=member))
    assert len(image_api.calls) == calls  # no API call for a blocked member
    unblocked = await admin(
        discord_fake, "unblock", [{"name": "member", "type": 6, "value": str(member)}], user_id=discord_fake.OWNER_ID
    )
    assert "can use Atelier here again" in await refusal(unblocked)
    await wait_result(await send_edit(discord_fake, "welcome back", [make_png()], user_id=member))


async def test_block_and_unblock_commands(bot: BotProcess, discord_fake: FakeDiscord, image_api: FakeImageAPI) -> None:
    member = discord_fake.OTHER_USER_ID
    options = [{"name": "member", "type": 6, "value": str(member)}, {"name": "reason", "type": 3, "value": "spam"}]
    denied = await admin(discord_fake, "block", options)
    assert "Manage Server" in await refusal(denied)
    blocked = await refusal(await admin(discord_fake, "block", options, user_id=discord_fake.OWNER_ID))
    assert f"<@{member}> can no longer start edits here" in blocked and "Reason: spam" in blocked
    text = await refusal(await send_edit(discord_fake, "x", [make_png()], user_id=member))
    assert "moderators have blocked you" in text and "spam" not in text
    assert image_api.calls == []
    # Someone else in the same server is not affected.
    await wait_result(await send_edit(discord_fake, "fine", [make_png()]))
    options = options[:1]
    assert "can use Atelier here again" in await refusal(
        await admin(discord_fake, "unblock", options, user_id=discord_fake.OWNER_ID)
    )
    assert "is not blocked here" in await refusal(
        await admin(discord_fake, "unblock", options, user_id=discord_fake.OWNER_ID)
    )


async def test_stats_come_with_a_chart_of_the_last_30_days(
    bot: BotProcess, discord_fake: FakeDiscord, image_api: FakeImageAPI
) -> None:
    await wait_result(await send_edit(discord_fake, "ok", [make_png()]))
    image_api.then(Reply(kind="error", status=400, body={"error": {"message": "no"}}))
    await wait_final_text(await send_edit(discord_fake, "bad", [make_png()]), "❌")
    handle = await admin(discord_fake, "stats", user_id=discord_fake.OWNER_ID)
    text = await refusal(handle)
    assert "**2** today" in text
    edit = await handle.wait_for_webhook("PATCH", timeout=15)
    assert "last 30 days" in edit.json["content"] and "Spend today, all servers" in edit.json["content"]
    (chart,) = edit.files
    assert chart.filename == "atelier-stats.png"
    with Image.open(io.BytesIO(chart.data)) as image:
        assert image.format == "PNG" and image.size == (900, 750)
        colours = image.convert("RGB").getcolors(maxcolors=1 << 16)
    assert colours is not None and len(colours) > 20  # drawn on, not a blank canvas
    assert any(count > 50 and rgb == (0x3B, 0xA5, 0x5D) for count, rgb in colours)  # today's success bar
    assert any(count > 50 and rgb == (0xED, 0x42, 0x45) for count, rgb in colours)  # today's failure bar
