"""The client as every cog sees it: the engine facade, the configuration, the downloader, and nothing else.

``AtelierClient`` is the ``commands.Bot`` that ``cogs.frontends`` completes with the
engine's Discord side (status messages, results, notices, the audit channel). A cog reaches it
as ``self.bot``; a button's or a form's callback, which discord.py declares for any client
(``Interaction[ClientT]``, which an override cannot narrow), through ``client_of``: a checked
cast, so no ``type: ignore`` stands in for it. ``Interaction`` (``discord.Interaction[AtelierClient]``)
types what is not an override. No cog imports the module that loads the client.
"""

from __future__ import annotations

import logging
from typing import Any

import discord
from discord.ext import commands

from bot.config import Config
from bot.core.job import Job
from bot.engine import JobEngine
from cogs.core.command_sync import SyncRecord, schema_hash
from cogs.core.discord_base import use_gateway_from_rest
from cogs.core.downloads import Downloader
from cogs.core.errors import AtelierTree

log = logging.getLogger(__name__)


class AtelierClient(commands.Bot):
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


#: An interaction with Atelier's client.
Interaction = discord.Interaction[AtelierClient]


def client_of(interaction: discord.Interaction[Any]) -> AtelierClient:
    """Atelier's client behind an interaction that discord.py hands over untyped (a button's or a form's)."""
    client = interaction.client
    if not isinstance(client, AtelierClient):
        raise TypeError(f"an interaction of {type(client).__name__}, not Atelier's client")
    return client
