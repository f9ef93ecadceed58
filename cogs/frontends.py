"""The Discord client and the frontends that run it: the cogs, the command tree, the one way to stop.

``python -m bot`` builds the engine and finds its frontend through the
``atelier.frontends`` entry point: ``discord`` (all in one: the gateway and the worker),
``gateway`` (interactions, admission and buttons; no API calls) or ``worker`` (no gateway:
it runs jobs and tells members through REST, with the interaction's webhook while its token
lives and the bot's token afterwards, exactly as the all-in-one bot does).

discord.py's ``close()`` and a signal end the same way: the engine stops (no new work, a
grace period for running calls, the rest put back and their members told), then the
gateway and REST session close.

With ``SHARD_COUNT`` (and ``SHARD_IDS``), the client is discord.py's auto-sharded one,
running only the given shards, so gateways for a bot in thousands of servers can be
split across processes.
"""

from __future__ import annotations

import asyncio
import logging

import discord
from discord.ext import commands

from bot.config import Config
from bot.engine import JobEngine
from bot.ops import heap
from bot.ports import FrontendParts
from cogs.admin.audit import AuditPoster
from cogs.core.discord_base import use_rest_base
from cogs.core.host import AtelierClient
from cogs.core.translator import CatalogTranslator
from cogs.delivery.status import DiscordNotifier, DiscordPublisher

log = logging.getLogger(__name__)

# The presets hang under /atelier, so they come after the admin cog.
EXTENSIONS = (
    "cogs.core.ops",
    "cogs.members.edit",
    "cogs.members.imagine",
    "cogs.members.refine",
    "cogs.members.region",
    "cogs.delivery.results",
    "cogs.members.message_edit",
    "cogs.members.history",
    "cogs.members.usage",
    "cogs.admin.admin",
    "cogs.admin.presets",
    "cogs.delivery.notices",
    "cogs.admin.audit",
)


class AtelierBot(AtelierClient):
    """The client with the engine's Discord side: its cogs, status messages, results, notices and audit channel."""

    def __init__(self, config: Config, engine: JobEngine, *, work: bool = True) -> None:
        super().__init__(config, engine, work=work)
        self.audit = AuditPoster(self)
        self._closing: asyncio.Task[None] | None = None

    async def setup_hook(self) -> None:
        for name in EXTENSIONS:
            await self.load_extension(name)
        await self.tree.set_translator(CatalogTranslator())
        await self.sync_commands_if_changed()
        # REST works from here on (we are logged in), so resumed jobs can update their messages.
        notifier = DiscordNotifier(self, self.engine)
        await self.engine.start(
            FrontendParts(notifier, DiscordPublisher(self, self.engine), notifier, self.audit),
            work=self.work,
            mine=self.owns,
        )
        heap.settle()  # set up: what exists now lives as long as the process

    async def close(self) -> None:
        """The one way to stop, whoever asks: the engine first, then Discord; idempotent."""
        if self._closing is None:
            self._closing = asyncio.create_task(self._close_once(), name="atelier-close")
        await asyncio.shield(self._closing)

    async def _close_once(self) -> None:
        await self.engine.stop(self.config.shutdown_grace_seconds)
        await self.audit.close()
        await super().close()


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


class WorkerClient(discord.Client):
    """A REST-only client: logged in, never connected to the gateway."""

    def __init__(self, config: Config, engine: JobEngine) -> None:
        super().__init__(
            intents=discord.Intents.none(),
            allowed_mentions=discord.AllowedMentions.none(),
            max_messages=None,
        )
        self.config = config
        self.engine = engine
        self.stopped = asyncio.Event()
        self._closing: asyncio.Task[None] | None = None

    async def setup_hook(self) -> None:
        notifier = DiscordNotifier(self, self.engine)
        await self.engine.start(
            FrontendParts(notifier, DiscordPublisher(self, self.engine), notifier), admit=False, work=True
        )
        heap.settle()  # set up: what exists now lives as long as the process

    async def close(self) -> None:
        """The one way to stop: the engine first (running calls get their grace), then REST."""
        if self._closing is None:
            self._closing = asyncio.create_task(self._close_once(), name="atelier-close")
        await asyncio.shield(self._closing)

    async def _close_once(self) -> None:
        await self.engine.stop(self.config.shutdown_grace_seconds)
        await super().close()
        self.stopped.set()


class WorkerFrontend:
    """Runs a worker until a signal stops it."""

    def __init__(self, config: Config, engine: JobEngine) -> None:
        if config.discord_api_base:
            use_rest_base(config.discord_api_base)
        self.config = config
        self.client = WorkerClient(config, engine)
        self._stop: asyncio.Task[None] | None = None

    async def run(self) -> None:
        async with self.client:
            await self.client.login(self.config.discord_token)
            log.info("worker ready: taking jobs from the shared queue")
            await self.client.stopped.wait()

    def request_stop(self, reason: str) -> None:
        if self._stop is None:
            log.info("shutdown requested (%s)", reason)
            self._stop = asyncio.create_task(self.client.close(), name="atelier-stop-request")
