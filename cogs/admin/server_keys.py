"""The form where an admin pastes the server's own API key, and what keeps that key out of the log.

The form is in the admin's language. The key arrives in a modal submission. Nothing echoes
it: the answer says only that a key is set and by whom. discord.py logs every gateway event at DEBUG, the submission
included, before the engine knows the key; ``HideKeyForm`` scrubs the form's values
from those records (the engine then adds the key to the log filter for good).
"""

from __future__ import annotations

import logging
import re

import discord
from discord import ui

from bot.i18n import _t
from cogs.core.custom_ids import SERVER_KEY_FIELD, SERVER_KEY_MODAL
from cogs.core.language import render

# A submitted value in a gateway payload as discord.py logs it (a dict's repr) or as JSON.
_VALUES = re.compile(r"""(['"]value['"]\s*:\s*)(['"])(?:(?!\2).)*\2""")


class ServerKeyModal(ui.Modal):
    """Asks for the key, in the admin's language; its submission is routed by custom_id (``SERVER_KEY_MODAL``)."""

    def __init__(self, language: str | None) -> None:
        super().__init__(
            title=render(_t("This server's image API key"), language), custom_id=SERVER_KEY_MODAL, timeout=None
        )
        self.add_item(
            ui.Label(
                text=render(_t("API key"), language),
                description=render(
                    _t("Used for this server's edits instead of the bot's key. Stored encrypted; never shown again."),
                    language,
                ),
                component=ui.TextInput(
                    custom_id=SERVER_KEY_FIELD,
                    style=discord.TextStyle.short,
                    placeholder="sk-…",
                    min_length=8,
                    max_length=300,
                    required=True,
                ),
            )
        )


class HideKeyForm(logging.Filter):
    """Scrubs the values of a key form submission from any log record that carries one."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        if SERVER_KEY_MODAL in message:
            record.msg, record.args = _VALUES.sub(r"\1\2[redacted]\2", message), None
        return True
