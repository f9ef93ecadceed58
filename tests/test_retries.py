"""Asking again while the database fails (``bot.retries``): how many tries, whose error, and what the caller learns."""

from __future__ import annotations

import logging

import pytest

from bot.errors import AtelierError
from bot.i18n import _t
from bot.retries import asked_again, asked_until_answered

log = logging.getLogger("test-retries")
NO_PAUSES = (0.0, 0.0)


class Tries:
    """An attempt that fails its first ``failures`` tries with ``error``, then answers the try's number."""

    def __init__(self, failures: int, error: Exception | None = None) -> None:
        self.failures = failures
        self.error = error or ConnectionError("the connection dropped")
        self.made = 0

    async def __call__(self) -> int:
        self.made += 1
        if self.made <= self.failures:
            raise self.error
        return self.made


async def test_an_answer_after_failed_tries_says_a_try_failed_before_it() -> None:
    first = Tries(0)
    assert (await asked_until_answered(first, NO_PAUSES, "a record", log)).failed_before is False
    later = Tries(2)
    asked = await asked_until_answered(later, NO_PAUSES, "a record", log)
    assert (asked.value, asked.failed_before, later.made) == (3, True, 3)


async def test_after_its_pauses_the_last_try_s_error_is_the_caller_s_unless_asked_for_good() -> None:
    failing = Tries(3)
    with pytest.raises(ConnectionError):
        await asked_again(failing, NO_PAUSES, "a record", log)
    assert failing.made == 3  # the first try, then one after each pause
    for_good = Tries(7)
    asked = await asked_until_answered(for_good, NO_PAUSES, "a record", log, for_good=True)
    assert (asked.value, asked.failed_before) == (8, True)


async def test_an_error_that_is_an_answer_is_the_caller_s_at_once() -> None:
    refused = Tries(5, AtelierError(_t("The API said no.")))
    with pytest.raises(AtelierError):
        await asked_until_answered(refused, NO_PAUSES, "a record", log, for_good=True, not_again=(AtelierError,))
    assert refused.made == 1
