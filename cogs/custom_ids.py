"""Every custom_id Atelier puts on a component or modal, in one place.

Ids are namespaced and versioned so that buttons on old messages keep working
after a restart, and so a later format can live beside this one.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

REFINE_BUTTON_TEMPLATE = r"atelier:refine:v1:(?P<job_id>[0-9a-f]{1,32})"
CANCEL_BUTTON_TEMPLATE = r"atelier:cancel:v1:(?P<job_id>[0-9a-f]{1,32})"
REFINE_MODAL_PREFIX = "atelier:refine-modal:v1:"
_REFINE_MODAL = re.compile(
    re.escape(REFINE_MODAL_PREFIX) + r"(?P<channel_id>\d{1,20}):(?P<message_id>\d{1,20}):(?P<job_id>[0-9a-f]{1,32})$"
)
REFINE_PROMPT_FIELD = "atelier-refine-prompt"
REFINE_SIZE_FIELD = "atelier-refine-size"
# Moderator buttons on audit-channel posts.
AUDIT_DELETE_TEMPLATE = r"atelier:audit-delete:v1:(?P<job_id>[0-9a-f]{1,32})"
AUDIT_BLOCK_TEMPLATE = r"atelier:audit-block:v1:(?P<user_id>\d{1,20}):(?P<job_id>[0-9a-f]{1,32})"
# The form where an admin pastes the server's own API key (routed by this id, never echoed).
SERVER_KEY_MODAL = "atelier:server-key-modal:v1"
SERVER_KEY_FIELD = "atelier-server-key"


def refine_button_id(job_id: str) -> str:
    """custom_id of the Refine button on a result of ``job_id``."""
    return f"atelier:refine:v1:{job_id}"


def cancel_button_id(job_id: str) -> str:
    """custom_id of the Cancel button on a queued job's status message."""
    return f"atelier:cancel:v1:{job_id}"


@dataclass(frozen=True)
class RefineModalId:
    """Where a refine modal came from: the clicked result message and its job."""

    channel_id: int
    message_id: int
    job_id: str

    def encode(self) -> str:
        """The modal's custom_id (well under Discord's 100 characters)."""
        return f"{REFINE_MODAL_PREFIX}{self.channel_id}:{self.message_id}:{self.job_id}"

    @classmethod
    def parse(cls, custom_id: str) -> RefineModalId | None:
        """The ids in a refine modal's custom_id, or ``None`` if it is not one."""
        match = _REFINE_MODAL.match(custom_id)
        if match is None:
            return None
        return cls(int(match["channel_id"]), int(match["message_id"]), match["job_id"])


def audit_delete_id(job_id: str) -> str:
    """custom_id of the Delete result button on an audit post."""
    return f"atelier:audit-delete:v1:{job_id}"


def audit_block_id(user_id: int, job_id: str) -> str:
    """custom_id of the Block member button on an audit post."""
    return f"atelier:audit-block:v1:{user_id}:{job_id}"
