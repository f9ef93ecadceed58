"""The all-in-one bot on PostgreSQL: the member's flows hold with the queue and the money in the database."""

from __future__ import annotations

import asyncio
import io
import signal
from collections.abc import AsyncIterator
from pathlib import Path

import asyncpg
import pytest
from PIL import Image

from tests.fake_discord import FakeDiscord
from tests.fake_image_api import FakeImageAPI, Reply, make_png
from tests.harness import BotProcess, card_text, send_edit, wait_final_text, wait_result
from tests.postgres import fresh_database
from tests.test_edit_e2e import jpeg
from tests.test_lifecycle_e2e import cancel_button, contents, usage_text
from tests.test_operations_e2e import admin, refusal
from tests.test_refine_e2e import submit_refine, wait_thread_result


@pytest.fixture
async def on_postgres(bot_env: dict[str, str]) -> AsyncIterator[str]:
    async with fresh_database() as url:
        bot_env["DATABASE_URL"] = url
        yield url


async def statuses(url: str, timeout: float = 10) -> list[tuple[str, str]]:
    """(prompt, status) of every job, once none is delivering: the store records a job's end after its upload."""
    async with asyncio.timeout(timeout):
        while True:
            conn = await asyncpg.connect(url)
            try:
                found = [(r[0], r[1]) for r in await conn.fetch("SELECT prompt, status FROM jobs ORDER BY created_at")]
            finally:
                await conn.close()
            if all(status != "delivering" for _, status in found):
                return found
            await asyncio.sleep(0.05)


async def test_edit_refine_and_usage_on_postgres(
    on_postgres: str, bot_process: BotProcess, discord_fake: FakeDiscord, image_api: FakeImageAPI
) -> None:
    await bot_process.start()
    output = make_png(30, 20, (9, 9, 9))
    image_api.then(Reply(image=output))
    handle = await send_edit(discord_fake, "on postgres", [make_png()])
    assert (await wait_result(handle)).files[0].data == output
    message = handle.original_message()
    assert message is not None
    await submit_refine(discord_fake, message, "and refined")
    thread = await discord_fake.wait_for_request(lambda r: r.path.endswith("/threads"), 10)
    await wait_thread_result(discord_fake, int(thread.response["id"]))
    assert [c.field("prompt") for c in image_api.calls] == ["on postgres", "and refined"]
    assert "Today: 2 of 25 edits used" in await usage_text(discord_fake)


async def test_fair_order_with_one_busy_slot_on_postgres(
    on_postgres: str, bot_process: BotProcess, bot_env: dict[str, str], discord_fake: FakeDiscord,
    image_api: FakeImageAPI,
) -> None:  # fmt: skip
    bot_env.update(MAX_CONCURRENT_JOBS="1", USER_MAX_ACTIVE="5")
    await bot_process.start()
    image_api.latency = 1.0
    a, b = discord_fake.USER_ID, discord_fake.OTHER_USER_ID
    a1 = await send_edit(discord_fake, "A1", [make_png()], user_id=a)
    await image_api.wait_for_started(1)
    a2 = await send_edit(discord_fake, "A2", [make_png()], user_id=a)
    await asyncio.sleep(0.2)
    b1 = await send_edit(discord_fake, "B1", [make_png()], user_id=b)
    for handle in (a1, a2, b1):
        await wait_result(handle, timeout=20)
    assert [c.field("prompt") for c in image_api.calls] == ["A1", "B1", "A2"]


async def test_cancel_then_stop_then_restart_on_postgres(
    on_postgres: str, bot_process: BotProcess, bot_env: dict[str, str], discord_fake: FakeDiscord,
    image_api: FakeImageAPI,
) -> None:  # fmt: skip
    bot_env.update(MAX_CONCURRENT_JOBS="1", USER_MAX_ACTIVE="5", SHUTDOWN_GRACE_SECONDS="0.5")
    await bot_process.start()
    image_api.then(Reply(kind="hang"))
    first = await send_edit(discord_fake, "first", [make_png()])
    await image_api.wait_for_started(1)
    second = await send_edit(discord_fake, "second", [make_png()])
    await wait_final_text(second, "Queued")
    message, custom_id = cancel_button(second)
    click = await discord_fake.click_button(message, custom_id)
    assert "cancelled" in (await click.wait_for_callback()).json["data"]["content"]
    assert await bot_process.stop(signal.SIGTERM, timeout=15) == 0
    assert any("will resume automatically" in text for text in contents(first))
    assert not any("will resume" in text for text in contents(second))
    await bot_process.start()
    await wait_result(first, timeout=20)
    assert [c.field("prompt") for c in image_api.calls] == ["first", "first"]
    assert await statuses(on_postgres) == [("first", "succeeded"), ("second", "cancelled")]
    assert "Today: 1 of 25 edits used" in await usage_text(discord_fake)


async def test_limits_set_by_an_admin_hold_on_postgres(
    on_postgres: str, bot_process: BotProcess, discord_fake: FakeDiscord, image_api: FakeImageAPI
) -> None:
    await bot_process.start()
    changed = await admin(
        discord_fake, "limits", [{"name": "user_daily", "type": 4, "value": 1}], user_id=discord_fake.OWNER_ID
    )
    assert "Limits updated" in await refusal(changed)
    await wait_result(await send_edit(discord_fake, "first", [make_png()]))
    assert "used 1 of your 1 edits" in await refusal(await send_edit(discord_fake, "second", [make_png()]))
    assert len(image_api.calls) == 1


async def test_a_crash_on_postgres_takes_the_running_job_over_once(
    on_postgres: str, bot_process: BotProcess, bot_env: dict[str, str], discord_fake: FakeDiscord,
    image_api: FakeImageAPI, tmp_path: Path,
) -> None:  # fmt: skip
    bot_env.update(JOB_LEASE_SECONDS="2")
    await bot_process.start()
    image_api.then(Reply(kind="hang"))
    handle = await send_edit(discord_fake, "crashes once", [make_png()])
    await image_api.wait_for_started(1)
    await bot_process.stop(signal.SIGKILL)
    await bot_process.start()
    await wait_result(handle, timeout=30)
    assert [c.field("prompt") for c in image_api.calls] == ["crashes once", "crashes once"]


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


async def test_odd_images_reach_the_api_on_postgres(
    on_postgres: str, bot_process: BotProcess, discord_fake: FakeDiscord, image_api: FakeImageAPI
) -> None:
    """Phone photos, CMYK, 16-bit, transparent palettes, animated GIFs and BMPs are kept in the database
    and sent as on SQLite; a decompression bomb is refused before any charge."""
    await bot_process.start()
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
    assert [f.filename.split("-")[0] for f in result.files] == ["atelier", "inputs"]  # six inputs: one strip
    sent = image_api.calls[0].images
    with Image.open(io.BytesIO(sent[0].data)) as upright:
        assert upright.size == (40, 80)
    assert sent[1].data == images["cmyk.jpg"][0]  # a JPEG the API takes goes byte for byte
    assert [part.content_type for part in sent] == ["image/jpeg", "image/jpeg", *["image/png"] * 4]
    assert await statuses(on_postgres) == [("odd ones", "succeeded")]

    bomb = io.BytesIO()
    Image.new("1", (20000, 20000)).save(bomb, format="PNG")  # a tiny file of 400 megapixels
    refused = await send_edit(discord_fake, "bomb", [make_png(), bomb.getvalue()])
    followup = await refused.wait_for_webhook("POST")
    assert "image2 is too large to decode safely" in followup.json["content"]
    assert len(image_api.calls) == 1
    assert await statuses(on_postgres) == [("odd ones", "succeeded"), ("bomb", "failed")]
    assert "Today: 1 of 25 edits used" in await usage_text(discord_fake)
