"""Commands in every shipped language: discord.py's ``Translator``, reading the same catalogs as every reply.

At sync time discord.py asks, for each command, option and choice string and each of
Discord's locales, for a translation; Discord then shows members their own language.
Names come with a context (``cogs.language._name``) so a translator can tell the
command ``edit`` from any other "edit". A translated name that breaks Discord's rules
for names (lowercase, no spaces, at most 32 letters, digits, ``-`` or ``_``) is left
out with a warning, so a catalog mistake can never stop the commands from syncing.
"""

from __future__ import annotations

import logging

import discord
from discord import app_commands

from bot.i18n import SOURCE_LANGUAGE, Catalogs, catalogs, language_of

log = logging.getLogger(__name__)

_NAMES = {
    app_commands.TranslationContextLocation.command_name,
    app_commands.TranslationContextLocation.group_name,
    app_commands.TranslationContextLocation.parameter_name,
}
NAME_MAX = 32
CHOICE_MAX = 100


def valid_slash_name(name: str) -> bool:
    """Discord's rule for slash command and option names (letters in any script, digits, ``-``, ``_``)."""
    return 0 < len(name) <= NAME_MAX and name == name.lower() and all(char.isalnum() or char in "-_" for char in name)


class CatalogTranslator(app_commands.Translator):
    """Translates command names, descriptions and choices from the gettext catalogs."""

    def __init__(self, shipped: Catalogs | None = None) -> None:
        self._shipped = shipped

    async def translate(
        self,
        string: app_commands.locale_str,
        locale: discord.Locale,
        context: app_commands.TranslationContextTypes,
    ) -> str | None:
        shipped = self._shipped or catalogs()
        language = language_of(locale.value, shipped.languages)
        if language is None or language == SOURCE_LANGUAGE:
            return None
        found = shipped.translation(string.message, language, string.extras.get("context"))
        if found is None:
            return None
        is_menu = isinstance(context.data, app_commands.ContextMenu)
        if context.location in _NAMES and not (len(found) <= NAME_MAX if is_menu else valid_slash_name(found)):
            log.warning(
                "the %s name %r for %r breaks Discord's rules; English is used", language, found, string.message
            )
            return None
        if len(found) > CHOICE_MAX:
            log.warning("the %s text for %r is longer than Discord allows; English is used", language, string.message)
            return None
        return found
