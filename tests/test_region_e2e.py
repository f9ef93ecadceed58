"""Region edits end to end: the real bot against the fake Discord and the fake image API.

- The Edit region button is on a result only when the server's model takes a mask.
- Its form (within Discord's five fields) has the instruction, the 3×3 grid, an optional mask upload and the
  options; the ticked cells reach the API as a mask at image1's exact size (RGBA, alpha 0 in the cells,
  opaque elsewhere, feathered just outside them), checked here byte for byte against a model of the rule
  written independently of the bot's Pillow code.
- A member's own mask is used (scaled to image1 when it has its shape), refused before any charge when
  Discord's word on it cannot work, and refunded when only its bytes tell.
- A form that marks nothing is refused before anything is charged; a model without masks never gets one.
- A region edit chains as a Refine: the clicked result is image1 and its parent, in the result's thread.
"""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

from PIL import Image

from tests.fake_discord import FakeDiscord, InteractionHandle
from tests.fake_image_api import EditCall, FakeImageAPI, Reply, make_png
from tests.harness import BotProcess, card_buttons, card_text, rows, send_edit, wait_result, wait_rows
from tests.test_form_images_e2e import fields, refused_privately
from tests.test_message_edit_e2e import COMMAND as EDIT_IMAGES
from tests.test_model_options_e2e import OFFICIAL_DEFAULT, OFFICIAL_ON, catalog
from tests.test_operations_e2e import admin, refusal
from tests.test_presets_e2e import add
from tests.test_refine_e2e import PROMPT_FIELD, result_button, stored, wait_thread_result

CELLS_FIELD = "atelier-region-cells"
MASK_FIELD = "atelier-mask"
OPTIONS_FIELD = "atelier-options"
STYLE_FIELD = "atelier-style"
CELL_VALUES = ["top-left", "top", "top-right", "left", "center", "right", "bottom-left", "bottom", "bottom-right"]
FEATHER = 8
# image1 of the region edits below: both sides multiples of 16 (so the model takes it as the size to keep),
# and neither a multiple of 3 (so the grid's lines fall between pixels and their rounding is checked).
WIDTH, HEIGHT = 160, 112
FIRST_PROMPT = "a castle on a hill"


# The rule, written here on its own: the bot's mask must match it pixel for pixel ---------------------------


def cell_of(x: int, y: int, width: int, height: int) -> int:
    """The grid cell a pixel is in: the lines are at width*i//3 and height*j//3."""
    column = max(i for i in range(3) if x >= width * i // 3)
    row = max(j for j in range(3) if y >= height * j // 3)
    return row * 3 + column


def expected_alpha(width: int, height: int, cells: set[int]) -> bytes:
    """0 in a ticked cell; at d pixels from the nearest ticked pixel (the larger of the two gaps),
    255*d//FEATHER, and opaque from FEATHER pixels on."""
    ticked = [(x, y) for y in range(height) for x in range(width) if cell_of(x, y, width, height) in cells]
    # Per ticked cell its box, for the distance (the nearest ticked pixel is in the nearest box).
    boxes = []
    for cell in cells:
        xs = [x for x, y in ticked if cell_of(x, y, width, height) == cell]
        ys = [y for x, y in ticked if cell_of(x, y, width, height) == cell]
        boxes.append((min(xs), min(ys), max(xs), max(ys)))
    out = bytearray()
    for y in range(height):
        for x in range(width):
            d = min(max(x0 - x, 0, x - x1, y0 - y, y - y1) for x0, y0, x1, y1 in boxes)
            out.append(255 if d >= FEATHER else 255 * d // FEATHER)
    return bytes(out)


def mask_image(call: EditCall) -> Image.Image:
    assert call.mask is not None, call.names
    assert call.mask.filename == "mask.png" and call.mask.content_type == "image/png"
    assert call.mask.data[:8] == b"\x89PNG\r\n\x1a\n"
    image = Image.open(io.BytesIO(call.mask.data))
    image.load()
    return image


def rgba_png(width: int, height: int, transparent: tuple[int, int, int, int] | None) -> bytes:
    """An opaque RGBA PNG with the box ``transparent`` (x0, y0, x1, y1: x1, y1 excluded) fully transparent."""
    image = Image.new("RGBA", (width, height), (10, 20, 30, 255))
    if transparent is not None:
        image.paste((0, 0, 0, 0), transparent)
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


# Driving it ---------------------------------------------------------------------------------------------------


async def start_on(bot: BotProcess, env: dict[str, str], api: FakeImageAPI, tmp_path: Path, text: str) -> None:
    env["MODELS_FILE"] = catalog(tmp_path, text)
    api.models.add("gpt-image-2")
    await bot.start()


async def a_result(fake: FakeDiscord, api: FakeImageAPI, output: bytes) -> dict[str, Any]:
    """An /edit's result card, whose output is ``output``."""
    api.then(Reply(image=output))
    handle = await send_edit(fake, FIRST_PROMPT, [make_png(40, 40)])
    await wait_result(handle)
    message = handle.original_message()
    assert message is not None
    return message


def labels(message: dict[str, Any]) -> list[str]:
    return [str(b["label"]) for b in card_buttons(message)]


async def open_region(fake: FakeDiscord, message: dict[str, Any]) -> tuple[InteractionHandle, dict[str, Any]]:
    """Click Edit region on ``message``: the click and the form the bot answered with."""
    click = await fake.click_button(message, result_button(message, "Edit region"))
    callback = await click.wait_for_callback()
    assert callback.json["type"] == 9, callback.json
    return click, callback.json["data"]


async def repaint(
    fake: FakeDiscord, message: dict[str, Any], prompt: str, *, form: dict[str, Any] | None = None, **values: Any
) -> InteractionHandle:
    """Send the region form of ``message`` (opened now, unless given) with ``values``."""
    tampered = values.pop("tampered", False)
    if form is None:
        _, form = await open_region(fake, message)
    answers = {PROMPT_FIELD: prompt, **values}
    return await fake.submit_modal(form["custom_id"], answers, message=message, tampered=tampered)


JOBS = "SELECT id, kind, origin, parent_job_id, input_count, size, region, inputs, status FROM jobs ORDER BY created_at"


# The button -----------------------------------------------------------------------------------------------------


async def test_edit_region_is_on_a_result_only_while_the_servers_model_takes_a_mask(
    bot_process: BotProcess, bot_env: dict[str, str], discord_fake: FakeDiscord, image_api: FakeImageAPI,
    tmp_path: Path,
) -> None:  # fmt: skip
    await start_on(bot_process, bot_env, image_api, tmp_path, OFFICIAL_ON)  # vip is the default: no mask
    vip = await a_result(discord_fake, image_api, make_png(WIDTH, HEIGHT))
    assert labels(vip) == ["Refine", "Reroll", "Variations", "Info", "Delete"]

    picked = [{"name": "model", "type": 3, "value": "gpt-image-2"}]
    await refusal(await admin(discord_fake, "settings", picked, user_id=discord_fake.OWNER_ID))
    official = await a_result(discord_fake, image_api, make_png(WIDTH, HEIGHT))
    assert labels(official) == ["Refine", "Reroll", "Variations", "Edit region", "Info", "Delete"]
    button = result_button(official, "Edit region")
    assert button.startswith("atelier:region:v1:")
    _, form = await open_region(discord_fake, official)

    # The server goes back to a model without masks: the button says so, and a form already open is refused
    # before anything is charged; no mask is ever sent to that model.
    picked = [{"name": "model", "type": 3, "value": "gpt-image-2-vip"}]
    await refusal(await admin(discord_fake, "settings", picked, user_id=discord_fake.OWNER_ID))
    click = await discord_fake.click_button(official, button)
    assert "can't repaint a region any more; use Refine instead" in await refused_privately(click)
    sent = await repaint(discord_fake, official, "an umbrella", form=form, **{CELLS_FIELD: ["center"]})
    assert "gpt-image-2-vip cannot repaint a region of an image (it takes no mask)" in await refused_privately(sent)
    assert len(image_api.calls) == 2 and all(call.mask is None for call in image_api.calls)
    assert await rows(bot_process.env, "SELECT kind FROM jobs") == [("edit",), ("edit",)]


# The grid -------------------------------------------------------------------------------------------------------


async def test_the_ticked_cells_reach_the_api_as_a_feathered_mask_at_image1s_size_and_the_result_chains(
    bot_process: BotProcess, bot_env: dict[str, str], discord_fake: FakeDiscord, image_api: FakeImageAPI,
    tmp_path: Path,
) -> None:  # fmt: skip
    await start_on(bot_process, bot_env, image_api, tmp_path, OFFICIAL_DEFAULT)
    first = make_png(WIDTH, HEIGHT, (1, 2, 3))
    message = await a_result(discord_fake, image_api, first)

    _, form = await open_region(discord_fake, message)
    assert form["custom_id"].startswith(f"atelier:region-modal:v1:{message['channel_id']}:{message['id']}:")
    assert list(fields(form)) == [PROMPT_FIELD, CELLS_FIELD, MASK_FIELD, OPTIONS_FIELD]
    grid = fields(form)[CELLS_FIELD]
    assert grid["label"] == "Parts to repaint"
    assert grid["component"]["type"] == 22 and grid["component"]["required"] is False
    assert (grid["component"]["min_values"], grid["component"]["max_values"]) == (0, 9)
    assert [(o["value"], o["label"]) for o in grid["component"]["options"]] == list(
        zip(CELL_VALUES, ["top left", "top middle", "top right", "middle left", "center", "middle right",
                          "bottom left", "bottom middle", "bottom right"], strict=True)
    )  # fmt: skip
    upload = fields(form)[MASK_FIELD]["component"]
    assert upload == {"type": 19, "custom_id": MASK_FIELD, "min_values": 0, "max_values": 1, "required": False}

    output = make_png(WIDTH, HEIGHT, (9, 9, 9))
    image_api.then(Reply(image=output))
    await repaint(discord_fake, message, "a red umbrella", **{CELLS_FIELD: ["top-left", "center"]})
    result = await wait_thread_result(discord_fake, int(message["id"]))
    (call,) = [c for c in await image_api.wait_for_calls(2, timeout=20) if c.mask is not None]
    assert call.status == 200 and [p.data for p in call.images] == [first]
    assert call.names == ["model", "prompt", "size", "image[]", "mask"]
    assert call.field("prompt") == "a red umbrella" and call.field("size") == f"{WIDTH}x{HEIGHT}"
    mask = mask_image(call)
    assert mask.size == (WIDTH, HEIGHT) and mask.mode == "RGBA"
    assert mask.getchannel("A").tobytes() == expected_alpha(WIDTH, HEIGHT, {0, 4})
    alpha = mask.getchannel("A")
    assert alpha.getpixel((80, 56)) == 0 and alpha.getpixel((0, 0)) == 0 and alpha.getpixel((159, 111)) == 255
    assert alpha.getpixel((105 + 3, 56)) == 255 * 3 // FEATHER  # 3 pixels right of the center cell (x < 106)

    # It chains as a Refine: image1 is the clicked result, which is its parent; the card says what was repainted.
    assert result.files[0].data == output
    text = card_text(result)
    assert "🖌️ repainted 🟦⬜⬜ ⬜🟦⬜ ⬜⬜⬜" in text and "refined from" in text
    assert "input-" in " ".join(f.filename for f in result.files)
    assert len([f for f in result.files if f.filename.startswith("input-")]) == 1  # image1 only, not the mask
    jobs = await wait_rows(bot_process.env, JOBS, lambda found: found[-1][-1] == "succeeded")
    (parent_id, *_), (_, kind, origin, parent, count, size, region, inputs, _) = jobs
    assert (kind, origin, parent, count, size) == ("region", "refine", parent_id, 1, f"{WIDTH}x{HEIGHT}")
    assert json.loads(region) == {"cells": [0, 4], "mask": False}
    assert [(i["width"], i["height"]) for i in json.loads(inputs)] == [(WIDTH, HEIGHT)]
    # Charged for image1 and the mask as two input images (whether the provider counts the mask is not
    # published): the prompt's bytes at $5, 2 × 6000 image tokens at $8, and a small image's 7200 at $30.
    charged = await rows(
        bot_process.env, f"SELECT amount FROM money WHERE entry = 'charge' AND job_id = '{jobs[-1][0]}'"
    )
    assert charged == [(len(b"a red umbrella") * 5 + 2 * 6000 * 8 + 7200 * 30,)]

    # A region edit of the region edit: the next link of the chain, in the same thread.
    refined = stored(discord_fake, result)
    assert labels(refined) == ["Refine", "Reroll", "Variations", "Edit region", "Info", "Delete"]
    image_api.then(Reply(image=make_png(WIDTH, HEIGHT, (8, 8, 8))))
    start = len(discord_fake.requests)
    await repaint(discord_fake, refined, "now a blue one", **{CELLS_FIELD: ["bottom-right"]})
    await wait_thread_result(discord_fake, int(message["id"]), start=start)
    call = image_api.calls[-1]
    assert call.images[0].data == output
    assert mask_image(call).getchannel("A").tobytes() == expected_alpha(WIDTH, HEIGHT, {8})
    jobs = await wait_rows(bot_process.env, JOBS, lambda found: found[-1][-1] == "succeeded")
    assert [row[3] for row in jobs] == [None, jobs[0][0], jobs[1][0]]


async def test_a_reroll_of_a_region_edit_sends_the_same_mask_again(
    bot_process: BotProcess, bot_env: dict[str, str], discord_fake: FakeDiscord, image_api: FakeImageAPI,
    tmp_path: Path,
) -> None:  # fmt: skip
    await start_on(bot_process, bot_env, image_api, tmp_path, OFFICIAL_DEFAULT)
    message = await a_result(discord_fake, image_api, make_png(WIDTH, HEIGHT, (1, 2, 3)))
    # The member's own mask is gone from Discord's side by then: the one kept with the job is sent again.
    own = discord_fake.add_attachment(rgba_png(WIDTH, HEIGHT, (0, 90, 30, 112)), "mask.png", "image/png")
    await repaint(discord_fake, message, "a kite", **{CELLS_FIELD: ["top"], MASK_FIELD: [own]})
    result = stored(discord_fake, await wait_thread_result(discord_fake, int(message["id"])))
    click = await discord_fake.click_button(result, result_button(result, "Reroll"))
    await image_api.wait_for_calls(3, timeout=20)
    first, again = image_api.calls[1], image_api.calls[2]
    assert again.mask is not None and first.mask is not None and again.mask.data == first.mask.data
    assert [p.data for p in again.images] == [p.data for p in first.images]
    assert (await click.wait_for_callback()).json["type"] == 4


# A member's own mask --------------------------------------------------------------------------------------------


async def test_a_members_own_mask_is_scaled_to_image1_joined_with_the_cells_and_checked(
    bot_process: BotProcess, bot_env: dict[str, str], discord_fake: FakeDiscord, image_api: FakeImageAPI,
    tmp_path: Path,
) -> None:  # fmt: skip
    await start_on(bot_process, bot_env, image_api, tmp_path, OFFICIAL_DEFAULT)
    message = await a_result(discord_fake, image_api, make_png(WIDTH, HEIGHT, (1, 2, 3)))

    # Half the size, the same shape: scaled to image1's size, each pixel kept fully transparent or opaque.
    half = rgba_png(WIDTH // 2, HEIGHT // 2, (10, 5, 30, 20))
    theirs = Image.open(io.BytesIO(half)).getchannel("A")
    mask_file = discord_fake.add_attachment(half, "mask.png", "image/png")
    await repaint(discord_fake, message, "a bird", **{MASK_FIELD: [mask_file]})
    result = await wait_thread_result(discord_fake, int(message["id"]))
    sent = mask_image(image_api.calls[-1])
    assert sent.size == (WIDTH, HEIGHT) and sent.mode == "RGBA"
    expected = bytes(theirs.getpixel((x // 2, y // 2)) for y in range(HEIGHT) for x in range(WIDTH))
    assert sent.getchannel("A").tobytes() == expected
    assert "the mask was scaled from 80×56 to image1's 160×112" in card_text(result)
    assert "🖌️ repainted where your mask is transparent" in card_text(result)

    # With cells too: both are repainted (the more transparent of the two, pixel by pixel).
    own = rgba_png(WIDTH, HEIGHT, (100, 80, 140, 100))
    mask_file = discord_fake.add_attachment(own, "mask.png", "image/png")
    start = len(discord_fake.requests)
    await repaint(discord_fake, message, "two birds", **{MASK_FIELD: [mask_file], CELLS_FIELD: ["top-left"]})
    await wait_thread_result(discord_fake, int(message["id"]), start=start)
    grid = expected_alpha(WIDTH, HEIGHT, {0})
    drawn = Image.open(io.BytesIO(own)).getchannel("A").tobytes()
    both = bytes(min(a, b) for a, b in zip(grid, drawn, strict=True))
    assert mask_image(image_api.calls[-1]).getchannel("A").tobytes() == both
    assert await rows(bot_process.env, "SELECT region FROM jobs WHERE kind = 'region' ORDER BY created_at") == [
        ('{"cells": [], "mask": true}',), ('{"cells": [0], "mask": true}',)
    ]  # fmt: skip


async def test_a_mask_that_cannot_work_is_refused_before_any_charge_or_refunded(
    bot_process: BotProcess, bot_env: dict[str, str], discord_fake: FakeDiscord, image_api: FakeImageAPI,
    tmp_path: Path,
) -> None:  # fmt: skip
    await start_on(bot_process, bot_env, image_api, tmp_path, OFFICIAL_DEFAULT)
    message = await a_result(discord_fake, image_api, make_png(WIDTH, HEIGHT, (1, 2, 3)))

    # What Discord says of the file is checked first: no job, no charge, no thread.
    square = discord_fake.add_attachment(rgba_png(100, 100, (0, 0, 50, 50)), "mask.png", "image/png")
    sent = await repaint(discord_fake, message, "x", **{MASK_FIELD: [square]})
    assert "The mask is 100×100 and image1 is 160×112." in await refused_privately(sent)
    photo = discord_fake.add_attachment(make_png(WIDTH, HEIGHT), "mask.jpg", "image/jpeg")
    sent = await repaint(discord_fake, message, "x", **{MASK_FIELD: [photo]})
    assert "The mask must be a PNG file with transparency" in await refused_privately(sent)
    big = {**discord_fake.add_attachment(rgba_png(WIDTH, HEIGHT, None), "mask.png"), "size": 5_000_000}
    sent = await repaint(discord_fake, message, "x", **{MASK_FIELD: [big]})
    assert "The mask is 5.0 MB; a mask must be under 4.0 MB." in await refused_privately(sent)
    two = [discord_fake.add_attachment(rgba_png(WIDTH, HEIGHT, (0, 0, 9, 9)), f"m{n}.png") for n in range(2)]
    sent = await repaint(discord_fake, message, "x", **{MASK_FIELD: two}, tampered=True)
    assert "Add one mask at most." in await refused_privately(sent)
    assert await rows(bot_process.env, "SELECT kind FROM jobs") == [("edit",)]
    assert not [r for r in discord_fake.requests if r.path.endswith("/threads")]

    # What only its bytes tell (no transparency, or none fully transparent): the job fails before any API call and
    # is refunded; the member is told why.
    for data, reason in (
        (make_png(WIDTH, HEIGHT), "The mask has no transparency."),
        (rgba_png(WIDTH, HEIGHT, None), "Nothing in the mask is fully transparent"),
    ):
        opaque = discord_fake.add_attachment(data, "mask.png", "image/png")
        start = len(discord_fake.requests)
        await repaint(discord_fake, message, "x", **{MASK_FIELD: [opaque]})
        told = await discord_fake.wait_for_request(
            lambda r, reason=reason: isinstance(r.json, dict) and reason in str(r.json.get("content", "")),
            20,
            start=start,
        )
        assert told.ok
    money = await wait_rows(
        bot_process.env,
        "SELECT j.kind, m.entry FROM money m JOIN jobs j ON j.id = m.job_id ORDER BY j.created_at, m.entry",
        lambda found: len([r for r in found if r == ("region", "refund")]) == 2,
    )
    assert [r for r in money if r[0] == "region"] == [("region", "charge"), ("region", "refund")] * 2
    assert len(image_api.calls) == 1


# Nothing marked -------------------------------------------------------------------------------------------------


async def test_a_form_that_marks_nothing_is_refused_before_any_charge(
    bot_process: BotProcess, bot_env: dict[str, str], discord_fake: FakeDiscord, image_api: FakeImageAPI,
    tmp_path: Path,
) -> None:  # fmt: skip
    await start_on(bot_process, bot_env, image_api, tmp_path, OFFICIAL_DEFAULT)
    message = await a_result(discord_fake, image_api, make_png(WIDTH, HEIGHT))
    await wait_rows(bot_process.env, "SELECT entry FROM money", lambda found: len(found) == 2)  # charge, settle
    before = await rows(bot_process.env, "SELECT job_id, entry, amount FROM money ORDER BY entry")

    sent = await repaint(discord_fake, message, "a moon")
    assert "Tick at least one part of the grid, or add a mask" in await refused_privately(sent)
    assert await rows(bot_process.env, "SELECT kind FROM jobs") == [("edit",)]
    assert await rows(bot_process.env, "SELECT job_id, entry, amount FROM money ORDER BY entry") == before
    assert len(image_api.calls) == 1 and not [r for r in discord_fake.requests if r.path.endswith("/threads")]

    # The next one works.
    await repaint(discord_fake, message, "a moon", **{CELLS_FIELD: ["top-right"]})
    await wait_thread_result(discord_fake, int(message["id"]))
    assert mask_image(image_api.calls[-1]).getchannel("A").tobytes() == expected_alpha(WIDTH, HEIGHT, {2})


# The options in the forms ---------------------------------------------------------------------------------------

ONLY_FORM = {"only-me": False, "spoiler": False}
MODEL_CHOICES = [
    "background:transparent", "quality:low", "quality:medium", "quality:high", "format:png", "format:jpeg",
    "format:webp",
]  # fmt: skip


def choices(form: dict[str, Any]) -> dict[str, bool]:
    """The options group's choices, and whether each is shown ticked."""
    group = fields(form)[OPTIONS_FIELD]["component"]
    assert group["max_values"] == len(group["options"]) <= 10
    return {o["value"]: bool(o.get("default")) for o in group["options"]}


async def open_refine_form(fake: FakeDiscord, message: dict[str, Any]) -> dict[str, Any]:
    click = await fake.click_button(message, result_button(message, "Refine"))
    callback = await click.wait_for_callback()
    assert callback.json["type"] == 9, callback.json
    form: dict[str, Any] = callback.json["data"]
    return form


async def open_edit_images(fake: FakeDiscord, message: dict[str, Any]) -> dict[str, Any]:
    handle = await fake.message_command(EDIT_IMAGES, message)
    callback = await handle.wait_for_callback()
    assert callback.json["type"] == 9, callback.json
    form: dict[str, Any] = callback.json["data"]
    return form


async def test_the_forms_offer_the_models_options_only_when_it_takes_them_and_send_exactly_those(
    bot_process: BotProcess, bot_env: dict[str, str], discord_fake: FakeDiscord, image_api: FakeImageAPI,
    tmp_path: Path,
) -> None:  # fmt: skip
    await start_on(bot_process, bot_env, image_api, tmp_path, OFFICIAL_ON)  # vip, which takes none
    message = await a_result(discord_fake, image_api, make_png(WIDTH, HEIGHT))
    chat = await discord_fake.add_message("look", files=[(make_png(32, 32), "a.png", "image/png")])
    assert choices(await open_refine_form(discord_fake, message)) == ONLY_FORM
    assert choices(await open_edit_images(discord_fake, chat)) == ONLY_FORM
    # Only a tampered client sends one: refused as the slash commands' are, before anything is charged.
    form = await open_refine_form(discord_fake, message)
    sent = await discord_fake.submit_modal(
        form["custom_id"], {PROMPT_FIELD: "x", OPTIONS_FIELD: ["quality:high"]}, message=message, tampered=True
    )
    assert "gpt-image-2-vip has no quality option; leave quality empty." in await refused_privately(sent)

    picked = [{"name": "model", "type": 3, "value": "gpt-image-2"}]
    await refusal(await admin(discord_fake, "settings", picked, user_id=discord_fake.OWNER_ID))
    form = await open_refine_form(discord_fake, message)
    assert choices(form) == {**ONLY_FORM, **dict.fromkeys(MODEL_CHOICES, False)}
    group = fields(form)[OPTIONS_FIELD]["component"]["options"]
    assert [o["label"] for o in group[2:]] == [
        "Transparent background", "Quality: low", "Quality: medium", "Quality: high", "Format: PNG", "Format: JPEG",
        "Format: WebP",
    ]  # fmt: skip
    assert choices(await open_edit_images(discord_fake, chat)) == {**ONLY_FORM, **dict.fromkeys(MODEL_CHOICES, False)}
    await add(discord_fake, "noir", "in the style of a film noir still")  # a style select: Discord's five fields
    styled = await open_refine_form(discord_fake, message)
    assert len(styled["components"]) == 5 and list(fields(styled))[-2:] == [STYLE_FIELD, OPTIONS_FIELD]
    assert choices(styled) == choices(form)

    # What is ticked is sent exactly; the result keeps the format.
    start = len(discord_fake.requests)
    await discord_fake.submit_modal(
        styled["custom_id"], {PROMPT_FIELD: "sharper", OPTIONS_FIELD: ["quality:high", "format:webp"]}, message=message
    )
    result = await wait_thread_result(discord_fake, int(message["id"]), start=start)
    call = image_api.calls[-1]
    assert call.options() == {"quality": "high", "output_format": "webp"}
    assert [f.filename.rsplit(".", 1)[1] for f in result.files if f.filename.startswith("atelier-")] == ["webp"]

    # Its Refine form starts from them; left as shown, the refinement asks the same.
    refined = stored(discord_fake, result)
    form = await open_refine_form(discord_fake, refined)
    assert [value for value, ticked in choices(form).items() if ticked] == ["quality:high", "format:webp"]
    start = len(discord_fake.requests)
    await discord_fake.submit_modal(form["custom_id"], {PROMPT_FIELD: "again"}, message=refined)
    await wait_thread_result(discord_fake, int(message["id"]), start=start)
    assert image_api.calls[-1].options() == {"quality": "high", "output_format": "webp"}

    # Refused before anything is charged: two of one kind, and a transparent JPEG.
    calls, jobs = len(image_api.calls), await rows(bot_process.env, "SELECT id FROM jobs ORDER BY id")
    for ticked, reason in (
        (["quality:low", "quality:high"], "Tick at most one quality."),
        (["format:png", "format:jpeg"], "Tick at most one format."),
        (["background:transparent", "format:jpeg"], "A transparent background needs the png or webp format"),
    ):
        form = await open_refine_form(discord_fake, message)
        sent = await discord_fake.submit_modal(
            form["custom_id"], {PROMPT_FIELD: "x", OPTIONS_FIELD: ticked}, message=message
        )
        assert reason in await refused_privately(sent)
    assert len(image_api.calls) == calls and await rows(bot_process.env, "SELECT id FROM jobs ORDER BY id") == jobs

    # A sticker from "Edit images": transparent forces png; only that is sent.
    form = await open_edit_images(discord_fake, chat)
    answers = {PROMPT_FIELD: "a sticker", OPTIONS_FIELD: ["background:transparent"]}
    await discord_fake.submit_modal(form["custom_id"], answers, channel_id=int(chat["channel_id"]))
    (*_, sticker) = await image_api.wait_for_calls(calls + 1, timeout=20)
    assert sticker.options() == {"output_format": "png", "background": "transparent"}

    # The region form offers them too, the result's ticked.
    _, region_form = await open_region(discord_fake, refined)
    assert list(fields(region_form)) == [PROMPT_FIELD, CELLS_FIELD, MASK_FIELD, STYLE_FIELD, OPTIONS_FIELD]
    assert [value for value, ticked in choices(region_form).items() if ticked] == ["quality:high", "format:webp"]
