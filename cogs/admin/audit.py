"""The audit channel: every job's outcome posted for a server's moderators, with Delete result and Block member.

``AuditPoster`` is the engine's ``AuditSink``. Each server has a bounded queue and at
most one task posting from it: the first outcome goes out at once, and whatever
arrives while a post is on its way (or during the pause after it) goes out together,
up to ``BATCH_MAX`` outcomes in one message. So a busy server makes a few messages,
not one per job, Discord's per-channel rate limit is respected, and a job never waits
for its audit line: the engine hands the entry over and goes on. When a queue is full,
the oldest entries are dropped and the next post says how many. Nothing posted pings
anyone: members are named with ``<@id>`` under ``AllowedMentions.none()`` and
instructions are neutralised. The whole server reads the channel, so its posts (and the
buttons' public answers there) are in the server's language; instructions stay as typed.
"""

from __future__ import annotations

import asyncio
import collections
import io
import logging
import re
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import aiohttp
import discord
from discord import ui

from bot.core.job import Origin
from bot.core.money import format_price
from bot.core.states import JobState
from bot.errors import AtelierError
from bot.i18n import Text, _nt, _pt, _t
from bot.ports import AuditEntry
from cogs.core.custom_ids import AUDIT_BLOCK_TEMPLATE, AUDIT_DELETE_TEMPLATE, audit_block_id, audit_delete_id
from cogs.core.errors import AtelierView, guarded
from cogs.core.host import client_of
from cogs.core.language import render, server_language
from cogs.core.text import clip, quote_prompt
from cogs.delivery.destinations import MAX_CONTENT

if TYPE_CHECKING:
    from cogs.core.host import AtelierClient

log = logging.getLogger(__name__)

BATCH_MAX = 5  # one row of buttons per outcome; a message holds five rows
QUEUE_MAX = 50  # per server; beyond it the oldest entries are dropped (and counted)
POST_INTERVAL = 1.2  # seconds between two posts to one channel (Discord allows 5 per 5 s)
PROMPT_CHARS = 180
NO_MENTIONS = discord.AllowedMentions.none()

_HEADLINES = {
    JobState.SUCCEEDED: _t("✅ **succeeded**"),
    JobState.FAILED: _t("❌ **failed**"),
    JobState.CANCELLED: _t("🚫 **cancelled**"),
}
SAFETY_HEADLINE = _t("🛡️ **refused by the image service's safety system**")
# What each job was, as the audit line names it: its kind when started by a command, else how it was started.
_KINDS = {
    "edit": _pt("job kind", "edit"),
    "imagine": _pt("job kind", "imagine"),
    Origin.REFINE: _pt("job kind", "refine"),
    Origin.REROLL: _pt("job kind", "reroll"),
    Origin.MESSAGE: _pt("job kind", "message"),
}


def jump_url(guild_id: int, channel_id: int, message_id: int) -> str:
    """A link to a message that works in every client."""
    return f"https://discord.com/channels/{guild_id}/{channel_id}/{message_id}"


def describe_entry(number: int, entry: AuditEntry, language: str | None) -> str:
    """One outcome as audit text in ``language``: who, what, how big, what happened, what it cost, where."""
    job = entry.job
    request = job.request

    def say(text: Text | str) -> str:
        return render(text, language)

    headline = SAFETY_HEADLINE if entry.safety else _HEADLINES[entry.outcome]
    images = _nt("{count} image", "{count} images", request.input_count)
    size = request.size or say(_t("auto"))
    if job.output_width and job.output_height and entry.outcome is JobState.SUCCEEDED:
        size += f" → {job.output_width}×{job.output_height}"
    cost: Text | str
    if entry.outcome is not JobState.SUCCEEDED:
        # Translators: what a job that did not succeed cost: nothing, its charge was given back.
        cost = _t("refunded")
    elif job.guild_key:
        # Translators: {cost} is dollars, without the "$".
        cost = _t("${cost} on this server's key", cost=format_price(job.cost + entry.settled))
    else:
        cost = f"${format_price(job.cost + entry.settled)}"
    # Translators: {model} is an image model's name; it made this result while the server's own model was failing.
    model = _t("{model} (fallback)", model=job.model) if entry.fallback else (job.model or _t("default model"))
    took = say(_t("{seconds} s", seconds=f"{job.finished_at - job.created_at:.1f}")) if job.finished_at else ""
    if entry.outcome is JobState.SUCCEEDED and job.result_channel_id and job.result_message_id and job.guild_id:
        # Translators: a Markdown link to the posted result; keep the brackets and parentheses.
        where = _t("[result]({link})", link=jump_url(job.guild_id, job.result_channel_id, job.result_message_id))
    else:
        # Translators: where the job was asked for: a channel mention.
        where = _t("in <#{channel}>", channel=request.channel_id)
    started = request.kind if request.origin is Origin.COMMAND else request.origin
    kind: Text | str = _KINDS.get(started, started)
    parts = [f"**{number}.** {say(headline)}", f"<@{request.user_id}>", say(kind), say(images), size, say(cost)]
    parts += [say(model)] + [p for p in (took, say(where)) if p]
    lines = [" · ".join(parts), quote_prompt(request.prompt, PROMPT_CHARS)]
    if entry.reason:
        flat = " ".join(discord.utils.escape_mentions(say(entry.reason)).split())
        lines.append(f"-# {clip(flat, 200)}")
    # Translators: the job's id, shown in code style.
    lines.append("-# " + say(_t("job `{job}`", job=job.id)))
    return "\n".join(lines)


def audit_view(entries: list[AuditEntry], language: str | None) -> ui.View:
    """One row per outcome: Delete result (when there is one) and Block member, labelled in ``language``."""
    view = AtelierView(timeout=None)
    for row, entry in enumerate(entries):
        job = entry.job
        if entry.outcome is JobState.SUCCEEDED and job.result_message_id:
            view.add_item(DeleteResultButton(job.id, row + 1, language, row=row))
        view.add_item(BlockMemberButton(job.user_id, job.id, row + 1, language, row=row))
    return view


@dataclass
class _ServerQueue:
    entries: collections.deque[AuditEntry] = field(default_factory=collections.deque)
    alerts: list[tuple[int, Text]] = field(default_factory=list)  # channel, text
    dropped: int = 0
    task: asyncio.Task[None] | None = None


class AuditPoster:
    """Implements the engine's ``AuditSink`` with batched, rate-kept channel posts."""

    def __init__(self, bot: AtelierClient) -> None:
        self.bot = bot
        self._servers: dict[int, _ServerQueue] = {}
        self._closed = False
        self._direct: set[asyncio.Task[None]] = set()

    def outcome(self, entry: AuditEntry) -> None:
        guild_id = entry.job.guild_id
        if guild_id is None or self._closed:
            return
        server = self._servers.setdefault(guild_id, _ServerQueue())
        if len(server.entries) >= QUEUE_MAX:
            server.entries.popleft()
            server.dropped += 1
            self.bot.engine.audit_entry_dropped()
        server.entries.append(entry)
        self._wake(guild_id, server)

    def alert(self, guild_id: int, channel_id: int | None, text: Text, contact_user_id: int | None = None) -> None:
        if self._closed:
            return
        if channel_id is not None:
            server = self._servers.setdefault(guild_id, _ServerQueue())
            server.alerts.append((channel_id, text))
            self._wake(guild_id, server)
        elif contact_user_id is not None:
            task = asyncio.create_task(self._tell_privately(guild_id, contact_user_id, text))
            self._direct.add(task)
            task.add_done_callback(self._direct.discard)

    def _wake(self, guild_id: int, server: _ServerQueue) -> None:
        if server.task is None or server.task.done():
            server.task = asyncio.create_task(self._drain(guild_id, server), name=f"atelier-audit-{guild_id}")

    async def close(self) -> None:
        """Post what is queued (briefly), then stop."""
        self._closed = True
        tasks = [s.task for s in self._servers.values() if s.task is not None] + list(self._direct)
        if tasks:
            _, pending = await asyncio.wait(tasks, timeout=3.0)
            for task in pending:
                task.cancel()
            await asyncio.gather(*pending, return_exceptions=True)

    async def _drain(self, guild_id: int, server: _ServerQueue) -> None:
        while server.alerts or server.entries:
            if server.alerts:
                channel_id, text = server.alerts.pop(0)
                await self._send(
                    guild_id, channel_id, content=clip(render(text, self._language(guild_id)), MAX_CONTENT)
                )
            else:
                channel_id = server.entries[0].channel_id
                batch: list[AuditEntry] = []
                while server.entries and len(batch) < BATCH_MAX and server.entries[0].channel_id == channel_id:
                    batch.append(server.entries.popleft())
                dropped, server.dropped = server.dropped, 0
                await self._post_batch(guild_id, channel_id, batch, dropped)
            await asyncio.sleep(POST_INTERVAL)

    def _language(self, guild_id: int) -> str:
        """The language a server reads (English when this process does not know the server)."""
        return server_language(self.bot.get_guild(guild_id))

    async def _post_batch(self, guild_id: int, channel_id: int, batch: list[AuditEntry], dropped: int) -> None:
        language = self._language(guild_id)
        blocks = [describe_entry(n, entry, language) for n, entry in enumerate(batch, start=1)]
        if dropped:
            # The English singular is the plural on purpose (the English text is unchanged for every count).
            lost = _nt(
                "⚠️ {count} earlier outcome was not posted: this channel could not keep up.",
                "⚠️ {count} earlier outcomes were not posted: this channel could not keep up.",
                dropped,
            )
            blocks.append("-# " + render(lost, language))
        content = "\n".join(blocks)
        while len(content) > MAX_CONTENT and len(blocks) > 1:
            # Shorten every instruction a little more until the whole batch fits one message.
            blocks = [_shorter(block) for block in blocks]
            content = "\n".join(blocks)
        # A spoiler result's preview is a spoiler too (the channel is a classic message: Discord's SPOILER_ name).
        files = [
            discord.File(
                io.BytesIO(entry.preview),
                filename=f"preview-{n}-{entry.job.id}.webp",
                spoiler=entry.job.request.spoiler,
            )
            for n, entry in enumerate(batch, start=1)
            if entry.preview
        ]
        view = audit_view(batch, language)
        await self._send(guild_id, channel_id, content=clip(content, MAX_CONTENT), files=files, view=view)

    async def _send(self, guild_id: int, channel_id: int, **fields: Any) -> None:
        channel = self.bot.get_partial_messageable(channel_id, guild_id=guild_id)
        try:
            await channel.send(allowed_mentions=NO_MENTIONS, **fields)
        except discord.HTTPException as exc:
            # Not the jobs' problem: the admins see nothing in the channel and the log says why.
            log.warning(
                "guild=%s could not post to its audit channel %s (%s %s); check my permissions there",
                guild_id, channel_id, exc.status, exc.code,
            )  # fmt: skip
        except (aiohttp.ClientError, OSError) as exc:
            # A connection lost on the way: that post is lost, the drain goes on with the next.
            log.warning("guild=%s could not post to its audit channel %s (%s)", guild_id, channel_id,
                        type(exc).__name__)  # fmt: skip

    async def _tell_privately(self, guild_id: int, user_id: int, text: Text) -> None:
        """Tell the admin who set the server's key, in the server's language (a bot cannot know a user's)."""
        try:
            guild = self.bot.get_guild(guild_id)
            language = server_language(guild)
            where = (
                f"**{discord.utils.escape_markdown(guild.name)}**"
                if guild
                # Translators: a server the bot no longer sees, by its id.
                else render(_t("server `{id}`", id=guild_id), language)
            )
            # Translators: {server} is a server's name (or "server `123`"); {text} is what its admins are told.
            about = _t("About {server}: {text}", server=where, text=text)
            why = _t("You set its API key. An audit channel (`/atelier settings`) would get these notes instead.")
            dm = await self.bot.create_dm(discord.Object(user_id))
            await dm.send(f"{render(about, language)}\n-# {render(why, language)}", allowed_mentions=NO_MENTIONS)
        except discord.HTTPException as exc:
            log.warning("guild=%s could not tell user=%s privately (%s %s)", guild_id, user_id, exc.status, exc.code)


def _shorter(block: str) -> str:
    lines = block.split("\n")
    return "\n".join(clip(line, max(60, len(line) * 3 // 4)) if line.startswith("> ") else line for line in lines)


class DeleteResultButton(ui.DynamicItem[ui.Button[ui.View]], template=AUDIT_DELETE_TEMPLATE):
    """Deletes a job's posted result (moderators: Manage Messages or Manage Server)."""

    def __init__(self, job_id: str, number: int = 0, language: str | None = None, *, row: int | None = None) -> None:
        # Translators: {number} is the outcome's number in the audit post.
        label = _pt("button", "Delete result {number}", number=number) if number else _pt("button", "Delete result")
        button: ui.Button[ui.View] = ui.Button(
            label=render(label, language),
            emoji="🗑️",
            style=discord.ButtonStyle.danger,
            custom_id=audit_delete_id(job_id),
        )
        super().__init__(button, row=row)
        self.job_id = job_id

    @classmethod
    async def from_custom_id(
        cls, interaction: discord.Interaction, item: ui.Item[Any], match: re.Match[str], /
    ) -> DeleteResultButton:
        return cls(match["job_id"])

    async def callback(self, interaction: discord.Interaction) -> None:
        await guarded(interaction, self.delete(interaction), "the Delete result button")

    async def delete(self, interaction: discord.Interaction) -> None:
        permissions = interaction.permissions
        if not (permissions.manage_messages or permissions.manage_guild):
            raise AtelierError(_t("Deleting results needs the Manage Messages permission."))
        bot = client_of(interaction)
        job = await bot.engine.job(self.job_id)
        if job is None or job.guild_id != interaction.guild_id or not job.result_message_id:
            raise AtelierError(_t("That job has no result here to delete."))
        assert job.result_channel_id is not None
        try:
            await bot.http.delete_message(
                job.result_channel_id, job.result_message_id, reason=f"Atelier audit: by {interaction.user.id}"
            )
        except discord.NotFound:
            raise AtelierError(_t("That result was already deleted.")) from None
        except discord.Forbidden:
            raise AtelierError(_t("I'm not allowed to delete that message.")) from None
        log.info("guild=%s job=%s result deleted by user=%s", job.guild_id, job.id, interaction.user.id)
        # Said in the audit channel, for everyone there: in the server's language.
        deleted = _t(
            "🗑️ {moderator} deleted the result of job `{job}` by <@{user}>.",
            moderator=interaction.user.mention,
            job=job.id,
            user=job.user_id,
        )
        await interaction.response.send_message(
            render(deleted, server_language(interaction.guild)), allowed_mentions=NO_MENTIONS
        )


class BlockMemberButton(ui.DynamicItem[ui.Button[ui.View]], template=AUDIT_BLOCK_TEMPLATE):
    """Blocks the job's requester from Atelier in this server (Manage Server, like ``/atelier block``)."""

    def __init__(
        self, user_id: int, job_id: str, number: int = 0, language: str | None = None, *, row: int | None = None
    ) -> None:
        # Translators: {number} is the outcome's number in the audit post.
        label = _pt("button", "Block member {number}", number=number) if number else _pt("button", "Block member")
        button: ui.Button[ui.View] = ui.Button(
            label=render(label, language),
            emoji="⛔",
            style=discord.ButtonStyle.secondary,
            custom_id=audit_block_id(user_id, job_id),
        )
        super().__init__(button, row=row)
        self.user_id = user_id
        self.job_id = job_id

    @classmethod
    async def from_custom_id(
        cls, interaction: discord.Interaction, item: ui.Item[Any], match: re.Match[str], /
    ) -> BlockMemberButton:
        return cls(int(match["user_id"]), match["job_id"])

    async def callback(self, interaction: discord.Interaction) -> None:
        await guarded(interaction, self.block(interaction), "the Block member button")

    async def block(self, interaction: discord.Interaction) -> None:
        if interaction.guild_id is None or not interaction.permissions.manage_guild:
            raise AtelierError(_t("Blocking members needs the Manage Server permission."))
        if self.user_id == interaction.user.id:
            raise AtelierError(_t("You can't block yourself."))
        bot = client_of(interaction)
        reason = f"from the audit channel (job {self.job_id})"  # stored for the moderators, as data: not translated
        await bot.engine.block(interaction.guild_id, self.user_id, reason, interaction.user.id)
        # Said in the audit channel, for everyone there: in the server's language.
        blocked = _t(
            "⛔ <@{user}> can no longer use Atelier here (blocked by {moderator}); `/atelier unblock` lifts it.",
            user=self.user_id,
            moderator=interaction.user.mention,
        )
        await interaction.response.send_message(
            render(blocked, server_language(interaction.guild)), allowed_mentions=NO_MENTIONS
        )


async def setup(bot: AtelierClient) -> None:
    """Register the audit buttons, so they work on old posts after a restart."""
    bot.add_dynamic_items(DeleteResultButton, BlockMemberButton)
