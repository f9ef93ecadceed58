"""Sync application commands only when their schema changed since the last sync.

Discord allows a limited number of command creations a day, so a restart must not
re-upload an unchanged schema. The hash of what was last synced is kept in DATA_DIR.
"""

from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)


def schema_hash(payload: list[dict[str, Any]]) -> str:
    """A stable hash of a command schema payload."""
    canonical = json.dumps(payload, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(canonical.encode()).hexdigest()


class SyncRecord:
    """The hashes last synced, one per application and scope (global or a guild)."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def _load(self) -> dict[str, str]:
        try:
            data = json.loads(self.path.read_text())
        except (FileNotFoundError, ValueError):
            return {}
        return {str(k): str(v) for k, v in data.items()} if isinstance(data, dict) else {}

    def is_current(self, scope: str, digest: str) -> bool:
        """Whether ``digest`` is what was last synced for ``scope``."""
        return self._load().get(scope) == digest

    def remember(self, scope: str, digest: str) -> None:
        """Record a successful sync (written atomically)."""
        data = self._load()
        data[scope] = digest
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(json.dumps(data, indent=2, sort_keys=True))
        tmp.replace(self.path)
