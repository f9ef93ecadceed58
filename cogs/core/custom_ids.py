"""Every custom_id Atelier puts on a component or modal, in one place.

Ids are namespaced and versioned so that buttons on old messages keep working
after a restart, and so a later format can live beside this one.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import ClassVar, Self

_JOB = r"(?P<job_id>[0-9a-f]{1,32})"
_MESSAGE = r"(?P<channel_id>\d{1,20}):(?P<message_id>\d{1,20})"
REFINE_BUTTON_TEMPLATE = rf"atelier:refine:v1:{_JOB}"
CANCEL_BUTTON_TEMPLATE = rf"atelier:cancel:v1:{_JOB}"
# A request for variations' Cancel: every run of the group (named by its first job) not started yet.
CANCEL_GROUP_TEMPLATE = rf"atelier:cancel-group:v1:{_JOB}"
REROLL_BUTTON_TEMPLATE = rf"atelier:reroll:v1:{_JOB}"
DELETE_BUTTON_TEMPLATE = rf"atelier:delete:v1:{_JOB}"
INFO_BUTTON_TEMPLATE = rf"atelier:info:v1:{_JOB}"
REGION_BUTTON_TEMPLATE = rf"atelier:region:v1:{_JOB}"
VARIATIONS_BUTTON_TEMPLATE = rf"atelier:variations:v1:{_JOB}"
# Refine offered away from the result (its originals are gone, or from /history): the result's ids.
REFINE_FROM_TEMPLATE = rf"atelier:refine-from:v1:{_MESSAGE}:{_JOB}"
# /history pages: whose history, which page, and which way the button goes (p)revious or (n)ext.
HISTORY_PAGE_TEMPLATE = r"atelier:history:v1:(?P<user_id>\d{1,20}):(?P<page>\d{1,6}):(?P<way>[pn])"
HISTORY_PICK_TEMPLATE = r"atelier:history-pick:v1:(?P<user_id>\d{1,20}):(?P<page>\d{1,6})"
REFINE_MODAL_PREFIX = "atelier:refine-modal:v1:"
_REFINE_MODAL = re.compile(re.escape(REFINE_MODAL_PREFIX) + rf"{_MESSAGE}:{_JOB}$")
REGION_MODAL_PREFIX = "atelier:region-modal:v1:"
_REGION_MODAL = re.compile(re.escape(REGION_MODAL_PREFIX) + rf"{_MESSAGE}:{_JOB}$")
MESSAGE_MODAL_PREFIX = "atelier:message-modal:v1:"
_MESSAGE_MODAL = re.compile(re.escape(MESSAGE_MODAL_PREFIX) + rf"{_MESSAGE}$")
# Form fields; Refine and "Edit images" share the instruction and size fields.
REFINE_PROMPT_FIELD = "atelier-refine-prompt"
REFINE_SIZE_FIELD = "atelier-refine-size"
# Moderator buttons on audit-channel posts.
AUDIT_DELETE_TEMPLATE = r"atelier:audit-delete:v1:(?P<job_id>[0-9a-f]{1,32})"
AUDIT_BLOCK_TEMPLATE = r"atelier:audit-block:v1:(?P<user_id>\d{1,20}):(?P<job_id>[0-9a-f]{1,32})"
# The form where an admin pastes the server's own API key (routed by this id, never echoed).
SERVER_KEY_MODAL = "atelier:server-key-modal:v1"
SERVER_KEY_FIELD = "atelier-server-key"
STYLE_FIELD = "atelier-style"
# The "who sees the result" select of "Edit images" forms opened before the options field replaced it.
PRIVATE_FIELD = "atelier-private"
# Refine and "Edit images": the files a member adds (a file upload), and the options (a checkbox group).
IMAGES_FIELD = "atelier-images"
OPTIONS_FIELD = "atelier-options"
ONLY_ME_OPTION = "only-me"
SPOILER_OPTION = "spoiler"
# The model's options in the forms' options group: "<kind>:<value>", e.g. "quality:high", "format:webp",
# "background:transparent" (kinds as the slash commands name them).
MODEL_OPTION_SEPARATOR = ":"
# The region form: the grid's cells (a checkbox group) and the member's own mask (a file upload).
REGION_CELLS_FIELD = "atelier-region-cells"
MASK_FIELD = "atelier-mask"


def variations_button_id(job_id: str) -> str:
    """custom_id of the Variations button on a result of ``job_id``."""
    return f"atelier:variations:v1:{job_id}"


def refine_button_id(job_id: str) -> str:
    """custom_id of the Refine button on a result of ``job_id``."""
    return f"atelier:refine:v1:{job_id}"


def cancel_group_id(group_id: str) -> str:
    """custom_id of the Cancel button on a request for variations' status message."""
    return f"atelier:cancel-group:v1:{group_id}"


def cancel_button_id(job_id: str) -> str:
    """custom_id of the Cancel button on a queued job's status message."""
    return f"atelier:cancel:v1:{job_id}"


def reroll_button_id(job_id: str) -> str:
    """custom_id of the Reroll button on a result of ``job_id``."""
    return f"atelier:reroll:v1:{job_id}"


def delete_button_id(job_id: str) -> str:
    """custom_id of the Delete button on a result of ``job_id``."""
    return f"atelier:delete:v1:{job_id}"


def info_button_id(job_id: str) -> str:
    """custom_id of the Info button on a result of ``job_id``."""
    return f"atelier:info:v1:{job_id}"


def region_button_id(job_id: str) -> str:
    """custom_id of the Edit region button on a result of ``job_id``."""
    return f"atelier:region:v1:{job_id}"


def refine_from_id(channel_id: int, message_id: int, job_id: str) -> str:
    """custom_id of a Refine button for the result ``message_id`` of ``job_id``, shown elsewhere."""
    return f"atelier:refine-from:v1:{channel_id}:{message_id}:{job_id}"


def history_page_id(user_id: int, page: int, way: str) -> str:
    """custom_id of a /history button: ``user_id``'s page ``page``, reached going ``way`` (p or n)."""
    return f"atelier:history:v1:{user_id}:{page}:{way}"


def history_pick_id(user_id: int, page: int) -> str:
    """custom_id of the Refine/Reroll select on ``user_id``'s /history page ``page``."""
    return f"atelier:history-pick:v1:{user_id}:{page}"


@dataclass(frozen=True)
class RefineModalId:
    """Where a refine modal came from: the clicked result message and its job."""

    channel_id: int
    message_id: int
    job_id: str

    # The form's own prefix and pattern (a subclass names another form of the same shape).
    PREFIX: ClassVar[str] = REFINE_MODAL_PREFIX
    PATTERN: ClassVar[re.Pattern[str]] = _REFINE_MODAL

    def encode(self) -> str:
        """The modal's custom_id (well under Discord's 100 characters)."""
        return f"{self.PREFIX}{self.channel_id}:{self.message_id}:{self.job_id}"

    @classmethod
    def parse(cls, custom_id: str) -> Self | None:
        """The ids in the form's custom_id, or ``None`` if it is not one of this form."""
        match = cls.PATTERN.match(custom_id)
        if match is None:
            return None
        return cls(int(match["channel_id"]), int(match["message_id"]), match["job_id"])


@dataclass(frozen=True)
class RegionModalId(RefineModalId):
    """Where a region form came from: the clicked result message and its job (as Refine's, with its own prefix)."""

    PREFIX: ClassVar[str] = REGION_MODAL_PREFIX
    PATTERN: ClassVar[re.Pattern[str]] = _REGION_MODAL


def audit_delete_id(job_id: str) -> str:
    """custom_id of the Delete result button on an audit post."""
    return f"atelier:audit-delete:v1:{job_id}"


def audit_block_id(user_id: int, job_id: str) -> str:
    """custom_id of the Block member button on an audit post."""
    return f"atelier:audit-block:v1:{user_id}:{job_id}"


@dataclass(frozen=True)
class MessageModalId:
    """Which message an "Edit images" form is for."""

    channel_id: int
    message_id: int

    def encode(self) -> str:
        """The form's custom_id."""
        return f"{MESSAGE_MODAL_PREFIX}{self.channel_id}:{self.message_id}"

    @classmethod
    def parse(cls, custom_id: str) -> MessageModalId | None:
        """The ids in an "Edit images" form's custom_id, or ``None`` if it is not one."""
        match = _MESSAGE_MODAL.match(custom_id)
        if match is None:
            return None
        return cls(int(match["channel_id"]), int(match["message_id"]))
