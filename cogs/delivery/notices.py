"""Telling a member, the next time they use the bot, what could not reach them in time.

A private result that came after the interaction expired goes by direct message; when
the member's DMs are closed it is recorded as undelivered. A final outcome (a failure, a
cancel) that Discord would not take for minutes is kept the same way (``bot.jobs.outbox``).
On the member's next command, button or form, once that interaction has been answered, a
private follow-up tells them, once.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from typing import TYPE_CHECKING

import discord
from discord.ext import commands

from bot.core.job import Job
from bot.core.records import Notice
from bot.core.states import JobState
from bot.i18n import _t
from cogs.core.language import language_of, render
from cogs.core.text import clip, quote_prompt
from cogs.delivery.status import outcome_text

if TYPE_CHECKING:
    from cogs.core.host import AtelierClient

log = logging.getLogger(__name__)

# How long to wait for the interaction's own answer: a follow-up can only come after it.
ANSWER_WAIT = 5.0
_POLL = 0.05
# How long a stop waits for tells in flight to record what they told (the store closes after the cogs).
UNLOAD_WAIT = 5.0
# After these answers Discord takes no follow-up (a form) or there is nothing to follow (autocomplete).
_NO_FOLLOW_UP = {discord.InteractionResponseType.modal, discord.InteractionResponseType.autocomplete_result}


def owed_text(owed: Sequence[tuple[Notice, Job]], language: str | None) -> str:
    """What the member is told at their next use, in ``language``: undelivered results, then other outcomes."""
    results = [job for _, job in owed if job.state is JobState.SUCCEEDED]
    others = [(notice, job) for notice, job in owed if job.state is not JobState.SUCCEEDED]
    parts = [undelivered_text(results, language)] if results else []
    if others:
        lines = [render(_t("📭 **What became of your earlier edits:**"), language)]
        for notice, job in others:
            # Translators: one earlier edit: its instruction (quoted), then what became of it.
            line = _t("{prompt} · job `{job}`: {outcome}", prompt=quote_prompt(job.request.prompt, 120), job=job.id,
                      outcome=outcome_text(job, notice))  # fmt: skip
            lines.append(render(line, language))
        parts.append("\n".join(lines))
    return clip("\n".join(parts), 2000)


def undelivered_text(jobs: list[Job], language: str | None) -> str:
    """What the member is told about their undelivered results, in ``language``."""
    heading = _t(
        "📭 **A private result could not reach you.** It came after Discord's 15-minute limit for private "
        "answers, and your direct messages are closed to me, so I could not send it. It was made, so it "
        "counted as one of your edits:"
    )
    advice = _t(
        "-# To get late private results, allow direct messages from this server's members (Privacy Settings). "
        "You can reroll it from `/history` while its images are kept."
    )
    lines = [render(heading, language)]
    for job in jobs:
        # Translators: one undelivered result: its instruction (quoted), its job id and when it was asked for.
        line = _t(
            "{prompt} · job `{job}` · {when}",
            prompt=quote_prompt(job.request.prompt, 120),
            job=job.id,
            when=f"<t:{int(job.created_at)}:f>",
        )
        lines.append(render(line, language))
    lines.append(render(advice, language))
    return clip("\n".join(lines), 2000)


class NoticesCog(commands.Cog):
    """Follows up a member's next interaction with what they have not been told."""

    def __init__(self, bot: AtelierClient) -> None:
        self.bot = bot
        self._telling: set[int] = set()  # members being told right now (one follow-up, not two)
        self._in_flight: set[asyncio.Task[object]] = set()  # their handlers' tasks, awaited on unload

    @commands.Cog.listener()
    async def on_interaction(self, interaction: discord.Interaction) -> None:
        user_id = interaction.user.id
        if interaction.type is discord.InteractionType.autocomplete or user_id in self._telling:
            return
        if not self.bot.engine.notices_waiting(user_id):  # no database trip for everyone else
            return
        self._telling.add(user_id)
        task = asyncio.current_task()
        if task is not None:
            self._in_flight.add(task)
        try:
            await self.tell(interaction)
        finally:
            self._telling.discard(user_id)
            if task is not None:
                self._in_flight.discard(task)

    async def cog_unload(self) -> None:
        """On a stop, let tells in flight finish: the store they record "told" in is closed after the cogs."""
        if self._in_flight:
            await asyncio.wait(list(self._in_flight), timeout=UNLOAD_WAIT)

    async def tell(self, interaction: discord.Interaction) -> None:
        try:
            async with asyncio.timeout(ANSWER_WAIT):
                # discord.py signals nothing when an interaction is answered: look every 50 ms, for 5 s at most.
                while not interaction.response.is_done():  # noqa: ASYNC110
                    await asyncio.sleep(_POLL)
        except TimeoutError:
            return  # not answered (yet): the next interaction tells them
        if interaction.response.type in _NO_FOLLOW_UP:
            return
        engine = self.bot.engine
        owed = await engine.notices_owed(interaction.user.id)
        if not owed:
            return
        try:
            await interaction.followup.send(owed_text(owed, language_of(interaction)), ephemeral=True)
        except discord.HTTPException as exc:
            log.info(
                "could not tell user=%s about undelivered results (%s %s)", interaction.user.id, exc.status, exc.code
            )
            return
        await engine.notices_shown(interaction.user.id, [job for _, job in owed])


async def setup(bot: AtelierClient) -> None:
    """Load the notices cog."""
    await bot.add_cog(NoticesCog(bot))
