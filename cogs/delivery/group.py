"""A request for variations has one card: the runs fill its gallery as they finish.

The group's status message becomes its card when the first run ends, and every later end of a
run (a result, a failure, a cancel) rebuilds it from the group's jobs as the database has them:
- the finished outputs, in the runs' order, in one media gallery;
- the prompt, the details, how many runs are still to come ("⏳ 2 of 4…"), and each run that
  failed with its reason ("Variation 3: ❌ …") or was cancelled;
- a row of Refine buttons and a row of Reroll buttons, one per finished run ("Refine 2" picks
  run 2), and a row of Info buttons (each run's details, privately: "Info 2") with Delete (the
  whole card). They are the results' own ``DynamicItem``s, keyed by the chosen run's job id, so
  they work after a restart.

Each run's output is a file of the card named ``atelier-<job>.<ext>`` (``cogs.delivery.card``).
An edit lists by id the files the card keeps and uploads the new one; Discord drops any file an
edit does not list (https://discord.com/developers/docs/reference#editing-message-attachments).
So two rebuilds must never overlap: one built from a stale list of files would drop the other's
output. The rebuilds of a group take turns through the store's card lock, which serves every
process (``Store.lock_card``). A card that can no longer be edited (its token's 15 minutes, or
a bot message's hour, are over) gets no more runs: a later run's result goes out as its own
card, as a late single result does.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Mapping, Sequence

import discord
from discord import ui

from bot.core.job import Delivered, Job
from bot.core.states import JobState
from bot.engine import JobEngine
from bot.i18n import Text, _nt, _t
from bot.media.images import OutputImage
from bot.ports import Posted
from cogs.core.language import for_job
from cogs.core.text import clip, quote_prompt
from cogs.core.uploads import ImageUpload
from cogs.delivery.buttons import RefineButton
from cogs.delivery.card import ALT_TEXT_MAX, DETAILS_MAX, output_filename
from cogs.delivery.destinations import Delivery
from cogs.delivery.info import InfoButton
from cogs.delivery.results import DeleteButton, RerollButton

log = logging.getLogger(__name__)

# How long a card's rebuild may hold the group's lock (an upload of one result); a holder that died
# gives it up after this.
CARD_LOCK_SECONDS = 120.0
# How often a rebuild waiting for the group's lock asks again.
CARD_LOCK_POLL = 0.2
_OUTPUT_PREFIX = "atelier-"


def output_job_id(filename: str) -> str | None:
    """The job whose output a card's file is (``atelier-<job>.<ext>``), or ``None``."""
    name = filename.removeprefix("SPOILER_")
    if not name.startswith(_OUTPUT_PREFIX):
        return None
    return name.removeprefix(_OUTPUT_PREFIX).split(".", 1)[0] or None


def _failed(number: int, reason: Text) -> Text:
    # Translators: a failed run of a request for variations, e.g. "Variation 3: ❌ The image service refused…".
    return _t("Variation {number}: ❌ {reason}", number=number, reason=reason)


def _cancelled(number: int) -> Text:
    return _t("Variation {number}: 🚫 cancelled; nothing was charged.", number=number)


def _still_to_come(count: int, total: int) -> Text:
    # Translators: runs of a request for variations that have not finished yet, e.g. "⏳ 2 of 4 still to come…".
    return _nt("⏳ {count} of {total} still to come…", "⏳ {count} of {total} still to come…", count, total=total)


def group_lines(runs: Sequence[Job], shown: Mapping[str, str], reasons: Mapping[str, Text]) -> list[Text]:
    """What the card says of its runs: the failed and cancelled ones, and how many are still to come."""
    lines: list[Text] = []
    waiting = 0
    for run in runs:
        if run.id in shown:
            continue
        if run.state is JobState.FAILED:
            lines.append(_failed(run.request.variant, reasons.get(run.id, _t("This edit could not be finished."))))
        elif run.state is JobState.CANCELLED:
            lines.append(_cancelled(run.request.variant))
        elif not run.state.terminal:
            waiting += 1
    if waiting:
        lines.append(_still_to_come(waiting, len(runs)))
    return lines


class GroupCard(ui.LayoutView):
    """A group's card (see the module's docstring): ``shown`` maps each finished run's job id to its file."""

    def __init__(self, runs: Sequence[Job], shown: Mapping[str, str], reasons: Mapping[str, Text]) -> None:
        super().__init__(timeout=None)
        first = runs[0]
        language = first.request.language
        spoiler = first.request.spoiler
        card: ui.Container[ui.LayoutView] = ui.Container()
        finished = [run for run in runs if run.id in shown]
        if finished:
            gallery: ui.MediaGallery[ui.LayoutView] = ui.MediaGallery()
            for run in finished:
                gallery.add_item(
                    media=f"attachment://{shown[run.id]}",
                    description=clip(f"{run.request.variant}. {' '.join(run.request.prompt.split())}", ALT_TEXT_MAX),
                    spoiler=spoiler,
                )
            card.add_item(gallery)
        card.add_item(ui.TextDisplay(quote_prompt(first.request.prompt)))
        card.add_item(ui.TextDisplay(clip(self._details(first, runs, shown, reasons), DETAILS_MAX)))
        if finished:
            # Midjourney's U and V rows: pick a run to build on.
            refine: ui.ActionRow[ui.LayoutView] = ui.ActionRow()
            reroll: ui.ActionRow[ui.LayoutView] = ui.ActionRow()
            for run in finished:
                number = run.request.variant
                refine.add_item(RefineButton(run.id, language, number=number))
                reroll.add_item(RerollButton(run.id, language, number=number))
            card.add_item(refine)
            card.add_item(reroll)
        # Each finished run's details, and Delete for the whole card (at most four runs: five buttons, a row's most).
        last = ui.ActionRow[ui.LayoutView]()
        for run in finished:
            last.add_item(InfoButton(run.id, language, number=run.request.variant))
        last.add_item(DeleteButton(first.id, language))
        card.add_item(last)
        self.add_item(card)

    @staticmethod
    def _details(first: Job, runs: Sequence[Job], shown: Mapping[str, str], reasons: Mapping[str, Text]) -> str:
        request = first.request
        count = _nt("🎲 {count} variation", "🎲 {count} variations", len(runs))
        parts = [for_job(first, count), f"<@{request.user_id}>"]
        if request.size is not None:
            parts.append(request.size)
        if request.style:
            parts.append(f"🎨 {request.style}")
        if first.model:
            parts.append(first.model)
        lines = ["-# " + " · ".join(parts)]
        lines += [f"-# {for_job(first, line)}" for line in group_lines(runs, shown, reasons)]
        return "\n".join(lines)


class _CardUnread(Exception):
    """The database failed a card's turn, or the reading of its runs: the card is not touched (a result then goes
    on its own; a run's end is told again later by the outbox)."""


class GroupCards:
    """Rebuilds groups' cards, one rebuild of a group at a time across every process."""

    def __init__(self, bot: discord.Client, engine: JobEngine) -> None:
        self.bot = bot
        self.engine = engine

    @contextlib.asynccontextmanager
    async def _turn(self, group_id: str) -> AsyncIterator[None]:
        try:
            holder = await self.engine.lock_card(group_id, CARD_LOCK_SECONDS)
            while holder is None:
                await asyncio.sleep(CARD_LOCK_POLL)
                holder = await self.engine.lock_card(group_id, CARD_LOCK_SECONDS)
        except Exception as exc:  # the database failed the lock: nothing of the card is touched
            raise _CardUnread(type(exc).__name__) from exc
        try:
            yield
        finally:
            try:
                await asyncio.shield(self.engine.unlock_card(group_id, holder))
            except Exception as exc:  # the card is rebuilt already; the lock lapses by itself
                log.warning("could not unlock group %s's card (%s); its lock lapses within %.0f s", group_id,
                            type(exc).__name__, CARD_LOCK_SECONDS)  # fmt: skip

    async def publish(self, job: Job, delivery: Delivery, image: OutputImage) -> Posted | None:
        """Add ``job``'s output to its group's card; ``None`` if the card can no longer be edited, or if the
        database fails the card's turn or the reading of its runs (the result then goes on its own: it was paid
        for, and an error here would fail it).

        Raises ``discord.HTTPException`` when Discord refuses the edit.
        """
        assert job.request.group_id is not None
        new = output_filename(job, image)
        try:
            async with self._turn(job.request.group_id):
                ids = await self._rebuild(
                    job.request.group_id, delivery, {job.id: new}, [(new, image.data)], fall_back=True
                )
        except _CardUnread as unread:
            log.warning("job=%s: its group's card could not be read (%s); its result goes on its own", job.id,
                        unread)  # fmt: skip
            return None
        if ids is None:
            return None
        return Posted(*ids, Delivered.PRIVATE if delivery.private else Delivered.POSTED)

    async def refresh(self, job: Job, delivery: Delivery) -> bool:
        """Show a run's end (failed, cancelled) on its group's card; ``False`` if the card can no longer be edited.

        Raises ``discord.HTTPException`` when Discord refuses the edit (the outbox tries again).
        """
        assert job.request.group_id is not None
        async with self._turn(job.request.group_id):
            return await self._rebuild(job.request.group_id, delivery, {}, []) is not None

    async def _rebuild(
        self,
        group_id: str,
        delivery: Delivery,
        adding: Mapping[str, str],
        files: Sequence[tuple[str, bytes]],
        *,
        fall_back: bool = False,
    ) -> tuple[int, int] | None:
        """The card rebuilt with ``adding``'s outputs; ``None`` if it can no longer be edited. ``fall_back``: a
        database error reading the group raises ``_CardUnread`` (the card is not touched)."""
        attachments = await delivery.attachments()
        if attachments is None:
            return None
        try:
            runs = await self.engine.group(group_id)
            reasons = await self.engine.group_failures(group_id) if runs else {}
        except Exception as exc:
            if fall_back:
                raise _CardUnread(type(exc).__name__) from exc
            raise
        if not runs:
            return None
        ids = {run.id for run in runs}
        kept = [a for a in attachments if output_job_id(a.filename) in ids and output_job_id(a.filename) not in adding]
        shown = {str(output_job_id(a.filename)): a.filename.removeprefix("SPOILER_") for a in kept} | dict(adding)
        view = GroupCard(runs, shown, reasons)
        uploads = [discord.File(ImageUpload(data), filename=name) for name, data in files]
        return await delivery.card(view, uploads, kept)
