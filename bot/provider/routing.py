"""Which model a new job uses: its server's choice, or the fallback while that model fails fast.

A circuit breaker per model, fed by the API attempts the lifecycle records: two
consecutive fast failures (a connection that failed before sending, a 5xx within
``IMAGE_API_FAST_FAILURE_SECONDS``) open it, and for ``IMAGE_FALLBACK_SECONDS`` new
jobs for that model go to its fallback instead (its catalog entry's ``fallback``, else
``IMAGE_FALLBACK_MODEL``), when the fallback takes the job's size, options and mask (a region
edit) and is not failing itself. Then the model is tried again; any answer
that shows it working (a success, a refusal it explains, a slow answer) resets the count.

Routing happens at admission, so a job is charged the price of the model that makes it
and records it; jobs already in line keep theirs.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from bot.config import Config
from bot.core.attempts import AttemptOutcome
from bot.core.models import ImageModel
from bot.ports import Move

log = logging.getLogger(__name__)

FAST_FAILURES_TO_OPEN = 2
FAST_FAILURES = frozenset({AttemptOutcome.CONNECT_FAILED, AttemptOutcome.SERVER_ERROR_FAST})
# Outcomes that say nothing about the model's health: the key, the account, a rate limit, a stop.
NEUTRAL = frozenset(
    {
        AttemptOutcome.AUTH_FAILED,
        AttemptOutcome.QUOTA_EXHAUSTED,
        AttemptOutcome.RATE_LIMITED,
        AttemptOutcome.INTERRUPTED,
    }
)


@dataclass
class _Breaker:
    fast_failures: int = 0
    open_until: float = 0.0


class ModelRouter:
    """Picks each new job's model; observes the lifecycle's moves for API attempts."""

    def __init__(self, config: Config, clock: Callable[[], float] = time.monotonic) -> None:
        self._config = config
        self._clock = clock
        self._breakers: dict[str, _Breaker] = {}
        # With several processes: told when this process opens a breaker, to tell the others.
        self.on_open: Callable[[str], None] | None = None

    def is_open(self, model: str) -> bool:
        """Whether new jobs for ``model`` go elsewhere right now."""
        breaker = self._breakers.get(model)
        return breaker is not None and self._clock() < breaker.open_until

    def route(
        self,
        chosen: ImageModel,
        size: str | None,
        options: Mapping[str, str | int] | None = None,
        endpoint: str = "edits",
        *,
        mask: bool = False,
    ) -> ImageModel:
        """The model a new job for ``chosen`` (with ``size``, the ``options`` it checked and, for a region edit,
        a ``mask``) should use now."""
        fallback = self._config.fallback_for(chosen)
        if (
            fallback is None
            or fallback.path(endpoint) is None
            or not self.is_open(chosen.name)
            or self.is_open(fallback.name)
            or not fallback.accepts(size, options, mask=mask)
        ):
            return chosen
        return fallback

    def job_moved(self, move: Move) -> None:
        """Count the attempts a move recorded against the model that made them."""
        model = move.job.model or self._config.default_model.name
        for attempt in move.attempts:
            self.record(model, attempt.outcome)

    def record(self, model: str, outcome: AttemptOutcome) -> None:
        """One attempt's outcome for ``model``."""
        if outcome in NEUTRAL:
            return
        breaker = self._breakers.setdefault(model, _Breaker())
        if outcome not in FAST_FAILURES:
            breaker.fast_failures = 0
            return
        breaker.fast_failures += 1
        now = self._clock()
        if breaker.fast_failures >= FAST_FAILURES_TO_OPEN and now >= breaker.open_until:
            breaker.open_until = now + self._config.image_fallback_seconds
            breaker.fast_failures = 0
            if self.on_open is not None:
                self.on_open(model)
            entry = self._config.entry(model)
            fallback = self._config.fallback_for(entry) if entry is not None else None
            where = f"new jobs go to {fallback.name}" if fallback is not None else "no fallback set"
            log.warning(
                "model %s failed fast %d times in a row; %s for %.0f s",
                model, FAST_FAILURES_TO_OPEN, where, self._config.image_fallback_seconds,
            )  # fmt: skip

    async def opened_elsewhere(self, model: str | None) -> None:
        """Another process opened ``model``'s breaker: new jobs here go to the fallback too."""
        if model is None:
            return  # nothing to re-read after a lost connection: breakers close on their own
        breaker = self._breakers.setdefault(model, _Breaker())
        breaker.open_until = max(breaker.open_until, self._clock() + self._config.image_fallback_seconds)
