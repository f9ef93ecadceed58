"""Live previews' parts that need no Discord: a run's previews (the newest shown, only while the run holds its
job, a bad partial skipped, nothing after the call), what a preview costs, the setting, and the cards a status
becomes (a preview; status words on a message that is a card already)."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Any

from bot.core.catalog import load_catalog
from bot.core.job import Job, JobRequest
from bot.core.models import PARTIAL_IMAGES
from bot.core.overrides import GuildOverrides
from bot.core.states import JobState
from bot.jobs.previews import Previews, RunPreviews
from bot.media.editor import Editor
from bot.media.images import OutputImage
from bot.provider.stream import PartialImage
from bot.scheduler import Scheduler
from cogs.delivery.buttons import cancel_view
from cogs.delivery.preview import PreviewCard, PreviewPicture, status_card
from tests.fake_discord import walk_components
from tests.fake_image_api import make_png, partial_png


def running_job(**options: Any) -> Job:
    request = JobRequest("edit", 7, 1, 2, "make it dusk", None, 1, options=options)
    return Job(id="abc123", request=request, state=JobState.RUNNING, created_at=1.0, charge_day="2026-12-05",
               cost=1, model="gpt-image-2", holder="me", run=1)  # fmt: skip


@dataclass
class Holds:
    """The lifecycle as previews ask it: whether this run still holds its job (each question counted)."""

    holding: bool = True
    asked: int = 0

    async def still_holds(self, job: Job) -> bool:
        self.asked += 1
        return self.holding


@dataclass
class Shown:
    """The notifier as previews use it: what it was handed, in order."""

    previews: list[tuple[int, bytes]] = field(default_factory=list)
    gate: asyncio.Event | None = None  # when set up, each preview waits for it (a slow frontend)
    arrived: asyncio.Event = field(default_factory=asyncio.Event)

    async def job_preview(self, job: Job, image: OutputImage, index: int) -> None:
        self.previews.append((index, image.data))
        self.arrived.set()
        if self.gate is not None:
            await self.gate.wait()


async def settle(run: RunPreviews) -> None:
    """Let the run's previews task (if it has one) come to its end."""
    if run._task is not None:
        async with asyncio.timeout(10):
            await run._task


def previews(holds: Holds, shown: Shown, scheduler: Scheduler) -> Previews:
    return Previews(holds, Editor(), shown, scheduler)  # type: ignore[arg-type]


async def test_a_run_shows_its_newest_partial_dropping_older_ones_that_wait_and_never_an_older_one_late() -> None:
    holds, shown, scheduler = Holds(), Shown(gate=asyncio.Event()), Scheduler("test")
    run = previews(holds, shown, scheduler).for_run(running_job(**{PARTIAL_IMAGES: 3}))
    assert run is not None
    run(PartialImage(0, partial_png(0)))
    async with asyncio.timeout(10):
        await shown.arrived.wait()  # the first is being shown (the frontend is slow)
    run(PartialImage(1, partial_png(1)))
    run(PartialImage(2, partial_png(2)))  # replaces 1, still waiting
    run(PartialImage(1, partial_png(1)))  # late and older: dropped
    assert shown.gate is not None
    shown.gate.set()
    await settle(run)
    assert shown.previews == [(0, partial_png(0)), (2, partial_png(2))]
    assert holds.asked == 2  # asked right before each one shown


async def test_a_run_that_lost_its_job_shows_nothing_and_a_stopped_run_shows_nothing_more() -> None:
    holds, shown, scheduler = Holds(holding=False), Shown(), Scheduler("test")
    run = previews(holds, shown, scheduler).for_run(running_job(**{PARTIAL_IMAGES: 2}))
    assert run is not None
    run(PartialImage(0, partial_png(0)))
    await settle(run)
    assert shown.previews == [] and holds.asked == 1
    holds.holding = True
    run.stop()
    run(PartialImage(1, partial_png(1)))
    await settle(run)
    assert shown.previews == []


async def test_a_partial_that_is_not_an_image_is_skipped_and_the_next_one_shows() -> None:
    holds, shown, scheduler = Holds(), Shown(), Scheduler("test")
    run = previews(holds, shown, scheduler).for_run(running_job(**{PARTIAL_IMAGES: 2}))
    assert run is not None
    run(PartialImage(0, b"not an image at all"))
    await settle(run)
    run(PartialImage(1, partial_png(1)))
    await settle(run)
    assert shown.previews == [(1, partial_png(1))]


def test_a_job_without_partial_images_has_no_previews() -> None:
    assert previews(Holds(), Shown(), Scheduler("test")).for_run(running_job()) is None


def test_a_preview_costs_its_partials_output_tokens_and_is_off_unless_a_server_turns_it_on() -> None:
    official = next(m for m in load_catalog(None, 30_000).models if m.name == "gpt-image-2")
    vip = next(m for m in load_catalog(None, 30_000).models if m.name == "gpt-image-2-vip")
    assert official.streamed_partials == 3 and vip.streamed_partials == 0
    assert official.preview_cost() == 3 * 100 * 30 and vip.preview_cost() == 0
    plain = official.reservation("a fox", 1, None, {})
    assert official.reservation("a fox", 1, None, {PARTIAL_IMAGES: 3}) == plain + 9_000
    assert GuildOverrides().pick("preview", False) is False
    on = GuildOverrides(preview=True)
    assert on.to_json() == {"preview": True} and GuildOverrides.from_json(on.to_json()) == on
    assert GuildOverrides.from_json({"preview": False}).preview is False


def test_a_preview_card_shows_the_partial_large_and_the_words_under_it() -> None:
    picture = PreviewPicture(2, make_png(), "preview-abc123-3.png", "A first look at: dusk", spoiler=True)
    components = walk_components(PreviewCard("🎨 Editing…", picture).to_components())
    assert [c["type"] for c in components] == [17, 12, 10]
    (item,) = components[1]["items"]
    assert item == {
        "media": {"url": "attachment://preview-abc123-3.png"}, "description": "A first look at: dusk", "spoiler": True
    }  # fmt: skip
    assert components[2]["content"] == "🎨 Editing…"
    assert picture.file().filename == "preview-abc123-3.png"


def test_status_words_on_a_card_keep_a_waiting_jobs_cancel_button() -> None:
    components = walk_components(status_card("⏳ Queued — next in line.", cancel_view("abc123", None)).to_components())
    assert [c["type"] for c in components] == [10, 1, 2]
    assert components[0]["content"] == "⏳ Queued — next in line."
    assert components[2]["custom_id"].startswith("atelier:cancel:") and components[2]["label"] == "Cancel"
    assert [c["type"] for c in walk_components(status_card("❌ failed", None).to_components())] == [10]
