"""The Discord client: owns the config, the shared HTTP session, the store, the job service, the cogs."""

from __future__ import annotations

import asyncio
import logging

import aiohttp
import discord
from discord.ext import commands

from bot.command_sync import SyncRecord, schema_hash
from bot.config import Config
from bot.discord_base import use_gateway_from_rest
from bot.editor import Editor
from bot.image_api import ImageAPIClient
from bot.inputs import InputStore
from bot.service import JobService
from bot.storage import SQLiteJobStore

log = logging.getLogger(__name__)

EXTENSIONS = ("cogs.edit", "cogs.usage", "cogs.admin")


class AtelierBot(commands.Bot):
    """Atelier's client. Long-lived things live here, never at module level."""

    def __init__(self, config: Config, session: aiohttp.ClientSession) -> None:
        # Imported here so that bot/ modules never import cogs/ at import time.
        from cogs.errors import AtelierTree

        # Atelier never joins voice; discord.py's warnings about voice libraries are noise.
        discord.VoiceClient.warn_nacl = discord.VoiceClient.warn_dave = False
        intents = discord.Intents.none()
        intents.guilds = True  # guild, channel, role and thread cache; members are not needed
        super().__init__(
            command_prefix=commands.when_mentioned,
            help_command=None,
            intents=intents,
            tree_cls=AtelierTree,
            # Nothing the bot posts pings anyone unless a message widens this on purpose.
            allowed_mentions=discord.AllowedMentions.none(),
            member_cache_flags=discord.MemberCacheFlags.none(),
            max_messages=None,
        )
        self.config = config
        self.session = session
        self.editor = Editor()
        self.store = SQLiteJobStore(config.db_file)
        self.jobs = JobService(
            config, self.store, ImageAPIClient(session, config), InputStore(config.data_dir / "inputs")
        )
        self._shutdown: asyncio.Task[None] | None = None

    async def setup_hook(self) -> None:
        from cogs.progress import DiscordNotifier

        await self.store.open()
        for name in EXTENSIONS:
            await self.load_extension(name)
        await self.sync_commands_if_changed()
        # REST works from here on (we are logged in), so resumed jobs can update their messages.
        await self.jobs.start(DiscordNotifier(self))

    async def connect(self, *, reconnect: bool = True) -> None:
        if self.config.discord_api_base:
            await use_gateway_from_rest(self)
        await super().connect(reconnect=reconnect)

    def request_shutdown(self, reason: str) -> None:
        """Begin a graceful shutdown (from a signal handler); idempotent."""
        if self._shutdown is None:
            log.info("shutdown requested (%s)", reason)
            self._shutdown = asyncio.create_task(self._graceful_close())

    async def _graceful_close(self) -> None:
        await self.jobs.shutdown(self.config.shutdown_grace_seconds)
        await self.close()

    async def wait_shut_down(self) -> None:
        """Wait for a requested shutdown to finish (``start`` returns as soon as the gateway closes)."""
        if self._shutdown is not None:
            await self._shutdown
        await self.store.close()

    async def close(self) -> None:
        await super().close()
        await self.store.close()

    async def sync_commands_if_changed(self) -> None:
        """Upload the command schema only when it differs from the last one synced."""
        guild = discord.Object(self.config.dev_guild_id) if self.config.dev_guild_id else None
        if guild is not None:
            self.tree.copy_global_to(guild=guild)
        payload = [command.to_dict(self.tree) for command in self.tree.get_commands(guild=guild)]
        scope = f"{self.application_id}:{guild.id if guild else 'global'}"
        digest = schema_hash(payload)
        record = SyncRecord(self.config.data_dir / "command-sync.json")
        if record.is_current(scope, digest):
            log.info("commands unchanged since the last sync; not syncing (%s)", scope)
            return
        synced = await self.tree.sync(guild=guild)
        record.remember(scope, digest)
        log.info("synced %d commands (%s)", len(synced), scope)
