"""ℹ️ Info under every result: what made it, told privately to whoever asks.

The answer (ephemeral, in the clicker's language) gives the full prompt, the inputs by name
and size, the size, style and model, where the result came from (its parent, that one's
parent…, as links), how long it waited and ran, what it cost, and whether a retry happened.
Anyone who can see a result may ask; a private result's details go to its member only
(``JobEngine.info`` refuses anyone else). A ``DynamicItem``, so it works on old results after
a restart.
"""

from __future__ import annotations

import re
from typing import Any

import discord
from discord import ui

from bot.core.job import InputInfo, Job, Origin
from bot.core.money import format_price
from bot.core.records import JobInfo
from bot.core.sizes import AUTO
from bot.i18n import Text, _nt, _pt, _t
from cogs.core.answers import in_time, reply
from cogs.core.custom_ids import INFO_BUTTON_TEMPLATE, info_button_id
from cogs.core.errors import guarded
from cogs.core.host import client_of
from cogs.core.language import language_of, render
from cogs.core.text import clip, message_link
from cogs.delivery.buttons import numbered

CONTENT_MAX = 2000
PROMPT_MAX = 4096  # an embed's description
STYLE_TEXT_SHOWN = 200


def file_size(size: int) -> str:
    """A file size as it reads in a list: "1.2 MB", "84 KB", "912 B"."""
    if size >= 1_000_000:
        return f"{size / 1_000_000:.1f} MB"
    if size >= 1000:
        return f"{round(size / 1000)} KB"
    return f"{size} B"


def _seconds(value: float) -> Text:
    return _t("{seconds} s", seconds=f"{value:.1f}")


def describe_input(name: str, info: InputInfo) -> str:
    """ "image1 1024×768, 1.2 MB" """
    return f"**{name}** {info.width}×{info.height}, {file_size(info.size)}"


def link_to(job: Job) -> str:
    """A link to a job's posted result, or its id when there is nothing anyone could follow."""
    if job.request.private or job.result_channel_id is None or not job.result_message_id:
        return f"`{job.id}`"
    return message_link(job.guild_id, job.result_channel_id, job.result_message_id)


def chain_line(info: JobInfo, language: str | None) -> Text | None:
    """Where the result came from, nearest first: "🪄 refined from <link> ← <link> ← …"."""
    job = info.job
    if job.request.parent_job_id is None:
        return None
    links = [link_to(parent) for parent in info.parents]
    if info.missing_parent is not None:
        # Translators: a job no longer in the bot's records, by its id.
        links.append(render(_t("`{job}` (no longer recorded)", job=info.missing_parent), language))
    chain = " ← ".join(links) or f"`{job.request.parent_job_id}`"
    if job.request.origin is Origin.REROLL:
        # Translators: {chain} is a link to the rerolled result, then (after ←) to the one it came from, and so on.
        return _t("• 🔁 Reroll of {chain}", chain=chain)
    # Translators: {chain} is a link to the refined result, then (after ←) to the one it came from, and so on.
    return _t("• 🪄 Refined from {chain}", chain=chain)


def times_line(job: Job) -> Text | None:
    """How long it waited in line and ran (the API call's share), as far as it got."""
    if job.started_at is None:
        return None
    waited = job.started_at - (job.queued_at or job.created_at)
    if job.finished_at is None:
        return _t("• Waited {waited} in line; still being posted", waited=_seconds(max(0.0, waited)))
    ran = job.finished_at - job.started_at
    if job.api_seconds is not None:
        # Translators: {api} is the part of {ran} the image service took.
        return _t(
            "• Waited {waited} in line, ran {ran} (the image service {api})",
            waited=_seconds(max(0.0, waited)),
            ran=_seconds(max(0.0, ran)),
            api=_seconds(job.api_seconds),
        )
    return _t("• Waited {waited} in line, ran {ran}", waited=_seconds(max(0.0, waited)), ran=_seconds(max(0.0, ran)))


def retry_line(info: JobInfo) -> Text:
    """Whether it took more than one try."""
    job = info.job
    if not info.retried:
        return _t("• No retry: made at the first try")
    tries = max(len(info.attempts), job.attempts)
    attempts = _nt("{count} call to the image service", "{count} calls to the image service", tries)
    if job.restarts:
        restarts = _nt("{count} restart of the bot", "{count} restarts of the bot", job.restarts)
        # Translators: {attempts} is e.g. "2 calls to the image service"; {restarts} e.g. "1 restart of the bot".
        return _t("• Retried: {attempts}, after {restarts}", attempts=attempts, restarts=restarts)
    # Translators: {attempts} is e.g. "2 calls to the image service".
    return _t("• Retried: {attempts}", attempts=attempts)


def info_text(info: JobInfo, language: str | None) -> str:
    """Everything about a result but its prompt (which goes in full below it), in ``language``."""
    job = info.job
    request = job.request
    made = (
        f"{job.output_width}×{job.output_height}, {file_size(job.output_bytes or 0)}"
        if job.output_width and job.output_height
        else "?"
    )
    lines: list[Text | str] = [
        # Translators: {job} is the job's id, shown in code style.
        _t("ℹ️ **About this result** · job `{job}`", job=job.id),
        # Translators: {user} is a member's mention; {time} is a Discord timestamp.
        _t("• Asked by {user} · {time}", user=f"<@{request.user_id}>", time=f"<t:{int(job.created_at)}:f>"),
        # Translators: {asked} is the size asked for (e.g. 2048x1360, or auto); {made} what was made.
        _t("• Size: asked {asked}, made {made}", asked=request.size or AUTO, made=made),
    ]
    if request.style:
        style = f"🎨 **{request.style}**"
        if request.style_text:
            style += f" — {clip(' '.join(request.style_text.split()), STYLE_TEXT_SHOWN)}"
        lines.append(_t("• Style: {style}", style=style))
    else:
        lines.append(_t("• Style: none"))
    model = job.model or render(_pt("model", "default"), language)
    if job.guild_key:
        # Translators: {model} is an image model's name.
        lines.append(_t("• Model: {model}, on this server's own key", model=model))
    else:
        lines.append(_t("• Model: {model}", model=model))
    if job.inputs:
        names = ", ".join(describe_input(f"image{n}", i) for n, i in enumerate(job.inputs, start=1))
        # Translators: {inputs} lists the images, e.g. "image1 1024×768, 1.2 MB, image2 …".
        lines.append(_nt("• Input: {inputs}", "• Inputs: {inputs}", len(job.inputs), inputs=names))
    elif request.input_count:
        lines.append(_nt("• {count} input image", "• {count} input images", request.input_count))
    else:
        lines.append(_t("• No input image: made from the prompt alone"))
    for line in (chain_line(info, language), times_line(job)):
        if line is not None:
            lines.append(line)
    # Translators: {cost} is dollars, without the "$".
    cost = _t("• Cost: ${cost}", cost=format_price(job.cost))
    lines += [cost, retry_line(info)]
    return clip("\n".join(render(line, language) for line in lines), CONTENT_MAX)


def prompt_embed(job: Job, language: str | None) -> discord.Embed:
    """The full prompt, as typed (an embed holds twice what a message's text may)."""
    prompt = discord.utils.escape_markdown(job.request.prompt, as_needed=True)
    return discord.Embed(title=render(_t("Prompt"), language), description=clip(prompt, PROMPT_MAX))


class InfoButton(ui.DynamicItem[ui.Button[ui.View]], template=INFO_BUTTON_TEMPLATE):
    """ℹ️ Info under every result: its details, privately (``number``: which run of a group's card, "Info 2")."""

    def __init__(self, job_id: str, language: str | None = None, *, number: int | None = None) -> None:
        super().__init__(
            ui.Button(
                label=numbered(render(_pt("button", "Info"), language), number),
                emoji="ℹ️",
                style=discord.ButtonStyle.secondary,
                custom_id=info_button_id(job_id),
            )
        )
        self.job_id = job_id

    @classmethod
    async def from_custom_id(
        cls, interaction: discord.Interaction, item: ui.Item[Any], match: re.Match[str], /
    ) -> InfoButton:
        return cls(match["job_id"])

    async def callback(self, interaction: discord.Interaction) -> None:
        await guarded(interaction, self.show(interaction), "the Info button")

    async def show(self, interaction: discord.Interaction) -> None:
        async with in_time(interaction):
            info = await client_of(interaction).engine.info(self.job_id, interaction.user.id)
            language = language_of(interaction)
            await reply(interaction, info_text(info, language), embed=prompt_embed(info.job, language), ephemeral=True)
