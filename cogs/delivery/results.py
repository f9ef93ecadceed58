"""The buttons under every result: 🪄 Refine (``cogs.delivery.buttons``), 🔁 Reroll, 🎲 Variations, 🖌️ Edit
region where the server's model takes a mask (``cogs.delivery.region``), then ℹ️ Info (``cogs.delivery.info``) and
🗑 Delete in a second row.

- Reroll sends the result's kept inputs, instruction, style and size again as a new
  job (``JobEngine.reroll``: the same admission, limits and money as any edit). Its
  status answers the click where the result is, privately when the result is private.
  When the inputs are no longer kept, the member is told privately and offered Refine.
- Variations runs the result's request again four times at one click, as Midjourney's V buttons
  do: four ordinary jobs of one group, each charged as one edit, whose card fills as they finish
  (``cogs.delivery.group``). Four, not a form first: the member who wants fewer asks ``/edit`` or
  ``/imagine`` with ``variations``, and a limit that allows fewer runs says so before any is charged.
- Delete removes the result message, for its requester or a member with Manage
  Messages; the ledger keeps the job.

All are ``DynamicItem``s, so they work on old results after a restart.
"""

from __future__ import annotations

import logging
import re
from typing import TYPE_CHECKING, Any

import discord
from discord import ui

from bot.core.job import MOST_VARIANTS, Destination, Job
from bot.errors import InputsGoneError
from bot.i18n import Text, _pt, _t
from bot.servers.limits import Requester
from cogs.core.answers import acknowledge, in_time, reply, within
from cogs.core.custom_ids import (
    DELETE_BUTTON_TEMPLATE,
    REROLL_BUTTON_TEMPLATE,
    VARIATIONS_BUTTON_TEMPLATE,
    delete_button_id,
    reroll_button_id,
    variations_button_id,
)
from cogs.core.errors import error_text, guarded
from cogs.core.host import client_of
from cogs.core.language import language_of, render
from cogs.core.requests import requester
from cogs.delivery.acknowledge import answer_in_place, post_status, private_note
from cogs.delivery.buttons import RefineButton, RefineFromButton, numbered, refine_from_view
from cogs.delivery.info import InfoButton
from cogs.delivery.region import RegionButton

if TYPE_CHECKING:
    from cogs.core.host import AtelierClient

log = logging.getLogger(__name__)

REROLL_STATUS = _t("🔁 Rerolling: the same images, instruction and size again…")
VARIATIONS_STATUS = _t("🎲 Making variations: the same images, instruction and size, several times…")


class InPlace:
    """A reroll answered where it was asked: the click's answer is its status, then its result."""

    def __init__(self, interaction: discord.Interaction, state: Text = REROLL_STATUS) -> None:
        self.interaction = interaction
        self.state = state

    async def announce(self, job: Job, note: Text | None = None) -> Destination:
        return await answer_in_place(self.interaction, job, self.state, note)


class InChannel:
    """A reroll asked from elsewhere (``/history``): its status goes where the rerolled result is."""

    def __init__(self, interaction: discord.Interaction, channel: discord.abc.Messageable) -> None:
        self.interaction = interaction
        self.channel = channel

    async def announce(self, job: Job, note: Text | None = None) -> Destination:
        answered = await private_note(self.interaction, _t("🔁 Starting your reroll…"))
        return await post_status(
            self.interaction, job, self.channel, REROLL_STATUS, _t("🔁 Rerolling in"), note=note, answered=answered
        )


async def start_reroll(
    interaction: discord.Interaction, parent: Job, who: Requester, announcer: InPlace | InChannel, variants: int = 1
) -> None:
    """Reroll ``parent`` for ``who`` (``variants`` times, as variations); when its originals are gone, say so
    privately and offer Refine."""
    bot = client_of(interaction)
    try:
        await bot.engine.reroll(parent, who, announcer, variants)
    except InputsGoneError as gone:
        view = discord.utils.MISSING
        language = language_of(interaction)
        if parent.result_channel_id and parent.result_message_id:
            view = refine_from_view(parent.result_channel_id, parent.result_message_id, parent.id, language)
        text = error_text(gone, language)
        await reply(interaction, text, ephemeral=True, view=view)


class RerollButton(ui.DynamicItem[ui.Button[ui.View]], template=REROLL_BUTTON_TEMPLATE):
    """🔁 Reroll under every result: the same inputs, instruction and size again, charged like any edit."""

    def __init__(self, job_id: str, language: str | None = None, *, number: int | None = None) -> None:
        super().__init__(
            ui.Button(
                label=numbered(render(_pt("button", "Reroll"), language), number),
                emoji="🔁",
                style=discord.ButtonStyle.secondary,
                custom_id=reroll_button_id(job_id),
            )
        )
        self.job_id = job_id

    @classmethod
    async def from_custom_id(
        cls, interaction: discord.Interaction, item: ui.Item[Any], match: re.Match[str], /
    ) -> RerollButton:
        return cls(match["job_id"])

    async def callback(self, interaction: discord.Interaction) -> None:
        await guarded(interaction, within(interaction, self.reroll(interaction)), "the Reroll button")

    async def reroll(self, interaction: discord.Interaction) -> None:
        bot = client_of(interaction)
        parent = await bot.engine.result_for(self.job_id, interaction.user.id)
        # The click's answer goes where the clicked result is: its channel, or its thread.
        await start_reroll(interaction, parent, requester(interaction), InPlace(interaction))


class VariationsButton(ui.DynamicItem[ui.Button[ui.View]], template=VARIATIONS_BUTTON_TEMPLATE):
    """🎲 Variations under every result: its request again, ``MOST_VARIANTS`` runs on one card, each one edit."""

    def __init__(self, job_id: str, language: str | None = None) -> None:
        super().__init__(
            ui.Button(
                label=render(_pt("button", "Variations"), language),
                emoji="🎲",
                style=discord.ButtonStyle.secondary,
                custom_id=variations_button_id(job_id),
            )
        )
        self.job_id = job_id

    @classmethod
    async def from_custom_id(
        cls, interaction: discord.Interaction, item: ui.Item[Any], match: re.Match[str], /
    ) -> VariationsButton:
        return cls(match["job_id"])

    async def callback(self, interaction: discord.Interaction) -> None:
        await guarded(interaction, within(interaction, self.vary(interaction)), "the Variations button")

    async def vary(self, interaction: discord.Interaction) -> None:
        bot = client_of(interaction)
        parent = await bot.engine.result_for(self.job_id, interaction.user.id)
        announcer = InPlace(interaction, VARIATIONS_STATUS)
        await start_reroll(interaction, parent, requester(interaction), announcer, MOST_VARIANTS)


class DeleteButton(ui.DynamicItem[ui.Button[ui.View]], template=DELETE_BUTTON_TEMPLATE):
    """🗑 Delete under every result: removes that message only, for its requester or a moderator."""

    def __init__(self, job_id: str, language: str | None = None) -> None:
        super().__init__(
            ui.Button(
                label=render(_pt("button", "Delete"), language),
                emoji="🗑️",
                style=discord.ButtonStyle.danger,
                custom_id=delete_button_id(job_id),
            )
        )
        self.job_id = job_id

    @classmethod
    async def from_custom_id(
        cls, interaction: discord.Interaction, item: ui.Item[Any], match: re.Match[str], /
    ) -> DeleteButton:
        return cls(match["job_id"])

    async def callback(self, interaction: discord.Interaction) -> None:
        await guarded(interaction, self.delete(interaction), "the Delete button")

    async def delete(self, interaction: discord.Interaction) -> None:
        bot = client_of(interaction)
        is_moderator = interaction.guild_id is not None and interaction.permissions.manage_messages
        async with in_time(interaction):
            job = await bot.engine.deletable(self.job_id, interaction.user.id, is_moderator)
            # Through the click's own token: it reaches the clicked message wherever it is, a private one included.
            await acknowledge(interaction)
        try:
            await interaction.delete_original_response()
        except discord.NotFound:
            log.info("job=%s result was already gone when its Delete button was clicked", job.id)
        await bot.engine.result_deleted(job, interaction.user.id)


def result_buttons(
    job_id: str, language: str | None, *, by_direct_message: bool = False, region: bool = False
) -> list[list[ui.Item[Any]]]:
    """The buttons under a result, in its member's language, row by row as they show: what builds on it (Refine,
    Reroll, Variations, and Edit region when ``region``: the server's model takes a mask), then Info and Delete
    (Discord takes at most five buttons in a row). One sent by direct message has Info and Delete only: a job
    started from a DM would fall outside the server's limits, so its member refines or rerolls it from
    ``/history``."""
    build: list[ui.Item[Any]] = []
    if not by_direct_message:
        build += [RefineButton(job_id, language), RerollButton(job_id, language), VariationsButton(job_id, language)]
        if region:
            build.append(RegionButton(job_id, language))
    return [build, [InfoButton(job_id, language), DeleteButton(job_id, language)]]


async def setup(bot: AtelierClient) -> None:
    """Register the result buttons (Refine's form is routed in ``cogs.members.refine``)."""
    bot.add_dynamic_items(RerollButton, VariationsButton, DeleteButton, InfoButton, RefineFromButton)
