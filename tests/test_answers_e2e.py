"""Discord's three seconds, end to end: a click or a command answered in time though the database is slow.

The fake Discord forgets an interaction whose first answer comes more than 3 s after it
(``FakeDiscord.ack_window``, as Discord does). The tests hold what the bot's write needs in its
database (SQLite: the write lock; PostgreSQL: the claims' lock, which a cancel takes, a member's
admission lock, or the table a command writes) while a member clicks Cancel on a queued job, starts
an edit, an imagined picture, a refinement, a region edit, an "Edit images" edit, a reroll (from a
result or from ``/history``) or variations, or a moderator blocks a member, so the bot waits longer
than that: it must defer in time and then answer through the original response, or a follow-up (of
its own visibility) when that would show the answer to the wrong people or the database failed.
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import sqlite3
from collections.abc import AsyncIterator, Awaitable
from pathlib import Path
from typing import Any

import asyncpg

from bot.store.postgres import lock_key
from tests.databases import only_postgres
from tests.fake_discord import FakeDiscord, InteractionHandle, RecordedRequest
from tests.fake_image_api import FakeImageAPI, Reply, make_png
from tests.harness import (
    BotProcess,
    card_text,
    dialect,
    is_channel_post,
    is_message_edit_with_file,
    money,
    rows,
    send_edit,
    wait_final_text,
    wait_result,
    wait_rows,
)
from tests.test_history_e2e import history, pick_options
from tests.test_imagine_e2e import imagine
from tests.test_message_edit_e2e import open_form as open_edit_images
from tests.test_message_edit_e2e import submit as submit_edit_images
from tests.test_model_options_e2e import OFFICIAL_DEFAULT
from tests.test_refine_e2e import (
    PROMPT_FIELD,
    SIZE_FIELD,
    ledger,
    open_refine,
    refine_button,
    result_button,
    wait_thread_result,
)
from tests.test_region_e2e import CELLS_FIELD, HEIGHT, WIDTH, a_result, open_region, repaint, start_on
from tests.test_variations_e2e import card_edits, gallery, labels

THINKING = 5

EPHEMERAL = 64
DEFERRED_UPDATE = 6


# The running call hangs: the stop at the test's end gives it half a second, not the default 25 s.
QUICK_STOP = "0.5"

CLAIMS_LOCK = f"SELECT pg_advisory_xact_lock({lock_key('claim')})"


def admission_lock(user_id: int) -> str:
    """What a member's admission waits for on PostgreSQL (their own lock; SQLite: the write lock)."""
    return f"SELECT pg_advisory_xact_lock({lock_key(f'user:{user_id}')})"


@contextlib.asynccontextmanager
async def database_held(env: dict[str, str], holding: str = CLAIMS_LOCK) -> AsyncIterator[asyncpg.Connection | None]:
    """Hold what the bot's write needs until the block ends (PostgreSQL: ``holding``; yields its connection)."""
    if dialect(env) == "postgres":
        conn = await asyncpg.connect(env["DATABASE_URL"], timeout=10)
        try:
            async with conn.transaction():
                await conn.execute(holding)
                yield conn
        finally:
            await conn.close()
        return
    db = sqlite3.connect(Path(env["DATA_DIR"]) / "atelier.sqlite3", timeout=10, isolation_level=None)
    try:
        db.execute("BEGIN IMMEDIATE")  # the write lock: the bot's writes wait for it (at most its busy timeout)
        yield None
        db.execute("ROLLBACK")
    finally:
        db.close()


async def queued_with_cancel(fake: FakeDiscord, api: FakeImageAPI) -> tuple[InteractionHandle, dict[str, object], str]:
    """A job waiting behind one whose call hangs: its status message and its Cancel button's id."""
    api.then(Reply(kind="hang"))
    await send_edit(fake, "running", [make_png()])
    await api.wait_for_started(1)
    queued = await send_edit(fake, "to cancel", [make_png()])
    await queued.wait_for_webhook("PATCH")  # its place in line
    message = queued.original_message()
    assert message is not None
    custom_id = message["components"][0]["components"][0]["custom_id"]
    assert custom_id.startswith("atelier:cancel:v1:")
    return queued, message, custom_id


def answered_in_time(callback: RecordedRequest, click: InteractionHandle) -> None:
    assert callback.ok, (callback, callback.response)
    assert callback.json["type"] == DEFERRED_UPDATE, callback.json  # the clicked message left as it was
    assert click.callback_requests() == [callback]


async def test_a_cancel_that_waits_for_a_slow_database_is_deferred_in_time_and_then_shown(
    bot_process: BotProcess, bot_env: dict[str, str], discord_fake: FakeDiscord, image_api: FakeImageAPI
) -> None:
    bot_env.update(MAX_CONCURRENT_JOBS="1", USER_MAX_ACTIVE="5", SHUTDOWN_GRACE_SECONDS=QUICK_STOP)
    await bot_process.start()
    discord_fake.ack_window = 3.0
    queued, message, custom_id = await queued_with_cancel(discord_fake, image_api)
    async with database_held(bot_env):
        click = await discord_fake.click_button(message, custom_id)
        answered_in_time(await click.wait_for_callback(timeout=5), click)
        await asyncio.sleep(2.0)  # the database stays slow past Discord's 3 s
    edit = await click.wait_for_webhook("PATCH", timeout=10)  # then the cancel goes through
    assert edit.ok and edit.path.endswith("/messages/@original"), edit
    assert "cancelled" in edit.json["content"] and edit.json["components"] == [], edit.json
    shown = queued.original_message()
    assert shown is not None and "cancelled" in shown["content"] and not shown["components"], shown
    states = await rows(bot_env, "SELECT status FROM jobs WHERE prompt = 'to cancel'")
    assert states == [("cancelled",)]


async def test_a_cancel_whose_database_fails_late_gets_its_apology_and_a_second_click_works(
    bot_process: BotProcess, bot_env: dict[str, str], discord_fake: FakeDiscord, image_api: FakeImageAPI
) -> None:
    bot_env.update(MAX_CONCURRENT_JOBS="1", USER_MAX_ACTIVE="5", SHUTDOWN_GRACE_SECONDS=QUICK_STOP)
    await bot_process.start()
    bot_process.tracebacks_expected = True  # the failed cancel is logged with its error reference
    discord_fake.ack_window = 3.0
    _queued, message, custom_id = await queued_with_cancel(discord_fake, image_api)
    async with database_held(bot_env) as conn:
        click = await discord_fake.click_button(message, custom_id)
        answered_in_time(await click.wait_for_callback(timeout=5), click)
        if conn is not None:
            # PostgreSQL would wait for the lock as long as it is held: the bot's session ends under it instead.
            await asyncio.sleep(2.0)
            await conn.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = current_database() "
                "AND pid <> pg_backend_pid() AND wait_event_type = 'Lock'"
            )
        apology = await click.wait_for_webhook("POST", timeout=15)  # SQLite gives up after its 5 s busy timeout
    assert apology.ok, (apology, apology.response)
    assert apology.json["flags"] & EPHEMERAL and apology.json["content"].startswith("❌"), apology.json
    assert await rows(bot_env, "SELECT status FROM jobs WHERE prompt = 'to cancel'") == [("queued",)]
    # Nothing was left half done: the next click cancels, answered at once.
    again = await discord_fake.click_button(message, custom_id)
    callback = await again.wait_for_callback()
    assert callback.ok and callback.json["type"] == 7 and "cancelled" in callback.json["data"]["content"]


async def test_a_moderators_command_that_waits_for_a_slow_database_shows_thinking_then_its_answer(
    bot: BotProcess, bot_env: dict[str, str], discord_fake: FakeDiscord
) -> None:
    discord_fake.ack_window = 3.0
    member = discord_fake.OTHER_USER_ID
    options = [{"name": "member", "type": 6, "value": str(member)}]
    async with database_held(bot_env, "LOCK TABLE blocked_members IN ACCESS EXCLUSIVE MODE"):
        handle = await discord_fake.slash_command(
            "atelier", [{"type": 1, "name": "block", "options": options}], user_id=discord_fake.OWNER_ID
        )
        callback = await handle.wait_for_callback(timeout=5)
        assert callback.ok and callback.json["type"] == THINKING, (callback, callback.json)
        assert callback.json["data"]["flags"] & EPHEMERAL  # "thinking…" for the moderator alone, as the answer
        await asyncio.sleep(2.0)
    answer = await handle.wait_for_webhook("POST", timeout=10)  # the first follow-up takes the thinking's place
    assert answer.ok and f"<@{member}> can no longer start edits here" in answer.json["content"], answer.json
    shown = handle.original_message()
    assert shown is not None and "can no longer start edits here" in shown["content"], shown
    assert await rows(bot_env, "SELECT user_id FROM blocked_members") == [(member,)]


@only_postgres
async def test_a_refine_form_that_cannot_open_in_time_says_so_and_opens_at_the_next_click(
    bot: BotProcess, bot_env: dict[str, str], discord_fake: FakeDiscord
) -> None:
    """PostgreSQL only: SQLite's reads (the result the form builds on) never wait for a writer, so they are never
    slow this way. A form must be the first answer, so no deferral can buy time: the member is told instead."""
    discord_fake.ack_window = 3.0
    handle = await send_edit(discord_fake, "a lighthouse", [make_png()])
    await wait_result(handle)
    message = handle.original_message()
    assert message is not None
    async with database_held(bot_env, "LOCK TABLE jobs IN ACCESS EXCLUSIVE MODE"):  # even reads of a job wait
        click = await discord_fake.click_button(message, refine_button(message))
        callback = await click.wait_for_callback(timeout=5)
    assert callback.ok, (callback, callback.response)
    answer = callback.json["data"]
    assert callback.json["type"] == 4 and answer["flags"] & EPHEMERAL, callback.json
    assert (
        answer["content"]
        == "❌ I'm slow to answer right now, so the form could not open. Please try again in a moment."
    )
    again = await discord_fake.click_button(message, refine_button(message))
    assert (await again.wait_for_callback()).json["type"] == 9  # the form


@only_postgres
async def test_history_that_waits_for_a_slow_database_shows_thinking_then_its_page_with_its_buttons(
    bot: BotProcess, bot_env: dict[str, str], discord_fake: FakeDiscord
) -> None:
    """PostgreSQL only: the page is a reading, and SQLite's readings never wait for a writer."""
    discord_fake.ack_window = 3.0
    await wait_result(await send_edit(discord_fake, "a lighthouse", [make_png()]))
    async with database_held(bot_env, "LOCK TABLE jobs IN ACCESS EXCLUSIVE MODE"):
        handle = await discord_fake.slash_command("history", [])
        callback = await handle.wait_for_callback(timeout=5)
        assert callback.ok and callback.json["type"] == THINKING and callback.json["data"]["flags"] & EPHEMERAL
        await asyncio.sleep(2.0)
    page = await handle.wait_for_webhook("POST", timeout=10)  # the first follow-up takes the thinking's place
    assert page.ok and page.json["flags"] & EPHEMERAL, (page, page.json)
    shown = handle.original_message()
    assert shown is not None and "a lighthouse" in shown["embeds"][0]["description"], shown
    labels = [c.get("label") for row in shown["components"] for c in row["components"]]
    assert labels[:2] == ["Previous", "Next"], labels  # the page's buttons came with it


async def thinking_while_admission_waits(
    fake: FakeDiscord, env: dict[str, str], send: Awaitable[InteractionHandle], *, private: bool | None = None
) -> InteractionHandle:
    """``send`` (a command or a form's submission) while the member's admission waits past Discord's 3 s:
    answered in time with a "thinking…", private or public as ``private`` says (not checked when ``None``)."""
    async with database_held(env, admission_lock(fake.USER_ID)):
        handle = await send
        callback = await handle.wait_for_callback(timeout=5)
        assert callback.ok and callback.json["type"] == THINKING, (callback, callback.json)
        if private is not None:
            assert bool((callback.json.get("data") or {}).get("flags", 0) & EPHEMERAL) == private, callback.json
        await asyncio.sleep(2.0)  # the database stays slow past Discord's 3 s
    return handle


async def test_an_edit_admitted_slowly_is_deferred_in_time_and_its_status_and_result_take_the_thinkings_place(
    bot_process: BotProcess, bot_env: dict[str, str], discord_fake: FakeDiscord, image_api: FakeImageAPI
) -> None:
    await bot_process.start()
    discord_fake.ack_window = 3.0
    # Public, as the status will be: the status takes the thinking's place, and its visibility.
    send = send_edit(discord_fake, "a slow harbour", [make_png()])
    handle = await thinking_while_admission_waits(discord_fake, bot_env, send, private=False)
    status = await handle.wait_for_webhook("PATCH", timeout=10)
    assert status.ok and status.path.endswith("/messages/@original"), status
    assert status.json["content"].startswith("📥 Fetching your images…"), status.json
    assert [c["label"] for row in status.json["components"] for c in row["components"]] == ["Cancel"]
    await wait_result(handle)
    shown = handle.original_message()
    assert shown is not None and not shown["flags"] & EPHEMERAL and shown["attachments"], shown
    assert [r for r in handle.webhook_requests() if r.method == "POST"] == []  # no second message
    assert len(image_api.calls) == 1
    await wait_rows(bot_env, "SELECT status FROM jobs", lambda found: found == [("succeeded",)])


async def test_an_edit_refused_after_a_slow_admission_tells_its_member_alone_and_the_channel_only_that(
    bot_process: BotProcess, bot_env: dict[str, str], discord_fake: FakeDiscord, image_api: FakeImageAPI
) -> None:
    bot_env.update(USER_DAILY_LIMIT="1")
    await bot_process.start()
    discord_fake.ack_window = 3.0
    await wait_result(await send_edit(discord_fake, "the first", [make_png()]))
    handle = await thinking_while_admission_waits(
        discord_fake, bot_env, send_edit(discord_fake, "one too many", [make_png()])
    )
    refusal = await handle.wait_for_webhook("POST", timeout=10)
    assert refusal.ok and refusal.json["flags"] & EPHEMERAL, (refusal, refusal.json)
    assert refusal.json["content"].startswith("❌"), refusal.json
    # The public "thinking…" does not stay, and does not carry the refusal: it says where the answer went.
    shown = handle.original_message()
    assert shown is not None and not shown["flags"] & EPHEMERAL, shown
    assert shown["content"] == "🔒 The answer to this went to its author only.", shown
    (private,) = handle.followups()
    assert private["flags"] & EPHEMERAL and private["content"] == refusal.json["content"]
    assert len(image_api.calls) == 1
    assert await rows(bot_env, "SELECT prompt FROM jobs") == [("the first",)]  # nothing charged for it


async def a_posted_result(fake: FakeDiscord, prompt: str) -> tuple[InteractionHandle, dict[str, Any]]:
    """An edit, answered at once, and its result message, before Discord's 3 s window is enforced."""
    first = await send_edit(fake, prompt, [make_png()])
    await wait_result(first)
    result = first.original_message()
    assert result is not None
    fake.ack_window = 3.0
    return first, result


async def clicked_while_admission_waits(
    fake: FakeDiscord, env: dict[str, str], prompt: str, button: str
) -> tuple[InteractionHandle, dict[str, Any], InteractionHandle]:
    """An edit's result, and a click of its ``button`` while the member's admission waits past Discord's 3 s,
    answered in time and leaving the result as it was: (the edit, its result message, the click)."""
    first, result = await a_posted_result(fake, prompt)
    async with database_held(env, admission_lock(fake.USER_ID)):
        click = await fake.click_button(result, result_button(result, button))
        answered_in_time(await click.wait_for_callback(timeout=5), click)
        await asyncio.sleep(2.0)  # the database stays slow past Discord's 3 s
    return first, result, click


async def test_a_reroll_admitted_slowly_leaves_the_result_alone_and_answers_with_its_own_status(
    bot_process: BotProcess, bot_env: dict[str, str], discord_fake: FakeDiscord, image_api: FakeImageAPI
) -> None:
    await bot_process.start()
    first, result, click = await clicked_while_admission_waits(discord_fake, bot_env, "a lighthouse", "Reroll")
    status = await click.wait_for_webhook("POST", timeout=10)  # a message of its own
    assert status.ok and not status.json.get("flags", 0) & EPHEMERAL, (status, status.json)
    assert status.json["content"].startswith("🔁 Rerolling"), status.json
    await wait_result(click)
    (rerolled,) = click.followups()
    assert rerolled["attachments"] and rerolled["id"] != result["id"], rerolled
    unchanged = first.original_message()
    assert unchanged is not None and unchanged["attachments"] == result["attachments"]
    assert len(image_api.calls) == 2
    both = [("a lighthouse", "succeeded")] * 2
    await wait_rows(bot_env, "SELECT prompt, status FROM jobs ORDER BY created_at", lambda found: found == both)


async def test_a_refinement_admitted_slowly_shows_thinking_privately_then_points_to_its_thread(
    bot_process: BotProcess, bot_env: dict[str, str], discord_fake: FakeDiscord, image_api: FakeImageAPI
) -> None:
    await bot_process.start()
    _, message = await a_posted_result(discord_fake, "a castle")
    _, modal = await open_refine(discord_fake, message)
    # Private, as the note that takes its place.
    send = discord_fake.submit_modal(
        modal["custom_id"], {PROMPT_FIELD: "at night", SIZE_FIELD: ["auto"]}, message=message
    )
    handle = await thinking_while_admission_waits(discord_fake, bot_env, send, private=True)
    await wait_final_text(handle, "🎨 Refining in", timeout=10)
    shown = handle.original_message()
    assert shown is not None and shown["flags"] & EPHEMERAL, shown
    assert shown["content"].startswith("🎨 Refining in https://discord.com/channels/"), shown
    assert handle.followups() == []  # the note took the thinking's place: no second message
    jobs = await ledger(bot_env, 2)
    assert [(origin, status) for _, origin, _, status in jobs] == [("command", "succeeded"), ("refine", "succeeded")]


async def test_an_imagine_admitted_slowly_is_deferred_in_time_and_its_status_and_result_take_the_thinkings_place(
    bot_process: BotProcess, bot_env: dict[str, str], discord_fake: FakeDiscord, image_api: FakeImageAPI
) -> None:
    await bot_process.start()
    discord_fake.ack_window = 3.0
    handle = await thinking_while_admission_waits(
        discord_fake, bot_env, imagine(discord_fake, "a slow sunrise"), private=False
    )
    status = await handle.wait_for_webhook("PATCH", timeout=10)
    assert status.ok and status.path.endswith("/messages/@original"), status
    assert "text only" in status.json["content"], status.json
    await wait_result(handle)
    shown = handle.original_message()
    assert shown is not None and not shown["flags"] & EPHEMERAL and shown["attachments"], shown
    assert [r for r in handle.webhook_requests() if r.method == "POST"] == []  # no second message
    (call,) = image_api.calls
    assert call.path == "/v1/images/generations" and call.json is not None and call.json["prompt"] == "a slow sunrise"
    await wait_rows(bot_env, "SELECT kind, status FROM jobs", lambda found: found == [("imagine", "succeeded")])


async def test_variations_admitted_slowly_leave_the_result_alone_and_fill_a_card_of_their_own(
    bot_process: BotProcess, bot_env: dict[str, str], discord_fake: FakeDiscord, image_api: FakeImageAPI
) -> None:
    bot_env.update(USER_MAX_ACTIVE="5")
    await bot_process.start()
    first, result, click = await clicked_while_admission_waits(discord_fake, bot_env, "a teapot", "Variations")
    card = await click.wait_for_webhook("POST", timeout=10)  # the group's card: a message of its own
    assert card.ok and not card.json.get("flags", 0) & EPHEMERAL, (card, card.json)
    assert "Making variations" in card.json["content"], card.json
    (last,) = (await card_edits(click, 4))[3:]
    assert len(gallery(last)) == 4 and labels(last)[:4] == ["Refine 1", "Refine 2", "Refine 3", "Refine 4"]
    unchanged = first.original_message()
    assert unchanged is not None and unchanged["attachments"] == result["attachments"]
    assert len(image_api.calls) == 5
    assert len(await money(bot_env)) == 5  # the edit and four runs, each charged once


async def points_privately_to(handle: InteractionHandle, words: str, channel: int, status: RecordedRequest) -> None:
    """The private note that took the thinking's place ends as ``words`` and a link to ``status`` in ``channel``."""
    await wait_final_text(handle, words, timeout=10)
    shown = handle.original_message()
    assert shown is not None and shown["flags"] & EPHEMERAL, shown
    assert shown["content"].startswith(f"{words} https://discord.com/channels/"), shown
    assert shown["content"].endswith(f"/{channel}/{status.response['id']}"), shown
    assert handle.followups() == []  # the note took the thinking's place: no second message


async def test_a_region_edit_admitted_slowly_shows_thinking_privately_then_points_to_its_status_in_the_thread(
    bot_process: BotProcess, bot_env: dict[str, str], discord_fake: FakeDiscord, image_api: FakeImageAPI,
    tmp_path: Path,
) -> None:  # fmt: skip
    await start_on(bot_process, bot_env, image_api, tmp_path, OFFICIAL_DEFAULT)  # a model that takes a mask
    discord_fake.ack_window = 3.0
    message = await a_result(discord_fake, image_api, make_png(WIDTH, HEIGHT))
    _, form = await open_region(discord_fake, message)  # a form opens at once: only its submission waits
    start = len(discord_fake.requests)
    send = repaint(discord_fake, message, "a red umbrella", form=form, **{CELLS_FIELD: ["center"]})
    handle = await thinking_while_admission_waits(discord_fake, bot_env, send, private=True)  # as the note to come
    thread_id = int(message["id"])  # the result's thread (Discord gives it the message's id)
    status = await discord_fake.wait_for_request(lambda r: is_channel_post(r, thread_id), 10, start=start)
    assert status.json["content"].startswith("📥 Fetching the image…"), status.json
    result = await wait_thread_result(discord_fake, thread_id, start=start)
    assert result.path.endswith(f"/messages/{status.response['id']}"), result  # the result on its status
    assert "🖌️ repainted ⬜⬜⬜ ⬜🟦⬜ ⬜⬜⬜" in card_text(result)
    await points_privately_to(handle, "🎨 Refining in", thread_id, status)
    assert len(image_api.calls) == 2  # the first result's, and the region edit's: one call each
    (call,) = [c for c in image_api.calls if c.mask is not None]
    assert call.field("prompt") == "a red umbrella"
    done = [("edit", "succeeded"), ("region", "succeeded")]
    await wait_rows(bot_env, "SELECT kind, status FROM jobs ORDER BY created_at", lambda found: found == done)


async def test_edit_images_admitted_slowly_shows_thinking_privately_then_points_to_its_status_replying_to_the_message(
    bot_process: BotProcess, bot_env: dict[str, str], discord_fake: FakeDiscord, image_api: FakeImageAPI
) -> None:
    await bot_process.start()
    discord_fake.ack_window = 3.0
    output = make_png(50, 30, (7, 8, 9))
    image_api.then(Reply(image=output))
    message = await discord_fake.add_message("my cat", files=[(make_png(30, 20), "cat.png", "image/png")])
    _, form = await open_edit_images(discord_fake, message)  # a form opens at once: only its submission waits
    start = len(discord_fake.requests)
    send = submit_edit_images(discord_fake, form, message, "a hat on the cat")
    handle = await thinking_while_admission_waits(discord_fake, bot_env, send, private=True)  # as the note to come
    channel = discord_fake.CHANNEL_ID
    status = await discord_fake.wait_for_request(lambda r: is_channel_post(r, channel), 10, start=start)
    assert status.json["content"].startswith("📥 Fetching the message's images…"), status.json
    assert int(status.json["message_reference"]["message_id"]) == int(message["id"])  # a reply to the message
    result = await discord_fake.wait_for_request(lambda r: is_message_edit_with_file(r, channel), 20, start=start)
    assert result.path.endswith(f"/messages/{status.response['id']}") and result.files[0].data == output
    await points_privately_to(handle, "🎨 Editing in", channel, status)
    (call,) = image_api.calls
    assert call.field("prompt") == "a hat on the cat"
    await wait_rows(bot_env, "SELECT origin, status FROM jobs", lambda found: found == [("message", "succeeded")])


async def test_a_reroll_from_history_admitted_slowly_leaves_the_page_alone_and_points_privately_to_its_status(
    bot_process: BotProcess, bot_env: dict[str, str], discord_fake: FakeDiscord, image_api: FakeImageAPI
) -> None:
    await bot_process.start()
    _, result = await a_posted_result(discord_fake, "a fox in snow")
    kept = copy.deepcopy(result)
    # Offered once the job's end is recorded, a moment after its result is posted.
    await wait_rows(bot_env, "SELECT status FROM jobs", lambda found: found == [("succeeded",)])
    _, page = await history(discord_fake)
    listed = copy.deepcopy(page)
    custom_id, options = pick_options(page)
    (reroll,) = [o["value"] for o in options if o["value"].startswith("reroll:")]
    start = len(discord_fake.requests)
    async with database_held(bot_env, admission_lock(discord_fake.USER_ID)):
        pick = await discord_fake.click_button(page, custom_id, component_type=3, values=[reroll])
        answered_in_time(await pick.wait_for_callback(timeout=5), pick)  # the page left as it was
        await asyncio.sleep(2.0)  # the database stays slow past Discord's 3 s
    note = await pick.wait_for_webhook("POST", timeout=10)  # a private message of its own
    assert note.ok and note.json["flags"] & EPHEMERAL, (note, note.json)
    assert note.json["content"] == "🔁 Starting your reroll…", note.json
    channel = discord_fake.CHANNEL_ID  # where the rerolled result is
    status = await discord_fake.wait_for_request(lambda r: is_channel_post(r, channel), 10, start=start)
    assert status.json["content"].startswith("🔁 Rerolling: the same images"), status.json
    rerolled = await discord_fake.wait_for_request(lambda r: is_message_edit_with_file(r, channel), 20, start=start)
    assert rerolled.path.endswith(f"/messages/{status.response['id']}"), rerolled
    await wait_final_text(pick, "🔁 Rerolling in", timeout=10)
    (pointer,) = pick.followups()  # the note, now pointing to the status
    assert pointer["flags"] & EPHEMERAL, pointer
    assert pointer["content"].startswith("🔁 Rerolling in https://discord.com/channels/"), pointer
    assert pointer["content"].endswith(f"/{channel}/{status.response['id']}"), pointer
    assert [r for r in pick.webhook_requests() if r.path.endswith("/messages/@original")] == []
    assert discord_fake.messages[int(page["id"])] == listed  # the page, as it was
    assert discord_fake.messages[int(result["id"])] == kept  # the rerolled result, as it was
    assert len(image_api.calls) == 2
    both = [("a fox in snow", "succeeded")] * 2
    await wait_rows(bot_env, "SELECT prompt, status FROM jobs ORDER BY created_at", lambda found: found == both)
