"""Options that follow the model, and cost by tokens, end to end: the real bot against the fake Discord and the
fake image API.

- The commands' schema offers ``quality``, ``format`` and ``background`` only when a model in use takes them,
  with the catalog's values as choices; a catalog that changes them syncs the commands again.
- An option the server's model lacks is refused (privately) before anything is charged, and never sent; a
  model that takes it gets exactly what was asked, byte for byte.
- A transparent background forces png (or webp), survives the re-encoding that fits the upload limit, and
  the file keeps the format asked; a JPEG made from a transparent result says so.
- A job priced by tokens is charged its most expensive outcome and settled to its answer's usage (one
  settlement row), on both databases; a failed one is refunded once; an answer without usage settles at the
  reservation and the log says why; the statistics and the metrics show what was really spent.
"""

from __future__ import annotations

import asyncio
import io
import os
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from tests.fake_discord import FakeDiscord, InteractionHandle, RecordedRequest
from tests.fake_image_api import EditCall, FakeImageAPI, Reply, make_png
from tests.harness import BotProcess, bot_environment, card_text, free_port, option, rows, wait_final_text, wait_result
from tests.postgres import fresh_database
from tests.test_audit_e2e import AUDIT, set_audit_channel
from tests.test_metrics_e2e import scrape_until
from tests.test_operations_e2e import admin, refusal
from tests.test_operators_e2e import wait_post

OFFICIAL_ON = "[models.gpt-image-2]\nenabled = true\n"
OFFICIAL_DEFAULT = 'default = "gpt-image-2"\n' + OFFICIAL_ON
MODEL_OPTIONS = ("quality", "format", "background")


def catalog(tmp_path: Path, text: str) -> str:
    path = tmp_path / "models.toml"
    path.write_text(text)
    return str(path)


def synced(fake: FakeDiscord) -> list[RecordedRequest]:
    return [r for r in fake.requests if r.method == "PUT" and r.path.endswith("/commands")]


def options_of(put: RecordedRequest, command: str) -> dict[str, dict[str, Any]]:
    (found,) = [c for c in put.json if c["name"] == command]
    return {o["name"]: o for o in found["options"]}


async def send(fake: FakeDiscord, prompt: str, image: bytes | None = None, **asked: str) -> InteractionHandle:
    """``/edit`` with one image (``/imagine`` without), and the model options given."""
    extra = [option(name, value, 3) for name, value in asked.items()]
    if image is None:
        return await fake.slash_command("imagine", [option("prompt", prompt, 3), *extra])
    attachment = fake.add_attachment(image, "photo.png", "image/png")
    options = [option("prompt", prompt, 3), option("image1", attachment["id"], 11), *extra]
    return await fake.slash_command("edit", options, resolved_attachments=[attachment])


def text_parts(call: EditCall) -> list[tuple[str, bytes]]:
    return [(p.name, p.data) for p in call.parts if p.filename is None]


async def test_the_schema_offers_only_what_the_models_in_use_take_and_a_changed_catalog_syncs_again(
    bot_process: BotProcess, bot_env: dict[str, str], discord_fake: FakeDiscord, tmp_path: Path
) -> None:
    await bot_process.start()
    (first,) = synced(discord_fake)
    for command in ("edit", "imagine"):
        assert not set(MODEL_OPTIONS) & set(options_of(first, command))  # the vip route takes none of them
    await bot_process.stop()

    bot_env["MODELS_FILE"] = catalog(tmp_path, OFFICIAL_ON)
    await bot_process.start()
    first_again, second = synced(discord_fake)
    assert first_again is first  # the changed schema was synced: the hash covers the catalog
    for command in ("edit", "imagine"):
        options = options_of(second, command)
        names = list(options)
        assert names[names.index("spoiler") + 1 :][:3] == list(MODEL_OPTIONS)
        choices = {name: [(c["name"], c["value"]) for c in options[name]["choices"]] for name in MODEL_OPTIONS}
        assert choices == {
            "quality": [("low", "low"), ("medium", "medium"), ("high", "high"), ("auto", "auto")],
            "format": [("PNG", "png"), ("JPEG", "jpeg"), ("WebP", "webp")],
            "background": [("transparent (a sticker)", "transparent"), ("opaque", "opaque"), ("auto", "auto")],
        }
        assert all(options[name]["type"] == 3 and not options[name].get("required") for name in MODEL_OPTIONS)
    await bot_process.stop()
    await bot_process.start()
    assert len(synced(discord_fake)) == 2  # unchanged since: not synced again


async def test_an_option_the_servers_model_lacks_is_refused_before_any_charge_and_never_sent(
    bot_process: BotProcess, bot_env: dict[str, str], discord_fake: FakeDiscord, image_api: FakeImageAPI,
    tmp_path: Path,
) -> None:  # fmt: skip
    bot_env["MODELS_FILE"] = catalog(tmp_path, OFFICIAL_ON)  # offered (by gpt-image-2), the default is vip
    image_api.models.add("gpt-image-2")
    await bot_process.start()
    for name, value in (("quality", "high"), ("format", "png"), ("background", "opaque")):
        for image in (make_png(), None):  # /edit, then /imagine
            text = await refusal(await send(discord_fake, "refused", image, **{name: value}))
            assert f"gpt-image-2-vip has no {name} option; leave {name} empty." in text
    assert image_api.calls == [] and await rows(bot_env, "SELECT COUNT(*) FROM money") == [(0,)]

    await wait_result(await send(discord_fake, "plain", make_png()))
    (vip,) = image_api.calls
    assert text_parts(vip) == [("model", b"gpt-image-2-vip"), ("prompt", b"plain"), ("response_format", b"b64_json")]
    assert vip.image_field == "image"

    picked = [{"name": "model", "type": 3, "value": "gpt-image-2"}]
    assert "gpt-image-2" in await refusal(await admin(discord_fake, "settings", picked, user_id=discord_fake.OWNER_ID))
    result = await wait_result(await send(discord_fake, "sharper", make_png(), quality="high", format="webp"))
    official = image_api.calls[-1]
    assert text_parts(official) == [
        ("model", b"gpt-image-2"), ("prompt", b"sharper"), ("quality", b"high"), ("output_format", b"webp")
    ]  # fmt: skip
    assert official.image_field == "image[]" and official.images[0].data == make_png()
    posted = output(result)
    assert posted.filename.endswith(".webp") and posted.data[:4] == b"RIFF" and posted.data[8:12] == b"WEBP"
    await wait_result(await send(discord_fake, "opaque", quality="low", format="jpeg", background="opaque"))
    assert image_api.calls[-1].json == {
        "model": "gpt-image-2", "prompt": "opaque", "quality": "low", "output_format": "jpeg", "background": "opaque"
    }  # fmt: skip
    text = await refusal(await send(discord_fake, "a sticker", background="transparent", format="jpeg"))
    assert "A transparent background needs the png or webp format" in text
    text = await refusal(await send(discord_fake, "odd", quality="ultra"))
    assert "`ultra` is not a quality gpt-image-2 takes; pick one of: low, medium, high, auto." in text
    assert len(image_api.calls) == 3
    assert await rows(bot_env, "SELECT prompt, options FROM jobs ORDER BY created_at") == [
        ("plain", "{}"), ("sharper", '{"output_format": "webp", "quality": "high"}'),
        ("opaque", '{"background": "opaque", "output_format": "jpeg", "quality": "low"}'),
    ]  # fmt: skip


def transparent_noise(side: int) -> bytes:
    """A PNG of random colours whose left half is fully transparent: large, and hard to compress."""
    image = Image.frombytes("RGBA", (side, side), os.urandom(side * side * 4))
    image.putalpha(255)
    image.paste((0, 0, 0, 0), (0, 0, side // 2, side))
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def output(result: RecordedRequest) -> Any:
    """The result's own file on its card (the inputs' copies are files of the card too)."""
    (made,) = [f for f in result.files if f.filename.startswith("atelier-")]
    return made


def opened(data: bytes) -> Image.Image:
    image = Image.open(io.BytesIO(data))
    image.load()
    return image


def alpha_range(image: Image.Image) -> tuple[int, int]:
    low, high = image.getchannel("A").getextrema()
    return int(low), int(high)


async def test_a_sticker_keeps_its_transparency_and_its_format_through_the_fit_and_a_flattened_jpeg_says_so(
    bot_process: BotProcess, bot_env: dict[str, str], discord_fake: FakeDiscord, image_api: FakeImageAPI,
    tmp_path: Path,
) -> None:  # fmt: skip
    bot_env["MODELS_FILE"] = catalog(tmp_path, OFFICIAL_DEFAULT)
    image_api.models.add("gpt-image-2")
    await bot_process.start()
    limit = 400_000
    discord_fake.attachment_size_limit = limit
    sticker = transparent_noise(800)
    assert len(sticker) > 2 * limit
    image_api.then(Reply(image=sticker), Reply(image=sticker), Reply(image=sticker))

    result = await wait_result(await send(discord_fake, "a fox sticker", background="transparent"))
    assert image_api.calls[-1].json == {
        "model": "gpt-image-2", "prompt": "a fox sticker", "output_format": "png", "background": "transparent"
    }  # fmt: skip
    png = output(result)
    image = opened(png.data)
    assert png.filename.endswith(".png") and image.format == "PNG" and len(png.data) <= limit
    assert image.mode == "RGBA" and alpha_range(image) == (0, 255)  # the transparent half is still there
    assert image.getpixel((0, 0))[3] == 0 and image.getpixel((image.width - 1, 0))[3] == 255
    assert "over Discord's 0.4 MB upload limit, so it was re-encoded as PNG and scaled down" in card_text(result)

    result = await wait_result(await send(discord_fake, "a webp sticker", background="transparent", format="webp"))
    webp = output(result)
    image = opened(webp.data)
    assert image.format == "WEBP" and len(webp.data) <= limit and alpha_range(image)[0] == 0

    # Asked for a JPEG, the service answered a transparent image anyway: flattened, and the member is told.
    result = await wait_result(await send(discord_fake, "a jpeg", format="jpeg"))
    jpeg = output(result)
    assert opened(jpeg.data).format == "JPEG" and jpeg.filename.endswith(".jpg") and len(jpeg.data) <= limit
    assert "its transparent background was flattened onto white, since JPEG has no transparency" in card_text(result)


# Cost by tokens, on both databases ------------------------------------------------------------------


@pytest.fixture(params=["sqlite", "postgres"])
async def env(request: pytest.FixtureRequest, discord_fake: FakeDiscord, image_api: FakeImageAPI, tmp_path: Path
              ) -> AsyncIterator[dict[str, str]]:  # fmt: skip
    settings = {"IMAGE_API_TIMEOUT": "20", "MODELS_FILE": catalog(tmp_path, OFFICIAL_DEFAULT)}
    settings["METRICS_PORT"] = str(free_port())
    if request.param == "sqlite":
        yield bot_environment(discord_fake.api_base, image_api.base, tmp_path / "data", **settings)
        return
    async with fresh_database() as url:
        yield bot_environment(discord_fake.api_base, image_api.base, tmp_path / "data", DATABASE_URL=url, **settings)


async def read(env: dict[str, str], sql: str) -> list[tuple[Any, ...]]:
    """Rows of the bot's database, whichever it is."""
    return await rows(env, sql)


async def read_when(env: dict[str, str], sql: str, count: int, timeout: float = 10) -> list[tuple[Any, ...]]:
    """The rows of ``sql`` once there are ``count`` of them (a job's end is recorded after its result is posted)."""
    async with asyncio.timeout(timeout):
        while len(found := await read(env, sql)) < count:  # noqa: ASYNC110  # the bot process writes them
            await asyncio.sleep(0.05)
    return found


# The shipped prices of gpt-image-2, per token in micro-dollars (USD per million tokens): text in $5, images in
# $8, image out $30; a reservation counts 6000 tokens per input image and, for auto size at the dearest quality
# (high), 57000 output tokens; a prompt's text at most one token per UTF-8 byte. Rounded up to a micro-dollar.
def reservation(prompt: str, images: int) -> int:
    return len(prompt.encode()) * 5 + images * 6000 * 8 + 57_000 * 30


async def test_a_job_by_tokens_is_charged_its_reservation_and_settled_to_its_usage(
    env: dict[str, str], tmp_path: Path, discord_fake: FakeDiscord, image_api: FakeImageAPI
) -> None:
    image_api.models.add("gpt-image-2")
    details = {"text_tokens": 40, "image_tokens": 1000}
    usage = {"input_tokens": 1040, "output_tokens": 4160, "total_tokens": 5200, "input_tokens_details": details}
    image_api.then(
        Reply(usage=usage),
        Reply(no_usage=True),
        Reply(kind="error", status=400, body={"error": {"message": "Invalid size for this prompt"}}),
    )  # fmt: skip
    bot = BotProcess(env, tmp_path, discord_fake)
    await bot.start()
    try:
        await set_audit_channel(discord_fake)
        await wait_result(await send(discord_fake, "a fox", make_png()))
        charged, real = reservation("a fox", 1), 40 * 5 + 1000 * 8 + 4160 * 30
        settled = await read_when(env, "SELECT entry, amount FROM money ORDER BY entry", 2)
        assert settled == [("charge", charged), ("settle", real - charged)] and real == 133_000
        assert await read(env, "SELECT cost, input_tokens, output_tokens FROM jobs") == [(charged, 1040, 4160)]
        audit = await wait_post(discord_fake, AUDIT, "a fox")
        assert " · $0.133 · gpt-image-2 · " in audit.json["content"]  # the audit line shows what it really cost

        await wait_result(await send(discord_fake, "a lighthouse"))
        bare = reservation("a lighthouse", 0)
        money = await read_when(env, "SELECT j.prompt, m.entry, m.amount FROM money m JOIN jobs j ON j.id = m.job_id "
                                     "WHERE j.prompt = 'a lighthouse' ORDER BY m.entry", 2)  # fmt: skip
        assert money == [("a lighthouse", "charge", bare), ("a lighthouse", "settle", 0)]
        assert "settling by tokens" in bot.log() and "the answer carried no usage; settled at the reservation" in (
            bot.log()
        )

        await wait_final_text(await send(discord_fake, "doomed", make_png()), "❌")
        doomed = reservation("doomed", 1)
        money = await read_when(env, "SELECT m.entry, m.amount FROM money m JOIN jobs j ON j.id = m.job_id "
                                     "WHERE j.prompt = 'doomed' ORDER BY m.entry", 2)  # fmt: skip
        assert money == [("charge", doomed), ("refund", doomed)]  # refunded once, nothing to settle

        listed = (await (await discord_fake.slash_command("history", [])).wait_for_callback()).json["data"]
        lines = str(listed.get("content", "")) + str(listed.get("embeds", ""))
        assert "$0.133" in lines and "$1.758025" not in lines  # a member's history shows what it really cost
        spent = real + bare
        net = await read(env, "SELECT SUM(CASE WHEN entry = 'refund' THEN -amount ELSE amount END) FROM money")
        assert net == [(spent,)]
        stats = await refusal(await admin(discord_fake, "stats", user_id=discord_fake.OWNER_ID))
        assert f"Spend today, all servers: **${spent / 1_000_000:.2f}**" in stats
        port = int(env["METRICS_PORT"])
        key = 'atelier_spend_today_usd{key="operator"}'
        samples = await scrape_until(port, lambda s: abs(s.get(key, 0) - spent / 1_000_000) < 1e-9)
        assert abs(samples[key] - spent / 1_000_000) < 1e-9
    finally:
        await bot.stop()
