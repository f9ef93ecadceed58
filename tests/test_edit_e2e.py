"""/edit end to end: the real bot process against the fake Discord and the fake image API."""

from __future__ import annotations

import asyncio
import io
import os
from pathlib import Path

import pytest
from PIL import Image

from bot.jobs.admission import AHEAD_WAITS_SECONDS
from tests.databases import only_sqlite
from tests.fake_discord import FakeDiscord, InteractionHandle
from tests.fake_image_api import FakeImageAPI, Reply, make_png
from tests.harness import (
    API_KEY,
    BOT_TOKEN,
    BotProcess,
    card_buttons,
    card_text,
    rows,
    send_edit,
    wait_final_text,
    wait_result,
    wait_rows,
)
from tests.test_lifecycle_e2e import usage_text

EPHEMERAL = 64


def noise_png(width: int, height: int) -> bytes:
    buffer = io.BytesIO()
    Image.frombytes("RGB", (width, height), os.urandom(width * height * 3)).save(buffer, format="PNG")
    return buffer.getvalue()


async def test_command_schema_is_synced_once_and_not_again_after_restart(
    bot: BotProcess, discord_fake: FakeDiscord
) -> None:
    puts = [r for r in discord_fake.requests if r.method == "PUT" and r.path.endswith("/commands")]
    assert len(puts) == 1
    commands = {c["name"]: c for c in puts[0].json}
    assert sorted(commands) == ["Edit images", "atelier", "edit", "history", "imagine", "usage"]
    edit = commands["edit"]
    admin = commands["atelier"]
    assert int(admin["default_member_permissions"]) == 1 << 5  # Manage Server
    subcommands = {o["name"]: o for o in admin["options"]}
    assert sorted(subcommands) == ["block", "key", "limits", "presets", "settings", "stats", "unblock"]
    assert subcommands["presets"]["type"] == 2
    assert sorted(o["name"] for o in subcommands["presets"]["options"]) == ["add", "list", "remove"]
    assert subcommands["key"]["type"] == 2  # a group: /atelier key set, /atelier key clear
    assert sorted(o["name"] for o in subcommands["key"]["options"]) == ["clear", "set"]
    settings = {o["name"]: o for o in subcommands["settings"]["options"]}
    assert settings["audit_channel"]["type"] == 7 and settings["audit_channel"]["channel_types"] == [
        0,
        5,
    ]  # text, announcement
    assert settings["audit_off"]["type"] == 5 and settings["model"]["autocomplete"] is True
    block = {o["name"]: o for o in subcommands["block"]["options"]}
    assert block["member"]["type"] == 6 and block["member"]["required"] and block["reason"]["type"] == 3
    assert commands["usage"].get("default_member_permissions") is None
    assert commands["history"].get("default_member_permissions") is None
    assert commands["Edit images"]["type"] == 3  # a message command, under Apps
    names = [o["name"] for o in edit["options"]]
    assert names == ["prompt", "image1", "size", "style", "private", "spoiler", "variations"] + [
        f"image{n}" for n in range(2, 11)
    ]
    types = {o["name"]: o["type"] for o in edit["options"]}
    assert types["prompt"] == 3 and types["size"] == 3 and types["style"] == 3 and types["private"] == 5
    style = next(o for o in edit["options"] if o["name"] == "style")
    assert style["autocomplete"] is True
    assert all(types[f"image{n}"] == 11 for n in range(1, 11))
    required = {o["name"] for o in edit["options"] if o.get("required")}
    assert required == {"prompt", "image1"}
    size = next(o for o in edit["options"] if o["name"] == "size")
    assert size["autocomplete"] is True and "choices" not in size
    assert all(len(o["description"]) <= 100 for o in edit["options"])
    variations = next(o for o in edit["options"] if o["name"] == "variations")
    assert (variations["type"], variations["min_value"], variations["max_value"]) == (4, 2, 4)

    await bot.stop()
    await bot.start()
    puts = [r for r in discord_fake.requests if r.method == "PUT" and r.path.endswith("/commands")]
    assert len(puts) == 1, "an unchanged schema must not be re-synced on restart"


async def test_size_autocomplete_offers_labelled_filtered_choices(bot: BotProcess, discord_fake: FakeDiscord) -> None:
    handle = await discord_fake.autocomplete(
        "edit",
        [
            {"name": "prompt", "type": 3, "value": "x"},
            {"name": "size", "type": 3, "value": "16:9", "focused": True},
        ],
    )
    callback = await handle.wait_for_callback()
    assert callback.json["type"] == 8
    choices = callback.json["data"]["choices"]
    assert choices == [
        {"name": "1280×720 · 16:9 · 1K", "value": "1280x720"},
        {"name": "2048×1152 · 16:9 · 2K", "value": "2048x1152"},
        {"name": "3840×2160 · 16:9 · 4K", "value": "3840x2160"},
    ]
    empty = await discord_fake.autocomplete(
        "edit",
        [
            {"name": "prompt", "type": 3, "value": "x"},
            {"name": "size", "type": 3, "value": "", "focused": True},
        ],
    )
    everything = (await empty.wait_for_callback()).json["data"]["choices"]
    assert len(everything) == 25 and everything[0]["value"] == "auto"


async def test_acknowledges_before_downloading_and_posts_result_with_caption(
    bot: BotProcess, discord_fake: FakeDiscord, image_api: FakeImageAPI
) -> None:
    source = make_png(120, 80, (10, 20, 30))
    output = make_png(96, 64, (200, 100, 50))
    image_api.then(Reply(kind="b64", image=output))
    handle = await send_edit(discord_fake, "make the sky purple", [source])
    ack = await handle.wait_for_callback()
    assert ack.json["type"] == 4 and not ack.json["data"].get("flags", 0) & EPHEMERAL
    result = await wait_result(handle)
    download = next(r for r in discord_fake.requests if r.path.startswith("/cdn/"))
    assert ack.index < download.index < result.index
    assert result.files[0].data == output
    assert result.files[0].filename.endswith(".png")
    content = card_text(result)
    assert "make the sky purple" in content and "96×64" in content
    assert f"<@{discord_fake.USER_ID}>" in content and " s" in content
    labels = [(b["label"], b["custom_id"].rsplit(":", 1)[0]) for b in card_buttons(result)]
    assert labels == [
        ("Refine", "atelier:refine:v1"),
        ("Reroll", "atelier:reroll:v1"),
        ("Variations", "atelier:variations:v1"),
        ("Info", "atelier:info:v1"),
        ("Delete", "atelier:delete:v1"),
    ]
    (call,) = image_api.calls
    assert [p.data for p in call.images] == [source]
    assert call.field("prompt") == "make the sky purple"
    assert call.field("response_format") == "b64_json"
    assert call.field("model") == "gpt-image-2-vip"
    assert call.headers["Authorization"] == f"Bearer {API_KEY}"
    assert "size" not in call.names


def answered_at(fake: FakeDiscord, handles: list[InteractionHandle]) -> list[float]:
    """When each command's answer reached Discord."""
    return [r.at for h in handles for r in fake.requests if r.path.endswith(f"/{h.token}/callback")]


def fetched_at(fake: FakeDiscord, handles: list[InteractionHandle]) -> list[float]:
    """When each command's attachments were asked of the CDN."""
    downloads = {r.path.split("/")[-2]: r.at for r in fake.requests if r.path.startswith("/cdn/attachments/")}
    return [downloads[attachment] for h in handles for attachment in h.payload["data"]["resolved"]["attachments"]]


async def burst_behind_a_slow_answer(
    fake: FakeDiscord, first_user: int, delay: float
) -> tuple[InteractionHandle, list[InteractionHandle]]:
    """A member's /edit whose answer Discord takes ``delay`` s over, then three other members' /edit."""
    slow, *others = users = [first_user + n for n in range(4)]
    for user in users:
        fake.add_user(user, f"member{user}")
    fake.slow_callbacks[slow] = delay
    first = await send_edit(fake, "slow answer", [make_png()], user_id=slow)
    # The others arrive once the slow answer is on its way, so their 1 s of waiting outlasts it (on a busy
    # machine the slow request's own admission can otherwise take longer than theirs, and their wait expire).
    await fake.wait_for_arrival(lambda r: r.path.endswith(f"/{first.token}/callback"))
    handles = await asyncio.gather(*(send_edit(fake, f"from {u}", [make_png()], user_id=u) for u in others))
    return first, list(handles)


async def test_a_burst_is_answered_before_the_images_beyond_the_slots_are_fetched(
    bot_process: BotProcess, bot_env: dict[str, str], discord_fake: FakeDiscord, image_api: FakeImageAPI
) -> None:
    """Members are answered first: in a burst, only as many jobs as the API has slots fetch their images
    while a request of the burst still waits for its answer (here Discord takes 0.9 s over one), and those
    only after waiting for it a moment; the others fetch once it is answered, and every job then runs."""
    delay = 0.9  # under the 1 s a job waits at most for the others' answers
    bot_env.update(MAX_CONCURRENT_JOBS="1")
    await bot_process.start()
    first, handles = await burst_behind_a_slow_answer(discord_fake, discord_fake.USER_ID + 700, delay)
    await asyncio.gather(*(wait_result(h) for h in [first, *handles]))
    (answer,) = answered_at(discord_fake, [first])
    answered = answer + delay
    # The others were answered while the slow answer was on its way (else this test would show nothing).
    others_answered = answered_at(discord_fake, handles)
    assert len(others_answered) == 3 and max(others_answered) < answered
    fetched = fetched_at(discord_fake, handles)
    assert len(fetched) == 3
    # One job (the one slot's) fetched while the slow answer was on its way; the two others waited for it.
    assert sum(at < answered for at in fetched) == 1, [round(at - answered, 3) for at in fetched]
    # The slot's job itself waited for the answers first, as long as it waits at most (0.1 s) after its own.
    ((ahead, its_answer),) = [(at, own) for at, own in zip(fetched, others_answered, strict=True) if at < answered]
    assert ahead - its_answer >= AHEAD_WAITS_SECONDS - 0.01, round(ahead - its_answer, 3)


async def test_with_a_line_as_long_as_the_slots_no_job_of_a_burst_fetches_before_the_answers(
    bot_process: BotProcess, bot_env: dict[str, str], discord_fake: FakeDiscord, image_api: FakeImageAPI
) -> None:
    """A job goes ahead of the answers only when the API would otherwise wait for it: with a job already
    waiting for the one slot, a burst's jobs all fetch their images once every request is answered (here
    Discord takes 0.9 s over one), and then every job runs."""
    delay = 0.9  # under the 1 s a job waits at most for the others' answers
    bot_env.update(MAX_CONCURRENT_JOBS="1")
    await bot_process.start()
    image_api.latency = 4.0  # the slot's call lasts the whole burst
    running = await send_edit(discord_fake, "runs", [make_png()])
    await image_api.wait_for_started(1)
    waiting = await send_edit(discord_fake, "waits", [make_png()])
    # The line as the bot read it holds the waiting job: its status line says so.
    await discord_fake.wait_for_arrival(
        lambda r: r.method == "PATCH" and waiting.token in r.path and b"next in line" in r.body
    )
    image_api.latency = 0.0
    first, handles = await burst_behind_a_slow_answer(discord_fake, discord_fake.USER_ID + 720, delay)
    await asyncio.gather(*(wait_result(h) for h in [running, waiting, first, *handles]))
    (answer,) = answered_at(discord_fake, [first])
    answered = answer + delay
    others_answered = answered_at(discord_fake, handles)
    assert len(others_answered) == 3 and max(others_answered) < answered  # else this test would show nothing
    fetched = fetched_at(discord_fake, [first, *handles])
    assert len(fetched) == 4
    assert min(fetched) >= answered - 0.05, [round(at - answered, 3) for at in fetched]


async def test_the_slots_jobs_are_queued_before_the_images_of_the_jobs_behind_them_are_fetched(
    bot_process: BotProcess, bot_env: dict[str, str], discord_fake: FakeDiscord, image_api: FakeImageAPI
) -> None:
    """The jobs a free slot will take first get their images first: while the one slot's job fetches its
    image (here the CDN takes 0.6 s), the jobs that arrive behind it are answered but wait to fetch theirs
    until it is queued; then every job runs."""
    delay = 0.6  # under the 1 s a job waits at most for the jobs ahead of it
    bot_env.update(MAX_CONCURRENT_JOBS="1")
    await bot_process.start()
    discord_fake.slow_downloads["slow.png"] = delay
    first = await send_edit(discord_fake, "slow download", [make_png()], filenames=["slow.png"])
    slow = await discord_fake.wait_for_arrival(lambda r: r.path.endswith("/slow.png"))
    others = [discord_fake.USER_ID + 710 + n for n in range(3)]
    for user in others:
        discord_fake.add_user(user, f"member{user}")
    handles = await asyncio.gather(*(send_edit(discord_fake, f"from {u}", [make_png()], user_id=u) for u in others))
    await asyncio.gather(*(wait_result(h) for h in [first, *handles]))
    served = slow.at + delay
    answers = answered_at(discord_fake, handles)
    # The others were answered while the slow download went on (else this test would show nothing).
    assert len(answers) == 3 and max(answers) < served
    fetched = fetched_at(discord_fake, handles)
    assert len(fetched) == 3
    assert min(fetched) >= served - 0.05, [round(at - served, 3) for at in fetched]
    # The first job reached the API first: the one slot was never left to the jobs behind it.
    assert image_api.calls[0].field("prompt").startswith("slow download")


async def test_three_images_are_sent_in_option_order(
    bot: BotProcess, discord_fake: FakeDiscord, image_api: FakeImageAPI
) -> None:
    images = [make_png(30, 30, (i * 50, 0, 0)) for i in range(1, 4)]
    handle = await send_edit(discord_fake, "person from image1 into image2, style of image3", images)
    await wait_result(handle)
    (call,) = image_api.calls
    assert [p.data for p in call.images] == images
    assert [p.filename for p in call.images] == ["image1.png", "image2.png", "image3.png"]


async def test_a_gap_in_the_images_is_refused_without_an_api_call(
    bot: BotProcess, discord_fake: FakeDiscord, image_api: FakeImageAPI
) -> None:
    handle = await send_edit(discord_fake, "x", [make_png(), None, make_png()])
    callback = await handle.wait_for_callback()
    assert callback.json["data"]["flags"] & EPHEMERAL
    assert "image2 is missing" in callback.json["data"]["content"]
    assert image_api.calls == []


async def test_a_valid_size_is_sent(bot: BotProcess, discord_fake: FakeDiscord, image_api: FakeImageAPI) -> None:
    handle = await send_edit(discord_fake, "wider", [make_png()], size="2048x1360")
    result = await wait_result(handle)
    assert image_api.calls[0].field("size") == "2048x1360"
    assert "asked 2048x1360" in card_text(result)


async def test_an_invalid_size_is_refused_without_an_api_call(
    bot: BotProcess, discord_fake: FakeDiscord, image_api: FakeImageAPI
) -> None:
    handle = await send_edit(discord_fake, "wider", [make_png()], size="1024x1024")
    callback = await handle.wait_for_callback()
    assert callback.json["data"]["flags"] & EPHEMERAL
    assert "not a size the image service supports" in callback.json["data"]["content"]
    assert image_api.calls == []
    ok = await send_edit(discord_fake, "wider", [make_png()], size="2048×1360 · 3:2 · 2K")
    await wait_result(ok)
    assert image_api.calls[0].field("size") == "2048x1360"


@pytest.mark.parametrize("kind", ["b64", "b64_raw"])
async def test_prefixed_and_raw_base64_both_decode(
    bot: BotProcess, discord_fake: FakeDiscord, image_api: FakeImageAPI, kind: str
) -> None:
    output = make_png(50, 40, (1, 2, 3))
    image_api.then(Reply(kind=kind, image=output))
    result = await wait_result(await send_edit(discord_fake, "x", [make_png()]))
    assert result.files[0].data == output


async def test_url_mode_follows_the_link(
    bot_process: BotProcess, bot_env: dict[str, str], discord_fake: FakeDiscord, image_api: FakeImageAPI
) -> None:
    bot_env["IMAGE_RESPONSE_FORMAT"] = "url"
    await bot_process.start()
    output = make_png(70, 40, (9, 9, 9))
    image_api.then(Reply(kind="url", image=output))
    result = await wait_result(await send_edit(discord_fake, "x", [make_png()]))
    assert result.files[0].data == output
    assert image_api.calls[0].field("response_format") == "url"
    assert len(image_api.file_gets) == 1


API_FAILURES = [
    pytest.param(
        Reply(kind="error", status=400, body={"error": {"message": "Prompt mentions a forbidden brand"}}),
        "rejected the request: Prompt mentions a forbidden brand",
        1,
        id="400-with-message",
    ),
    pytest.param(
        Reply(kind="error", status=400, body={"error": {"message": "Rejected by the safety system"}}),
        "refused this request: Rejected by the safety system",
        1,
        id="safety-400",
    ),
    pytest.param(
        Reply(kind="error", status=502, body={"error": {"message": "content blocked by moderation"}}),
        "refused this request",
        1,
        id="safety-as-5xx-not-retried",
    ),
    pytest.param(
        Reply(kind="error", status=401, body={"error": {"message": "invalid key"}}),
        "not configured correctly; the server admin has been told",
        1,
        id="401",
    ),
    pytest.param(
        Reply(kind="error", status=403, body={"error": {"message": "no access"}}),
        "not configured correctly",
        1,
        id="403",
    ),
    pytest.param(
        Reply(kind="error", status=429, body={"error": {"message": "quota exceeded for this key"}}),
        "out of credit",
        1,
        id="429-quota",
    ),
    pytest.param(
        Reply(kind="error", status=429, body={"error": {"message": "slow down"}}, headers={"Retry-After": "0"}),
        "busy right now",
        4,
        id="429-retried-then-busy",
    ),
    pytest.param(Reply(kind="html", status=502), "busy right now", 4, id="html-502-retried-then-busy"),
    # Lost after the request was sent, or cut off midway: may be billed, so never repeated.
    pytest.param(Reply(kind="drop"), "connection to the image service was lost", 1, id="dropped-connection"),
    pytest.param(Reply(kind="cut"), "answer was cut off", 1, id="body-cut-off"),
    pytest.param(Reply(kind="malformed"), "not a usable image", 1, id="malformed-json"),
    pytest.param(Reply(kind="truncated"), "not a usable image", 1, id="truncated-base64"),
    pytest.param(Reply(kind="no_image"), "not a usable image", 1, id="no-image-in-data"),
    pytest.param(Reply(kind="hang"), "did not answer within 2 s", 1, id="timeout"),
]


@pytest.mark.parametrize(("reply", "text", "calls"), API_FAILURES)
async def test_api_failures_are_explained_and_the_bot_serves_the_next_request(
    bot_process: BotProcess,
    bot_env: dict[str, str],
    discord_fake: FakeDiscord,
    image_api: FakeImageAPI,
    reply: Reply,
    text: str,
    calls: int,
) -> None:
    bot_env["IMAGE_API_TIMEOUT"] = "2"
    await bot_process.start()
    image_api.then(*[reply] * calls)
    handle = await send_edit(discord_fake, "try", [make_png()])
    failed = await wait_final_text(handle, "❌")
    assert text in failed.json["content"]
    assert failed.method == "PATCH" and not failed.files
    assert failed.json.get("components") == []  # no Refine button on a failure
    assert len(image_api.calls) == calls
    if "not configured" in text:
        assert "ERROR" in bot_process.log() and "check IMAGE_API_KEY" in bot_process.log()
    # The next request works.
    output = make_png(33, 22)
    image_api.then(Reply(image=output))
    result = await wait_result(await send_edit(discord_fake, "again", [make_png()]))
    assert result.files[0].data == output


@pytest.mark.parametrize(
    ("data", "filename", "message"),
    [
        (b"%PDF-1.7 definitely not a picture", "cat.png", "image2 is not an image"),
        (make_png(200, 200)[:300], "cut.png", "image2 is damaged"),
    ],
    ids=["not-an-image", "corrupt"],
)
async def test_bad_inputs_are_refused_privately_by_option_name(
    bot: BotProcess,
    discord_fake: FakeDiscord,
    image_api: FakeImageAPI,
    data: bytes,
    filename: str,
    message: str,
) -> None:
    handle = await send_edit(discord_fake, "x", [make_png(), data], filenames=["a.png", filename])
    followup = await handle.wait_for_webhook("POST")
    assert followup.json["flags"] & EPHEMERAL
    assert message in followup.json["content"]
    deleted = [r for r in handle.webhook_requests() if r.method == "DELETE"]
    assert len(deleted) == 1, "the public 'working' message is removed"
    assert image_api.calls == []
    result = await wait_result(await send_edit(discord_fake, "fine", [make_png()]))
    assert result.files


async def test_other_formats_are_converted_to_png(
    bot: BotProcess, discord_fake: FakeDiscord, image_api: FakeImageAPI
) -> None:
    buffer = io.BytesIO()
    Image.new("RGB", (40, 30), (5, 6, 7)).save(buffer, format="BMP")
    await wait_result(await send_edit(discord_fake, "x", [buffer.getvalue()], filenames=["pic.bmp"]))
    (part,) = image_api.calls[0].images
    assert part.data.startswith(b"\x89PNG") and part.content_type == "image/png"


async def test_oversized_input_is_reencoded_and_the_reply_says_so(
    bot: BotProcess, discord_fake: FakeDiscord, image_api: FakeImageAPI
) -> None:
    big = noise_png(1400, 1400)  # ~5.9 MB, over the 4 MiB input target
    assert len(big) > 4 * 1024 * 1024
    result = await wait_result(await send_edit(discord_fake, "x", [big]))
    (part,) = image_api.calls[0].images
    assert len(part.data) <= 4 * 1024 * 1024
    assert part.content_type == "image/jpeg"
    assert "image1 was" in card_text(result) and "re-encoded" in card_text(result)


async def test_a_result_over_the_upload_limit_is_reencoded_to_fit(
    bot: BotProcess, discord_fake: FakeDiscord, image_api: FakeImageAPI
) -> None:
    discord_fake.attachment_size_limit = 300_000
    output = noise_png(400, 400)  # ~480 KB
    image_api.then(Reply(image=output))
    result = await wait_result(await send_edit(discord_fake, "x", [make_png()]))
    assert result.status == 200
    assert sum(len(f.data) for f in result.files) <= 300_000
    assert "upload limit" in card_text(result)


async def test_discord_refusing_the_upload_shrinks_once_more(
    bot: BotProcess, discord_fake: FakeDiscord, image_api: FakeImageAPI
) -> None:
    output = noise_png(300, 300)
    image_api.then(Reply(image=output))
    # The first upload of the result is refused (status edits carry no file, whenever they come).
    discord_fake.fail_next(
        "PATCH",
        r"/webhooks/.*/messages/\d+$",
        413,
        {"code": 40005, "message": "Request entity too large"},
        only=lambda r: bool(r.files),
    )
    handle = await send_edit(discord_fake, "x", [make_png()])
    result = await wait_result(handle)
    refused = [r for r in handle.webhook_requests() if r.status == 413]
    assert len(refused) == 1 and refused[0].files[0].data == output
    assert len(result.files[0].data) < len(output)
    assert "upload limit" in card_text(result)


async def test_prompt_pings_nobody(bot: BotProcess, discord_fake: FakeDiscord) -> None:
    role = discord_fake.ROLE_IDS[0] if hasattr(discord_fake, "ROLE_IDS") else 1200000000000000099
    prompt = f"@everyone @here <@&{role}> <@{discord_fake.USER_ID}> look"
    handle = await send_edit(discord_fake, prompt, [make_png()])
    result = await wait_result(handle)
    for request in [*handle.callback_requests(), *handle.webhook_requests()]:
        body = request.json.get("data", request.json) if request.method == "POST" else request.json
        assert body["allowed_mentions"] == {"parse": []}, request
        content = card_text(body)
        assert "@everyone" not in content and "@here" not in content and f"<@&{role}>" not in content
    message = handle.original_message()
    assert message is not None
    assert message["mention_everyone"] is False and message["mentions"] == [] and message["mention_roles"] == []
    assert card_text(result).count(f"<@{discord_fake.USER_ID}>") == 1  # the requester credit, not a ping


async def test_secrets_never_reach_discord_or_the_log(
    bot_process: BotProcess, bot_env: dict[str, str], discord_fake: FakeDiscord, image_api: FakeImageAPI
) -> None:
    bot_env["LOG_LEVEL"] = "DEBUG"
    await bot_process.start()
    image_api.then(Reply(kind="error", status=401, body={"error": {"message": f"Incorrect API key: {API_KEY}"}}))
    await wait_final_text(await send_edit(discord_fake, "x", [make_png()]), "❌")
    await wait_result(await send_edit(discord_fake, "y", [make_png()]))
    for request in discord_fake.requests:
        assert API_KEY.encode() not in request.body
        assert all(API_KEY not in value for value in request.headers.values())
    log = bot_process.log()
    assert "DEBUG" in log and API_KEY not in log and BOT_TOKEN not in log


async def test_missing_required_setting_stops_startup_with_one_clear_line(
    bot_process: BotProcess, bot_env: dict[str, str]
) -> None:
    del bot_env["IMAGE_API_KEY"]
    bot_process.env = bot_env
    with pytest.raises(AssertionError):
        await bot_process.start(timeout=10)
    assert bot_process.proc is not None and bot_process.proc.returncode == 2
    lines = bot_process.log().strip().splitlines()
    assert lines == [
        "atelier: configuration error: IMAGE_API_KEY is required but not set (put it in the environment or in .env)"
    ]


@only_sqlite
async def test_a_sqlite_file_that_cannot_be_opened_or_is_in_use_stops_startup_with_one_clear_line(
    bot_process: BotProcess, bot_env: dict[str, str], discord_fake: FakeDiscord, tmp_path: Path
) -> None:
    # A directory where the file should be: SQLite cannot open it. Before, the writer's thread died on it
    # and the bot hung at start, logged in to nothing and answering nobody.
    where = tmp_path / "not-a-file"
    where.mkdir()
    bot_env["DATABASE_URL"] = f"sqlite:///{where}"
    with pytest.raises(AssertionError):
        await bot_process.start(timeout=15)
    assert bot_process.proc is not None and bot_process.proc.returncode == 2
    assert bot_process.log().strip().splitlines()[-1] == (
        f"atelier: cannot open the SQLite database {where} (unable to open database file)"
    )
    # A second process on a file the first one uses is refused the same way, and the first goes on working.
    del bot_env["DATABASE_URL"]
    await bot_process.start()
    second = BotProcess(dict(bot_env), tmp_path, discord_fake, name="second")
    with pytest.raises(AssertionError):
        await second.start(timeout=15)
    assert second.proc is not None and second.proc.returncode == 2
    assert second.log().strip().splitlines()[-1].startswith("atelier: another Atelier process is using ")
    await wait_result(await send_edit(discord_fake, "still here", [make_png()]))


async def test_dev_guild_gets_the_commands_synced_to_it(
    bot_process: BotProcess, bot_env: dict[str, str], discord_fake: FakeDiscord
) -> None:
    bot_env["DEV_GUILD_ID"] = str(discord_fake.GUILD_ID)
    await bot_process.start()
    puts = [r for r in discord_fake.requests if r.method == "PUT" and r.path.endswith("/commands")]
    assert [r.path for r in puts] == [
        f"/api/v10/applications/{discord_fake.APP_ID}/guilds/{discord_fake.GUILD_ID}/commands"
    ]
    assert sorted(c["name"] for c in puts[0].json) == ["Edit images", "atelier", "edit", "history", "imagine", "usage"]


def jpeg(width: int, height: int, orientation: int | None) -> bytes:
    """A real JPEG, blue with a red top-left corner in its stored pixels, with an EXIF orientation."""
    image = Image.new("RGB", (width, height), (0, 0, 255))
    image.paste((255, 0, 0), (0, 0, width // 4, height // 4))
    buffer = io.BytesIO()
    exif = Image.Exif()
    if orientation is not None:
        exif[0x0112] = orientation
    image.save(buffer, format="JPEG", quality=95, exif=exif.tobytes())
    return buffer.getvalue()


async def test_a_phone_photo_is_turned_upright_and_other_inputs_pass_through(
    bot: BotProcess, discord_fake: FakeDiscord, image_api: FakeImageAPI
) -> None:
    turned = jpeg(80, 40, 6)  # a phone held upright: stored sideways, "turn 90° clockwise to show"
    upright_jpeg = jpeg(80, 40, 1)
    plain_png = make_png(30, 20)
    handle = await send_edit(
        discord_fake,
        "x",
        [turned, upright_jpeg, plain_png],
        filenames=["phone.jpg", "camera.jpg", "shot.png"],
        content_types=["image/jpeg", "image/jpeg", "image/png"],
    )
    result = await wait_result(handle)
    first, second, third = image_api.calls[0].images
    assert first.content_type == "image/jpeg" and first.data != turned
    with Image.open(io.BytesIO(first.data)) as sent:
        assert sent.size == (40, 80)  # what the member saw: taller than wide
        assert sent.getexif().get(0x0112) in (None, 1)
        rgb = sent.convert("RGB")
        assert rgb.getpixel((35, 3))[0] > 200 and rgb.getpixel((3, 3))[2] > 200  # the red corner is top-right now
    assert second.data == upright_jpeg and third.data == plain_png  # everything else byte for byte
    assert "image1 was turned upright, as its EXIF orientation says" in card_text(result)


def odd_images() -> dict[str, tuple[bytes, str]]:
    """The inputs that take the less usual paths through the checks: ``{filename: (bytes, content type)}``."""

    def encoded(image: Image.Image, fmt: str, **params: object) -> bytes:
        buffer = io.BytesIO()
        image.save(buffer, format=fmt, **params)
        return buffer.getvalue()

    palette = Image.new("P", (40, 30), 1)
    palette.putpalette([0, 0, 0, 255, 0, 0] + [0] * 762)
    frames = [Image.new("RGB", (40, 30), colour) for colour in ((255, 0, 0), (0, 255, 0))]
    animated = io.BytesIO()
    frames[0].save(animated, format="GIF", save_all=True, append_images=frames[1:], duration=100, loop=0)
    return {
        "phone.jpg": (jpeg(80, 40, 6), "image/jpeg"),
        "cmyk.jpg": (encoded(Image.new("CMYK", (40, 30), (0, 255, 255, 0)), "JPEG"), "image/jpeg"),
        "deep.png": (encoded(Image.new("I;16", (40, 30), 40000), "PNG"), "image/png"),
        "clear.png": (encoded(palette, "PNG", transparency=0), "image/png"),
        "moving.gif": (animated.getvalue(), "image/gif"),
        "old.bmp": (encoded(Image.new("RGB", (40, 30), (5, 6, 7)), "BMP"), "image/bmp"),
    }


async def test_odd_images_are_kept_in_the_store_and_sent_and_a_bomb_is_refused_before_a_charge(
    bot: BotProcess, discord_fake: FakeDiscord, image_api: FakeImageAPI
) -> None:
    """Phone photos, CMYK, 16-bit, transparent palettes, animated GIFs and BMPs go through the database's
    input rows to the API; a decompression bomb is refused before any charge."""
    images = odd_images()
    handle = await send_edit(
        discord_fake,
        "odd ones",
        [data for data, _ in images.values()],
        filenames=list(images),
        content_types=[kind for _, kind in images.values()],
    )
    result = await wait_result(handle)
    assert "image1 was turned upright, as its EXIF orientation says" in card_text(result)
    sent = image_api.calls[0].images
    with Image.open(io.BytesIO(sent[0].data)) as upright:
        assert upright.size == (40, 80)
    assert sent[1].data == images["cmyk.jpg"][0]  # a JPEG the API takes goes byte for byte
    assert [part.content_type for part in sent] == ["image/jpeg", "image/jpeg", *["image/png"] * 4]
    statuses = "SELECT prompt, status FROM jobs ORDER BY created_at"
    assert await wait_rows(bot.env, statuses, lambda r: r[0][1] != "delivering") == [("odd ones", "succeeded")]

    bomb = io.BytesIO()
    Image.new("1", (20000, 20000)).save(bomb, format="PNG")  # a tiny file of 400 megapixels
    refused = await send_edit(discord_fake, "bomb", [make_png(), bomb.getvalue()])
    followup = await refused.wait_for_webhook("POST")
    assert "image2 is too large to decode safely" in followup.json["content"]
    assert len(image_api.calls) == 1
    assert await rows(bot.env, statuses) == [("odd ones", "succeeded"), ("bomb", "failed")]
    assert "Today: 1 of 25 edits used" in await usage_text(discord_fake)
