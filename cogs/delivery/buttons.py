"""Persistent components: the Refine button and form, Refine offered away from a result, the Cancel button.

The buttons are ``DynamicItem``s matched by custom_id, so they keep working on
old messages after a restart. The form is only rendered here; its submissions
are routed by custom_id in ``cogs.members.refine`` (discord.py keeps modals in memory only).
The form's fields (instruction, added images, size, style, options) are shared with the "Edit
images" and region forms; a form holds at most Discord's five fields, so the options ("only me",
"spoiler", and the server's model's: ``cogs.core.model_options``) are one checkbox group.
"""

from __future__ import annotations

import re
from collections.abc import Sequence, Set
from typing import Any

import discord
from discord import ui

from bot.core.overrides import PrivateResults
from bot.core.records import StylePreset
from bot.core.sizes import AUTO, AUTO_LABEL, COMMON_SIZES
from bot.errors import InputError
from bot.i18n import Text, _nt, _pt, _t
from cogs.core.answers import before_form, in_time, update
from cogs.core.attachments import MAX_IMAGES
from cogs.core.custom_ids import (
    CANCEL_BUTTON_TEMPLATE,
    CANCEL_GROUP_TEMPLATE,
    IMAGES_FIELD,
    ONLY_ME_OPTION,
    OPTIONS_FIELD,
    REFINE_BUTTON_TEMPLATE,
    REFINE_FROM_TEMPLATE,
    REFINE_PROMPT_FIELD,
    REFINE_SIZE_FIELD,
    SPOILER_OPTION,
    STYLE_FIELD,
    RefineModalId,
    cancel_button_id,
    cancel_group_id,
    refine_button_id,
    refine_from_id,
)
from cogs.core.errors import AtelierView, guarded
from cogs.core.host import client_of
from cogs.core.language import language_of, render
from cogs.core.model_options import form_choices, form_defaults

PROMPT_MAX = 4000
# Discord refuses a form whose title or field label is longer (a long translation is cut, not refused).
FORM_TEXT_MAX = 45
REFINE_LABEL = _pt("button", "Refine")
CHOICES_MAX = 10  # a checkbox group's most


_IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp")


def _is_image(attachment: discord.Attachment) -> bool:
    return (attachment.content_type or "").startswith("image/") or attachment.filename.lower().endswith(_IMAGE_SUFFIXES)


def first_image(message: discord.Message, job_id: str | None = None) -> discord.Attachment | None:
    """The result image on a result message, if it still has one (``job_id``'s, on a group's card).

    A result's card also carries small copies of its inputs: the output is the file named
    ``atelier-<job>.<ext>`` (``cogs.delivery.card``), shown or not as a spoiler. A group's card
    carries one such file per finished run: the one of ``job_id`` is picked. A message without
    one (a result posted before the card) gives its first image.
    """
    images = [attachment for attachment in message.attachments if _is_image(attachment)]
    if job_id is not None:
        for attachment in images:
            if attachment.filename.removeprefix("SPOILER_").startswith(f"atelier-{job_id}."):
                return attachment
    for attachment in images:
        if attachment.filename.removeprefix("SPOILER_").startswith("atelier-"):
            return attachment
    return images[0] if images else None


def numbered(label: str, number: int | None) -> str:
    """A button's label, with the run of a group's card it picks ("Refine 2"), if any."""
    return label if number is None else f"{label} {number}"


def size_select(language: str | None) -> ui.Select[Any]:
    """The size field of a form: auto, then the most useful sizes (a select holds at most 25)."""
    return ui.Select(
        custom_id=REFINE_SIZE_FIELD,
        required=False,
        options=[discord.SelectOption(label=render(AUTO_LABEL, language)[:100], value=AUTO, default=True)]
        + [discord.SelectOption(label=s.label, value=s.value) for s in COMMON_SIZES],
    )


def prompt_field(label: Text, description: Text, example: Text, language: str | None) -> ui.Label[Any]:
    """The instruction field of a form (Refine, Edit images)."""
    return ui.Label(
        text=render(label, language)[:FORM_TEXT_MAX],
        description=render(description, language)[:100],
        component=ui.TextInput(
            custom_id=REFINE_PROMPT_FIELD,
            style=discord.TextStyle.paragraph,
            placeholder=render(example, language)[:100],
            max_length=PROMPT_MAX,
            required=True,
        ),
    )


def size_field(description: Text, language: str | None) -> ui.Label[Any]:
    """The size field of a form, labelled."""
    return ui.Label(
        text=render(_t("Output size"), language)[:FORM_TEXT_MAX],
        description=render(description, language)[:100],
        component=size_select(language),
    )


def style_field(presets: Sequence[StylePreset], language: str | None) -> ui.Label[Any] | None:
    """The optional style field of a form: the server's presets (none chosen = no style)."""
    if not presets:
        return None
    return ui.Label(
        text=render(_t("Style (optional)"), language)[:FORM_TEXT_MAX],
        description=render(_t("A style this server set up, added to your instruction"), language),
        component=ui.Select(
            custom_id=STYLE_FIELD,
            required=False,
            placeholder=render(_t("No style"), language),
            options=[discord.SelectOption(label=p.name, value=p.name, description=p.text[:100]) for p in presets],
        ),
    )


def images_field(first: int, most: int, language: str | None) -> ui.Label[Any] | None:
    """The optional "Add images" field of a form: up to ``most`` files, image{first}… in the order they are added.

    ``None`` when no image may be added (Discord takes 1 to 10 as a file upload's most).
    """
    if most < 1:
        return None
    description = (
        _t("Optional: it becomes image{first}", first=first)
        if most == 1
        # Translators: {first} and {last} are image numbers, e.g. image2 to image10.
        else _t("Optional: image{first} to image{last}, in the order you add them", first=first, last=first + most - 1)
    )
    return ui.Label(
        text=render(_t("Add images"), language)[:FORM_TEXT_MAX],
        description=render(description, language)[:100],
        component=ui.FileUpload(custom_id=IMAGES_FIELD, required=False, min_values=0, max_values=most),
    )


def options_field(
    *,
    only_me: bool,
    spoiler: bool,
    language: str | None,
    model: Sequence[tuple[str, Text]] = (),
    ticked: Set[str] = frozenset(),
) -> ui.Label[Any]:
    """The form's options, ticked or not: "only me" (offered where the server lets members choose), "spoiler",
    and the server's model's options (``model``: ``cogs.core.model_options.form_choices``), those in ``ticked``
    shown ticked.

    One checkbox group, so the form keeps within Discord's five fields however many options it has. A group holds
    ten choices: with the shipped catalog the most is nine; a catalog with more values loses the last ones here
    (the slash commands still offer them).
    """
    options = []
    if only_me:
        options.append(
            discord.CheckboxGroupOption(
                label=render(_t("Only me"), language)[:100],
                value=ONLY_ME_OPTION,
                description=render(_t("Only you see the progress and the result"), language)[:100],
            )
        )
    options.append(
        discord.CheckboxGroupOption(
            label=render(_t("Spoiler"), language)[:100],
            value=SPOILER_OPTION,
            description=render(_t("The result and its images stay hidden until clicked"), language)[:100],
            default=spoiler,
        )
    )
    for value, label in model[: CHOICES_MAX - len(options)]:
        options.append(
            discord.CheckboxGroupOption(label=render(label, language)[:100], value=value, default=value in ticked)
        )
    return ui.Label(
        text=render(_t("Options"), language)[:FORM_TEXT_MAX],
        component=ui.CheckboxGroup(
            custom_id=OPTIONS_FIELD, required=False, min_values=0, max_values=len(options), options=options
        ),
    )


class RefineModal(ui.Modal):
    """Asks what to change, images to add, the output size, a style (if the server has any) and the options.

    Everything in it is in ``language``, the language of the member who opens it.
    """

    def __init__(
        self,
        ids: RefineModalId,
        language: str | None,
        presets: Sequence[StylePreset] = (),
        *,
        only_me: bool = False,
        spoiler: bool = False,
        model: Sequence[tuple[str, Text]] = (),
        ticked: Set[str] = frozenset(),
    ) -> None:
        super().__init__(
            title=render(_t("Refine this image"), language)[:FORM_TEXT_MAX], custom_id=ids.encode(), timeout=None
        )
        self.add_item(
            prompt_field(
                _t("What should change?"),
                _t("This image becomes image1; you can refer to it by that name."),
                _t("e.g. make the sky stormy and add a lighthouse"),
                language,
            )
        )
        images = images_field(2, MAX_IMAGES - 1, language)
        if images is not None:
            self.add_item(images)
        self.add_item(size_field(_t("auto keeps this image's aspect ratio"), language))
        style = style_field(presets, language)
        if style is not None:
            self.add_item(style)
        self.add_item(options_field(only_me=only_me, spoiler=spoiler, language=language, model=model, ticked=ticked))


async def open_refine_form(interaction: discord.Interaction, ids: RefineModalId) -> None:
    """Open the Refine form for the result ``ids`` names, if the member may refine it."""
    bot = client_of(interaction)
    async with before_form():
        parent = await bot.engine.result_for(ids.job_id, interaction.user.id)  # a private one: its requester's alone
        limits = await bot.engine.limits_for(interaction.guild_id)
    policy = limits.private_results if limits is not None else PrivateResults.ALLOWED
    modal = RefineModal(
        ids,
        language_of(interaction),
        bot.engine.presets_of(interaction.guild_id),
        # A private result's refinement is private anyway, and so is every result where the server says so.
        only_me=policy is PrivateResults.ALLOWED and not parent.request.private,
        spoiler=parent.request.spoiler,
        # The server's model's options, those the result was made with ticked: a refinement starts from them.
        model=form_choices(bot.engine.model_for(interaction.guild_id)),
        ticked=form_defaults(parent.request.options),
    )
    await interaction.response.send_modal(modal)
    # Submissions are routed by custom_id, the same way before and after a restart,
    # so discord.py need not keep this modal in memory.
    modal.stop()


class RefineButton(ui.DynamicItem[ui.Button[ui.View]], template=REFINE_BUTTON_TEMPLATE):
    """The Refine button under every result (``number``: which run of a group's card it picks, "Refine 2")."""

    def __init__(self, job_id: str, language: str | None = None, *, number: int | None = None) -> None:
        super().__init__(
            ui.Button(
                label=numbered(render(REFINE_LABEL, language), number),
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
        if message is None or first_image(message, self.job_id) is None:
            raise InputError(_t("This message has no image to refine any more."))
        await open_refine_form(interaction, RefineModalId(message.channel.id, message.id, self.job_id))


class RefineFromButton(ui.DynamicItem[ui.Button[ui.View]], template=REFINE_FROM_TEMPLATE):
    """Refine offered away from the result (when a reroll's originals are gone): the result's ids are in it."""

    def __init__(self, channel_id: int, message_id: int, job_id: str, language: str | None = None) -> None:
        super().__init__(
            ui.Button(
                label=render(REFINE_LABEL, language),
                emoji="🪄",
                style=discord.ButtonStyle.primary,
                custom_id=refine_from_id(channel_id, message_id, job_id),
            )
        )
        self.ids = RefineModalId(channel_id, message_id, job_id)

    @classmethod
    async def from_custom_id(
        cls, interaction: discord.Interaction, item: ui.Item[Any], match: re.Match[str], /
    ) -> RefineFromButton:
        return cls(int(match["channel_id"]), int(match["message_id"]), match["job_id"])

    async def callback(self, interaction: discord.Interaction) -> None:
        await guarded(interaction, open_refine_form(interaction, self.ids), "the Refine button")


class CancelButton(ui.DynamicItem[ui.Button[ui.View]], template=CANCEL_BUTTON_TEMPLATE):
    """Withdraws a queued job; for its requester or a moderator."""

    def __init__(self, job_id: str, language: str | None = None) -> None:
        super().__init__(
            ui.Button(
                label=render(_pt("button", "Cancel"), language),
                style=discord.ButtonStyle.secondary,
                custom_id=cancel_button_id(job_id),
            )
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
        bot = client_of(interaction)
        permissions = interaction.permissions
        is_moderator = permissions.manage_messages or permissions.manage_guild
        async with in_time(interaction):
            job = await bot.engine.cancel(self.job_id, interaction.user.id, is_moderator)
            # The status message is its member's: it stays in their language, whoever cancels it.
            text = (
                _t("🚫 Edit cancelled; nothing was charged.")
                if job.user_id == interaction.user.id
                else _t("🚫 Edit cancelled by {moderator}; nothing was charged.", moderator=interaction.user.mention)
            )
            await update(interaction, content=render(text, job.request.language), view=None, attachments=[])
        await bot.engine.cancel_told(job)  # the member has seen it; else the engine's outbox tells them


class GroupCancelButton(ui.DynamicItem[ui.Button[ui.View]], template=CANCEL_GROUP_TEMPLATE):
    """Withdraws the runs of a request for variations that have not started; for its requester or a moderator."""

    def __init__(self, group_id: str, language: str | None = None) -> None:
        super().__init__(
            ui.Button(
                label=render(_pt("button", "Cancel"), language),
                style=discord.ButtonStyle.secondary,
                custom_id=cancel_group_id(group_id),
            )
        )
        self.group_id = group_id

    @classmethod
    async def from_custom_id(
        cls, interaction: discord.Interaction, item: ui.Item[Any], match: re.Match[str], /
    ) -> GroupCancelButton:
        return cls(match["job_id"])

    async def callback(self, interaction: discord.Interaction) -> None:
        await guarded(interaction, self.cancel(interaction), "the Cancel button of variations")

    async def cancel(self, interaction: discord.Interaction) -> None:
        bot = client_of(interaction)
        permissions = interaction.permissions
        is_moderator = permissions.manage_messages or permissions.manage_guild
        async with in_time(interaction):
            cancelled = await bot.engine.cancel_group(self.group_id, interaction.user.id, is_moderator)
            # The card shows each cancelled run (the outbox rebuilds it at once); the click only drops the button
            # and says, to whoever clicked, how many runs it stopped.
            await update(interaction, view=None)
        words = _nt(
            "🚫 {count} variation cancelled; nothing was charged for it.",
            "🚫 {count} variations cancelled; nothing was charged for them.",
            len(cancelled),
        )
        await interaction.followup.send(render(words, language_of(interaction)), ephemeral=True)


def group_cancel_view(group_id: str, language: str | None) -> ui.View:
    """The components under a waiting request for variations' status: its Cancel button."""
    view = AtelierView(timeout=None)
    view.add_item(GroupCancelButton(group_id, language))
    return view


def refine_from_view(channel_id: int, message_id: int, job_id: str, language: str | None) -> ui.View:
    """A Refine button for a result, to put on another message."""
    view = AtelierView(timeout=None)
    view.add_item(RefineFromButton(channel_id, message_id, job_id, language))
    return view


def cancel_view(job_id: str, language: str | None) -> ui.View:
    """The components under a waiting job's status: its Cancel button."""
    view = AtelierView(timeout=None)
    view.add_item(CancelButton(job_id, language))
    return view
