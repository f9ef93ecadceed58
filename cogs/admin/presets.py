"""``/atelier presets add|remove|list``: a server's named styles (Manage Server).

A preset is a name and a text added to the member's instruction when they pick that
style on ``/edit`` or in a form (``bot.servers.presets``). At most 25 per server, each text at
most 500 characters. The group hangs under ``/atelier`` (``cogs.admin.admin``), so it shares
its Manage Server default permission; each command checks it again when run. Answers are in
the admin's language; style names and texts are shown as they were typed.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

import discord
from discord import app_commands

from bot.i18n import _t
from bot.servers.presets import MAX_NAME, MAX_PRESETS, MAX_TEXT
from cogs.core.language import _desc, _name, say
from cogs.core.requests import style_choices
from cogs.core.text import clip

if TYPE_CHECKING:
    from cogs.core.host import AtelierClient

log = logging.getLogger(__name__)


class PresetCommands(app_commands.Group):
    """The ``presets`` subcommands of ``/atelier``."""

    def __init__(self, bot: AtelierClient) -> None:
        super().__init__(
            name=_name("command name", "presets"),
            description=_desc("Named styles members can add to their instructions"),
        )
        self.bot = bot

    @app_commands.command(
        name=_name("command name", "add"), description=_desc("Add a style (or replace the one with this name)")
    )
    @app_commands.describe(
        name=_desc("Short name members pick, e.g. watercolour"),
        text=_desc("Added to the instruction, e.g. “as a loose watercolour painting on textured paper”"),
    )
    @app_commands.rename(name=_name("option name", "name"), text=_name("option name", "text"))
    @app_commands.checks.has_permissions(manage_guild=True)
    async def add(
        self,
        interaction: discord.Interaction,
        name: app_commands.Range[str, 1, MAX_NAME],
        text: app_commands.Range[str, 1, MAX_TEXT],
    ) -> None:
        assert interaction.guild_id is not None
        preset, replaced = await self.bot.engine.add_preset(interaction.guild_id, name, text, interaction.user.id)
        log.info("guild=%s style %r %s by user=%s", interaction.guild_id, preset.name,
                 "replaced" if replaced else "added", interaction.user.id)  # fmt: skip
        shown = discord.utils.escape_mentions(preset.text)
        if replaced:
            old = clip(discord.utils.escape_mentions(replaced.text), 300)
            lines = [
                # Translators: {name} and {text} are the style's name and new text, as the admin typed them.
                say(interaction, _t("✅ Replaced the style **{name}**: {text}", name=preset.name, text=shown)),
                # Translators: {text} is the style's text before it was replaced.
                "-# " + say(interaction, _t("It was: {text}", text=old)),
            ]
        else:
            # Translators: {name} and {text} are the style's name and text, as the admin typed them.
            lines = [say(interaction, _t("✅ Added the style **{name}**: {text}", name=preset.name, text=shown))]
        await interaction.response.send_message("\n".join(lines), ephemeral=True)

    @app_commands.command(
        name=_name("command name", "remove"),
        description=_desc("Remove a style; edits made with it keep it in the ledger"),
    )
    @app_commands.describe(name=_desc("The style to remove"))
    @app_commands.rename(name=_name("option name", "name"))
    @app_commands.checks.has_permissions(manage_guild=True)
    async def remove(self, interaction: discord.Interaction, name: str) -> None:
        assert interaction.guild_id is not None
        preset = await self.bot.engine.remove_preset(interaction.guild_id, name)
        log.info("guild=%s style %r removed by user=%s", interaction.guild_id, preset.name, interaction.user.id)
        removed = _t("🗑️ Removed the style **{name}**.", name=preset.name)
        await interaction.response.send_message(say(interaction, removed), ephemeral=True)

    @remove.autocomplete("name")
    async def remove_autocomplete(
        self, interaction: discord.Interaction, current: str
    ) -> list[app_commands.Choice[str]]:
        return style_choices(self.bot.engine.presets_matching(interaction.guild_id, current))

    @app_commands.command(name=_name("command name", "list"), description=_desc("This server's styles"))
    @app_commands.checks.has_permissions(manage_guild=True)
    async def list_presets(self, interaction: discord.Interaction) -> None:
        presets = self.bot.engine.presets_of(interaction.guild_id)
        if not presets:
            text = say(interaction, _t("This server has no styles yet. Add one with `/atelier presets add`."))
        else:
            # Translators: {count} styles exist; a server may have at most {most}.
            heading = _t(
                "🎨 **Styles in this server** ({count} of at most {most})", count=len(presets), most=MAX_PRESETS
            )
            lines = [say(interaction, heading)]
            lines += [f"• **{p.name}**: {clip(discord.utils.escape_mentions(p.text), 150)}" for p in presets]
            text = clip("\n".join(lines), 2000)
        await interaction.response.send_message(text, ephemeral=True)


async def setup(bot: AtelierClient) -> None:
    """Hang the presets group under ``/atelier`` (loaded after ``cogs.admin.admin``)."""
    admin = bot.tree.get_command("atelier")
    if not isinstance(admin, app_commands.Group):
        raise RuntimeError("cogs.admin.admin must be loaded before cogs.admin.presets: /atelier is missing")
    admin.add_command(PresetCommands(bot))
