"""Discord's per-token webhook bucket, spent: every member still hears how their edit ended (issue 16).

The fake Discord limits each interaction token to 2 requests per 2 s, with Discord's headers, as
an operator's tight bucket would; status edits (places in line, time so far) spend it. Edits the
image API refuses at once, edits cancelled while queued and edits delivered all reach their
member, from one process (on each database) and from a gateway and a worker (PostgreSQL), and no
status edit lands on a message after its outcome.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.fake_discord import FakeDiscord, InteractionHandle, RecordedRequest
from tests.fake_image_api import FakeImageAPI, Reply, make_png
from tests.harness import BotProcess, bot_environment, send_edit, wait_final_text
from tests.postgres import fresh_database
from tests.test_lifecycle_e2e import cancel_button

SAFETY = Reply(kind="error", status=400, body={"error": {"message": "Your request was rejected by the safety system"}})
REFUSED = "rejected by the safety system"
CANCELLED = "cancelled"
TIMEOUT = 30.0
# Fast status updates spend the bucket; two slots make members wait in line.
SETTINGS = {"MAX_CONCURRENT_JOBS": "2", "STATUS_UPDATE_SECONDS": "0.3", "IMAGE_API_TIMEOUT": "20"}


@dataclass
class Member:
    user_id: int
    handle: InteractionHandle

    def told(self, request: RecordedRequest, needle: str | None) -> bool:
        """Whether ``request`` showed this member ``needle`` (``None``: the result file): on their interaction's
        message, or in the channel with the bot's token, mentioning them, as when the token cannot be used."""
        if not request.ok or not isinstance(request.json, dict) or request.method not in ("PATCH", "POST"):
            return False
        content = str(request.json.get("content"))
        shown = bool(request.files) if needle is None else needle in content
        if self.handle._mine(request):
            return shown
        return shown and request.path.startswith("/api/v10/channels/") and f"<@{self.user_id}>" in content


async def members(fake: FakeDiscord, count: int, first: int) -> list[int]:
    users = [fake.USER_ID + first + n for n in range(count)]
    for user in users:
        fake.add_user(user, f"member{user}")
    return users


async def edits(fake: FakeDiscord, users: list[int], prompt: str) -> list[Member]:
    handles = await asyncio.gather(*(send_edit(fake, f"{prompt} {u}", [make_png()], user_id=u) for u in users))
    return [Member(user, handle) for user, handle in zip(users, handles, strict=True)]


async def wait_told(fake: FakeDiscord, member: Member, needle: str | None) -> RecordedRequest:
    return await fake.wait_for_request(lambda r: member.told(r, needle), TIMEOUT)


async def everyone_hears_the_end(fake: FakeDiscord, api: FakeImageAPI, stop: Callable[[], object]) -> None:
    """Instant failures, cancels of queued edits and deliveries, each told to its member."""
    fake.rate_limit_webhooks(limit=2, per=2.0)

    # Three members' edits, refused by the image API at once.
    api.then(*[SAFETY] * 3)
    refused = await edits(fake, await members(fake, 3, 500), "refused")
    await asyncio.gather(*(wait_told(fake, m, REFUSED) for m in refused))

    # Two slow edits fill both slots (until the scene below is played, however slow the machine); three more
    # wait in line, and two of those are cancelled.
    release = asyncio.Event()
    api.then(Reply(delay=0.5, until=release), Reply(delay=0.5, until=release))
    slow = await edits(fake, await members(fake, 2, 600), "slow")
    await api.wait_for_started(5, timeout=TIMEOUT)
    waiting = await edits(fake, await members(fake, 3, 700), "waiting")
    for member in waiting:
        await wait_final_text(member.handle, "Queued", timeout=TIMEOUT)
    cancelled: list[tuple[Member, InteractionHandle]] = []
    for member in waiting[:2]:
        message, custom_id = cancel_button(member.handle)
        click = await fake.click_button(message, custom_id, user_id=member.user_id)
        cancelled.append((member, click))
    for member, click in cancelled:
        answer = await click.wait_for_callback(timeout=TIMEOUT)
        assert answer.ok and CANCELLED in str(answer.json["data"]["content"]), (member, answer.json)
    release.set()
    delivered = [*slow, waiting[2]]
    await asyncio.gather(*(wait_told(fake, m, None) for m in delivered))

    assert any(r.rate_remaining == 0 for r in fake.requests), "the bucket was spent"
    await stop()  # nothing more can land: each message shows its outcome, never a status after it
    for member in refused:
        assert REFUSED in final_content(fake, member), member
    for member, _ in cancelled:
        assert CANCELLED in final_content(fake, member), member
    for member in delivered:
        message = member.handle.original_message()
        assert message is not None and message["attachments"], (member, message)
        assert "Editing" not in message["content"] and "Queued" not in message["content"], message["content"]


def final_content(fake: FakeDiscord, member: Member) -> str:
    message = member.handle.original_message()
    assert message is not None
    return str(message["content"])


@pytest.fixture
async def database() -> AsyncIterator[str]:
    async with fresh_database() as url:
        yield url


async def test_with_a_spent_bucket_every_member_hears_the_end_in_one_process(
    bot_process: BotProcess, bot_env: dict[str, str], discord_fake: FakeDiscord, image_api: FakeImageAPI
) -> None:
    bot_env.update(SETTINGS)
    await bot_process.start()
    await everyone_hears_the_end(discord_fake, image_api, bot_process.stop)


async def test_with_a_spent_bucket_every_member_hears_the_end_from_a_gateway_and_a_worker_on_postgresql(
    discord_fake: FakeDiscord, image_api: FakeImageAPI, tmp_path: Path, database: str
) -> None:
    """PostgreSQL only, by nature: a gateway and a worker are two processes sharing one store, which SQLite's
    single-process file cannot be."""
    env = bot_environment(discord_fake.api_base, image_api.base, tmp_path / "data", DATABASE_URL=database, **SETTINGS)
    gateway = BotProcess(env, tmp_path, discord_fake, role="gateway", name="gateway")
    worker = BotProcess(env, tmp_path, discord_fake, role="worker", name="worker")

    async def stop() -> None:
        assert await worker.stop() == 0
        assert await gateway.stop() == 0

    try:
        await gateway.start()
        await worker.start()
        await everyone_hears_the_end(discord_fake, image_api, stop)
    finally:
        await worker.stop()
        await gateway.stop()


async def test_a_failure_that_discord_keeps_rate_limiting_on_the_token_is_told_in_the_channel(
    bot_process: BotProcess, discord_fake: FakeDiscord, image_api: FakeImageAPI
) -> None:
    await bot_process.start()
    # Discord rate-limits the failure's edit on the token every time discord.py tries it (five times), whatever
    # status edits came before it.
    discord_fake.fail_next(
        "PATCH", r"/webhooks/", 429, {"retry_after": 0.05}, times=20, only=lambda r: REFUSED in str(r.json)
    )
    image_api.then(SAFETY)
    [member] = await edits(discord_fake, await members(discord_fake, 1, 800), "refused")
    told = await wait_told(discord_fake, member, REFUSED)
    assert told.path == f"/api/v10/channels/{discord_fake.CHANNEL_ID}/messages"
    assert "Discord kept rate-limiting a final message on an interaction token" in bot_process.log()
