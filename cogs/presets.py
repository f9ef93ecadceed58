"""``/atelier presets add|remove|list``: a server's named styles (Manage Server).

A preset is a name and a text added to the member's instruction when they pick that
style on ``/edit`` or in a form (``bot.presets``). At most 25 per server, each text at
most 500 characters. The group hangs under ``/atelier`` (``cogs.admin``), so it shares
its Manage Server default permission; each command checks it again when run.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

import discord
from discord import app_commands

from bot.presets import MAX_NAME, MAX_PRESETS, MAX_TEXT
from cogs.destinations import clip
from cogs.requests import style_choices

if TYPE_CHECKING:
    from cogs.client import AtelierBot

log = logging.getLogger(__name__)


class PresetCommands(app_commands.Group):
    """The ``presets`` subcommands of ``/atelier``."""

    def __init__(self, bot: AtelierBot) -> None:
        super().__init__(name="presets", description="Named styles members can add to their instructions")
        self.bot = bot

    @app_commands.command(name="add", description="Add a style (or replace the one with this name)")
    @app_commands.describe(
        name="Short name members pick, e.g. watercolour",
        text="Added to the instruction, e.g. “as a loose watercolour painting on textured paper”",
    )
    @app_commands.checks.has_permissions(manage_guild=True)
    async def add(
        self,
        interaction: discord.Interaction,
        name: app_commands.Range[str, 1, MAX_NAME],
        text: app_commands.Range[str, 1, MAX_TEXT],
    ) -> None:
        assert interaction.guild_id is not None
        preset, replaced = await self.bot.engine.presets.add(interaction.guild_id, name, text, interaction.user.id)
        log.info("guild=%s style %r %s by user=%s", interaction.guild_id, preset.name,
                 "replaced" if replaced else "added", interaction.user.id)  # fmt: skip
        verb = "Replaced" if replaced else "Added"
        was = f"\n-# It was: {clip(discord.utils.escape_mentions(replaced.text), 300)}" if replaced else ""
        await interaction.response.send_message(
            f"✅ {verb} the style **{preset.name}**: {discord.utils.escape_mentions(preset.text)}{was}",
            ephemeral=True,
        )

    @app_commands.command(name="remove", description="Remove a style; edits made with it keep it in the ledger")
    @app_commands.describe(name="The style to remove")
    @app_commands.checks.has_permissions(manage_guild=True)
    async def remove(self, interaction: discord.Interaction, name: str) -> None:
        assert interaction.guild_id is not None
        preset = await self.bot.engine.presets.remove(interaction.guild_id, name)
        log.info("guild=%s style %r removed by user=%s", interaction.guild_id, preset.name, interaction.user.id)
        await interaction.response.send_message(f"🗑️ Removed the style **{preset.name}**.", ephemeral=True)

    @remove.autocomplete("name")
    async def remove_autocomplete(
        self, interaction: discord.Interaction, current: str
    ) -> list[app_commands.Choice[str]]:
        return style_choices(self.bot.engine.presets, interaction.guild_id, current)

    @app_commands.command(name="list", description="This server's styles")
    @app_commands.checks.has_permissions(manage_guild=True)
    async def list_presets(self, interaction: discord.Interaction) -> None:
        presets = self.bot.engine.presets.of(interaction.guild_id)
        if not presets:
            text = "This server has no styles yet. Add one with `/atelier presets add`."
        else:
            lines = [f"🎨 **Styles in this server** ({len(presets)} of at most {MAX_PRESETS})"]
            lines += [f"• **{p.name}**: {clip(discord.utils.escape_mentions(p.text), 150)}" for p in presets]
            text = clip("\n".join(lines), 2000)
        await interaction.response.send_message(text, ephemeral=True)


async def setup(bot: AtelierBot) -> None:
    """Hang the presets group under ``/atelier`` (loaded after ``cogs.admin``)."""
    admin = bot.tree.get_command("atelier")
    if not isinstance(admin, app_commands.Group):
        raise RuntimeError("cogs.admin must be loaded before cogs.presets: /atelier is missing")
    admin.add_command(PresetCommands(bot))
