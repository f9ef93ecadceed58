"""Logging: one format, and a filter that scrubs secrets from every record."""

from __future__ import annotations

import logging
import sys
from collections.abc import Iterable


class RedactSecrets(logging.Filter):
    """Replaces any configured secret in a log record with ``[redacted]``.

    Defence in depth: code never formats a secret into a log line, but a library
    might echo a header or a URL in an exception.
    """

    def __init__(self, secrets: Iterable[str]) -> None:
        super().__init__()
        self._secrets = [s for s in secrets if s and len(s) >= 6]

    def add(self, secret: str) -> None:
        """Scrub ``secret`` too from now on (a server's own API key, once it is known)."""
        if secret and len(secret) >= 6 and secret not in self._secrets:
            self._secrets.append(secret)

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        text = record.exc_text or ""
        if any(s in message or s in text for s in self._secrets):
            for secret in self._secrets:
                message = message.replace(secret, "[redacted]")
                text = text.replace(secret, "[redacted]")
            record.msg, record.args = message, None
            record.exc_text = text or None
        return True


class DropVoiceWarnings(logging.Filter):
    """Atelier never joins voice: discord.py's warnings about missing voice libraries are noise."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "voice will NOT be supported" not in record.getMessage()


def setup_logging(level: str, secrets: Iterable[str]) -> RedactSecrets:
    """Log to stderr at ``level``, with secrets scrubbed; the filter takes more secrets later."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)-7s %(name)s: %(message)s"))
    redact = RedactSecrets(secrets)
    handler.addFilter(redact)
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    # discord.py's own INFO lines are useful; its DEBUG firehose is not, unless asked for.
    logging.getLogger("discord").setLevel(level if level == "DEBUG" else "INFO")
    logging.getLogger("discord.client").addFilter(DropVoiceWarnings())
    return redact
