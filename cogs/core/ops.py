"""What the engine's health and metrics need from Discord: the gateway's state and Discord's 429s.

discord.py handles rate limits itself (it waits and retries) and says so in one log line
per 429, on ``discord.http`` for the bot's own calls and on ``discord.webhook.async_`` for
interaction webhooks. A logging filter on those two loggers counts those lines; it never
drops or changes a record.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import TYPE_CHECKING

from discord.ext import commands

if TYPE_CHECKING:
    from cogs.core.host import AtelierClient

RATE_LIMIT_LOGGERS = ("discord.http", "discord.webhook.async_")
# The format strings discord.py 2.7 logs once per 429 it receives.
RATE_LIMIT_LINES = ("We are being rate limited.", "Webhook ID %s is rate limited.")


class RateLimitCounter(logging.Filter):
    """Counts discord.py's "being rate limited" lines."""

    def __init__(self, count: Callable[[], None]) -> None:
        super().__init__()
        self._count = count

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.msg, str) and record.msg.startswith(RATE_LIMIT_LINES):
            self._count()
        return True


class OpsCog(commands.Cog):
    """Reports the gateway's state to the engine's health check and counts Discord's rate limits."""

    def __init__(self, bot: AtelierClient) -> None:
        self.bot = bot
        self.counter = RateLimitCounter(bot.engine.discord_rate_limited)

    async def cog_load(self) -> None:
        for name in RATE_LIMIT_LOGGERS:
            logging.getLogger(name).addFilter(self.counter)
        self.bot.engine.gateway_state(False, "connecting")

    async def cog_unload(self) -> None:
        for name in RATE_LIMIT_LOGGERS:
            logging.getLogger(name).removeFilter(self.counter)

    @commands.Cog.listener()
    async def on_ready(self) -> None:
        self.bot.engine.gateway_state(True)

    @commands.Cog.listener()
    async def on_resumed(self) -> None:
        self.bot.engine.gateway_state(True)

    @commands.Cog.listener()
    async def on_disconnect(self) -> None:
        self.bot.engine.gateway_state(False, "disconnected from Discord's gateway")


async def setup(bot: AtelierClient) -> None:
    """Load the operations cog."""
    await bot.add_cog(OpsCog(bot))
