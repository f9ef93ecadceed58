"""Point discord.py at another Discord REST base (a REST proxy, or the tests' fake).

discord.py hard-codes the REST base on ``Route`` and the gateway URL on
``DiscordWebSocket``. With ``DISCORD_API_BASE`` set, both are redirected: REST to
the given base, and the gateway to whatever ``GET {base}/gateway/bot`` answers.
"""

from __future__ import annotations

import discord
import yarl
from discord.gateway import DiscordWebSocket
from discord.http import Route


def use_rest_base(api_base: str) -> None:
    """Send every REST call (bot token and interaction webhooks alike) to ``api_base``."""
    Route.BASE = api_base.rstrip("/")


async def use_gateway_from_rest(client: discord.Client) -> None:
    """Connect to the gateway that the REST base names, instead of Discord's default."""
    _shards, url, _limits = await client.http.get_bot_gateway()
    DiscordWebSocket.DEFAULT_GATEWAY = yarl.URL(url)
