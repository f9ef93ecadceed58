"""Atelier's errors: what went wrong, what the member may be told, what the log gets.

Every error a member can meet is an ``AtelierError``. ``user_message`` is safe to
show in Discord (it never holds a secret); ``log_detail`` is for the operator's log
and is also free of secrets. One place in ``cogs/`` turns these into replies.
"""

from __future__ import annotations


class AtelierError(Exception):
    """Base class: an error with a message a member may see."""

    #: Whether the message concerns only the member who asked (ephemeral reply).
    private: bool = True

    def __init__(self, user_message: str, *, log_detail: str | None = None) -> None:
        super().__init__(user_message)
        self.user_message = user_message
        self.log_detail = log_detail or user_message


class InputError(AtelierError):
    """The member's request is wrong: a gap in the images, a bad size, a non-image."""


class ImageAPIError(AtelierError):
    """The image API did not produce an image."""

    private = False


class BadRequestError(ImageAPIError):
    """A 4xx the API explains itself (a safety refusal included); never retried."""


class SafetyRejectedError(BadRequestError):
    """The API refused the content; never retried, whatever the status code."""


class AuthenticationError(ImageAPIError):
    """401/403: the key is wrong or lacks access. The operator must act."""

    def __init__(self, log_detail: str) -> None:
        super().__init__(
            "The image service is not configured correctly; the server admin has been told.",
            log_detail=log_detail,
        )


class QuotaExhaustedError(ImageAPIError):
    """The provider says the account is out of credit (often a 429); retrying cannot help."""

    def __init__(self, log_detail: str) -> None:
        super().__init__(
            "The image service account is out of credit; the server admin has been told.",
            log_detail=log_detail,
        )


class TransientAPIError(ImageAPIError):
    """429, 5xx or a dropped connection: worth another try after a pause."""

    def __init__(self, log_detail: str, *, retry_after: float | None = None) -> None:
        super().__init__("The image service is busy right now. Try again shortly.", log_detail=log_detail)
        self.retry_after = retry_after


class APITimeoutError(ImageAPIError):
    """The API did not answer in time. Not retried: the call may still be billed."""

    def __init__(self, seconds: float) -> None:
        super().__init__(
            f"The image service did not answer within {seconds:g} s. Try again, perhaps with fewer or smaller images.",
            log_detail=f"timeout after {seconds:g} s",
        )


class InvalidResponseError(ImageAPIError):
    """The API answered 2xx but with something that is not a usable image."""

    def __init__(self, log_detail: str) -> None:
        super().__init__(
            "The image service sent back something that is not a usable image. Try again.",
            log_detail=log_detail,
        )


class ConfigError(Exception):
    """A required setting is missing or invalid; start-up stops with this one line."""
