"""Pure parts of the operators' capabilities: size rules, model settings, the breaker, balance levels,
spend by key, metrics from moves, the chart, and log scrubbing."""

from __future__ import annotations

import dataclasses
import io
import logging
import time
from pathlib import Path

import pytest
from bot.storage import DayStats
from PIL import Image

from bot.config import Config, load_config
from bot.core.job import Job, JobKind, JobRequest, utc_day
from bot.core.models import SizeRule, parse_models, size_problem
from bot.core.quota import DayUsage, UsageLedger
from bot.core.sizes import SIZES
from bot.core.states import JobState
from bot.errors import BadRequestError, ConfigError, InputError
from bot.ops.charts import render_stats_chart
from bot.ops.logging_setup import RedactSecrets
from bot.ops.metrics import Metrics
from bot.ports import Move
from bot.provider.balance import BalanceWatch, Level
from bot.provider.client import Attempt, AttemptOutcome
from bot.provider.routing import ModelRouter
from bot.servers.limits import LimitReachedError, Requester, check_quota
from cogs.admin.server_keys import HideKeyForm
from tests.harness import SECRET_KEY

BASE = {"DISCORD_TOKEN": "t" * 24, "IMAGE_API_KEY": "k" * 24}


def config(**env: str) -> Config:
    return load_config({**BASE, **env})


def test_every_table_size_also_fits_the_any_rule() -> None:
    """So a job may move from a -vip model to an -all fallback without changing its size."""
    assert all(size_problem(SizeRule.ANY, s.value) is None for s in SIZES)


@pytest.mark.parametrize(
    ("size", "problem"),
    [
        ("1024x1024", None),
        ("3840x2160", None),
        ("2880x2880", None),  # the area of 3840×2160 exactly
        ("1008x3024", None),  # 3:1
        ("1000x1000", "multiples of 16"),
        ("3840x1264", "3 times"),
        ("4096x1536", "3840"),
        ("2896x2896", "3840×2160 pixels in all"),
    ],
)
def test_the_any_rule(size: str, problem: str | None) -> None:
    found = size_problem(SizeRule.ANY, size)
    assert found is None if problem is None else problem in str(found or "")


def test_models_from_the_environment() -> None:
    default = config()
    assert [(m.name, m.price_usd, m.sizes) for m in default.models] == [("gpt-image-2-vip", 0.03, SizeRule.TABLE)]
    two = config(
        IMAGE_MODELS="gpt-image-2-vip=0.03, gpt-image-2-all=0.02, gpt-image-1=0.04:table, x", PRICE_PER_IMAGE="0.05"
    )
    assert [(m.name, m.price_usd, m.sizes) for m in two.models] == [
        ("gpt-image-2-vip", 0.03, SizeRule.TABLE),
        ("gpt-image-2-all", 0.02, SizeRule.ANY),
        ("gpt-image-1", 0.04, SizeRule.TABLE),
        ("x", 0.05, SizeRule.ANY),
    ]
    assert two.default_model.name == "gpt-image-2-vip" and two.fallback_model is None
    picked = config(IMAGE_MODELS="a=1,b=2", IMAGE_MODEL="b", IMAGE_FALLBACK_MODEL="a")
    assert picked.default_model.name == "b" and picked.fallback_model is not None
    for env, named in (
        ({"IMAGE_MODELS": "a=cheap"}, "IMAGE_MODELS"),
        ({"IMAGE_MODELS": "a=1:huge"}, "IMAGE_MODELS"),
        ({"IMAGE_MODELS": "a=1,a=2"}, "IMAGE_MODELS"),
        ({"IMAGE_MODELS": "a=1", "IMAGE_MODEL": "b"}, "IMAGE_MODEL"),
        ({"IMAGE_FALLBACK_MODEL": "gpt-image-2-all"}, "IMAGE_FALLBACK_MODEL"),
    ):
        with pytest.raises(ConfigError, match=named):
            config(**env)
    with pytest.raises(ValueError):
        parse_models(" , ", 0.03)


def test_operator_settings_and_their_secrets() -> None:
    c = config(
        PROVIDER_BALANCE_URL="https://example.invalid/api/user/self",
        PROVIDER_ACCESS_TOKEN="SECRET-access-token",
        ATELIER_SECRET_KEY=SECRET_KEY,
        BALANCE_WARN_USD="10",
        BALANCE_FLOOR_USD="2",
        METRICS_PORT="9464",
    )
    assert c.metrics_host == "127.0.0.1" and c.metrics_port == 9464 and c.balance_poll_seconds == 600
    assert "SECRET-access-token" not in repr(c) and SECRET_KEY not in repr(c)
    assert {"SECRET-access-token", SECRET_KEY} <= set(c.secrets)
    assert config().metrics_port is None
    with pytest.raises(ConfigError, match="PROVIDER_ACCESS_TOKEN"):
        config(PROVIDER_BALANCE_URL="https://example.invalid/api/user/self")
    with pytest.raises(ConfigError, match="BALANCE_FLOOR_USD"):
        config(BALANCE_WARN_USD="1", BALANCE_FLOOR_USD="5")
    with pytest.raises(ConfigError, match="ATELIER_SECRET_KEY") as raised:
        config(ATELIER_SECRET_KEY="not-a-fernet-key-but-a-secret")
    assert "not-a-fernet-key-but-a-secret" not in str(raised.value)


def job(**kw: object) -> Job:
    request = JobRequest(JobKind.EDIT, 1, 10, 100, "p", None, 1)
    base = Job("a1", request, JobState.ACCEPTED, time.time(), utc_day(time.time()), 0.03, model="gpt-image-2-vip")
    return dataclasses.replace(base, **kw)  # type: ignore[arg-type]


def attempt(outcome: AttemptOutcome) -> Attempt:
    return Attempt(1, time.time(), 0.1, outcome, outcome.may_be_billed)


def test_the_breaker_sends_new_jobs_to_the_fallback_after_two_fast_failures() -> None:
    now = [1000.0]
    c = config(IMAGE_MODELS="gpt-image-2-all=0.02,gpt-image-2-vip=0.03", IMAGE_FALLBACK_MODEL="gpt-image-2-vip")
    router = ModelRouter(c, clock=lambda: now[0])
    primary = c.default_model
    router.record(primary.name, AttemptOutcome.CONNECT_FAILED)
    router.record(primary.name, AttemptOutcome.SUCCEEDED)  # a working answer resets the count
    router.record(primary.name, AttemptOutcome.SERVER_ERROR_FAST)
    router.record(primary.name, AttemptOutcome.RATE_LIMITED)  # says nothing about the model
    assert router.route(primary, None).name == primary.name
    router.job_moved(Move(job(model=primary.name, state=JobState.FAILED), JobState.RUNNING,
                          attempts=[attempt(AttemptOutcome.CONNECT_FAILED)]))  # fmt: skip
    assert router.is_open(primary.name)
    assert router.route(primary, "2048x1152").name == "gpt-image-2-vip"
    assert router.route(primary, "1024x1024").name == primary.name  # the fallback's table lacks that size
    now[0] += 60.01
    assert not router.is_open(primary.name) and router.route(primary, None).name == primary.name


def test_balance_levels_warn_once_per_crossing() -> None:
    c = config(
        PROVIDER_BALANCE_URL="https://example.invalid/x", PROVIDER_ACCESS_TOKEN="t" * 10,
        BALANCE_WARN_USD="10", BALANCE_FLOOR_USD="2",
    )  # fmt: skip
    watch = BalanceWatch(c, None)  # type: ignore[arg-type]  # no session: nothing is fetched here
    told: list[str] = []
    for dollars in (50, 8, 7, 9, 1.5, 1, 5, 3, 12, 1):
        watch.update(dollars, lambda text: told.append(str(text)))
    assert [t.split("**")[1] if "**" in t else t[:20] for t in told] == [
        "The image service balance is low: $8.00",
        "The image service balance is $1.50",
        "✅ The image service ",
        "The image service balance is $1.00",
    ]
    assert watch.level is Level.FLOOR and watch.refusing


def test_spend_on_a_servers_own_key_is_outside_the_budget() -> None:
    ledger = UsageLedger()
    ledger.charge(job(cost_usd=0.03))
    ledger.charge(job(id="b2", cost_usd=0.03, guild_key=True))
    day = utc_day(time.time())
    assert ledger.spend(day) == (0.03, 0.03)
    ledger.refund(job(id="b2", cost_usd=0.03, guild_key=True))
    assert ledger.spend(day) == (0.03, 0.0)
    who = Requester(1, 10, 100, None, frozenset(), is_manager=True)
    budget = dataclasses.replace(config(), daily_budget_usd=0.03)
    spent = DayUsage(user_today=1, guild_today=1, spend_today=0.03, user_active=0, user_last_accepted=None)
    with pytest.raises(LimitReachedError, match="budget"):
        check_quota(budget, None, who, spent, time.time(), price=0.03)
    check_quota(budget, None, who, spent, time.time(), price=0.03, own_key=True)


class _NoJobs:
    def count(self, *states: JobState) -> int:
        return 0

    def jobs(self, *states: JobState) -> list[Job]:
        return []


def test_metrics_come_from_moves_into_a_registry_of_their_own() -> None:
    from bot.jobs.lifecycle import Lifecycle

    lifecycle = Lifecycle.__new__(Lifecycle)  # only the views the gauges read
    lifecycle.ledger = UsageLedger()
    lifecycle.count = _NoJobs().count  # type: ignore[method-assign]
    lifecycle.jobs = _NoJobs().jobs  # type: ignore[method-assign]
    one, two = Metrics(lifecycle), Metrics(lifecycle)
    start = time.time()
    running = job(state=JobState.RUNNING, created_at=start, started_at=start + 2)
    one.job_moved(Move(running, JobState.QUEUED))
    done = dataclasses.replace(running, state=JobState.FAILED, finished_at=start + 5)
    error = BadRequestError("no")
    one.job_moved(Move(done, JobState.RUNNING, error, [attempt(AttemptOutcome.REJECTED)]))
    text = one.exposition().decode()
    assert 'atelier_jobs_total{kind="edit",outcome="failed"} 1.0' in text
    assert 'atelier_job_failures_total{error="BadRequestError"} 1.0' in text
    assert 'atelier_api_attempts_total{result="rejected"} 1.0' in text
    assert "atelier_job_wait_seconds_sum 2.0" in text and "atelier_job_run_seconds_sum 3.0" in text
    assert 'atelier_jobs_total{kind="edit",outcome="failed"} 0.0' in two.exposition().decode()  # nothing shared


def test_metrics_for_alert_rules_the_oldest_wait_in_line_the_limits_set_and_the_notices_owed() -> None:
    from bot.lifecycle import Lifecycle
    from prometheus_client.parser import text_string_to_metric_families

    now = time.time()
    # Accepted long ago but its images came late: its wait counts from joining the line.
    queued = [
        job(id="late-images", state=JobState.QUEUED, created_at=now - 100, queued_at=now - 30),
        job(id="first-in-line", state=JobState.QUEUED, created_at=now - 50, queued_at=now - 40),
    ]
    lifecycle = Lifecycle.__new__(Lifecycle)
    lifecycle.ledger = UsageLedger()
    lifecycle.count = _NoJobs().count  # type: ignore[method-assign]
    lifecycle.jobs = lambda *states: queued if states == (JobState.QUEUED,) else []  # type: ignore[method-assign]
    metrics = Metrics(lifecycle)
    metrics.export_limits(daily_budget_usd=5.0, balance_warn_usd=None, balance_floor_usd=2.0)
    metrics.watch_notices(lambda: 3, lambda: 120.5)

    def samples() -> dict[str, float]:
        text = metrics.exposition().decode()
        return {s.name: s.value for f in text_string_to_metric_families(text) for s in f.samples if not s.labels}

    now_seen = samples()
    assert 40 <= now_seen["atelier_queue_oldest_wait_seconds"] < 45
    assert now_seen["atelier_daily_budget_usd"] == 5.0 and now_seen["atelier_provider_balance_floor_usd"] == 2.0
    assert "atelier_provider_balance_warn_usd" not in now_seen  # not configured: no series at all
    assert now_seen["atelier_notices_pending"] == 3 and now_seen["atelier_notice_oldest_pending_seconds"] == 120.5
    queued.clear()
    assert samples()["atelier_queue_oldest_wait_seconds"] == 0


def test_the_chart_renders_in_under_a_second_and_is_not_blank() -> None:
    days = [
        DayStats(f"2026-11-{d:02d}", succeeded=d % 7, failed=d % 3, cancelled=d % 2, spend_usd=0.03 * (d % 7),
                 durations=tuple(sorted(10.0 + d + i for i in range(d % 7))))
        for d in range(1, 31)
    ]  # fmt: skip
    render_stats_chart(days[:2], "warm-up")  # the first chart also imports matplotlib, once per process
    started = time.perf_counter()
    png = render_stats_chart(days, "Test server · last 30 days (UTC)")
    assert time.perf_counter() - started < 1.0
    with Image.open(io.BytesIO(png)) as image:
        assert image.size == (900, 750)
        colours = image.convert("RGB").getcolors(maxcolors=1 << 16)
    assert colours is not None and len(colours) > 20
    empty = render_stats_chart([DayStats(f"2026-11-{d:02d}") for d in range(1, 31)], "nothing yet")
    assert Image.open(io.BytesIO(empty)).size == (900, 750)


def test_log_scrubbing_takes_new_secrets_and_hides_the_key_form(tmp_path: Path) -> None:
    redact = RedactSecrets(["first-secret"])
    redact.add("sk-later-server-key")
    record = logging.LogRecord(
        "x", logging.INFO, __file__, 1, "keys %s %s", ("first-secret", "sk-later-server-key"), None
    )
    redact.filter(record)
    assert record.getMessage() == "keys [redacted] [redacted]"
    payload = {"custom_id": "atelier:server-key-modal:v1", "components": [{"component": {"value": "sk-typed-in"}}]}
    event = logging.LogRecord("discord.gateway", logging.DEBUG, __file__, 1, "Event: %s", (payload,), None)
    HideKeyForm().filter(event)
    assert "sk-typed-in" not in event.getMessage() and "'value': '[redacted]'" in event.getMessage()


def test_a_size_error_names_the_model() -> None:
    model = config(IMAGE_MODELS="gpt-image-2-vip=0.03").default_model
    with pytest.raises(InputError, match="for gpt-image-2-vip"):
        model.check_size("1024x1024")
