"""The result card's pure parts: the inputs' small copies, which attachment Refine takes, spoiler channels, the
card's shape at its largest, and what Info says."""

from __future__ import annotations

import io
from types import SimpleNamespace
from typing import Any

import pytest
from PIL import Image

from bot.config import load_config
from bot.core.attempts import Attempt, AttemptOutcome
from bot.core.job import InputInfo, Job, JobRequest, Origin
from bot.core.overrides import GuildOverrides
from bot.core.records import JobInfo
from bot.core.states import JobState
from bot.media import editor as editor_module
from bot.media.editor import THUMBNAILS_AT_MOST, Editor
from bot.media.images import InputPreview, OutputImage, PreparedImage, make_strip, make_thumbnail
from bot.ports import ResultMedia
from bot.servers.limits import GuildLimits, Requester, apply_spoilers
from cogs.delivery.buttons import first_image
from cogs.delivery.card import ResultCard, card_files, card_text
from cogs.delivery.info import file_size, info_text
from cogs.delivery.results import result_buttons
from tests.fake_discord import walk_components


def png(width: int, height: int, mode: str = "RGB", color: Any = (10, 20, 30), **params: Any) -> bytes:
    buffer = io.BytesIO()
    Image.new(mode, (width, height), color).save(buffer, format="PNG", **params)
    return buffer.getvalue()


def opened(data: bytes) -> Image.Image:
    image = Image.open(io.BytesIO(data))
    image.load()
    return image


def job(**request: Any) -> Job:
    values: dict[str, Any] = {
        "kind": "edit",
        "user_id": 7,
        "guild_id": 1,
        "channel_id": 2,
        "prompt": "make it dusk",
        "size": None,
        "input_count": 1,
    }
    values.update(request)
    return Job(
        id="abc123",
        request=JobRequest(**values),
        state=JobState.SUCCEEDED,
        created_at=1000.0,
        charge_day="2026-12-05",
        cost=30_000,
        model="gpt-image-2-vip",
    )


# The inputs' small copies -------------------------------------------------------------------------


def test_a_thumbnail_is_a_small_jpeg_of_the_same_shape() -> None:
    thumbnail = opened(make_thumbnail(png(1600, 900)))
    assert thumbnail.format == "JPEG" and thumbnail.size == (320, 180)
    assert opened(make_thumbnail(png(50, 40))).size == (50, 40)  # never made larger
    buffer = io.BytesIO()
    Image.new("RGB", (80, 40), (0, 0, 255)).save(buffer, format="JPEG")
    assert opened(make_thumbnail(buffer.getvalue())).size == (80, 40)  # a small JPEG, read whole and let go


def test_a_transparent_input_is_shown_on_white_and_an_exif_turned_one_upright() -> None:
    clear = opened(make_thumbnail(png(40, 40, "RGBA", (0, 0, 0, 0))))
    assert clear.mode == "RGB" and clear.getpixel((20, 20)) == (255, 255, 255)
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90° clockwise to show"
    buffer = io.BytesIO()
    Image.new("RGB", (200, 100), (0, 0, 0)).save(buffer, format="JPEG", exif=exif)
    assert opened(make_thumbnail(buffer.getvalue())).size == (100, 200)


def test_a_strip_puts_every_input_side_by_side_at_one_height() -> None:
    strip = opened(make_strip([png(320, 160), png(160, 320), png(160, 160)], height=160, gap=4))
    assert strip.format == "JPEG" and strip.size == (320 + 80 + 160 + 2 * 4, 160)


async def test_previews_are_a_thumbnail_each_up_to_four_then_one_strip() -> None:
    editor = Editor()
    images = [PreparedImage(png(64 + n, 48), "image/png", 64 + n, 48) for n in range(THUMBNAILS_AT_MOST + 1)]
    previews, strip = await editor.previews(images[:THUMBNAILS_AT_MOST])
    assert strip is None and [p.name for p in previews] == ["image1", "image2", "image3", "image4"]
    assert all(p.thumbnail for p in previews) and previews[1].size == len(images[1].data)
    previews, strip = await editor.previews(images)
    assert strip is not None and not any(p.thumbnail for p in previews)
    assert [(p.width, p.height) for p in previews] == [(64 + n, 48) for n in range(5)]


# Which picture Refine takes -------------------------------------------------------------------------


def attachment(filename: str, content_type: str | None = "image/jpeg") -> SimpleNamespace:
    return SimpleNamespace(filename=filename, content_type=content_type)


def test_refine_takes_a_cards_output_wherever_it_is_listed() -> None:
    card = SimpleNamespace(attachments=[attachment("input-abc-image1.jpg"), attachment("atelier-abc.png", "image/png")])
    assert first_image(card).filename == "atelier-abc.png"  # type: ignore[arg-type,union-attr]
    spoiler = SimpleNamespace(attachments=[attachment("input-abc-image1.jpg"), attachment("SPOILER_atelier-abc.webp")])
    assert first_image(spoiler).filename == "SPOILER_atelier-abc.webp"  # type: ignore[arg-type,union-attr]


def test_refine_takes_the_first_image_of_a_message_without_an_output() -> None:
    old = SimpleNamespace(attachments=[attachment("notes.txt", "text/plain"), attachment("photo.PNG", None)])
    assert first_image(old).filename == "photo.PNG"  # type: ignore[arg-type,union-attr]
    assert first_image(SimpleNamespace(attachments=[attachment("a.txt", "text/plain")])) is None  # type: ignore[arg-type]


# Spoiler channels ------------------------------------------------------------------------------------


def who(channel: int, parent: int | None = None) -> Requester:
    return Requester(7, 1, channel, parent, frozenset(), False)


@pytest.mark.parametrize(
    ("channel", "parent", "asked", "spoiler"),
    [
        (10, None, False, True),  # a spoiler channel
        (99, 10, False, True),  # a thread of one
        (99, 98, False, False),  # elsewhere
        (99, None, True, True),  # a member may always ask
    ],
)
def test_a_spoiler_channel_or_its_threads_make_a_request_a_spoiler(
    channel: int, parent: int | None, asked: bool, spoiler: bool
) -> None:
    overrides = GuildOverrides.from_json(GuildOverrides(spoiler_channel_ids=frozenset({10, 11})).to_json())
    assert overrides.spoiler_channel_ids == frozenset({10, 11})
    limits = GuildLimits.resolve(load_config({"DISCORD_TOKEN": "x", "IMAGE_API_KEY": "y"}), overrides)
    assert apply_spoilers(limits, job(spoiler=asked).request, who(channel, parent)).spoiler is spoiler
    assert apply_spoilers(None, job().request, who(10)).spoiler is False  # a direct message


# The card at its largest -----------------------------------------------------------------------------


def test_the_largest_card_stays_within_discords_limits() -> None:
    # Several outputs (variations) and four inputs, each with its thumbnail: the most a card shows.
    outputs = tuple(OutputImage(png(64, 64), "image/png", 64, 64) for _ in range(4))
    inputs = tuple(InputPreview(f"image{n}", 64, 64, 100, png(8, 8)) for n in range(1, THUMBNAILS_AT_MOST + 1))
    media = ResultMedia(outputs, inputs)
    made = job(prompt="x" * 4000, style="watercolour", size="2048x1360", spoiler=True)
    text = card_text(made, outputs[0], ["a long note " * 100] * 10)
    card = ResultCard(made, media, text, result_buttons(made.id, None), footer="-# a footer")
    components = walk_components(card.to_components())
    assert len(components) <= 40
    assert sum(len(c.get("content", "")) for c in components if c["type"] == 10) <= 4000
    assert len(card_files(made, media)) <= 10
    gallery = next(c for c in components if c["type"] == 12)
    assert len(gallery["items"]) == 4 and all(item["spoiler"] for item in gallery["items"])


# What Info says --------------------------------------------------------------------------------------


def test_file_sizes_read_well() -> None:
    assert [file_size(n) for n in (912, 84_321, 1_234_567)] == ["912 B", "84 KB", "1.2 MB"]


def test_info_says_what_made_a_result_where_it_came_from_and_whether_it_was_retried() -> None:
    parent = job()
    parent = Job(**{**parent.__dict__, "id": "parent1", "result_channel_id": 2, "result_message_id": 3})
    made = job(origin=Origin.REFINE, parent_job_id="parent1", style="noir", style_text="as a film noir still")
    made = Job(
        **{
            **made.__dict__,
            "inputs": (InputInfo(1024, 768, 1_200_000, "image/png"),),
            "queued_at": 1001.0,
            "started_at": 1003.5,
            "finished_at": 1100.0,
            "api_seconds": 90.0,
            "output_width": 1536,
            "output_height": 1024,
            "output_bytes": 2_000_000,
            "attempts": 2,
        }
    )
    tries = (
        Attempt(1, 1003.5, 0.2, AttemptOutcome.RATE_LIMITED, False, 429),
        Attempt(2, 1004.0, 90.0, AttemptOutcome.SUCCEEDED, True, 200),
    )
    text = info_text(JobInfo(made, (parent,), "gone1", tries), None)
    assert "job `abc123`" in text and "<@7>" in text and "<t:1000:f>" in text
    assert "asked auto, made 1536×1024, 2.0 MB" in text
    assert "🎨 **noir** — as a film noir still" in text and "Model: gpt-image-2-vip" in text
    assert "**image1** 1024×768, 1.2 MB" in text
    assert "Refined from https://discord.com/channels/1/2/3 ← `gone1` (no longer recorded)" in text
    assert "Waited 2.5 s in line, ran 96.5 s (the image service 90.0 s)" in text
    assert "Cost: $0.03" in text and "Retried: 2 calls to the image service" in text
    first_try = info_text(JobInfo(job(input_count=0, kind="imagine")), None)
    assert "No retry" in first_try and "made from the prompt alone" in first_try and "Refined" not in first_try


async def test_a_thumbnail_is_made_once_for_inputs_used_again_and_the_latest_are_kept(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    made: list[bytes] = []

    def counted(data: bytes) -> bytes:
        made.append(data)
        return make_thumbnail(data)

    monkeypatch.setattr(editor_module, "make_thumbnail", counted)
    monkeypatch.setattr(editor_module, "THUMBNAILS_KEPT", 2)
    editor = Editor()
    first, second, third = png(64, 48), png(64, 48, color=(200, 0, 0)), png(80, 48)
    copy = await editor.thumbnail(first)
    assert opened(copy).size == (64, 48)
    # Variations and a reroll show the same inputs: the copy is the one made, not another decode.
    assert await editor.thumbnail(bytes(first)) == copy and made == [first]
    previews, _ = await editor.previews([PreparedImage(first, "image/png", 64, 48)] * 2)
    assert [p.thumbnail for p in previews] == [copy, copy] and made == [first]
    # Other pictures get their own; the least recently used goes once more than the latest two are kept.
    assert await editor.thumbnail(second) != copy
    await editor.thumbnail(first)  # used again: the latest now
    await editor.thumbnail(third)  # ``second`` goes
    await editor.thumbnail(first)
    await editor.thumbnail(second)
    assert made == [first, second, third, second]
