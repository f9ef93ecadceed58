"""Live previews end to end: the real bot against the fake Discord and the fake image API, which streams.

- A server turns previews on (``/atelier settings preview:``, off by default); a running edit on a model that
  streams then asks for ``stream=true`` and the model's partial images, and its status shows the newest one as a
  card (the image a file of the same message, byte for byte the partial), edited at most every 3 s (an older
  partial still waiting is dropped); the result's card replaces it.
- Off, or on a model that does not stream, no stream is asked and the status carries no image.
- A stream that never starts (an HTML 502) is repeated as any quick server error; one cut after a preview is not
  repeated: the member reads why, in place of the preview, and is refunded. A restart after a preview says
  "will resume" as a card (the message is one now), and the job resumes. A status moved to a message of its
  own (its token about to lapse) gets the preview and then the result there; a private edit's ephemeral status
  gets its preview through the token, and nothing is posted where others could see it.
- Money, on both databases: the reservation counts the partial images' output tokens and settles to the answer's
  usage; a failure after a partial image is refunded once (charge and refund, nothing settled), its attempt kept
  as possibly billed.
"""

from __future__ import annotations

import asyncio
import itertools
import signal
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from tests.fake_discord import FLAG_IS_COMPONENTS_V2, FakeDiscord, InteractionHandle, RecordedRequest
from tests.fake_image_api import FakeImageAPI, Reply, make_png, partial_png
from tests.harness import (
    MEDIA_GALLERY,
    TEXT_DISPLAY,
    BotProcess,
    bot_environment,
    card_media,
    card_text,
    components_of,
    send_edit,
)
from tests.postgres import fresh_database
from tests.test_model_options_e2e import OFFICIAL_DEFAULT, catalog, read, read_when, reservation
from tests.test_operations_e2e import admin, refusal
from tests.test_private_e2e import EPHEMERAL, channel_posts, send_private_edit

# A partial image costs 100 output tokens (the catalog's partial_image_tokens) at $30 per million: 3000
# micro-dollars; a live preview asks gpt-image-2 for its most, 3.
PARTIALS = 3
PARTIAL_COST = 100 * 30
# Discord's edits of one message, as the status line spaces them; a little slack for the loopback's timing.
MIN_GAP = 3.0 - 0.15


def previews(fake: FakeDiscord, on: bool) -> Any:
    return admin(fake, "settings", [{"name": "preview", "type": 5, "value": on}], user_id=fake.OWNER_ID)


def is_patch_of(handle: InteractionHandle, request: RecordedRequest) -> bool:
    return handle._mine(request) and request.method == "PATCH" and "/messages/" in request.path and request.ok


def has_file(request: RecordedRequest, prefix: str) -> bool:
    return any(f.filename.startswith(prefix) for f in request.files)


async def wait_card_result(handle: InteractionHandle, timeout: float = 30) -> RecordedRequest:
    """The edit that put the result's card on the status (its own file is ``atelier-…``; a preview's is not)."""
    return await handle.fake.wait_for_request(lambda r: is_patch_of(handle, r) and has_file(r, "atelier-"), timeout)


def status_edits(handle: InteractionHandle, until: RecordedRequest) -> list[RecordedRequest]:
    """The running job's status edits: from its first "Editing…" to the result (not included)."""
    edits = [r for r in handle.fake.requests[: until.index] if is_patch_of(handle, r)]
    first = next(n for n, r in enumerate(edits) if str((r.json or {}).get("content") or "").startswith("🎨 Editing"))
    return edits[first:]


def preview_edits(handle: InteractionHandle, until: RecordedRequest) -> list[RecordedRequest]:
    return [r for r in status_edits(handle, until) if has_file(r, "preview-")]


def job_id(fake: FakeDiscord, handle: InteractionHandle) -> str:
    """The job's id, as its status's details line names it."""
    first = next(r for r in handle.webhook_requests() if r.method == "PATCH" and r.json and r.json.get("content"))
    return str(first.json["content"]).split("job `", 1)[1].split("`", 1)[0]


async def start_streaming(bot_process: BotProcess, bot_env: dict[str, str], image_api: FakeImageAPI,
                          tmp_path: Path) -> None:  # fmt: skip
    bot_env["MODELS_FILE"] = catalog(tmp_path, OFFICIAL_DEFAULT)
    image_api.models.add("gpt-image-2")
    await bot_process.start()


async def test_the_status_shows_the_newest_partial_image_as_a_card_at_most_every_3_s_and_the_result_replaces_it(
    bot_process: BotProcess, bot_env: dict[str, str], discord_fake: FakeDiscord, image_api: FakeImageAPI,
    tmp_path: Path,
) -> None:  # fmt: skip
    await start_streaming(bot_process, bot_env, image_api, tmp_path)
    answer = await refusal(await previews(discord_fake, True))
    assert "• Live previews: **on** (up to 3 partial images, at most $0.009 more per edit) *(set here)*" in answer
    final = make_png(90, 60, (9, 9, 9))
    # Three partial images within the first 1.6 s, then the final one at about 5 s.
    image_api.then(Reply(image=final, gaps=(1.0, 0.3, 0.3, 3.5)))
    handle = await send_edit(discord_fake, "a harbour at dusk", [make_png()])
    result = await wait_card_result(handle)
    job = job_id(discord_fake, handle)

    (call,) = image_api.calls
    assert call.field("stream") == "true" and call.field("partial_images") == str(PARTIALS)
    assert call.events == ["image_edit.partial_image"] * PARTIALS + ["image_edit.completed"]

    # No two edits of the status closer than 3 s: the partials came faster, so only the newest was shown.
    edits = status_edits(handle, result)
    gaps = [later.at - earlier.at for earlier, later in itertools.pairwise(edits)]
    assert len(edits) >= 2 and all(gap >= MIN_GAP for gap in gaps), gaps
    shown = preview_edits(handle, result)
    assert [f.filename for r in shown for f in r.files] == [f"preview-{job}-3.png"]
    (preview,) = shown
    (picture,) = preview.files
    assert picture.data == partial_png(2)  # the partial itself, byte for byte
    # The status became a card: the partial image large, the status words under it.
    assert preview.json["flags"] & FLAG_IS_COMPONENTS_V2 and preview.json["content"] is None
    assert [c["type"] for c in components_of(preview)] == [17, MEDIA_GALLERY, TEXT_DISPLAY]
    ((kind, item),) = card_media(preview)
    assert kind == MEDIA_GALLERY
    assert item["media"]["url"] == f"attachment://preview-{job}-3.png"
    assert item["description"] == "A first look at: a harbour at dusk"
    assert card_text(preview).startswith("🎨 Editing… a first look (3 of 3); the finished image will replace it.")
    assert "a harbour at dusk" in card_text(preview)

    # The result's card replaced it: its own image, and nothing of the preview left.
    assert [f.filename for f in result.files] == [f"atelier-{job}.png", f"input-{job}-image1.jpg"]
    assert result.files[0].data == final
    message = handle.original_message()
    assert message is not None
    assert [a["filename"] for a in message["attachments"]] == [f"atelier-{job}.png", f"input-{job}-image1.jpg"]
    assert "first look" not in card_text(message)
    assert not [r for r in discord_fake.requests[result.index + 1 :] if is_patch_of(handle, r) and r.files]


async def test_with_previews_off_or_a_model_that_does_not_stream_no_stream_is_asked(
    bot_process: BotProcess, bot_env: dict[str, str], discord_fake: FakeDiscord, image_api: FakeImageAPI,
    tmp_path: Path,
) -> None:  # fmt: skip
    await start_streaming(bot_process, bot_env, image_api, tmp_path)
    answer = await refusal(await admin(discord_fake, "settings", user_id=discord_fake.OWNER_ID))
    assert "• Live previews: **off** (on: up to 3 partial images, at most $0.009 more per edit)\n" in answer
    handle = await send_edit(discord_fake, "off by default", [make_png()])
    result = await wait_card_result(handle)
    assert "stream" not in image_api.calls[-1].names and "partial_images" not in image_api.calls[-1].names
    assert image_api.calls[-1].events == []
    assert not [r for r in discord_fake.requests[: result.index] if is_patch_of(handle, r) and r.files]

    # On, with a server model that does not stream (the vip route): nothing to ask, and the setting says so.
    await refusal(await previews(discord_fake, True))
    picked = [{"name": "model", "type": 3, "value": "gpt-image-2-vip"}]
    answer = await refusal(await admin(discord_fake, "settings", picked, user_id=discord_fake.OWNER_ID))
    assert "• Live previews: **on**; gpt-image-2-vip does not stream partial images, so none are shown" in answer
    handle = await send_edit(discord_fake, "on the vip route", [make_png()])
    await wait_card_result(handle)
    vip = image_api.calls[-1]
    assert vip.field("model") == "gpt-image-2-vip" and vip.status == 200
    assert "stream" not in vip.names and "partial_images" not in vip.names


async def test_a_stream_that_never_starts_is_repeated_as_a_quick_server_error(
    bot_process: BotProcess, bot_env: dict[str, str], discord_fake: FakeDiscord, image_api: FakeImageAPI,
    tmp_path: Path,
) -> None:  # fmt: skip
    await start_streaming(bot_process, bot_env, image_api, tmp_path)
    await refusal(await previews(discord_fake, True))
    image_api.then(Reply(kind="html", status=502))
    handle = await send_edit(discord_fake, "second time lucky", [make_png()])
    result = await wait_card_result(handle)
    assert [(c.status, c.streamed) for c in image_api.calls] == [(502, True), (200, True)]
    assert image_api.calls[1].events[-1] == "image_edit.completed"
    assert result.files[0].data == make_png()


async def test_after_a_preview_a_restarts_words_reach_the_member_as_a_card_and_the_job_resumes(
    bot_process: BotProcess, bot_env: dict[str, str], discord_fake: FakeDiscord, image_api: FakeImageAPI,
    tmp_path: Path,
) -> None:  # fmt: skip
    """Discord never turns a card back into text: "will resume", and the resumed run's words, go as cards."""
    bot_env["SHUTDOWN_GRACE_SECONDS"] = "0.5"
    await start_streaming(bot_process, bot_env, image_api, tmp_path)
    await refusal(await previews(discord_fake, True))
    image_api.then(Reply(gaps=(0.2, 60.0)))  # a preview, then a long wait the stop interrupts
    handle = await send_edit(discord_fake, "a lighthouse", [make_png()])
    shown = await discord_fake.wait_for_request(lambda r: is_patch_of(handle, r) and has_file(r, "preview-"), 20)
    assert shown.files[0].data == partial_png(0)
    assert await bot_process.stop(signal.SIGTERM, timeout=15) == 0
    later = [r for r in handle.webhook_requests() if r.index > shown.index]
    paused = [r for r in later if "will resume" in card_text(r.json or {})]
    assert [(r.status, bool(r.json["flags"] & FLAG_IS_COMPONENTS_V2), r.json["attachments"]) for r in paused] == [
        (200, True, [])
    ]

    after = len(discord_fake.requests)
    await bot_process.start()
    result = await wait_card_result(handle)
    assert [c.streamed for c in image_api.calls] == [True, True]
    # Every word the resumed job put on its status before the result was taken, as a card.
    words = [r for r in discord_fake.requests[after : result.index] if handle._mine(r) and r.method == "PATCH"]
    assert words and all(r.ok and r.json["flags"] & FLAG_IS_COMPONENTS_V2 for r in words)
    assert result.ok and result.files[0].data == make_png()


async def test_a_job_back_in_line_after_its_call_started_shows_its_place_on_its_card_without_a_cancel_button(
    bot_process: BotProcess, bot_env: dict[str, str], discord_fake: FakeDiscord, image_api: FakeImageAPI,
    tmp_path: Path,
) -> None:  # fmt: skip
    """A job showed a preview, so its status is a card; a restart puts it back in line behind another member's edit
    (one slot). Its place shows on the card, with no Cancel button: a job whose call started cannot be withdrawn.
    Before, every place in line came with a Cancel button, which on such a job only ever said it could not."""
    bot_env.update(SHUTDOWN_GRACE_SECONDS="0.5", MAX_CONCURRENT_JOBS="1", STATUS_UPDATE_SECONDS="0.2")
    await start_streaming(bot_process, bot_env, image_api, tmp_path)
    await refusal(await previews(discord_fake, True))
    image_api.then(Reply(gaps=(0.2, 60.0)))  # a preview, then a long wait the stop interrupts
    mine = await send_edit(discord_fake, "a lighthouse", [make_png()])
    await discord_fake.wait_for_request(lambda r: is_patch_of(mine, r) and has_file(r, "preview-"), 20)
    other = await send_edit(discord_fake, "a harbour", [make_png()], user_id=discord_fake.OTHER_USER_ID)
    await discord_fake.wait_for_request(lambda r: other._mine(r) and "Queued" in card_text(r.json or {}), 20)
    assert await bot_process.stop(signal.SIGTERM, timeout=15) == 0

    held = asyncio.Event()
    image_api.then(Reply(until=held))  # the other member's edit, first in line (never served), holds the slot
    after = len(discord_fake.requests)
    await bot_process.start()
    await image_api.wait_for_started(2)
    assert image_api.calls[-1].field("prompt") == "a harbour"
    placed = await discord_fake.wait_for_request(
        lambda r: r.index >= after and is_patch_of(mine, r) and "in line" in card_text(r.json or {}), 20
    )
    assert placed.json["flags"] & FLAG_IS_COMPONENTS_V2
    assert [c for c in components_of(placed) if c.get("type") == 2] == []  # no button
    held.set()
    await wait_card_result(other)
    assert (await wait_card_result(mine)).files[0].data == make_png()
    assert [c.field("prompt") for c in image_api.calls] == ["a lighthouse", "a harbour", "a lighthouse"]


async def test_a_failure_reaches_the_member_even_when_discord_refused_the_preview_that_would_have_made_a_card(
    bot_process: BotProcess, bot_env: dict[str, str], discord_fake: FakeDiscord, image_api: FakeImageAPI,
    tmp_path: Path,
) -> None:  # fmt: skip
    """The status is marked a card before its preview goes out; if Discord refuses that edit, the message is
    still text, and the failure's card (which clears the text) is taken all the same."""
    await start_streaming(bot_process, bot_env, image_api, tmp_path)
    await refusal(await previews(discord_fake, True))
    image_api.then(Reply(kind="stream_cut", gaps=(0.5, 4.0)))
    handle = await send_edit(discord_fake, "refused preview", [make_png()])
    running = await discord_fake.wait_for_request(
        lambda r: is_patch_of(handle, r) and str((r.json or {}).get("content") or "").startswith("🎨 Editing"), 20
    )
    discord_fake.fail_next("PATCH", rf"/webhooks/\d+/{handle.token}/messages/", 400,
                           {"code": 50035, "message": "Invalid Form Body"})  # fmt: skip
    told = await discord_fake.wait_for_request(
        lambda r: handle._mine(r) and r.method == "PATCH" and "❌" in card_text(r.json or {}), 30, start=running.index
    )
    refused = [r for r in discord_fake.requests[running.index + 1 : told.index] if handle._mine(r) and r.files]
    assert [(r.status, r.files[0].filename.startswith("preview-")) for r in refused] == [(400, True)]
    assert told.ok and told.json["flags"] & FLAG_IS_COMPONENTS_V2 and told.json["content"] is None
    message = handle.original_message()
    assert message is not None and message["content"] == "" and "stopped sending after a preview" in card_text(message)


# Money, and a failure after a partial image, on both databases ------------------------------------------------


@pytest.fixture(params=["sqlite", "postgres"])
async def env(request: pytest.FixtureRequest, discord_fake: FakeDiscord, image_api: FakeImageAPI, tmp_path: Path
              ) -> AsyncIterator[dict[str, str]]:  # fmt: skip
    settings = {"IMAGE_API_TIMEOUT": "20", "MODELS_FILE": catalog(tmp_path, OFFICIAL_DEFAULT)}
    if request.param == "sqlite":
        yield bot_environment(discord_fake.api_base, image_api.base, tmp_path / "data", **settings)
        return
    async with fresh_database() as url:
        yield bot_environment(discord_fake.api_base, image_api.base, tmp_path / "data", DATABASE_URL=url, **settings)


def money_of(prompt: str) -> str:
    return (
        "SELECT m.entry, m.amount FROM money m JOIN jobs j ON j.id = m.job_id "
        f"WHERE j.prompt = '{prompt}' ORDER BY m.entry"
    )


async def test_previews_are_reserved_and_settled_to_the_usage_and_a_cut_after_a_preview_is_refunded_once(
    env: dict[str, str], tmp_path: Path, discord_fake: FakeDiscord, image_api: FakeImageAPI
) -> None:
    image_api.models.add("gpt-image-2")
    details = {"text_tokens": 40, "image_tokens": 1000}
    # The usage counts the partial images' output tokens with the final image's.
    usage = {"input_tokens": 1040, "output_tokens": 4460, "total_tokens": 5500, "input_tokens_details": details}
    image_api.then(Reply(usage=usage), Reply(kind="stream_cut", gaps=(0.5, 4.0)))
    bot = BotProcess(env, tmp_path, discord_fake)
    await bot.start()
    try:
        await refusal(await previews(discord_fake, True))
        await wait_card_result(await send_edit(discord_fake, "a fox", [make_png()]))
        charged = reservation("a fox", 1) + PARTIALS * PARTIAL_COST
        real = 40 * 5 + 1000 * 8 + 4460 * 30
        assert await read_when(env, money_of("a fox"), 2) == [("charge", charged), ("settle", real - charged)]
        assert await read(env, "SELECT cost, output_tokens FROM jobs WHERE prompt = 'a fox'") == [(charged, 4460)]

        # Cut after its first partial image, which the status showed: one call, never repeated.
        handle = await send_edit(discord_fake, "doomed", [make_png()])
        told = await discord_fake.wait_for_request(
            lambda r: is_patch_of(handle, r) and "❌" in card_text(r.json or {}), 30
        )
        job = job_id(discord_fake, handle)
        shown = [r for r in discord_fake.requests[: told.index] if is_patch_of(handle, r) and has_file(r, "preview-")]
        assert [f.data for r in shown for f in r.files] == [partial_png(0)]
        assert len(image_api.calls) == 2 and image_api.calls[1].events == ["image_edit.partial_image", "cut"]
        # The member is told in place of the preview: a card (the message is one now), the image gone.
        assert told.json["flags"] & FLAG_IS_COMPONENTS_V2 and told.json["attachments"] == []
        assert card_text(told) == (
            "❌ The image service stopped sending after a preview, before the finished image. "
            "You were not charged; please try again."
        )
        message = handle.original_message()
        assert message is not None and message["attachments"] == [] and "❌" in card_text(message)
        # The ledger: charged its reservation, refunded it once, nothing settled; the attempt kept as possibly
        # billed (the provider may bill what it was making).
        doomed = reservation("doomed", 1) + PARTIALS * PARTIAL_COST
        assert await read_when(env, money_of("doomed"), 2) == [("charge", doomed), ("refund", doomed)]
        attempts = await read(
            env, f"SELECT attempt, outcome, http_status, may_be_billed FROM api_attempts WHERE job_id = '{job}'"
        )
        assert attempts == [(1, "body_cut_off", 200, 1)]
        assert await read(env, f"SELECT status FROM jobs WHERE id = '{job}'") == [("failed",)]
        net = await read(env, "SELECT SUM(CASE WHEN entry = 'refund' THEN -amount ELSE amount END) FROM money")
        assert net == [(real,)]
    finally:
        await bot.stop()


async def test_a_preview_follows_a_status_moved_before_its_token_lapsed_and_the_result_replaces_it_there(
    bot_process: BotProcess, bot_env: dict[str, str], discord_fake: FakeDiscord, image_api: FakeImageAPI,
    tmp_path: Path,
) -> None:  # fmt: skip
    """The command was answered 13½ minutes ago: the running job's status moves to a message of its own in the
    channel (the token has too little time left), and the preview card and then the result's card go there,
    never to the old message."""
    await start_streaming(bot_process, bot_env, image_api, tmp_path)
    await refusal(await previews(discord_fake, True))
    final = make_png(90, 60, (9, 9, 9))
    image_api.then(Reply(image=final, gaps=(1.0, 0.3, 0.3, 3.5)))
    discord_fake.backdate_next_interaction = 13.5 * 60
    handle = await send_edit(discord_fake, "a harbour moved", [make_png()])
    channel = discord_fake.CHANNEL_ID
    post = await discord_fake.wait_for_request(
        lambda r: r.method == "POST" and r.path == f"/api/v10/channels/{channel}/messages", 10
    )
    new_id = int(post.response["id"])
    on_new = f"/api/v10/channels/{channel}/messages/{new_id}"
    result = await discord_fake.wait_for_request(
        lambda r: r.method == "PATCH" and r.path == on_new and has_file(r, "atelier-"), 30
    )
    assert result.ok and result.files[0].data == final
    shown = [r for r in discord_fake.requests[: result.index] if r.path == on_new and has_file(r, "preview-")]
    assert len(shown) == 1 and shown[0].ok  # the preview, on the moved status
    assert shown[0].json["flags"] & FLAG_IS_COMPONENTS_V2
    assert shown[0].files[0].data == partial_png(2)
    # Nothing of it went to the old message, through the token.
    assert not any(r.files for r in handle.webhook_requests())


async def test_a_private_edit_s_preview_is_shown_on_its_ephemeral_status_and_nowhere_else(
    bot_process: BotProcess, bot_env: dict[str, str], discord_fake: FakeDiscord, image_api: FakeImageAPI,
    tmp_path: Path,
) -> None:  # fmt: skip
    """The status of a private edit is ephemeral: its preview card is an edit of that message, through the
    interaction's token, which stays ephemeral; nothing is posted where others could see it."""
    await start_streaming(bot_process, bot_env, image_api, tmp_path)
    await refusal(await previews(discord_fake, True))
    start = len(discord_fake.requests)
    final = make_png(90, 60, (9, 9, 9))
    image_api.then(Reply(image=final, gaps=(1.0, 0.3, 0.3, 3.5)))
    handle = await send_private_edit(discord_fake, "a secret harbour", [make_png()])
    result = await wait_card_result(handle)
    (preview,) = preview_edits(handle, result)
    assert preview.files[0].data == partial_png(2)
    assert preview.path.startswith("/api/v10/webhooks/")  # the ephemeral message, by its token
    assert preview.json["flags"] & FLAG_IS_COMPONENTS_V2
    assert result.files[0].data == final
    message = handle.original_message()
    assert message is not None and message["flags"] & EPHEMERAL
    assert channel_posts(discord_fake, start) == []
