"""Atelier's errors: what went wrong, what the member may be told, what the log gets.

Every error a member can meet is an ``AtelierError``. ``user_message`` is safe to
show in Discord (it never holds a secret) and is a ``Text``, translated where it is
shown; ``log_detail`` is for the operator's log, in English, and is also free of
secrets. One place in ``cogs/`` turns these into replies.
"""

from __future__ import annotations

import logging
import secrets

from bot.i18n import Text, _t

log = logging.getLogger(__name__)


class AtelierError(Exception):
    """Base class: an error with a message a member may see."""

    #: Whether the message concerns only the member who asked (ephemeral reply).
    private: bool = True

    def __init__(self, user_message: Text, *, log_detail: str | None = None) -> None:
        super().__init__(str(user_message))
        self.user_message = user_message
        self.log_detail = log_detail or str(user_message)


class InputError(AtelierError):
    """The member's request is wrong: a gap in the images, a bad size, a non-image."""


class InputsGoneError(InputError):
    """A reroll's originals are no longer kept (the retention window or the disk cap passed)."""

    def __init__(self, hours: float) -> None:
        super().__init__(
            _t(
                "The original images of this edit are no longer kept (they are kept for {hours} hours after an "
                "edit), so it can't be rerolled. **Refine** starts from the result instead.",
                hours=f"{hours:g}",
            )
            if hours
            else _t(
                "The original images of edits are not kept on this bot, so it can't be rerolled. "
                "**Refine** starts from the result instead."
            )
        )


class ImageAPIError(AtelierError):
    """The image API did not produce an image."""

    private = False


class BadRequestError(ImageAPIError):
    """A 4xx the API explains itself (a safety refusal included); never retried."""


class SafetyRejectedError(BadRequestError):
    """The API refused the content; never retried, whatever the status code."""


class AuthenticationError(ImageAPIError):
    """401/403: the key is wrong or lacks access. The operator must act, or the server's admins for its own key."""

    def __init__(self, log_detail: str, *, guild_key: bool = False) -> None:
        super().__init__(
            _t("This server's own image API key was refused; the server's admins have been told.")
            if guild_key
            else _t("The image service is not configured correctly; the server admin has been told."),
            log_detail=log_detail,
        )
        self.guild_key = guild_key


class QuotaExhaustedError(ImageAPIError):
    """The provider says the account is out of credit (often a 429); retrying cannot help."""

    def __init__(self, log_detail: str, *, guild_key: bool = False) -> None:
        super().__init__(
            _t("This server's own image service account is out of credit; the server's admins have been told.")
            if guild_key
            else _t("The image service account is out of credit; the server admin has been told."),
            log_detail=log_detail,
        )
        self.guild_key = guild_key


class TransientAPIError(ImageAPIError):
    """A failure the provider cannot have billed; repeated after a pause, within the bound.

    The subclasses below say which: a rate limit, a quick 5xx, a connection that failed
    before the request was sent.
    """

    member_text = _t("The image service is busy right now. Try again shortly.")

    def __init__(self, log_detail: str, *, retry_after: float | None = None) -> None:
        super().__init__(self.member_text, log_detail=log_detail)
        self.retry_after = retry_after


class RateLimitedError(TransientAPIError):
    """A 429 that is a rate limit, not an exhausted quota: nothing was generated."""


class ServerError(TransientAPIError):
    """A 5xx that came back within ``IMAGE_API_FAST_FAILURE_SECONDS``: too quick to follow a generation."""


class ConnectFailedError(TransientAPIError):
    """The connection failed before the request was sent (refused, reset, DNS)."""

    member_text = _t("The image service could not be reached. Try again shortly.")


class MaybeBilledError(ImageAPIError):
    """The request reached the provider and then failed: it may have been billed, so it is never repeated."""


class SlowServerError(MaybeBilledError):
    """A 5xx that came after ``IMAGE_API_FAST_FAILURE_SECONDS``: it may follow a billed generation."""

    def __init__(self, log_detail: str) -> None:
        super().__init__(_t("The image service failed while working on this edit. Try again."), log_detail=log_detail)


class BodyCutOffError(MaybeBilledError):
    """The answer started to arrive and was cut off: the image was made, and billed, but lost."""

    def __init__(self, log_detail: str) -> None:
        super().__init__(
            _t("The image service's answer was cut off before it arrived whole. Try again."), log_detail=log_detail
        )


class StreamCutError(BodyCutOffError):
    """A streamed answer stopped after its first event (a preview), before the finished image: it was being made,
    and may be billed, so it is never repeated."""

    def __init__(self, log_detail: str) -> None:
        MaybeBilledError.__init__(
            self,
            _t(
                "The image service stopped sending after a preview, before the finished image. "
                "You were not charged; please try again."
            ),
            log_detail=log_detail,
        )


class ConnectionLostError(MaybeBilledError):
    """The connection was lost after the request was sent, before an answer came."""

    def __init__(self, log_detail: str) -> None:
        super().__init__(
            _t("The connection to the image service was lost before it answered. Try again."), log_detail=log_detail
        )


class APITimeoutError(MaybeBilledError):
    """The API did not answer in time. Not retried: the call may still be billed."""

    def __init__(self, seconds: float) -> None:
        super().__init__(
            _t(
                "The image service did not answer within {seconds} s. Try again, perhaps with fewer or smaller images.",
                seconds=f"{seconds:g}",
            ),
            log_detail=f"timeout after {seconds:g} s",
        )


class InvalidResponseError(ImageAPIError):
    """The API answered 2xx but with something that is not a usable image."""

    def __init__(self, log_detail: str) -> None:
        super().__init__(
            _t("The image service sent back something that is not a usable image. Try again."),
            log_detail=log_detail,
        )


class DeliveryError(AtelierError):
    """The result was made but could not be shown to the member."""

    private = False


class QueueFullError(AtelierError):
    """The queued jobs' images fill ``MAX_QUEUED_INPUT_MB``: new work waits until some finish."""

    def __init__(self) -> None:
        super().__init__(
            _t(
                "Atelier's queue is full right now, so this edit was not started. You were not charged; "
                "please try again in a few minutes."
            )
        )


class TooSlowError(AtelierError):
    """A form must be Discord's first answer, within 3 s, and what it needed first (the database) did not answer
    in time: nothing was done, and trying again a moment later may work."""

    def __init__(self) -> None:
        super().__init__(_t("I'm slow to answer right now, so the form could not open. Please try again in a moment."))


class CancelRefusedError(AtelierError):
    """The job cannot be cancelled (not yours, already running, already over)."""


def unexpected_text(reference: str) -> Text:
    """The one apology for a bug, wherever it happens; the reference finds the traceback in the log."""
    return _t(
        "Something went wrong on our side (error reference `{reference}`); it has been logged. "
        "Nothing was charged for it. Please try again.",
        reference=reference,
    )


class UnexpectedError(AtelierError):
    """A bug: the member gets one short apology with a reference, the log gets the traceback under it."""

    def __init__(self, reference: str) -> None:
        super().__init__(unexpected_text(reference), log_detail=f"unexpected error {reference}")
        self.reference = reference

    @classmethod
    def capture(cls, exc: BaseException, where: str) -> UnexpectedError:
        """Log ``exc`` with its traceback under a new reference, and return the error to show."""
        reference = secrets.token_hex(4)
        log.error("unexpected error in %s (reference %s)", where, reference, exc_info=exc)
        return cls(reference)


class ConfigError(Exception):
    """A required setting is missing or invalid; start-up stops with this one line."""
