"""``/history``: a member's last jobs in this server, privately, 10 per page.

Each entry shows the instruction (shortened, mentions neutralised), the size, the
outcome, when, the cost and a jump link. Previous/next buttons turn the page, and a
select offers Refine (while the result message exists) or Reroll (while its inputs are
kept) of one entry. The buttons and the select are ``DynamicItem``s carrying the
member's id and the page, so they work after a restart; anyone else is refused.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any

import discord
from discord import app_commands, ui
from discord.ext import commands

from bot.core.job import Delivered, Job, Origin
from bot.core.money import format_price
from bot.core.records import HistoryEntry
from bot.core.states import JobState
from bot.errors import AtelierError
from bot.i18n import Text, _pt, _t
from cogs.core.answers import before_form, in_time, reply, update
from cogs.core.custom_ids import (
    HISTORY_PAGE_TEMPLATE,
    HISTORY_PICK_TEMPLATE,
    RefineModalId,
    history_page_id,
    history_pick_id,
)
from cogs.core.errors import AtelierView, guarded
from cogs.core.host import client_of
from cogs.core.language import _desc, _name, language_of, render
from cogs.core.requests import requester
from cogs.core.text import clip, message_link
from cogs.delivery.acknowledge import describe_size
from cogs.delivery.buttons import open_refine_form
from cogs.delivery.results import InChannel, InPlace, start_reroll

if TYPE_CHECKING:
    from cogs.core.host import AtelierClient

PER_PAGE = 10
_ORIGIN_MARK = {Origin.REFINE: "🪄 ", Origin.REROLL: "🔁 ", Origin.MESSAGE: "💬 ", Origin.COMMAND: ""}
_KIND_MARK = {"imagine": "✨ "}
_UNFINISHED = _t("⏳ in progress")
NOT_YOURS = _t("These are another member's edits; use `/history` to see yours.")


def outcome(entry: HistoryEntry) -> Text:
    """How a job ended, in a few words."""
    job = entry.job
    if job.state is JobState.FAILED:
        return _t("❌ failed · refunded")
    if job.state is JobState.CANCELLED:
        return _t("🚫 cancelled · refunded")
    if job.state is not JobState.SUCCEEDED:
        return _UNFINISHED
    if entry.result_deleted:
        return _t("🗑️ deleted")
    return {
        Delivered.PRIVATE: _t("✅ 🔒 private"),
        Delivered.DIRECT_MESSAGE: _t("✅ 🔒 sent by DM"),
        Delivered.UNDELIVERED: _t("📭 made, not delivered (your DMs were closed)"),
    }.get(job.delivered or Delivered.POSTED, _t("✅"))


def result_link(entry: HistoryEntry) -> str | None:
    """A link to the result message a member can follow (not a private answer, which has none)."""
    job = entry.job
    if entry.result_deleted or job.result_channel_id is None or not job.result_message_id:
        return None
    if job.delivered not in (Delivered.POSTED, Delivered.DIRECT_MESSAGE):
        return None
    guild = None if job.delivered is Delivered.DIRECT_MESSAGE else job.guild_id
    return message_link(guild, job.result_channel_id, job.result_message_id)


def entry_line(number: int, entry: HistoryEntry, language: str | None) -> str:
    job = entry.job
    request = job.request
    prompt = discord.utils.escape_markdown(discord.utils.escape_mentions(clip(" ".join(request.prompt.split()), 80)))
    style = f" · 🎨 {request.style}" if request.style else ""
    refunded = job.state in (JobState.FAILED, JobState.CANCELLED)
    cost = render(_t("refunded"), language) if refunded else f"${format_price(entry.cost)}"
    link = result_link(entry)
    # Translators: the link to a result message from /history.
    jump_word = render(_t("jump"), language)
    jump = f" · [{jump_word}]({link})" if link else ""
    details = f"{render(outcome(entry), language)} · {render(describe_size(request.size), language)}"
    return (
        f"**{number}.** {_ORIGIN_MARK[request.origin]}{_KIND_MARK.get(request.kind, '')}{prompt}\n"
        f"-# {details}{style} · <t:{int(job.created_at)}:R> · {cost}{jump}"
    )


def can_refine(entry: HistoryEntry) -> bool:
    return result_link(entry) is not None


async def page_message(
    bot: AtelierClient, user_id: int, page: int, entries: list[HistoryEntry], more: bool, language: str | None
) -> dict[str, Any]:
    """The content, embed and components of one page (``send_message``/``edit_message`` keywords)."""
    first = page * PER_PAGE + 1
    if entries:
        lines = [entry_line(first + n, entry, language) for n, entry in enumerate(entries)]
        description = "\n".join(lines)
    else:
        empty = _t("Nothing yet: your edits here will be listed, newest first.") if page == 0 else _t("No older edits.")
        description = render(empty, language)
    embed = discord.Embed(title=render(_t("🕘 Your edits here"), language), description=description)
    footer = _t("Page {page} · newest first · inputs are kept for rerolls a while after each edit", page=page + 1)
    embed.set_footer(text=render(footer, language))
    view = AtelierView(timeout=None)
    view.add_item(HistoryPageButton(user_id, max(page - 1, 0), "p", language, disabled=page == 0))
    view.add_item(HistoryPageButton(user_id, page + 1, "n", language, disabled=not more))
    options = []
    for n, entry in enumerate(entries, start=first):
        name = clip(" ".join(entry.job.request.prompt.split()), 80)
        if can_refine(entry):
            label = render(_t("Refine {number}: {prompt}", number=n, prompt=name), language)
            options.append(discord.SelectOption(label=label[:100], value=f"refine:{entry.job.id}"))
        if entry.job.state is JobState.SUCCEEDED and await bot.engine.inputs_kept(entry.job.id):
            label = render(_t("Reroll {number}: {prompt}", number=n, prompt=name), language)
            options.append(discord.SelectOption(label=label[:100], value=f"reroll:{entry.job.id}"))
    if options:
        view.add_item(HistoryPick(user_id, page, options, language))
    return {"content": None, "embed": embed, "view": view}


async def show_page(
    bot: AtelierClient, user_id: int, guild_id: int | None, page: int, language: str | None
) -> dict[str, Any]:
    entries, more = await bot.engine.history(user_id, guild_id, page, PER_PAGE)
    return await page_message(bot, user_id, page, entries, more, language)


def check_owner(interaction: discord.Interaction, user_id: int) -> None:
    if interaction.user.id != user_id:
        raise AtelierError(NOT_YOURS)


class HistoryPageButton(ui.DynamicItem[ui.Button[ui.View]], template=HISTORY_PAGE_TEMPLATE):
    """Previous or next page of a member's ``/history``."""

    def __init__(
        self, user_id: int, page: int, way: str, language: str | None = None, *, disabled: bool = False
    ) -> None:
        super().__init__(
            ui.Button(
                label=render(_pt("button", "Previous") if way == "p" else _pt("button", "Next"), language),
                emoji="◀️" if way == "p" else "▶️",
                style=discord.ButtonStyle.secondary,
                custom_id=history_page_id(user_id, page, way),
                disabled=disabled,
            )
        )
        self.user_id = user_id
        self.page = page

    @classmethod
    async def from_custom_id(
        cls, interaction: discord.Interaction, item: ui.Item[Any], match: re.Match[str], /
    ) -> HistoryPageButton:
        return cls(int(match["user_id"]), int(match["page"]), match["way"])

    async def callback(self, interaction: discord.Interaction) -> None:
        await guarded(interaction, self.turn(interaction), "a /history button")

    async def turn(self, interaction: discord.Interaction) -> None:
        check_owner(interaction, self.user_id)
        bot = client_of(interaction)
        async with in_time(interaction):
            page = await show_page(bot, self.user_id, interaction.guild_id, self.page, language_of(interaction))
            await update(interaction, **page)


class HistoryPick(ui.DynamicItem[ui.Select[ui.View]], template=HISTORY_PICK_TEMPLATE):
    """The select under a ``/history`` page: Refine or Reroll one of its entries."""

    def __init__(
        self,
        user_id: int,
        page: int,
        options: list[discord.SelectOption] | None = None,
        language: str | None = None,
    ) -> None:
        super().__init__(
            ui.Select(
                custom_id=history_pick_id(user_id, page),
                placeholder=render(_t("Refine or reroll one of these…"), language),
                options=options or [discord.SelectOption(label="-", value="-")],
            )
        )
        self.user_id = user_id

    @classmethod
    async def from_custom_id(
        cls, interaction: discord.Interaction, item: ui.Item[Any], match: re.Match[str], /
    ) -> HistoryPick:
        return cls(int(match["user_id"]), int(match["page"]))

    async def callback(self, interaction: discord.Interaction) -> None:
        await guarded(interaction, self.pick(interaction), "the /history select")

    async def pick(self, interaction: discord.Interaction) -> None:
        check_owner(interaction, self.user_id)
        bot = client_of(interaction)
        action, _, job_id = (self.item.values or [""])[0].partition(":")
        if action == "refine":
            async with before_form():  # the form must be the first answer
                job = await bot.engine.result_for(job_id, interaction.user.id)
            await refine_entry(interaction, job)
        elif action == "reroll":
            async with in_time(interaction):  # the list is left as it is; the reroll's answer follows it
                await reroll_entry(interaction, await bot.engine.result_for(job_id, interaction.user.id))


async def refine_entry(interaction: discord.Interaction, job: Job) -> None:
    """The Refine form for a listed result; its submission refetches the result message."""
    if (
        job.result_channel_id is None
        or not job.result_message_id
        or job.delivered
        not in (
            Delivered.POSTED,
            Delivered.DIRECT_MESSAGE,
        )
    ):
        raise AtelierError(_t("That result can't be refined from here: its message is not one I can read."))
    await open_refine_form(interaction, RefineModalId(job.result_channel_id, job.result_message_id, job.id))


async def reroll_entry(interaction: discord.Interaction, job: Job) -> None:
    """Reroll a listed result: where the result is, or privately here when it was private."""
    bot = client_of(interaction)
    if job.request.private or job.result_channel_id is None or job.delivered is not Delivered.POSTED:
        await start_reroll(interaction, job, requester(interaction), InPlace(interaction))
        return
    channel = bot.get_channel(job.result_channel_id) or bot.get_partial_messageable(
        job.result_channel_id, guild_id=job.guild_id
    )
    assert isinstance(channel, discord.abc.Messageable)
    await start_reroll(interaction, job, requester(interaction, channel), InChannel(interaction, channel))


class HistoryCog(commands.Cog):
    """The /history command."""

    def __init__(self, bot: AtelierClient) -> None:
        self.bot = bot

    @app_commands.command(
        name=_name("command name", "history"), description=_desc("Your last edits here, to look back, refine or reroll")
    )
    async def history(self, interaction: discord.Interaction) -> None:
        async with in_time(interaction):
            page = await show_page(self.bot, interaction.user.id, interaction.guild_id, 0, language_of(interaction))
            await reply(interaction, ephemeral=True, **page)


async def setup(bot: AtelierClient) -> None:
    """Load the history cog and its persistent components."""
    bot.add_dynamic_items(HistoryPageButton, HistoryPick)
    await bot.add_cog(HistoryCog(bot))
