"""Proves tests/fake_discord.py is faithful enough: a REAL discord.py client runs against it."""

from __future__ import annotations

import asyncio
import io
import json
import signal
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp
import discord
import pytest
import yarl
from discord import app_commands
from discord.ext import commands

from tests.databases import only_sqlite
from tests.fake_discord import FakeDiscord, InteractionHandle, RecordedRequest
from tests.harness import BotProcess

PNG = bytes.fromhex(
    "89504e470d0a1a0a0000000d4948445200000001000000010806000000"
    "1f15c4890000000d49444154789c6360f8cfc0f01f0005000201e2f3b1"
    "fb0000000049454e44ae426082"
)
RunBot = Callable[[commands.Bot], Awaitable[commands.Bot]]


def make_bot(**kwargs: object) -> commands.Bot:
    intents = discord.Intents.none()
    intents.guilds = True
    return commands.Bot(command_prefix="!", intents=intents, guild_ready_timeout=0.1, **kwargs)  # type: ignore[arg-type]


@pytest.fixture
async def fake() -> AsyncIterator[FakeDiscord]:
    server = FakeDiscord()
    await server.start()
    yield server
    await server.stop()


@pytest.fixture
async def run_bot(fake: FakeDiscord, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[RunBot]:
    running: list[tuple[commands.Bot, asyncio.Task[None]]] = []

    async def run(bot: commands.Bot) -> commands.Bot:
        monkeypatch.setattr(discord.http.Route, "BASE", fake.api_base)
        async with (
            aiohttp.ClientSession() as session,
            session.get(f"{fake.api_base}/gateway/bot", headers={"Authorization": f"Bot {fake.token}"}) as resp,
        ):
            gateway = (await resp.json())["url"]
        monkeypatch.setattr(discord.gateway.DiscordWebSocket, "DEFAULT_GATEWAY", yarl.URL(gateway))
        task = asyncio.create_task(bot.start(fake.token))
        running.append((bot, task))
        ready = asyncio.create_task(fake.wait_until_ready(10))
        done, _ = await asyncio.wait({task, ready}, timeout=10, return_when=asyncio.FIRST_COMPLETED)
        if task in done:
            ready.cancel()
            task.result()  # re-raise the login/connect error
        assert ready in done, "bot did not connect"
        await asyncio.wait_for(bot.wait_until_ready(), 5)
        return bot

    yield run
    for bot, task in running:
        await bot.close()
        await asyncio.wait_for(task, 5)


async def test_login_gateway_and_ready(fake: FakeDiscord, run_bot: RunBot) -> None:
    bot = await run_bot(make_bot())

    assert bot.user is not None and bot.user.id == fake.BOT_USER_ID
    assert bot.application_id == fake.APP_ID
    guild = bot.get_guild(fake.GUILD_ID)
    assert guild is not None and guild.get_channel(fake.CHANNEL_ID) is not None
    assert isinstance(guild.get_channel(fake.FORUM_ID), discord.ForumChannel)
    assert {r.name for r in guild.roles} >= {"@everyone", "Moderator", "Artist"}
    assert guild.me is not None and guild.me.id == fake.BOT_USER_ID

    identify = next(p for p in fake.gateway_received if p["op"] == 2)
    assert identify["d"]["token"] == fake.token
    me = next(r for r in fake.requests if r.path == "/api/v10/users/@me")
    assert me.headers["authorization"] == f"Bot {fake.token}"
    assert fake.unexpected_requests() == []


async def test_tree_sync_is_stored(fake: FakeDiscord, run_bot: RunBot) -> None:
    bot = make_bot()

    @bot.tree.command(name="edit", description="Edit images")
    @app_commands.describe(prompt="What to do")
    async def edit(interaction: discord.Interaction, prompt: str, image1: discord.Attachment) -> None:
        pass

    await run_bot(bot)
    synced = await bot.tree.sync()
    guild_synced = await bot.tree.sync(guild=discord.Object(fake.GUILD_ID))

    assert [c.name for c in synced] == ["edit"] and guild_synced == []
    stored = fake.global_commands[0]
    assert stored["id"] == str(synced[0].id) and stored["application_id"] == str(fake.APP_ID)
    assert [(o["name"], o["type"]) for o in stored["options"]] == [("prompt", 3), ("image1", 11)]
    assert await bot.tree.fetch_commands() == synced
    # Re-syncing keeps the command id, as on Discord.
    assert (await bot.tree.sync())[0].id == synced[0].id


async def test_slash_command_with_attachment_and_edit_original(fake: FakeDiscord, run_bot: RunBot) -> None:
    bot = make_bot()
    seen: asyncio.Future[bytes] = asyncio.get_running_loop().create_future()

    @bot.tree.command(name="edit", description="Edit images")
    async def edit(interaction: discord.Interaction, prompt: str, image1: discord.Attachment) -> None:
        data = await image1.read()
        seen.set_result(data)
        await interaction.response.send_message(f"Working on {prompt!r}")
        await interaction.edit_original_response(
            content="Done", attachments=[discord.File(io.BytesIO(data[::-1]), "result.png")]
        )

    await run_bot(bot)
    await bot.tree.sync()
    upload = fake.add_attachment(PNG, "cat.png")
    start = len(fake.requests)
    handle = await fake.slash_command(
        "edit",
        [
            {"name": "prompt", "type": 3, "value": "make it blue"},
            {"name": "image1", "type": 11, "value": upload["id"]},
        ],
        resolved_attachments=[upload],
    )

    assert await asyncio.wait_for(seen, 5) == PNG
    assert upload["width"] == 1 and upload["height"] == 1
    callback = await handle.wait_for_callback()
    assert callback.query == {"with_response": "1"} and callback.json["type"] == 4
    assert callback.json["data"]["content"] == "Working on 'make it blue'"
    assert "authorization" not in callback.headers

    patch = await handle.wait_for_webhook("PATCH")
    assert patch.path == f"/api/v10/webhooks/{fake.APP_ID}/{handle.token}/messages/@original"
    assert [(f.field, f.filename, f.data) for f in patch.files] == [("files[0]", "result.png", PNG[::-1])]
    assert patch.json["content"] == "Done" and patch.status == 200

    original = handle.original_message()
    assert original is not None and original["content"] == "Done" and original["type"] == 20
    [attachment] = original["attachments"]
    assert attachment["filename"] == "result.png" and attachment["content_type"] == "image/png"
    assert fake.cdn_bytes(attachment["url"]) == PNG[::-1]
    cdn = [r for r in fake.requests[start:] if r.path.startswith("/cdn/")]
    assert [(r.method, r.status) for r in cdn] == [("GET", 200)]


async def test_followup_ephemeral_and_defer(fake: FakeDiscord, run_bot: RunBot) -> None:
    bot = make_bot()
    done: asyncio.Future[discord.WebhookMessage] = asyncio.get_running_loop().create_future()

    @bot.tree.command(name="stats", description="Stats")
    async def stats(interaction: discord.Interaction) -> None:
        await interaction.response.defer(ephemeral=True, thinking=True)
        await interaction.followup.send("first")  # replaces the "thinking…" message
        done.set_result(await interaction.followup.send("secret", ephemeral=True, wait=True))

    await run_bot(bot)
    handle = await fake.slash_command("stats", [])
    followup = await asyncio.wait_for(done, 5)

    callback = await handle.wait_for_callback()
    assert callback.json == {"type": 5, "data": {"flags": 64}}
    original = handle.original_message()
    assert original is not None and original["content"] == "first" and original["flags"] == 64
    [second] = handle.followups()
    assert second["id"] == str(followup.id) and second["flags"] & 64 and followup.flags.ephemeral
    posts = [r for r in handle.webhook_requests() if r.method == "POST"]
    assert [r.query["wait"] for r in posts] == ["1", "1"] and posts[1].json["flags"] == 64
    # Ephemeral messages are not visible to bot routes.
    with pytest.raises(discord.NotFound):
        await bot.http.get_message(fake.CHANNEL_ID, followup.id)


async def test_thread_from_message_and_send_file(fake: FakeDiscord, run_bot: RunBot) -> None:
    bot = await run_bot(make_bot())
    channel = bot.get_channel(fake.CHANNEL_ID)
    assert isinstance(channel, discord.TextChannel)

    message = await channel.send("New session", allowed_mentions=discord.AllowedMentions.none())
    thread = await message.create_thread(name="Session 1", auto_archive_duration=60)
    sent = await thread.send("result", file=discord.File(io.BytesIO(PNG), "out.png"))

    assert thread.id == message.id and thread.parent_id == fake.CHANNEL_ID
    stored_thread = fake.channels[thread.id]
    assert stored_thread["type"] == 11 and stored_thread["thread_metadata"]["auto_archive_duration"] == 60
    [in_thread] = fake.channel_messages(thread.id)
    assert in_thread["id"] == str(sent.id) and fake.cdn_bytes(in_thread["attachments"][0]["url"]) == PNG
    assert fake.messages[message.id]["allowed_mentions"] == {"parse": []}
    assert await sent.attachments[0].read() == PNG
    async with asyncio.timeout(10):  # THREAD_CREATE comes over the gateway, apart from the REST answer
        while bot.get_channel(thread.id) is None:  # noqa: ASYNC110  # discord.py's cache, filled by the event
            await asyncio.sleep(0.01)

    with pytest.raises(discord.HTTPException) as exc:
        await message.create_thread(name="again")
    assert exc.value.code == 160004


async def test_button_click_and_modal_submit(fake: FakeDiscord, run_bot: RunBot) -> None:
    bot = make_bot()
    interactions: list[discord.Interaction] = []
    submitted: asyncio.Future[str] = asyncio.get_running_loop().create_future()

    class Prompt(discord.ui.Modal, title="Refine"):
        text: discord.ui.TextInput[Prompt] = discord.ui.TextInput(label="Prompt", custom_id="prompt")

        def __init__(self) -> None:
            super().__init__(custom_id="refine-modal")

        async def on_submit(self, interaction: discord.Interaction) -> None:
            submitted.set_result(str(self.text.value))
            await interaction.response.edit_message(content=f"Refining: {self.text.value}")

    class Buttons(discord.ui.View):
        @discord.ui.button(label="Refine", custom_id="refine")
        async def refine(self, interaction: discord.Interaction, button: discord.ui.Button[Buttons]) -> None:
            await interaction.response.send_modal(Prompt())

    @bot.listen()
    async def on_interaction(interaction: discord.Interaction) -> None:
        interactions.append(interaction)

    await run_bot(bot)
    channel = bot.get_channel(fake.CHANNEL_ID)
    assert isinstance(channel, discord.TextChannel)
    sent = await channel.send("Pick one", view=Buttons())
    stored = fake.messages[sent.id]
    assert stored["components"][0]["components"][0]["custom_id"] == "refine"

    click = await fake.click_button(stored, "refine")
    callback = await click.wait_for_callback()
    assert callback.json["type"] == 9 and callback.json["data"]["custom_id"] == "refine-modal"

    submit = await fake.submit_modal("refine-modal", {"prompt": "more blue"}, message=stored)
    assert await asyncio.wait_for(submitted, 5) == "more blue"
    await submit.wait_for_callback()
    assert fake.messages[sent.id]["content"] == "Refining: more blue"
    assert submit.original_message() is fake.messages[sent.id]
    assert [i.type for i in interactions] == [
        discord.InteractionType.component,
        discord.InteractionType.modal_submit,
    ]
    assert interactions[0].message is not None and interactions[0].message.id == sent.id


async def test_autocomplete(fake: FakeDiscord, run_bot: RunBot) -> None:
    bot = make_bot()

    async def styles(interaction: discord.Interaction, current: str) -> list[app_commands.Choice[str]]:
        return [app_commands.Choice(name=s, value=s) for s in ("watercolor", "oil") if s.startswith(current)]

    @bot.tree.command(name="style", description="Style")
    @app_commands.autocomplete(name=styles)
    async def style(interaction: discord.Interaction, name: str) -> None:
        pass

    await run_bot(bot)
    handle = await fake.autocomplete("style", [{"name": "name", "type": 3, "value": "wa", "focused": True}])
    callback = await handle.wait_for_callback()
    assert callback.json == {"type": 8, "data": {"choices": [{"name": "watercolor", "value": "watercolor"}]}}


async def test_expired_interaction(fake: FakeDiscord, run_bot: RunBot) -> None:
    bot = make_bot()
    outcome: asyncio.Future[BaseException | None] = asyncio.get_running_loop().create_future()
    go = asyncio.Event()

    @bot.tree.command(name="slow", description="Slow")
    async def slow(interaction: discord.Interaction) -> None:
        await interaction.response.send_message("working")
        await go.wait()
        try:
            await interaction.edit_original_response(content="done")
        except discord.HTTPException as e:
            outcome.set_result(e)
        else:
            outcome.set_result(None)

    await run_bot(bot)
    handle = await fake.slash_command("slow", [])
    await handle.wait_for_callback()
    fake.expire_interaction(handle.token)
    go.set()
    err = await asyncio.wait_for(outcome, 5)
    assert isinstance(err, discord.HTTPException) and err.status == 401 and err.code == 50027

    # A late first response gets Unknown interaction.
    late = await fake.slash_command("slow", [])
    fake.expire_interaction(late.token)
    callback = await late.wait_for_callback()
    assert callback.status == 404 and callback.response == {"code": 10062, "message": "Unknown interaction"}


async def test_auth_unknown_routes_faults_and_limits(fake: FakeDiscord, run_bot: RunBot) -> None:
    async with aiohttp.ClientSession() as session:
        async with session.get(f"{fake.api_base}/users/@me") as resp:
            assert resp.status == 401 and resp.headers["Content-Type"] == "application/json"
        async with session.get(f"{fake.api_base}/nope", headers={"Authorization": f"Bot {fake.token}"}) as resp:
            assert resp.status == 404 and await resp.json() == {"code": 0, "message": "404: Not Found"}
    assert [r.path for r in fake.unexpected_requests()] == ["/api/v10/nope"]

    bot = await run_bot(make_bot())
    channel = bot.get_channel(fake.CHANNEL_ID)
    assert isinstance(channel, discord.TextChannel)

    fake.fail_next("POST", r"/channels/\d+/messages$", 429)
    start = len(fake.requests)
    await channel.send("after a rate limit")
    posts = [r.status for r in fake.requests[start:] if r.method == "POST"]
    assert posts == [429, 200]

    fake.fail_next("POST", r"/channels/\d+/messages$", 500, {"code": 0, "message": "boom"}, times=5)
    fake._faults[0].status = 403  # a non-retried error
    with pytest.raises(discord.Forbidden):
        await channel.send("refused")
    fake._faults.clear()

    with pytest.raises(discord.HTTPException) as exc:
        await channel.send(file=discord.File(io.BytesIO(b"x" * (10 * 1024 * 1024 + 1)), "big.bin"))
    assert exc.value.status == 413 and exc.value.code == 40005


async def test_interaction_upload_limit_and_double_ack(run_bot: RunBot, monkeypatch: pytest.MonkeyPatch) -> None:
    fake_small = FakeDiscord(attachment_size_limit=1000)
    await fake_small.start()
    try:
        errors: asyncio.Future[list[int]] = asyncio.get_running_loop().create_future()
        bot = make_bot()

        @bot.tree.command(name="big", description="Big")
        async def big(interaction: discord.Interaction) -> None:
            codes = []
            assert interaction.filesize_limit == 1000
            try:
                await interaction.response.send_message(file=discord.File(io.BytesIO(b"x" * 1001), "a.bin"))
            except discord.HTTPException as e:
                codes.append(e.code)
            await interaction.response.send_message("small")
            try:
                await interaction.followup.send("x")  # fine
                await interaction.response.defer()  # discord.py refuses locally; force a raw second ack
            except discord.InteractionResponded:
                pass
            try:
                await interaction._state.http.request(
                    discord.http.Route("POST", "/interactions/{i}/{t}/callback", i=interaction.id, t=interaction.token),
                    json={"type": 5},
                )
            except discord.HTTPException as e:
                codes.append(e.code)
            errors.set_result(codes)

        monkeypatch.setattr(discord.http.Route, "BASE", fake_small.api_base)
        monkeypatch.setattr(discord.gateway.DiscordWebSocket, "DEFAULT_GATEWAY", yarl.URL(fake_small.gateway_url))
        task = asyncio.create_task(bot.start(fake_small.token))
        try:
            await fake_small.wait_until_ready(10)
            await asyncio.wait_for(bot.wait_until_ready(), 5)
            await fake_small.slash_command("big", [])
            assert await asyncio.wait_for(errors, 5) == [40005, 40060]
        finally:
            await bot.close()
            await asyncio.wait_for(task, 5)
    finally:
        await fake_small.stop()


async def test_dm_interaction_and_reconnect(fake: FakeDiscord, run_bot: RunBot) -> None:
    bot = make_bot()
    got: asyncio.Future[discord.Interaction] = asyncio.get_running_loop().create_future()

    async def no_identify_delay(shard_id: int | None, *, initial: bool = False) -> None:
        pass  # discord.py sleeps 5 s before every non-initial IDENTIFY

    bot.before_identify_hook = no_identify_delay  # type: ignore[method-assign]

    @bot.tree.command(name="ping", description="Ping")
    async def ping(interaction: discord.Interaction) -> None:
        got.set_result(interaction)
        await interaction.response.send_message("pong")

    await run_bot(bot)
    await fake.drop_connection()  # resumable: RESUME -> RESUMED
    await fake.wait_until_ready(5)
    assert [p["op"] for p in fake.gateway_received].count(6) == 1
    await fake.drop_connection(resumable=False)  # RESUME -> INVALID_SESSION -> IDENTIFY
    await fake.wait_until_ready(5)
    assert [p["op"] for p in fake.gateway_received].count(2) == 2

    handle: InteractionHandle = await fake.slash_command("ping", [], guild_id=None)
    interaction = await asyncio.wait_for(got, 5)
    assert interaction.guild is None and isinstance(interaction.user, discord.User)
    assert isinstance(interaction.channel, discord.DMChannel)
    callback: RecordedRequest = await handle.wait_for_callback()
    assert callback.status == 200
    original = handle.original_message()
    assert original is not None and "guild_id" not in original


async def test_edit_keeps_and_adds_attachments_and_forum_post(fake: FakeDiscord, run_bot: RunBot) -> None:
    intents = discord.Intents.none()
    intents.guilds = intents.guild_messages = True
    bot = commands.Bot(command_prefix="!", intents=intents, guild_ready_timeout=0.1)
    created: list[discord.Message] = []

    @bot.listen()
    async def on_message(message: discord.Message) -> None:
        created.append(message)

    await run_bot(bot)
    channel = bot.get_channel(fake.CHANNEL_ID)
    assert isinstance(channel, discord.TextChannel)

    msg = await channel.send(
        files=[discord.File(io.BytesIO(b"one"), "1.txt"), discord.File(io.BytesIO(b"two"), "2.txt")]
    )
    edited = await msg.edit(attachments=[msg.attachments[1], discord.File(io.BytesIO(PNG), "3.png")])
    assert [a.filename for a in edited.attachments] == ["2.txt", "3.png"]
    assert edited.attachments[0].id == msg.attachments[1].id
    assert [fake.cdn_bytes(a["url"]) for a in fake.messages[msg.id]["attachments"]] == [b"two", PNG]
    edited = await msg.edit(content="caption only")  # no `attachments` key: attachments are kept
    assert len(edited.attachments) == 2 and edited.edited_at is not None

    forum = bot.get_channel(fake.FORUM_ID)
    assert isinstance(forum, discord.ForumChannel)
    post = await forum.create_thread(name="Showcase", content="look", file=discord.File(io.BytesIO(PNG), "a.png"))
    assert post.thread.parent_id == fake.FORUM_ID and post.message.id == post.thread.id
    assert fake.channel_messages(post.thread.id)[0]["attachments"][0]["filename"] == "a.png"
    # Gateway events arrive in order: once the forum post's MESSAGE_CREATE is in, the edits' events are
    # too, and none of them was a MESSAGE_CREATE (only sent messages are, as guild_messages is on).
    async with asyncio.timeout(10):
        while len(created) < 2:  # noqa: ASYNC110  # filled by discord.py's dispatch
            await asyncio.sleep(0.01)
    assert [m.id for m in created] == [msg.id, post.message.id]


async def test_message_command_resolves_the_message_with_attachments_and_embeds(
    fake: FakeDiscord, run_bot: RunBot
) -> None:
    bot = make_bot()
    seen: asyncio.Future[discord.Message] = asyncio.get_running_loop().create_future()

    @bot.tree.context_menu(name="Edit images")
    async def edit_images(interaction: discord.Interaction, message: discord.Message) -> None:
        seen.set_result(message)
        await interaction.response.send_message("ok", ephemeral=True)

    await run_bot(bot)
    await bot.tree.sync()
    assert fake.global_commands[0]["type"] == 3
    stored = await fake.add_message(
        "look",
        files=[(PNG, "a.png", "image/png"), (b"%PDF", "b.pdf", "application/pdf")],
        embeds=[fake.image_embed(PNG)],
    )
    handle = await fake.message_command("Edit images", stored)
    message = await asyncio.wait_for(seen, 5)
    assert message.id == int(stored["id"]) and message.author.id == fake.USER_ID
    assert [a.filename for a in message.attachments] == ["a.png", "b.pdf"]
    assert await message.attachments[0].read() == PNG
    (embed,) = message.embeds
    assert embed.type == "image" and embed.thumbnail.proxy_url is not None
    assert await bot.http.get_from_cdn(embed.thumbnail.proxy_url) == PNG
    assert handle.payload["data"]["target_id"] == stored["id"]
    callback = await handle.wait_for_callback()
    assert callback.json["data"]["flags"] == 64


async def test_closed_dms_hidden_channels_and_replies(fake: FakeDiscord, run_bot: RunBot) -> None:
    bot = await run_bot(make_bot())
    fake.closed_dms.add(fake.OTHER_USER_ID)
    open_dm = await bot.create_dm(discord.Object(fake.USER_ID))
    await open_dm.send("hello")
    closed = await bot.create_dm(discord.Object(fake.OTHER_USER_ID))
    with pytest.raises(discord.Forbidden) as refused:
        await closed.send("hello")
    assert refused.value.code == 50007

    source = await fake.add_message("original")
    channel = bot.get_partial_messageable(fake.CHANNEL_ID)
    quiet = await channel.send(
        "reply",
        reference=discord.MessageReference(
            message_id=int(source["id"]), channel_id=fake.CHANNEL_ID, fail_if_not_exists=False
        ),
        allowed_mentions=discord.AllowedMentions.none(),
    )
    assert quiet.reference is not None and quiet.reference.message_id == int(source["id"])
    assert fake.messages[quiet.id]["mentions"] == []
    pinging = await channel.send(
        "reply", reference=discord.MessageReference(message_id=int(source["id"]), channel_id=fake.CHANNEL_ID)
    )
    assert [m["id"] for m in fake.messages[pinging.id]["mentions"]] == [str(fake.USER_ID)]

    fake.hidden_channels.add(fake.OTHER_CHANNEL_ID)
    with pytest.raises(discord.Forbidden) as missing:
        await bot.get_partial_messageable(fake.OTHER_CHANNEL_ID).send("x")
    assert missing.value.code == 50001
    handle = await fake.slash_command("anything", channel_id=fake.OTHER_CHANNEL_ID)
    permissions = discord.Permissions(int(handle.payload["app_permissions"]))
    assert not permissions.view_channel and not permissions.read_message_history


async def test_webhook_rate_limit_answers_like_discord_and_discord_py_waits_for_it(
    fake: FakeDiscord, run_bot: RunBot
) -> None:
    fake.rate_limit_webhooks(limit=2, per=1.0)
    bot = make_bot()
    answered: asyncio.Future[discord.Interaction] = asyncio.get_running_loop().create_future()

    @bot.tree.command(name="status", description="Status")
    async def status(interaction: discord.Interaction) -> None:
        await interaction.response.send_message("queued")
        answered.set_result(interaction)

    await run_bot(bot)
    handle = await fake.slash_command("status", [])
    interaction = await asyncio.wait_for(answered, 5)
    await handle.wait_for_callback()

    # The callback is exempt; the token's webhook routes share one bucket of two requests per second.
    url = f"{fake.api_base}/webhooks/{fake.APP_ID}/{handle.token}/messages/@original"
    answers = []
    async with aiohttp.ClientSession() as session:
        for _ in range(3):
            async with session.get(url) as resp:
                answers.append((resp.status, resp.headers.copy(), await resp.json()))
    assert [status for status, _, _ in answers] == [200, 200, 429]
    assert [h["X-RateLimit-Remaining"] for _, h, _ in answers] == ["1", "0", "0"]
    assert all(h["X-RateLimit-Limit"] == "2" and h["Via"] == "1.1 google" for _, h, _ in answers)
    assert len({h["X-RateLimit-Bucket"] for _, h, _ in answers}) == 1
    _, headers, body = answers[2]
    assert body["message"] == "You are being rate limited." and body["global"] is False
    assert 0 < body["retry_after"] <= 1.0 and float(headers["X-RateLimit-Reset-After"]) == body["retry_after"]
    assert headers["X-RateLimit-Scope"] == "user" and headers["Retry-After"] == "1"
    assert float(headers["X-RateLimit-Reset"]) == pytest.approx(time.time() + body["retry_after"], abs=0.5)
    assert [r.method for r in fake.rate_limited] == ["GET"] and fake.rate_limited[0].status == 429

    # discord.py honours it: a refused edit is retried after retry_after, and a spent bucket is waited out.
    start = len(fake.requests)
    for n in range(3):
        await asyncio.wait_for(interaction.edit_original_response(content=f"edit {n}"), 10)
    done = [r for r in fake.requests[start:] if r.method == "PATCH" and r.ok]
    assert len(done) == 3 and all(r.status in (200, 429) for r in fake.requests[start:])
    assert done[2].at - done[0].at >= 1.0 - 0.05, "never three in one window"
    original = handle.original_message()
    assert original is not None and original["content"] == "edit 2"


# Components V2 --------------------------------------------------------------------------------------

V2 = 1 << 15


async def send_raw(
    fake: FakeDiscord, method: str, path: str, body: dict[str, Any], files: dict[str, bytes] | None = None
) -> tuple[int, Any]:
    """A bot-token request as discord.py would make it (JSON, or multipart with ``files[n]``): status and body."""
    headers = {"Authorization": f"Bot {fake.token}"}
    async with aiohttp.ClientSession() as session:
        if files:
            form = aiohttp.FormData()
            form.add_field("payload_json", json.dumps(body), content_type="application/json")
            for n, (name, data) in enumerate(files.items()):
                form.add_field(f"files[{n}]", data, filename=name, content_type="application/octet-stream")
            request = session.request(method, fake.api_base + path, data=form, headers=headers)
        else:
            request = session.request(method, fake.api_base + path, json=body, headers=headers)
        async with request as resp:
            return resp.status, await resp.json() if resp.content_type == "application/json" else None


def text(content: str) -> dict[str, Any]:
    return {"type": 10, "content": content}


def gallery(*urls: str) -> dict[str, Any]:
    return {"type": 12, "items": [{"media": {"url": url}} for url in urls]}


def v2_refused(status: int, body: Any) -> bool:
    """Discord's answer to an invalid message: 400, code 50035."""
    return status == 400 and isinstance(body, dict) and body.get("code") == 50035


async def test_v2_card_with_its_own_file_comes_back_as_discord_returns_it(fake: FakeDiscord, run_bot: RunBot) -> None:
    bot = await run_bot(make_bot())
    channel = bot.get_channel(fake.CHANNEL_ID)
    assert isinstance(channel, discord.TextChannel)
    view = discord.ui.LayoutView()
    card: discord.ui.Container[discord.ui.LayoutView] = discord.ui.Container()
    card.add_item(discord.ui.MediaGallery(discord.MediaGalleryItem("attachment://out.png", spoiler=True)))
    card.add_item(discord.ui.TextDisplay(f"made for <@{fake.USER_ID}>"))
    view.add_item(card)
    sent = await channel.send(
        view=view,
        file=discord.File(io.BytesIO(PNG), "out.png"),
        allowed_mentions=discord.AllowedMentions(users=[discord.Object(fake.USER_ID)]),
    )

    stored = fake.messages[sent.id]
    assert stored["flags"] & V2 and stored["content"] == ""
    (container,) = stored["components"]
    media_gallery, text_display = container["components"]
    (item,) = media_gallery["items"]
    (attachment,) = stored["attachments"]
    assert item["spoiler"] is True
    assert item["media"]["url"] == attachment["url"] and item["media"]["attachment_id"] == attachment["id"]
    assert (item["media"]["width"], item["media"]["height"]) == (1, 1)
    assert [container["id"], media_gallery["id"], text_display["id"]] == [1, 2, 3]
    # Mentions of a V2 message are read from its text.
    assert [int(u["id"]) for u in stored["mentions"]] == [fake.USER_ID]
    # discord.py reads it back whole.
    (parsed,) = sent.components
    assert isinstance(parsed, discord.components.Container)


async def test_v2_refuses_content_and_embeds(fake: FakeDiscord) -> None:
    path = f"/channels/{fake.CHANNEL_ID}/messages"
    assert v2_refused(*await send_raw(fake, "POST", path, {"flags": V2, "content": "hi", "components": [text("x")]}))
    embed = {"description": "an embed"}
    assert v2_refused(*await send_raw(fake, "POST", path, {"flags": V2, "embeds": [embed], "components": [text("x")]}))
    status, _ = await send_raw(fake, "POST", path, {"flags": V2, "content": "", "components": [text("x")]})
    assert status == 200
    # V2 components without the flag are refused too (Discord never shows them as a classic message).
    assert v2_refused(*await send_raw(fake, "POST", path, {"content": "hi", "components": [text("x")]}))


async def test_v2_counts_every_component_nested_ones_too(fake: FakeDiscord) -> None:
    path = f"/channels/{fake.CHANNEL_ID}/messages"
    # A container with 39 texts is 40 components; one more is 41.
    forty = [{"type": 17, "components": [text(str(n)) for n in range(39)]}]
    status, _ = await send_raw(fake, "POST", path, {"flags": V2, "components": forty})
    assert status == 200
    forty_one = [{"type": 17, "components": [text(str(n)) for n in range(39)]}, {"type": 14}]
    assert v2_refused(*await send_raw(fake, "POST", path, {"flags": V2, "components": forty_one}))
    # A section's accessory counts as well: 13 sections of a text and a thumbnail are 39, plus a separator 40.
    section = {"type": 9, "components": [text("s")], "accessory": {"type": 11, "media": {"url": "https://x.io/a"}}}
    status, _ = await send_raw(fake, "POST", path, {"flags": V2, "components": [section] * 13 + [{"type": 14}]})
    assert status == 200
    sections = [section] * 13 + [{"type": 14}, {"type": 14}]
    assert v2_refused(*await send_raw(fake, "POST", path, {"flags": V2, "components": sections}))
    # And 4,000 characters of text in all.
    assert v2_refused(*await send_raw(fake, "POST", path, {"flags": V2, "components": [text("a" * 2001)] * 2}))


async def test_v2_media_name_a_file_of_the_same_message_or_a_url(fake: FakeDiscord) -> None:
    path = f"/channels/{fake.CHANNEL_ID}/messages"
    with_file = {"flags": V2, "components": [gallery("attachment://a.png")]}
    status, body = await send_raw(fake, "POST", path, with_file, {"a.png": PNG})
    assert status == 200 and body["components"][0]["items"][0]["media"]["url"] == body["attachments"][0]["url"]
    # A file of another message (or none at all) is not there to show.
    assert v2_refused(*await send_raw(fake, "POST", path, with_file))
    assert v2_refused(*await send_raw(fake, "POST", path, with_file, {"b.png": PNG}))
    thumbnail = {"type": 11, "media": {"url": "attachment://b.png"}}
    section = {"type": 9, "components": [text("x")], "accessory": thumbnail}
    assert v2_refused(*await send_raw(fake, "POST", path, {"flags": V2, "components": [section]}, {"a.png": PNG}))
    # A link works; anything else does not.
    status, _ = await send_raw(fake, "POST", path, {"flags": V2, "components": [gallery("https://x.io/a.png")]})
    assert status == 200
    for url in ("ftp://x.io/a.png", "a.png", ""):
        assert v2_refused(*await send_raw(fake, "POST", path, {"flags": V2, "components": [gallery(url)]}))


async def test_an_action_row_holds_one_to_five_buttons(fake: FakeDiscord) -> None:
    path = f"/channels/{fake.CHANNEL_ID}/messages"

    def row(count: int) -> dict[str, Any]:
        buttons = [{"type": 2, "style": 2, "label": str(n), "custom_id": f"b{n}"} for n in range(count)]
        return {"type": 1, "components": buttons}

    for flags, wrap in ((0, lambda r: [r]), (V2, lambda r: [{"type": 17, "components": [text("x"), r]}])):
        status, _ = await send_raw(fake, "POST", path, {"flags": flags, "content": "", "components": wrap(row(5))})
        assert status == 200
        assert v2_refused(*await send_raw(fake, "POST", path, {"flags": flags, "components": wrap(row(6))}))
        assert v2_refused(*await send_raw(fake, "POST", path, {"flags": flags, "components": wrap(row(0))}))


async def test_v2_gallery_holds_one_to_ten_items(fake: FakeDiscord) -> None:
    path = f"/channels/{fake.CHANNEL_ID}/messages"
    ten = gallery(*[f"https://x.io/{n}.png" for n in range(10)])
    status, _ = await send_raw(fake, "POST", path, {"flags": V2, "components": [ten]})
    assert status == 200
    eleven = gallery(*[f"https://x.io/{n}.png" for n in range(11)])
    assert v2_refused(*await send_raw(fake, "POST", path, {"flags": V2, "components": [eleven]}))
    assert v2_refused(*await send_raw(fake, "POST", path, {"flags": V2, "components": [gallery()]}))


async def test_v2_flag_is_set_by_an_edit_that_clears_the_content_and_never_removed(fake: FakeDiscord) -> None:
    status, plain = await send_raw(fake, "POST", f"/channels/{fake.CHANNEL_ID}/messages", {"content": "⏳ working"})
    assert status == 200
    path = f"/channels/{fake.CHANNEL_ID}/messages/{plain['id']}"
    card = {"flags": V2, "components": [gallery("attachment://out.png")]}
    # The content must be cleared by the edit that sets the flag.
    assert v2_refused(*await send_raw(fake, "PATCH", path, card, {"out.png": PNG}))
    assert fake.messages[int(plain["id"])]["content"] == "⏳ working"  # a refused edit changes nothing
    status, edited = await send_raw(
        fake, "PATCH", path, {**card, "content": None, "attachments": [{"id": 0}]}, {"out.png": PNG}
    )
    assert status == 200 and edited["flags"] & V2 and edited["content"] == ""
    # Once set, the flag stays, and the message takes no content.
    assert v2_refused(*await send_raw(fake, "PATCH", path, {"flags": 0}))
    assert v2_refused(*await send_raw(fake, "PATCH", path, {"flags": 0, "content": "back to text", "components": []}))
    assert v2_refused(*await send_raw(fake, "PATCH", path, {"content": "back to text"}))
    assert fake.messages[int(plain["id"])]["flags"] & V2
    # A message with files must clear them when it becomes V2.
    status, with_file = await send_raw(
        fake, "POST", f"/channels/{fake.CHANNEL_ID}/messages", {"content": ""}, {"old.png": PNG}
    )
    assert status == 200
    path = f"/channels/{fake.CHANNEL_ID}/messages/{with_file['id']}"
    assert v2_refused(*await send_raw(fake, "PATCH", path, {"flags": V2, "components": [text("x")]}))
    status, _ = await send_raw(fake, "PATCH", path, {"flags": V2, "components": [text("x")], "attachments": []})
    assert status == 200


# ---------------------------------------------------------------------- forms (modals)


def label(text: str, component: dict[str, Any]) -> dict[str, Any]:
    return {"type": 18, "label": text, "component": component}


def text_input(custom_id: str = "prompt") -> dict[str, Any]:
    return {"type": 4, "custom_id": custom_id, "style": 2, "required": True}


def file_upload(custom_id: str = "files", **counts: Any) -> dict[str, Any]:
    return {"type": 19, "custom_id": custom_id, "required": False, "min_values": 0, "max_values": 9, **counts}


def checkbox_group(custom_id: str = "options") -> dict[str, Any]:
    options = [{"label": "Only me", "value": "only-me"}, {"label": "Spoiler", "value": "spoiler", "default": True}]
    return {"type": 22, "custom_id": custom_id, "required": False, "min_values": 0, "max_values": 2, "options": options}


def modal(*components: dict[str, Any], custom_id: str = "form", title: str = "Refine") -> dict[str, Any]:
    return {"type": 9, "data": {"custom_id": custom_id, "title": title, "components": list(components)}}


async def open_raw(fake: FakeDiscord, body: dict[str, Any]) -> tuple[int, dict[str, Any] | None]:
    """Answer a fresh interaction with ``body`` as a bot would (POST the callback); Discord's status and JSON."""
    handle = await fake.slash_command("anything", [])
    url = f"{fake.api_base}/interactions/{handle.id}/{handle.token}/callback"
    async with aiohttp.ClientSession() as session, session.post(url, json=body) as resp:
        return resp.status, (await resp.json() if resp.status != 204 else None)


async def refused(fake: FakeDiscord, body: dict[str, Any]) -> dict[str, Any]:
    """The field errors Discord answers a modal that breaks its rules with (400, 50035)."""
    status, answer = await open_raw(fake, body)
    assert status == 400 and answer is not None, (status, answer)
    assert answer["code"] == 50035 and answer["message"] == "Invalid Form Body"
    errors: dict[str, Any] = answer["errors"]["data"]
    return errors


async def test_a_valid_form_with_a_file_upload_and_a_checkbox_group_is_taken(
    fake: FakeDiscord, run_bot: RunBot
) -> None:
    await run_bot(make_bot())
    body = modal(
        label("What should change?", text_input()),
        label("Add images", file_upload()),
        label("Options", checkbox_group()),
        label("Remember me", {"type": 23, "custom_id": "remember"}),
        {"type": 10, "content": "Images you add become image2, image3, …"},
    )
    assert await open_raw(fake, body) == (204, None)
    assert fake.forms["form"] == body["data"]


async def test_a_form_of_more_than_five_components_is_refused(fake: FakeDiscord, run_bot: RunBot) -> None:
    await run_bot(make_bot())
    six = [label(f"Field {n}", text_input(f"f{n}")) for n in range(6)]
    errors = await refused(fake, modal(*six))
    assert errors == {
        "components": {"_errors": [{"code": "BASE_TYPE_BAD_LENGTH", "message": "Must be between 1 and 5 in length."}]}
    }
    assert "form" not in fake.forms
    errors = await refused(fake, modal())
    assert errors["components"]["_errors"][0]["code"] == "BASE_TYPE_BAD_LENGTH"


async def test_a_label_holds_only_what_discord_allows(fake: FakeDiscord, run_bot: RunBot) -> None:
    await run_bot(make_bot())
    button = {"type": 2, "style": 1, "label": "Go", "custom_id": "go"}
    errors = await refused(fake, modal(label("What should change?", text_input()), label("A button", button)))
    assert list(errors["components"]) == ["1"]
    assert errors["components"]["1"]["component"]["type"]["_errors"][0]["code"] == "UNION_TYPE_CHOICES"
    # A top-level component that is no Label, text display or (deprecated) text-input row.
    errors = await refused(fake, modal({"type": 12, "items": []}))
    assert errors["components"]["0"]["type"]["_errors"][0]["code"] == "UNION_TYPE_CHOICES"


@pytest.mark.parametrize(
    ("counts", "field", "code"),
    [
        ({"max_values": 11}, "max_values", "NUMBER_TYPE_MAX"),
        ({"max_values": 0}, "max_values", "NUMBER_TYPE_MIN"),
        ({"min_values": 11, "max_values": 10}, "min_values", "NUMBER_TYPE_MAX"),
        ({"min_values": -1}, "min_values", "NUMBER_TYPE_MIN"),
        ({"min_values": 5, "max_values": 3}, "min_values", "BASE_TYPE_BAD_VALUE"),
        ({"required": True, "min_values": 0}, "min_values", "NUMBER_TYPE_MIN"),
    ],
    ids=["max-over-10", "max-0", "min-over-10", "min-negative", "min-over-max", "required-with-min-0"],
)
async def test_a_file_upload_takes_zero_to_ten_files(
    fake: FakeDiscord, run_bot: RunBot, counts: dict[str, Any], field: str, code: str
) -> None:
    await run_bot(make_bot())
    errors = await refused(fake, modal(label("Add images", file_upload(**counts))))
    assert errors["components"]["0"]["component"][field]["_errors"][0]["code"] == code


async def test_custom_ids_titles_and_labels_have_discords_lengths(fake: FakeDiscord, run_bot: RunBot) -> None:
    await run_bot(make_bot())
    long_id = await refused(fake, modal(label("Prompt", text_input("x" * 101))))
    assert long_id["components"]["0"]["component"]["custom_id"]["_errors"][0]["code"] == "BASE_TYPE_BAD_LENGTH"
    long_label = await refused(fake, modal(label("L" * 46, text_input())))
    assert long_label["components"]["0"]["label"]["_errors"][0]["code"] == "BASE_TYPE_BAD_LENGTH"
    long_description = {**label("Prompt", text_input()), "description": "d" * 101}
    assert "description" in (await refused(fake, modal(long_description)))["components"]["0"]
    assert list(await refused(fake, modal(label("Prompt", text_input()), title="T" * 46))) == ["title"]
    assert list(await refused(fake, modal(label("Prompt", text_input()), custom_id="m" * 101))) == ["custom_id"]
    twice = await refused(fake, modal(label("One", text_input("same")), label("Two", text_input("same"))))
    assert twice["components"]["1"]["component"]["custom_id"]["_errors"][0]["code"] == "COMPONENT_CUSTOM_ID_DUPLICATED"
    no_options = {**checkbox_group(), "options": []}
    assert "options" in (await refused(fake, modal(label("Options", no_options))))["components"]["0"]["component"]
    # Every error is reported at once, each at its own path.
    both = await refused(fake, modal(label("L" * 46, text_input("x" * 101)), title="T" * 46))
    assert set(both) == {"title", "components"} and set(both["components"]["0"]) == {"label", "component"}


async def test_a_submission_carries_uploaded_files_and_checkboxes_as_discord_sends_them(
    fake: FakeDiscord, run_bot: RunBot
) -> None:
    """A real discord.py modal opened by the bot, submitted through the fake: discord.py reads every value."""
    bot = make_bot()
    got: asyncio.Future[tuple[str, list[bytes], list[str], bool]] = asyncio.get_running_loop().create_future()

    class Form(discord.ui.Modal, title="Refine"):
        prompt: discord.ui.Label[Form] = discord.ui.Label(
            text="What should change?", component=discord.ui.TextInput(custom_id="prompt")
        )
        files: discord.ui.Label[Form] = discord.ui.Label(
            text="Add images",
            component=discord.ui.FileUpload(custom_id="files", required=False, min_values=0, max_values=9),
        )
        options: discord.ui.Label[Form] = discord.ui.Label(
            text="Options",
            component=discord.ui.CheckboxGroup(
                custom_id="options",
                required=False,
                min_values=0,
                max_values=2,
                options=[
                    discord.CheckboxGroupOption(label="Only me", value="only-me"),
                    discord.CheckboxGroupOption(label="Spoiler", value="spoiler", default=True),
                ],
            ),
        )
        remember: discord.ui.Label[Form] = discord.ui.Label(
            text="Remember", component=discord.ui.Checkbox(custom_id="remember")
        )

        def __init__(self) -> None:
            super().__init__(custom_id="refine-form")

        async def on_submit(self, interaction: discord.Interaction) -> None:
            assert isinstance(self.prompt.component, discord.ui.TextInput)
            assert isinstance(self.files.component, discord.ui.FileUpload)
            assert isinstance(self.options.component, discord.ui.CheckboxGroup)
            assert isinstance(self.remember.component, discord.ui.Checkbox)
            data = [await attachment.read() for attachment in self.files.component.values]
            got.set_result(
                (self.prompt.component.value, data, self.options.component.values, self.remember.component.value)
            )
            await interaction.response.send_message("ok", ephemeral=True)

    @bot.tree.command(name="form", description="Form")
    async def form(interaction: discord.Interaction) -> None:
        await interaction.response.send_modal(Form())

    await run_bot(bot)
    opened = await fake.slash_command("form", [])
    assert (await opened.wait_for_callback()).json["type"] == 9
    assert [c["component"]["type"] for c in fake.forms["refine-form"]["components"]] == [4, 19, 22, 23]

    first, second = fake.add_attachment(PNG, "a.png"), fake.add_attachment(PNG[::-1], "b.png")
    submit = await fake.submit_modal("refine-form", {"prompt": "a hat", "files": [first, second], "remember": True})
    prompt, files, options, remember = await asyncio.wait_for(got, 5)
    # The spoiler option was shown ticked and left alone: Discord sends it as shown.
    assert (prompt, files, options, remember) == ("a hat", [PNG, PNG[::-1]], ["spoiler"], True)
    data = submit.payload["data"]
    uploads = data["components"][1]["component"]
    assert uploads["type"] == 19 and uploads["values"] == [first["id"], second["id"]]
    assert data["resolved"]["attachments"][first["id"]]["url"] == first["url"]
    assert [c["type"] for c in data["components"]] == [18, 18, 18, 18]
    ids = [c["id"] for c in data["components"]] + [c["component"]["id"] for c in data["components"]]
    assert len(set(ids)) == 8
    await submit.wait_for_callback()

    # A submission the form could not take is a mistake in the test, unless it means a tampered client.
    with pytest.raises(ValueError, match="not among the options"):
        await fake.submit_modal("refine-form", {"prompt": "x", "options": ["everyone"]})
    with pytest.raises(ValueError, match="has no field"):
        await fake.submit_modal("refine-form", {"prompt": "x", "size": ["auto"]})
    with pytest.raises(ValueError, match="at most 9 files"):
        await fake.submit_modal("refine-form", {"prompt": "x", "files": [first] * 10})


@only_sqlite  # about the test's own harness, not the database
async def test_a_bot_a_failed_test_left_running_is_killed_when_the_fake_discord_stops(
    bot_env: dict[str, str], tmp_path: Path, discord_fake: FakeDiscord
) -> None:
    """A test that fails between starting a bot and stopping it leaves the process running, holding ports, files
    and database sessions for the rest of the run: the fake Discord's end kills it, stalled (SIGSTOP) or not."""
    process = BotProcess(bot_env, tmp_path, discord_fake)
    await process.start()
    assert process.proc is not None
    process.proc.send_signal(signal.SIGSTOP)
    async with asyncio.timeout(10):
        await discord_fake.stop()
    assert process.proc.returncode == -signal.SIGKILL
