"""What a member sees while a job waits and runs, end to end.

1. Honest times: no estimate without history; with it, "usually about 95 s" while editing,
   "result in about …" in line, and "taking longer than usual" past 1.5 × the usual time.
2. Discord's edit windows: a public status whose token is about to lapse, or a bot message
   near the end of its hour (after which Discord answers 30046), moves to a fresh message
   that the old one points to, and the result is delivered there, even after a restart.
"""

from __future__ import annotations

import asyncio
import json
import signal
import time
from collections.abc import Callable
from typing import Any

import pytest

from tests.fake_discord import FakeDiscord, InteractionHandle, RecordedRequest
from tests.fake_image_api import FakeImageAPI, Reply, make_png
from tests.harness import (
    BotProcess,
    execute,
    insert,
    is_channel_post,
    records,
    rows,
    send_edit,
    wait_final_text,
    wait_result,
)
from tests.test_refine_e2e import first_result, submit_refine, wait_thread_result

FAST = {
    "STATUS_UPDATE_SECONDS": "0.2",
    "MAX_CONCURRENT_JOBS": "1",
    "USER_MAX_ACTIVE": "5",
    "SHUTDOWN_GRACE_SECONDS": "0.5",
}


async def start(bot: BotProcess, env: dict[str, str], **settings: str) -> None:
    env.update(settings)
    await bot.start()


def contents(handle: InteractionHandle) -> list[str]:
    return [str(r.json.get("content")) for r in handle.webhook_requests() if r.method == "PATCH" and r.json]


async def seed_runs(env: dict[str, str], seconds: float, *, count: int = 5, input_count: int | None = None) -> None:
    """Add ``count`` successful runs of ``seconds`` to the ledger, copied from a real succeeded job."""
    template = (await records(env, "SELECT * FROM jobs WHERE status = 'succeeded' LIMIT 1"))[0]
    now = time.time()
    for n in range(count):
        row = {**template, "id": f"seed-{seconds:g}-{n}", "started_at": now - 900 + n}
        row["finished_at"] = row["started_at"] + seconds
        if input_count is not None:
            row["input_count"] = input_count
        await insert(env, "jobs", row)


async def test_status_texts_give_honest_estimates_from_the_ledger(
    bot_process: BotProcess, bot_env: dict[str, str], discord_fake: FakeDiscord, image_api: FakeImageAPI
) -> None:
    await start(bot_process, bot_env, **FAST)
    # With no history, the status says how long it has been, and guesses nothing. The call lasts until the
    # status has said "1 s so far" (so it did last a second), however slow the machine.
    shown = asyncio.Event()
    image_api.then(Reply(until=shown))
    warm = await send_edit(discord_fake, "warm", [make_png()])
    await wait_final_text(warm, "🎨 Editing… 1 s so far.\n")
    shown.set()
    await wait_result(warm)
    texts = contents(warm)
    assert any(text.startswith("🎨 Editing… 1 s so far.\n") for text in texts), texts
    assert not any("usually" in text or "about" in text for text in texts), texts
    assert await bot_process.stop(signal.SIGTERM, timeout=15) == 0

    # The ledger now holds five runs of 95 s (one input, size auto) and five of 1 s (four inputs).
    await seed_runs(bot_env, 95.0)
    await seed_runs(bot_env, 1.0, input_count=4)
    await bot_process.start()

    # A job of another kind is compared with its own kind: four inputs usually take 1 s. Its call lasts until
    # the status has said "2 s so far", past 1.5 × the usual time, however slow the machine.
    shown = asyncio.Event()
    image_api.then(Reply(until=shown), Reply(kind="hang"))
    slow = await send_edit(discord_fake, "slow", [make_png(), make_png(), make_png(), make_png()])
    await wait_final_text(slow, "🎨 Editing… 2 s so far; this one is taking longer than usual (about 1 s).\n")
    shown.set()
    await wait_result(slow, timeout=30)
    assert any(
        text.startswith("🎨 Editing… 2 s so far; this one is taking longer than usual (about 1 s).\n")
        for text in contents(slow)
    ), contents(slow)

    running = await send_edit(discord_fake, "running", [make_png()])
    await image_api.wait_for_started(3)
    await wait_final_text(running, "🎨 Editing… usually about 95 s.")
    await wait_final_text(running, "🎨 Editing… 1 s so far, usually about 95 s.")
    # One slot, busy about half-way on average: next in line is done in about 1.5 runs, 142 s.
    second = await send_edit(discord_fake, "second", [make_png()])
    third = await send_edit(discord_fake, "third", [make_png()])
    await wait_final_text(second, "⏳ Queued — next in line, result in about 2 min.")
    await wait_final_text(third, "⏳ Queued — position 2, result in about 4 min.")
    assert await bot_process.stop(signal.SIGTERM, timeout=15) == 0


def is_pointer(request: RecordedRequest) -> bool:
    return request.method == "PATCH" and bool(request.json) and "➡️" in str(request.json.get("content"))


def pointer_edits(fake: FakeDiscord, start: int = 0) -> list[RecordedRequest]:
    return [r for r in fake.requests[start:] if is_pointer(r)]


async def destination(env: dict[str, str], prompt: str) -> dict[str, Any]:
    ((delivery,),) = await rows(env, "SELECT delivery FROM jobs WHERE prompt = ?", prompt)
    return dict(json.loads(delivery))


async def test_a_public_status_moves_before_its_token_lapses_and_the_result_follows(
    bot_process: BotProcess, bot_env: dict[str, str], discord_fake: FakeDiscord, image_api: FakeImageAPI
) -> None:
    await start(bot_process, bot_env, **FAST)
    # A command answered 13½ minutes ago: its token has 1½ minutes left, too little to wait on.
    discord_fake.backdate_next_interaction = 13.5 * 60
    moved = asyncio.Event()  # the call lasts until the status has moved, however slow the machine
    image_api.then(Reply(until=moved))
    handle = await send_edit(discord_fake, "a long wait", [make_png()])
    channel = discord_fake.CHANNEL_ID
    post = await discord_fake.wait_for_request(lambda r: is_channel_post(r, channel), 10)
    assert "a long wait" in post.json["content"]
    assert post.json["allowed_mentions"]["parse"] == []  # the new status pings no one
    new_id = int(post.response["id"])
    # The old message, through the token while it still works, points to the new one, once.
    pointer = await discord_fake.wait_for_request(is_pointer, 10)
    assert pointer.path.startswith("/api/v10/webhooks/")
    assert f"/channels/{discord_fake.GUILD_ID}/{channel}/{new_id}" in pointer.json["content"]
    assert pointer.json["components"] == []
    moved.set()
    # The result goes to the new message, by the bot's own token.
    result = await discord_fake.wait_for_request(
        lambda r: r.method == "PATCH" and r.path == f"/api/v10/channels/{channel}/messages/{new_id}" and bool(r.files),
        20,
    )
    assert result.ok
    assert not any(r.files for r in handle.webhook_requests())
    stored = await destination(bot_env, "a long wait")
    assert stored["type"] == "message" and int(stored["message_id"]) == new_id
    assert len(pointer_edits(discord_fake)) == 1


async def a_waiting_edit_whose_token_lapses(
    discord_fake: FakeDiscord, image_api: FakeImageAPI, ahead: asyncio.Event, waiting: asyncio.Event
) -> InteractionHandle:
    """An edit "waiting" behind another, sent 13.5 minutes into its token's life: its line moves its status.
    The edit "ahead" holds the only slot until the test sets ``ahead``; "waiting"'s own call lasts until it
    sets ``waiting``, however slow the machine."""
    image_api.then(Reply(until=ahead), Reply(until=waiting))
    await send_edit(discord_fake, "ahead", [make_png()])
    await image_api.wait_for_started(1)
    discord_fake.backdate_next_interaction = 13.5 * 60
    return await send_edit(discord_fake, "waiting", [make_png()])


async def moved_to(env: dict[str, str], prompt: str) -> int:
    """The message the job's status moved to, once the move is recorded."""
    async with asyncio.timeout(10):
        while (stored := await destination(env, prompt))["type"] != "message":  # noqa: ASYNC110  # the store
            await asyncio.sleep(0.05)
    return int(stored["message_id"])


def waiting_post(channel: int) -> Callable[[RecordedRequest], bool]:
    """The edit "waiting"'s status, posted in ``channel`` (moved there)."""
    return lambda r: is_channel_post(r, channel) and "waiting" in str(r.json.get("content"))


async def result_in(discord_fake: FakeDiscord, channel: int, message_id: int) -> RecordedRequest:
    """The result's edit of message ``message_id``."""
    path = f"/api/v10/channels/{channel}/messages/{message_id}"
    return await discord_fake.wait_for_request(lambda r: r.method == "PATCH" and r.path == path and bool(r.files), 20)


async def test_a_status_moved_while_its_job_waited_is_where_the_running_job_goes_on(
    bot_process: BotProcess, bot_env: dict[str, str], discord_fake: FakeDiscord, image_api: FakeImageAPI
) -> None:
    """The waiting job's line moves its status (the token is about to lapse); when the job is claimed, its
    running line goes on in the new message: no second move, and the result lands there."""
    await start(bot_process, bot_env, **FAST)
    ahead, waiting = asyncio.Event(), asyncio.Event()
    handle = await a_waiting_edit_whose_token_lapses(discord_fake, image_api, ahead, waiting)
    channel = discord_fake.CHANNEL_ID
    posted = waiting_post(channel)
    post = await discord_fake.wait_for_request(posted, 10)
    assert "⏳" in post.json["content"]  # moved while the job was still waiting
    new_id = int(post.response["id"])
    assert await moved_to(bot_env, "waiting") == new_id
    ahead.set()  # the move is done and recorded: the job may be claimed
    # The running line edits the new message (the call lasts until it has), and the result lands there.
    await discord_fake.wait_for_request(
        lambda r: (
            r.method == "PATCH"
            and r.path.endswith(f"/messages/{new_id}")
            and "🎨" in str((r.json or {}).get("content"))
        ),
        10,
    )
    waiting.set()
    assert (await result_in(discord_fake, channel, new_id)).ok
    # Nothing moved the status a second time.
    assert len([r for r in discord_fake.requests if posted(r)]) == 1
    assert len(pointer_edits(discord_fake)) == 1
    assert not any(r.files for r in handle.webhook_requests())


MOVED = '%"type": "message"%'


async def test_a_status_move_the_database_failed_to_record_at_first_is_recorded_and_the_result_goes_there(
    bot_process: BotProcess, bot_env: dict[str, str], discord_fake: FakeDiscord, image_api: FakeImageAPI
) -> None:
    """As above, while the database fails the record of the status's new message for a moment: the record is
    tried again, so the running job's line and its result go to the new message. Before, the error ended the
    line's updates there: the new message said "Queued" for good, and the result went to the old one."""
    await start(bot_process, bot_env, **FAST)
    made = ["CREATE TABLE test_fault (x INTEGER)", "INSERT INTO test_fault VALUES (1)"]
    # Only the record of a channel message (the move's), not the first answer's (an interaction's token).
    if "DATABASE_URL" not in bot_env:
        made.append(
            "CREATE TRIGGER test_fault_moved BEFORE UPDATE OF delivery ON jobs WHEN EXISTS (SELECT 1 FROM test_fault) "
            f"AND NEW.delivery LIKE '{MOVED}' BEGIN SELECT RAISE(ABORT, 'injected: the database refused it'); END"
        )
    else:
        made += [
            "CREATE FUNCTION test_fault() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN "
            f"IF CAST(NEW.delivery AS TEXT) LIKE '{MOVED}' AND EXISTS (SELECT 1 FROM test_fault) THEN "
            "RAISE EXCEPTION 'injected: the database refused the write'; END IF; RETURN NEW; END $$",
            "CREATE TRIGGER test_fault_moved BEFORE UPDATE ON jobs FOR EACH ROW EXECUTE FUNCTION test_fault()",
        ]
    await execute(bot_env, *made)
    ahead, waiting = asyncio.Event(), asyncio.Event()
    handle = await a_waiting_edit_whose_token_lapses(discord_fake, image_api, ahead, waiting)
    channel = discord_fake.CHANNEL_ID
    posted = waiting_post(channel)
    new_id = int((await discord_fake.wait_for_request(posted, 10)).response["id"])
    async with asyncio.timeout(10):
        while "recording a status message's move failed" not in bot_process.log():  # noqa: ASYNC110  # its log
            await asyncio.sleep(0.05)
    await execute(bot_env, "DELETE FROM test_fault")  # the database is back
    assert await moved_to(bot_env, "waiting") == new_id  # the record, tried again, went through
    ahead.set()
    waiting.set()
    assert (await result_in(discord_fake, channel, new_id)).ok
    assert len([r for r in discord_fake.requests if posted(r)]) == 1
    assert not any(r.files for r in handle.webhook_requests())


@pytest.mark.parametrize(("age", "pointer_status"), [(56 * 60, 200), (61 * 60, 429)])
async def test_a_status_message_near_its_hour_moves_and_the_result_goes_there_after_a_restart(
    bot_process: BotProcess,
    bot_env: dict[str, str],
    discord_fake: FakeDiscord,
    image_api: FakeImageAPI,
    age: int,
    pointer_status: int,
) -> None:
    await start(bot_process, bot_env, **FAST)
    message = await first_result(discord_fake, image_api, make_png(40, 40))
    thread_id = int(message["id"])
    # The refine's status message, posted by the bot in the thread, looks ``age`` old.
    discord_fake.backdate_next_message = age
    image_api.then(Reply(kind="hang"))
    start_index = len(discord_fake.requests)
    await submit_refine(discord_fake, message, "add snow")
    first_post = await discord_fake.wait_for_request(lambda r: is_channel_post(r, thread_id), 10, start=start_index)
    old_id = int(first_post.response["id"])
    assert discord_fake.age(old_id) >= age - 5

    # The first update moves it: a new message in the thread; the old one is edited once to point there
    # (Discord refuses that edit with 30046 when the message is already past its hour: nothing breaks).
    moved = await discord_fake.wait_for_request(
        lambda r: is_channel_post(r, thread_id) and int(r.response["id"]) != old_id, 10, start=start_index
    )
    new_id = int(moved.response["id"])
    pointer = await discord_fake.wait_for_request(is_pointer, 10, start=start_index)
    assert pointer.path == f"/api/v10/channels/{thread_id}/messages/{old_id}"
    assert pointer.status == pointer_status
    if pointer_status == 429:
        assert pointer.response["code"] == 30046
    await wait_final_text_in(discord_fake, thread_id, new_id, "so far")
    assert int((await destination(bot_env, "add snow"))["message_id"]) == new_id

    # A restart in the middle: the job resumes, and its status and result go to the new message.
    assert await bot_process.stop(signal.SIGTERM, timeout=15) == 0
    image_api.script.clear()
    image_api.then(Reply(image=make_png(30, 30)))
    after = len(discord_fake.requests)
    await bot_process.start()
    result = await wait_thread_result(discord_fake, thread_id, start=after)
    assert result.path == f"/api/v10/channels/{thread_id}/messages/{new_id}"
    assert not any(
        r.method == "PATCH" and r.path.endswith(f"/messages/{old_id}") for r in discord_fake.requests[after:]
    )
    assert len(pointer_edits(discord_fake, start_index)) == 1


async def wait_final_text_in(fake: FakeDiscord, channel_id: int, message_id: int, needle: str) -> RecordedRequest:
    """The first bot-token edit of a message whose content contains ``needle``."""
    return await fake.wait_for_request(
        lambda r: (
            r.method == "PATCH"
            and r.path == f"/api/v10/channels/{channel_id}/messages/{message_id}"
            and isinstance(r.json, dict)
            and needle in str(r.json.get("content", ""))
        ),
        10,
    )
