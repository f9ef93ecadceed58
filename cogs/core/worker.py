"""``python -m bot worker``: runs jobs and delivers them through REST, with no gateway connection.

A worker makes the API calls and does the image work. It tells members how their job
goes with the interaction's webhook while its token lives, and with the bot's token
afterwards, exactly as the all-in-one bot does; it never receives interactions.
Several workers, on several machines, share one PostgreSQL queue.
"""

from __future__ import annotations

import asyncio
import logging

import discord

from bot.config import Config
from bot.engine import JobEngine
from bot.ports import FrontendParts
from cogs.core.discord_base import use_rest_base
from cogs.delivery.status import DiscordNotifier, DiscordPublisher

log = logging.getLogger(__name__)


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
