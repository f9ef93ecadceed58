"""Persistent components: the Refine button and modal, and the Cancel button.

Both buttons are ``DynamicItem``s matched by custom_id, so they keep working on
old messages after a restart. The modal is only rendered here; its submissions
are routed by custom_id in ``cogs.edit`` (discord.py keeps modals in memory only).
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any

import discord
from discord import ui

from bot.errors import InputError
from bot.sizes import AUTO, AUTO_LABEL, COMMON_SIZES
from cogs.custom_ids import (
    CANCEL_BUTTON_TEMPLATE,
    REFINE_BUTTON_TEMPLATE,
    REFINE_PROMPT_FIELD,
    REFINE_SIZE_FIELD,
    RefineModalId,
    cancel_button_id,
    refine_button_id,
)
from cogs.errors import AtelierView, guarded

if TYPE_CHECKING:
    from cogs.client import AtelierBot

PROMPT_MAX = 4000


def first_image(message: discord.Message) -> discord.Attachment | None:
    """The image attached to a result message, if it still has one."""
    for attachment in message.attachments:
        if (attachment.content_type or "").startswith("image/") or attachment.filename.lower().endswith(
            (".png", ".jpg", ".jpeg", ".webp")
        ):
            return attachment
    return None


class RefineModal(ui.Modal, title="Refine this image"):
    """Asks what to change and the output size."""

    prompt: ui.Label[RefineModal] = ui.Label(
        text="What should change?",
        description="This image becomes image1; you can refer to it by that name.",
        component=ui.TextInput(
            custom_id=REFINE_PROMPT_FIELD,
            style=discord.TextStyle.paragraph,
            placeholder="e.g. make the sky stormy and add a lighthouse",
            max_length=PROMPT_MAX,
            required=True,
        ),
    )
    size: ui.Label[RefineModal] = ui.Label(
        text="Output size",
        description="auto keeps this image's aspect ratio",
        component=ui.Select(
            custom_id=REFINE_SIZE_FIELD,
            required=False,
            options=[discord.SelectOption(label=AUTO_LABEL[:100], value=AUTO, default=True)]
            + [discord.SelectOption(label=s.label, value=s.value) for s in COMMON_SIZES],
        ),
    )

    def __init__(self, ids: RefineModalId) -> None:
        super().__init__(custom_id=ids.encode(), timeout=None)


class RefineButton(ui.DynamicItem[ui.Button[ui.View]], template=REFINE_BUTTON_TEMPLATE):
    """The Refine button under every result."""

    def __init__(self, job_id: str) -> None:
        super().__init__(
            ui.Button(
                label="Refine",
                emoji="🪄",
                style=discord.ButtonStyle.primary,
                custom_id=refine_button_id(job_id),
            )
        )
        self.job_id = job_id

    @classmethod
    async def from_custom_id(
        cls, interaction: discord.Interaction, item: ui.Item[Any], match: re.Match[str], /
    ) -> RefineButton:
        return cls(match["job_id"])

    async def callback(self, interaction: discord.Interaction) -> None:
        await guarded(interaction, self.open_form(interaction), "the Refine button")

    async def open_form(self, interaction: discord.Interaction) -> None:
        message = interaction.message
        if message is None or first_image(message) is None:
            raise InputError("This message has no image to refine any more.")
        modal = RefineModal(RefineModalId(message.channel.id, message.id, self.job_id))
        await interaction.response.send_modal(modal)
        # Submissions are routed by custom_id, the same way before and after a restart,
        # so discord.py need not keep this modal in memory.
        modal.stop()


class CancelButton(ui.DynamicItem[ui.Button[ui.View]], template=CANCEL_BUTTON_TEMPLATE):
    """Withdraws a queued job; for its requester or a moderator."""

    def __init__(self, job_id: str) -> None:
        super().__init__(
            ui.Button(label="Cancel", style=discord.ButtonStyle.secondary, custom_id=cancel_button_id(job_id))
        )
        self.job_id = job_id

    @classmethod
    async def from_custom_id(
        cls, interaction: discord.Interaction, item: ui.Item[Any], match: re.Match[str], /
    ) -> CancelButton:
        return cls(match["job_id"])

    async def callback(self, interaction: discord.Interaction) -> None:
        await guarded(interaction, self.cancel(interaction), "the Cancel button")

    async def cancel(self, interaction: discord.Interaction) -> None:
        bot: AtelierBot = interaction.client  # type: ignore[assignment]
        permissions = interaction.permissions
        is_moderator = permissions.manage_messages or permissions.manage_guild
        job = await bot.engine.cancel(self.job_id, interaction.user.id, is_moderator)
        who = "" if job.user_id == interaction.user.id else f" by {interaction.user.mention}"
        await interaction.response.edit_message(
            content=f"🚫 Edit cancelled{who}; nothing was charged.", view=None, attachments=[]
        )


def result_view(job_id: str) -> ui.View:
    """The components under a result: its Refine button."""
    view = AtelierView(timeout=None)
    view.add_item(RefineButton(job_id))
    return view


def cancel_view(job_id: str) -> ui.View:
    """The components under a waiting job's status: its Cancel button."""
    view = AtelierView(timeout=None)
    view.add_item(CancelButton(job_id))
    return view
