"""Region edits' pure parts and their edges: the mask's geometry against a model of the rule, a member's mask
refused or used, the region kept by the store on both databases, and the client sending a mask only to a model
that takes one."""

from __future__ import annotations

import asyncio
import dataclasses
import io
from pathlib import Path

import aiohttp
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image

from bot.core.job import Job, JobRequest, Origin
from bot.core.quota import Quota
from bot.core.region import Region, same_shape
from bot.core.states import JobState
from bot.errors import BadRequestError, InputError
from bot.jobs.kinds.region import REGION, grid_picture
from bot.media.editor import Editor
from bot.media.images import PreparedImage
from bot.media.masks import cell_box, grid_alpha, region_mask
from bot.provider.client import Endpoint, ImageAPIClient, ProviderRequest
from bot.store.store import Store
from tests.fake_image_api import FakeImageAPI, make_png
from tests.stores import LEASE, NOON, PRICE
from tests.test_image_api import KEY, catalog_config

FEATHER = 8


def model_alpha(width: int, height: int, cells: frozenset[int], feather: int = FEATHER) -> bytes:
    """The rule, pixel by pixel: 0 in a ticked cell; 255*d//feather at a distance d (the larger of the two gaps)
    from the nearest ticked cell; opaque from ``feather`` on. Cells split at width*i//3 and height*j//3."""
    boxes = []
    for cell in cells:
        row, column = divmod(cell, 3)
        x0, x1 = width * column // 3, width * (column + 1) // 3 - 1
        y0, y1 = height * row // 3, height * (row + 1) // 3 - 1
        if x1 >= x0 and y1 >= y0:
            boxes.append((x0, y0, x1, y1))
    out = bytearray()
    for y in range(height):
        for x in range(width):
            d = min((max(x0 - x, 0, x - x1, y0 - y, y - y1) for x0, y0, x1, y1 in boxes), default=feather)
            out.append(255 if d >= feather else 255 * d // feather)
    return bytes(out)


@settings(max_examples=60, deadline=None)
@given(
    width=st.integers(1, 80),
    height=st.integers(1, 80),
    cells=st.frozensets(st.integers(0, 8)),
    feather=st.integers(1, 12),
)
def test_the_grids_alpha_follows_the_rule_at_any_size(
    width: int, height: int, cells: frozenset[int], feather: int
) -> None:
    assert grid_alpha(width, height, cells, feather).tobytes() == model_alpha(width, height, cells, feather)


@given(width=st.integers(3, 500), height=st.integers(3, 500))
def test_every_pixel_is_in_exactly_one_cell(width: int, height: int) -> None:
    covered = sum((x1 - x0) * (y1 - y0) for x0, y0, x1, y1 in (cell_box(c, width, height) for c in range(9)))
    assert covered == width * height
    assert cell_box(0, width, height)[:2] == (0, 0) and cell_box(8, width, height)[2:] == (width, height)


def opened(image: PreparedImage) -> Image.Image:
    picture = Image.open(io.BytesIO(image.data))
    picture.load()
    return picture


def rgba(width: int, height: int, hole: tuple[int, int, int, int] | None, *, mode: str = "RGBA") -> bytes:
    picture = Image.new("RGBA", (width, height), (1, 2, 3, 255))
    if hole is not None:
        picture.paste((0, 0, 0, 0), hole)
    buffer = io.BytesIO()
    picture.convert(mode).save(buffer, format="PNG")
    return buffer.getvalue()


def test_the_mask_is_an_rgba_png_at_image1s_exact_size() -> None:
    mask = region_mask(1000, 667, frozenset({4}), None)
    picture = opened(mask)
    assert (mask.mime, mask.width, mask.height, mask.note) == ("image/png", 1000, 667, None)
    assert picture.format == "PNG" and picture.mode == "RGBA" and picture.size == (1000, 667)
    assert picture.getchannel("A").tobytes() == grid_alpha(1000, 667, frozenset({4})).tobytes()


def test_a_members_mask_is_used_scaled_joined_or_refused_with_a_reason() -> None:
    # The same size: its alpha as it is (a grey-with-alpha PNG works too).
    own = region_mask(60, 40, frozenset(), rgba(60, 40, (0, 0, 10, 10), mode="LA"))
    alpha = opened(own).getchannel("A")
    assert alpha.getpixel((5, 5)) == 0 and alpha.getpixel((30, 30)) == 255 and own.note is None
    # The same shape within 1 %: scaled, and said so.
    scaled = region_mask(1000, 667, frozenset(), rgba(1536, 1024, (0, 0, 300, 300)))
    assert opened(scaled).size == (1000, 667)
    assert str(scaled.note) == "the mask was scaled from 1536×1024 to image1's 1000×667"
    # Joined with cells: the more transparent of the two.
    both = region_mask(60, 40, frozenset({8}), rgba(60, 40, (0, 0, 10, 10)))
    alpha = opened(both).getchannel("A")
    assert alpha.getpixel((5, 5)) == 0 and alpha.getpixel((59, 39)) == 0 and alpha.getpixel((30, 20)) == 255
    refusals = {
        make_png(60, 40): "The mask has no transparency.",
        rgba(60, 40, None): "Nothing in the mask is fully transparent",
        rgba(40, 40, (0, 0, 5, 5)): "The mask is 40×40 and image1 is 60×40.",
        b"\xff\xd8\xff\xe0 not a png": "The mask must be a PNG file with transparency",
        rgba(60, 40, (0, 0, 5, 5))[:-40]: "mask is damaged or incomplete",
    }
    for data, reason in refusals.items():
        with pytest.raises(InputError) as refused:
            region_mask(60, 40, frozenset(), data)
        assert reason in str(refused.value.user_message), str(refused.value.user_message)
    with pytest.raises(InputError) as refused:
        region_mask(60, 40, frozenset(), None)
    assert "Tick at least one part of the grid" in str(refused.value.user_message)


def test_a_region_reads_back_as_written_and_refuses_a_cell_the_grid_lacks() -> None:
    for region in (Region(frozenset({0, 4, 8})), Region(frozenset(), mask=True), Region(frozenset({2}), mask=True)):
        assert Region.from_json(region.to_json()) == region
    assert Region.from_json(None) is None and Region().empty and not Region(mask=True).empty
    with pytest.raises(ValueError):
        Region(frozenset({9}))
    assert same_shape(512, 768, 1024, 1536) and same_shape(1000, 667, 1536, 1024) and not same_shape(100, 100, 160, 112)
    assert grid_picture(frozenset({0, 4})) == "🟦⬜⬜ ⬜🟦⬜ ⬜⬜⬜"


async def test_the_store_keeps_a_jobs_region_on_both_databases(store: Store) -> None:
    asked = JobRequest(
        "region", 1, 10, 100, "a kite", "160x112", 1, Origin.REFINE, "parent1", region=Region(frozenset({1, 2}), True)
    )
    plain = dataclasses.replace(asked, kind="edit", region=None)
    for job_id, request in (("r1", asked), ("e1", plain)):
        job = Job(job_id, request, JobState.ACCEPTED, NOON, "2026-11-25", PRICE, holder="gw")
        await store.admit(job, Quota(NOON), NOON + LEASE)
    region_job, edit_job = await store.get_job("r1"), await store.get_job("e1")
    assert region_job is not None and region_job.request.region == Region(frozenset({1, 2}), mask=True)
    assert edit_job is not None and edit_job.request.region is None


async def test_the_region_kind_keeps_image1_then_its_mask_and_sends_the_mask_apart() -> None:
    request = JobRequest("region", 1, 10, 100, "a kite", None, 1, Origin.REFINE, region=Region(frozenset({0})))
    job = Job("r1", request, JobState.PREPARING, NOON, "2026-11-25", PRICE, model="gpt-image-2")
    kept = await REGION.prepare(job, [("image1", make_png(90, 60))], Editor())
    assert [(i.width, i.height, i.mime) for i in kept] == [(90, 60, "image/png"), (90, 60, "image/png")]
    call = REGION.request(job, kept, None)
    assert call.endpoint is Endpoint.EDITS and list(call.images) == kept[:1] and call.mask == kept[1]
    # A Reroll gets the kept mask back after image1: the same mask again.
    again = await REGION.prepare(job, [("image1", kept[0].data), ("image2", kept[1].data)], Editor())
    assert opened(again[1]).tobytes() == opened(kept[1]).tobytes()


async def test_a_mask_goes_only_to_a_model_that_takes_one(tmp_path: Path) -> None:
    api = FakeImageAPI(api_key=KEY)
    await api.start()
    try:
        api.models.add("gpt-image-2")
        config = catalog_config(api)
        image1 = PreparedImage(make_png(90, 60), "image/png", 90, 60)
        mask = region_mask(90, 60, frozenset({4}), None)
        async with aiohttp.ClientSession() as session, asyncio.timeout(30):
            client = ImageAPIClient(session, config)
            await client.edit(ProviderRequest(Endpoint.EDITS, "a kite", [image1], model="gpt-image-2", mask=mask))
            (call,) = api.calls
            assert call.names == ["model", "prompt", "image[]", "mask"] and call.status == 200
            assert call.mask is not None and call.mask.data == mask.data and call.mask.filename == "mask.png"
            # A model that takes none (the catalog changed since the job was accepted): nothing is sent at all.
            with pytest.raises(BadRequestError) as refused:
                await client.edit(
                    ProviderRequest(Endpoint.EDITS, "a kite", [image1], model="gpt-image-2-vip", mask=mask)
                )
            assert "no longer takes a mask" in str(refused.value.user_message)
            assert len(api.calls) == 1
            # The fake holds a mask to OpenAI's rules, so a wrong one fails whatever a test checks.
            small = region_mask(45, 30, frozenset({4}), None)
            with pytest.raises(BadRequestError):
                await client.edit(ProviderRequest(Endpoint.EDITS, "a kite", [image1], model="gpt-image-2", mask=small))
            assert api.calls[-1].status == 400
    finally:
        await api.stop()
