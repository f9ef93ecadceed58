"""Prometheus metrics, fed by the lifecycle's moves (one observer) and by the store's totals.

The registry belongs to this object, never to the process-wide default, so two engines
(tests, workers) never share counters. Counters and histograms are updated from each
move this process makes, in O(1); queue depth, the oldest queued job's wait, running jobs,
today's spend and the notices owed are the store's totals, which every process sees alike,
read once per scrape (the ops server refreshes them first), so they cost a job nothing. No
label ever holds a secret, a prompt or an id: kinds, outcomes, error class names, model names
and attempt results. The configured money limits are exported too (absent when not set),
because alert rules (``deploy/prometheus/alerts.yml``) can only compare a metric with another.
"""

from __future__ import annotations

import functools
import platform
import time
from collections.abc import Callable, Sequence
from importlib.metadata import PackageNotFoundError, version
from math import nan

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, Info, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

from bot.core.attempts import AttemptOutcome
from bot.core.money import usd_float
from bot.core.records import Totals
from bot.core.states import ENDED, JobState
from bot.ports import Move

__all__ = ["CONTENT_TYPE_LATEST", "Metrics"]

# Seconds: from a quick queue to a slow 4K generation behind a long line.
WAIT_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1800)
RUN_BUCKETS = (1, 2.5, 5, 10, 20, 30, 45, 60, 90, 120, 180, 240, 300, 450, 600)


def _version(package: str) -> str:
    try:
        return version(package)
    except PackageNotFoundError:
        return "unknown"


def _as_float(check: Callable[[str], bool], name: str) -> float:
    return float(check(name))


def _age(since: float | None, now: float) -> float:
    """Seconds since ``since``; 0 when there is nothing to age."""
    return 0.0 if since is None else max(0.0, now - since)


class Metrics:
    """Atelier's metrics in a registry of their own; a lifecycle observer."""

    def __init__(
        self, totals: Callable[[], Totals], kinds: Sequence[str] = ("edit",), clock: Callable[[], float] = time.time
    ) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.jobs = Counter("atelier_jobs", "Jobs that ended, by kind and outcome", ["kind", "outcome"], registry=r)
        self.failures = Counter("atelier_job_failures", "Failed jobs by error class", ["error"], registry=r)
        self.wait_seconds = Histogram(
            "atelier_job_wait_seconds", "From acceptance to the API call starting", buckets=WAIT_BUCKETS, registry=r
        )
        self.run_seconds = Histogram(
            "atelier_job_run_seconds",
            "From the API call starting to the job's end (call, decoding, posting)",
            buckets=RUN_BUCKETS,
            registry=r,
        )
        self.api_seconds = Histogram(
            "atelier_api_call_seconds", "One image API call, all its attempts", buckets=RUN_BUCKETS, registry=r
        )
        self.attempts = Counter("atelier_api_attempts", "Image API attempts by result", ["result"], registry=r)
        # Every series a rule compares or rates exists from the start at 0: a counter first seen at 1
        # has no increase to show, so the first failure (or success) would be lost to rate().
        for kind in kinds:
            for outcome in ENDED:
                self.jobs.labels(kind, outcome.value)
        for result in AttemptOutcome:
            self.attempts.labels(result.value)
        self.models = Counter("atelier_jobs_by_model", "Jobs that succeeded, by model", ["model"], registry=r)
        self.discord_rate_limits = Counter(
            "atelier_discord_rate_limits", "429 answers from Discord (discord.py waits and retries)", registry=r
        )
        self.audit_dropped = Counter(
            "atelier_audit_entries_dropped", "Audit entries not posted because a channel's queue was full", registry=r
        )
        self.queue_depth = Gauge("atelier_queue_depth", "Jobs waiting for an API slot", registry=r)
        self.queue_depth.set_function(lambda: totals().queued)
        self.queue_oldest_wait = Gauge(
            "atelier_queue_oldest_wait_seconds", "How long the oldest queued job has waited (0 if none)", registry=r
        )
        self.queue_oldest_wait.set_function(lambda: _age(totals().oldest_queued_at, clock()))
        self.jobs_running = Gauge("atelier_jobs_running", "API calls in flight", registry=r)
        self.jobs_running.set_function(lambda: totals().running)
        self.spend = Gauge("atelier_spend_today_usd", "Net charges today (UTC) by whose key pays", ["key"], registry=r)
        self.spend.labels("operator").set_function(lambda: usd_float(totals().operator_spend))
        self.spend.labels("server").set_function(lambda: usd_float(totals().server_spend))
        self.balance = Gauge("atelier_provider_balance_usd", "The provider account's balance, last read", registry=r)
        self.balance.set(float("nan"))
        self.balance_failures = Gauge(
            "atelier_provider_balance_check_failures", "Balance checks in a row that got no answer", registry=r
        )
        self.notices_pending = Gauge(
            "atelier_notices_pending", "Final notices owed to members, not yet sent", registry=r
        )
        self.notices_pending.set_function(lambda: totals().notices_pending)
        self.notice_oldest_pending = Gauge(
            "atelier_notice_oldest_pending_seconds", "Age of the oldest notice not yet sent (0 if none)", registry=r
        )
        self.notice_oldest_pending.set_function(lambda: _age(totals().oldest_notice_at, clock()))
        self.fallback_open = Gauge(
            "atelier_model_fallback_active", "1 while new jobs for a model go to the fallback", ["model"], registry=r
        )
        Info("atelier_build", "The running build", registry=r).info(
            {
                "version": _version("atelier"),
                "python": platform.python_version(),
                "discord_py": _version("discord.py"),
                "aiohttp": _version("aiohttp"),
            }
        )

    def job_moved(self, move: Move) -> None:
        """Count a move: attempts as recorded, timings when a job starts or ends."""
        job = move.job
        for attempt in move.attempts:
            self.attempts.labels(attempt.outcome.value).inc()
        state = job.state
        if state is JobState.RUNNING and job.restarts == 0:
            self.wait_seconds.observe(max(0.0, (job.started_at or job.created_at) - job.created_at))
        elif state is JobState.DELIVERING and job.api_seconds is not None:
            self.api_seconds.observe(job.api_seconds)
        if not state.terminal:
            return
        self.jobs.labels(job.request.kind, state.value).inc()
        if state is JobState.FAILED:
            self.failures.labels(type(move.error).__name__ if move.error is not None else "unknown").inc()
        elif state is JobState.SUCCEEDED:
            self.models.labels(job.model or "default").inc()
        if job.started_at is not None and job.finished_at is not None:
            self.run_seconds.observe(max(0.0, job.finished_at - job.started_at))

    def export_limits(self, *, daily_budget: int | None, balance_warn: int | None, balance_floor: int | None) -> None:
        """Export the configured money limits (micro-dollars, shown in dollars), once; a limit that is not set
        has no series at all, so a rule comparing with it matches nothing (rather than a made-up 0)."""
        for name, setting, value in (
            ("atelier_daily_budget_usd", "DAILY_BUDGET_USD", daily_budget),
            ("atelier_provider_balance_warn_usd", "BALANCE_WARN_USD", balance_warn),
            ("atelier_provider_balance_floor_usd", "BALANCE_FLOOR_USD", balance_floor),
        ):
            if value is not None:
                Gauge(name, f"{setting}, as configured (dollars)", registry=self.registry).set(usd_float(value))

    def watch_balance(self, read: Callable[[], int | None], failures: Callable[[], int]) -> None:
        """Read the provider balance (micro-dollars; and failed checks in a row) at each scrape."""
        self.balance.set_function(lambda: nan if (value := read()) is None else usd_float(value))
        self.balance_failures.set_function(failures)

    def watch_models(self, names: Sequence[str], is_open: Callable[[str], bool]) -> None:
        """Read each model's breaker at each scrape."""
        for name in names:
            self.fallback_open.labels(name).set_function(functools.partial(_as_float, is_open, name))

    def discord_rate_limited(self) -> None:
        """Discord answered 429 once (the frontend counts them)."""
        self.discord_rate_limits.inc()

    def exposition(self) -> bytes:
        """The metrics in the Prometheus text format."""
        return generate_latest(self.registry)
