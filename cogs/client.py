"""The Discord client and the frontends that run it: the cogs, the command tree, the one way to stop.

``python -m bot`` builds the engine and finds its frontend through the
``atelier.frontends`` entry point: ``discord`` (all in one: the gateway and the worker),
``gateway`` (interactions, admission and buttons; no API calls) or ``worker`` (in
``cogs.worker``: no gateway). discord.py's ``close()`` and a signal end the same way: the
engine stops (no new work, a grace period for running calls, the rest put back and
their members told), then the gateway and REST session close.

With ``SHARD_COUNT`` (and ``SHARD_IDS``), the client is discord.py's auto-sharded one,
running only the given shards, so gateways for a bot in thousands of servers can be
split across processes.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import discord
from discord.ext import commands

from bot.config import Config
from bot.engine import JobEngine
from bot.jobs import Job
from cogs.audit import AuditPoster
from cogs.command_sync import SyncRecord, schema_hash
from cogs.discord_base import use_gateway_from_rest, use_rest_base
from cogs.downloads import Downloader
from cogs.errors import AtelierTree
from cogs.status import DiscordNotifier, DiscordPublisher
from cogs.translator import CatalogTranslator

log = logging.getLogger(__name__)

# cogs.presets hangs under /atelier, so it comes after cogs.admin.
EXTENSIONS = (
    "cogs.ops",
    "cogs.edit",
    "cogs.refine",
    "cogs.results",
    "cogs.message_edit",
    "cogs.history",
    "cogs.usage",
    "cogs.admin",
    "cogs.presets",
    "cogs.notices",
    "cogs.audit",
)


class AtelierBot(commands.Bot):
    """Atelier's client. Long-lived things live here (or in the engine), never at module level."""

    def __init__(self, config: Config, engine: JobEngine, *, work: bool = True) -> None:
        intents = discord.Intents.none()
        intents.guilds = True  # guild, channel, role and thread cache; members are not needed
        sharding: dict[str, Any] = {}
        if config.shard_count is not None:
            sharding = {"shard_count": config.shard_count, "shard_ids": list(config.shard_ids or ()) or None}
        super().__init__(
            command_prefix=commands.when_mentioned,
            help_command=None,
            intents=intents,
            tree_cls=AtelierTree,
            # Nothing the bot posts pings anyone unless a message widens this on purpose.
            allowed_mentions=discord.AllowedMentions.none(),
            member_cache_flags=discord.MemberCacheFlags.none(),
            max_messages=None,
            **sharding,
        )
        self.config = config
        self.engine = engine
        self.work = work
        self.downloader = Downloader()
        self.audit = AuditPoster(self)
        self._closing: asyncio.Task[None] | None = None

    async def setup_hook(self) -> None:
        for name in EXTENSIONS:
            await self.load_extension(name)
        await self.tree.set_translator(CatalogTranslator())
        await self.sync_commands_if_changed()
        # REST works from here on (we are logged in), so resumed jobs can update their messages.
        await self.engine.start(
            DiscordNotifier(self, self.engine),
            DiscordPublisher(self, self.engine),
            self.audit,
            work=self.work,
            mine=self.owns,
        )

    def owns(self, job: Job) -> bool:
        """Whether this process's shards serve the job's server (direct messages go to shard 0)."""
        config = self.config
        if config.shard_count is None or config.shard_ids is None:
            return True
        shard = 0 if job.guild_id is None else (job.guild_id >> 22) % config.shard_count
        return shard in config.shard_ids

    async def connect(self, *, reconnect: bool = True) -> None:
        if self.config.discord_api_base:
            await use_gateway_from_rest(self)
        await super().connect(reconnect=reconnect)

    async def close(self) -> None:
        """The one way to stop, whoever asks: the engine first, then Discord; idempotent."""
        if self._closing is None:
            self._closing = asyncio.create_task(self._close_once(), name="atelier-close")
        await asyncio.shield(self._closing)

    async def _close_once(self) -> None:
        await self.engine.stop(self.config.shutdown_grace_seconds)
        await self.audit.close()
        await super().close()

    async def sync_commands_if_changed(self) -> None:
        """Upload the command schema only when it differs from the last one synced."""
        guild = discord.Object(self.config.dev_guild_id) if self.config.dev_guild_id else None
        if guild is not None:
            self.tree.copy_global_to(guild=guild)
        # The translated payload, exactly what is synced: a changed translation changes the hash.
        translator = self.tree.translator
        commands_here = self.tree.get_commands(guild=guild)
        if translator is None:
            payload = [command.to_dict(self.tree) for command in commands_here]
        else:
            payload = [await command.get_translated_payload(self.tree, translator) for command in commands_here]
        scope = f"{self.application_id}:{guild.id if guild else 'global'}"
        digest = schema_hash(payload)
        record = SyncRecord(self.config.data_dir / "command-sync.json")
        if record.is_current(scope, digest):
            log.info("commands unchanged since the last sync; not syncing (%s)", scope)
            return
        synced = await self.tree.sync(guild=guild)
        record.remember(scope, digest)
        log.info("synced %d commands (%s)", len(synced), scope)


class ShardedAtelierBot(AtelierBot, commands.AutoShardedBot):
    """Atelier's client on discord.py's auto-sharded client (``SHARD_COUNT``, ``SHARD_IDS``)."""


class DiscordFrontend:
    """Runs the client, admitting work and running jobs, until a signal or ``close()`` stops it."""

    work = True

    def __init__(self, config: Config, engine: JobEngine) -> None:
        if config.discord_api_base:
            use_rest_base(config.discord_api_base)
        self.config = config
        client = ShardedAtelierBot if config.shard_count is not None else AtelierBot
        self.bot = client(config, engine, work=self.work)
        self._stop: asyncio.Task[None] | None = None

    async def run(self) -> None:
        async with self.bot:
            await self.bot.start(self.config.discord_token)

    def request_stop(self, reason: str) -> None:
        if self._stop is None:
            log.info("shutdown requested (%s)", reason)
            self._stop = asyncio.create_task(self.bot.close(), name="atelier-stop-request")


class GatewayFrontend(DiscordFrontend):
    """``python -m bot gateway``: interactions, admission and buttons; the workers make the API calls."""

    work = False
