"""The reader's language on Discord's side: which catalog an interaction, a job or a server is read in.

A member reads their own Discord language, then their server's, then English
(``Catalogs.language``). A job keeps its member's language, so its status, result
and failure speak it even when they come from another process or after a restart.
What a whole server reads (its audit channel) is in the server's language.

Commands are translated by Discord itself from the localisations synced with them
(``cogs.core.translator``); their names and descriptions are marked with ``_name`` and
``_desc``, which pybabel extracts like ``_t``.
"""

from __future__ import annotations

import discord
from discord import app_commands

from bot.core.job import Job
from bot.i18n import Renderable, catalogs


def language_of(interaction: discord.Interaction) -> str:
    """The catalog whoever started ``interaction`` reads."""
    guild_locale = interaction.guild_locale.value if interaction.guild_locale is not None else None
    return catalogs().language(interaction.locale.value, guild_locale)


def server_language(guild: discord.Guild | None) -> str:
    """The catalog a whole server reads (its audit channel): the server's language, else English."""
    return catalogs().language(guild.preferred_locale.value if guild is not None else None)


def say(interaction: discord.Interaction, text: Renderable) -> str:
    """``text`` in the language of whoever started ``interaction``."""
    return catalogs().render(text, language_of(interaction))


def for_job(job: Job, text: Renderable) -> str:
    """``text`` in the language of the member who asked for ``job``."""
    return catalogs().render(text, job.request.language)


def render(text: Renderable, language: str | None) -> str:
    """``text`` in ``language`` (English for ``None``)."""
    return catalogs().render(text, language)


def _name(context: str, name: str) -> app_commands.locale_str:
    """A command's, option's or choice's name (``context``: "command name", "option name" or "choice name").

    Translations of names must follow Discord's rules for them (``cogs.core.translator`` checks).
    """
    return app_commands.locale_str(name, context=context)


def _desc(text: str) -> app_commands.locale_str:
    """A command's or option's description, translated when the commands are synced."""
    return app_commands.locale_str(text)
