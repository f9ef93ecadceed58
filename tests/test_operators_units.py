"""Operators' capabilities, unit by unit: size rules, model settings and prices, the breaker, the balance
in micro-dollars (levels, and the provider's answer read exactly), metrics from moves and from the store's
totals, the chart, and log scrubbing."""

from __future__ import annotations

import asyncio
import dataclasses
import io
import logging
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest
from PIL import Image

from bot.config import Config, load_config
from bot.core.attempts import Attempt, AttemptOutcome
from bot.core.job import Job, JobRequest, utc_day
from bot.core.models import SizeRule, parse_models, size_problem
from bot.core.records import DayStats, Totals
from bot.core.sizes import SIZES
from bot.core.states import JobState
from bot.errors import BadRequestError, ConfigError, InputError
from bot.i18n import _t
from bot.ops.charts import render_stats_chart, summary
from bot.ops.logging_setup import RedactSecrets
from bot.ops.metrics import Metrics
from bot.ports import Move
from bot.provider.balance import BalanceWatch, Level
from bot.provider.routing import ModelRouter
from cogs.admin.server_keys import HideKeyForm
from tests.fake_balance import FakeBalance
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
    assert [(m.name, m.price, m.sizes) for m in default.models] == [("gpt-image-2-vip", 30_000, SizeRule.TABLE)]
    two = config(
        IMAGE_MODELS="gpt-image-2-vip=0.03, gpt-image-2-all=0.02, gpt-image-1=0.04:table, x", PRICE_PER_IMAGE="0.05"
    )
    assert [(m.name, m.price, m.sizes) for m in two.models] == [
        ("gpt-image-2-vip", 30_000, SizeRule.TABLE),
        ("gpt-image-2-all", 20_000, SizeRule.ANY),
        ("gpt-image-1", 40_000, SizeRule.TABLE),
        ("x", 50_000, SizeRule.ANY),
    ]
    assert all(type(m.price) is int for m in two.models)
    assert two.default_model.name == "gpt-image-2-vip" and two.fallback_model is None
    picked = config(IMAGE_MODELS="a=1,b=2.000001", IMAGE_MODEL="b", IMAGE_FALLBACK_MODEL="a")
    assert picked.default_model == picked.model("b") and picked.default_model.price == 2_000_001
    assert picked.fallback_model is not None and picked.fallback_model.price == 1_000_000
    for env, named in (
        ({"IMAGE_MODELS": "a=cheap"}, "IMAGE_MODELS"),
        ({"IMAGE_MODELS": "a=0.0000001"}, "IMAGE_MODELS"),  # finer than a micro-dollar
        ({"IMAGE_MODELS": "a=-1"}, "IMAGE_MODELS"),
        ({"IMAGE_MODELS": "a=1:huge"}, "IMAGE_MODELS"),
        ({"IMAGE_MODELS": "a=1,a=2"}, "IMAGE_MODELS"),
        ({"IMAGE_MODELS": "a=1", "IMAGE_MODEL": "b"}, "IMAGE_MODEL"),
        ({"IMAGE_FALLBACK_MODEL": "gpt-image-2-all"}, "IMAGE_FALLBACK_MODEL"),
    ):
        with pytest.raises(ConfigError, match=named):
            config(**env)
    with pytest.raises(ValueError):
        parse_models(" , ", 30_000)


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
    assert (c.balance_warn, c.balance_floor) == (10_000_000, 2_000_000)
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


NOW = 1_795_608_000.0


def job(**kw: object) -> Job:
    request = JobRequest("edit", 1, 10, 100, "p", None, 1)
    base = Job("a1", request, JobState.ACCEPTED, NOW, utc_day(NOW), 30_000, model="gpt-image-2-vip")
    return dataclasses.replace(base, **kw)  # type: ignore[arg-type]


def attempt(outcome: AttemptOutcome) -> Attempt:
    return Attempt(1, NOW, 0.1, outcome, outcome.may_be_billed)


def test_the_breaker_sends_new_jobs_to_the_fallback_after_two_fast_failures() -> None:
    now = [1000.0]
    c = config(IMAGE_MODELS="gpt-image-2-all=0.02,gpt-image-2-vip=0.03", IMAGE_FALLBACK_MODEL="gpt-image-2-vip")
    router = ModelRouter(c, clock=lambda: now[0])
    opened: list[str] = []
    router.on_open = opened.append
    primary = c.default_model
    router.record(primary.name, AttemptOutcome.CONNECT_FAILED)
    router.record(primary.name, AttemptOutcome.SUCCEEDED)  # a working answer resets the count
    router.record(primary.name, AttemptOutcome.SERVER_ERROR_FAST)
    router.record(primary.name, AttemptOutcome.RATE_LIMITED)  # says nothing about the model
    assert router.route(primary, None).name == primary.name and opened == []
    router.job_moved(Move(job(model=primary.name, state=JobState.FAILED), JobState.RUNNING,
                          attempts=[attempt(AttemptOutcome.CONNECT_FAILED)]))  # fmt: skip
    assert router.is_open(primary.name) and opened == [primary.name]  # the other processes are told
    assert router.route(primary, "2048x1152").name == "gpt-image-2-vip"
    assert router.route(primary, "1024x1024").name == primary.name  # the fallback's table lacks that size
    now[0] += c.image_fallback_seconds - 0.01
    assert router.is_open(primary.name)
    now[0] += 0.02
    assert not router.is_open(primary.name) and router.route(primary, None).name == primary.name


async def test_a_breaker_another_process_opened_reroutes_here_for_the_window() -> None:
    now = [1000.0]
    c = config(IMAGE_MODELS="gpt-image-2-all=0.02,gpt-image-2-vip=0.03", IMAGE_FALLBACK_MODEL="gpt-image-2-vip")
    router = ModelRouter(c, clock=lambda: now[0])
    await router.opened_elsewhere("gpt-image-2-all")
    await router.opened_elsewhere(None)  # a lost connection: nothing to re-read
    assert router.route(c.default_model, None).name == "gpt-image-2-vip"
    now[0] += c.image_fallback_seconds
    assert router.route(c.default_model, None).name == "gpt-image-2-all"


def balance_config(url: str = "https://example.invalid/x", **env: str) -> Config:
    return config(PROVIDER_BALANCE_URL=url, PROVIDER_ACCESS_TOKEN="t" * 10, BALANCE_WARN_USD="10",
                  BALANCE_FLOOR_USD="2", **env)  # fmt: skip


def test_balance_levels_in_micro_dollars_warn_once_per_crossing() -> None:
    watch = BalanceWatch(balance_config(), None)  # type: ignore[arg-type]  # no session: nothing is fetched here
    told: list[str] = []
    readings = (50_000_000, 8_000_000, 7_000_000, 9_000_000, 1_500_000, 1_000_000, 5_000_000, 3_000_000, 12_000_000,
                1_999_999)  # fmt: skip
    levels = []
    for micros in readings:
        watch.update(micros, lambda text: told.append(str(text)))
        levels.append(watch.level)
    assert levels == [Level.OK, Level.LOW, Level.LOW, Level.LOW, Level.FLOOR, Level.FLOOR, Level.LOW, Level.LOW,
                      Level.OK, Level.FLOOR]  # fmt: skip
    assert [t.split("**")[1] if "**" in t else t[:20] for t in told] == [
        "The image service balance is low: $8.00",
        "The image service balance is $1.50",
        "✅ The image service ",
        "The image service balance is $2.00",  # $1.999999, shown to the cent: a micro-dollar under the floor
    ]
    assert watch.level is Level.FLOOR and watch.refusing and watch.balance == 1_999_999
    assert watch.level_of(2_000_000) is Level.LOW and watch.level_of(10_000_000) is Level.OK


@pytest.fixture
async def provider() -> AsyncIterator[FakeBalance]:
    fake = FakeBalance("t" * 10)
    await fake.start()
    yield fake
    await fake.stop()


async def test_the_balance_is_read_from_the_provider_in_exact_micro_dollars(provider: FakeBalance) -> None:
    async with aiohttp.ClientSession() as session, asyncio.timeout(30):
        watch = BalanceWatch(balance_config(provider.url, PROVIDER_USER_ID="42"), session)
        provider.dollars = 8.000008  # quota 4,000,004: two micro-dollars a unit (as a float, 8000007.99…)
        assert await watch.fetch() == 8_000_008
        provider.dollars = 0.1
        assert await watch.fetch() == 100_000 and watch.failures == 0
        provider.status = 500
        assert await watch.fetch() is None and watch.failures == 1
    assert provider.requests[0]["Authorization"] == f"Bearer {'t' * 10}"
    assert provider.requests[0]["New-Api-User"] == "42"


def test_metrics_come_from_moves_into_a_registry_of_their_own_and_totals_from_the_store() -> None:
    totals = Totals(queued=3, running=1, operator_spend=90_000, server_spend=30_000)
    one, two = Metrics(lambda: totals), Metrics(lambda: Totals())
    running = job(state=JobState.RUNNING, created_at=NOW, started_at=NOW + 2)
    one.job_moved(Move(running, JobState.QUEUED))
    done = dataclasses.replace(running, state=JobState.FAILED, finished_at=NOW + 5)
    error = BadRequestError(_t("The image service said no."), log_detail="HTTP 400: no")
    one.job_moved(Move(done, JobState.RUNNING, error, [attempt(AttemptOutcome.REJECTED)]))
    text = one.exposition().decode()
    assert 'atelier_jobs_total{kind="edit",outcome="failed"} 1.0' in text
    assert 'atelier_job_failures_total{error="BadRequestError"} 1.0' in text
    assert 'atelier_api_attempts_total{result="rejected"} 1.0' in text
    assert "atelier_job_wait_seconds_sum 2.0" in text and "atelier_job_run_seconds_sum 3.0" in text
    # The gauges every process sees alike are the store's totals, read at each scrape.
    assert "atelier_queue_depth 3.0" in text and "atelier_jobs_running 1.0" in text
    assert 'atelier_spend_today_usd{key="operator"} 0.09' in text
    assert 'atelier_spend_today_usd{key="server"} 0.03' in text
    totals = Totals(queued=0, operator_spend=120_000)
    assert 'atelier_spend_today_usd{key="operator"} 0.12' in one.exposition().decode()
    other = two.exposition().decode()
    # Nothing shared: every series of the other registry is still at 0.
    assert 'atelier_jobs_total{kind="edit",outcome="succeeded"} 0.0' in other and "atelier_queue_depth 0.0" in other


def test_the_chart_renders_thirty_days_and_is_not_blank() -> None:
    days = [
        DayStats(f"2026-11-{d:02d}", succeeded=d % 7, failed=d % 3, cancelled=d % 2, spend=30_000 * (d % 7),
                 durations=tuple(sorted(10.0 + d + i for i in range(d % 7))))
        for d in range(1, 31)
    ]  # fmt: skip
    # (How long it takes is not a unit test's business: on a busy machine it is anything.)
    png = render_stats_chart(days, "Test server · last 30 days (UTC)")
    with Image.open(io.BytesIO(png)) as image:
        assert image.size == (900, 750)
        colours = image.convert("RGB").getcolors(maxcolors=1 << 16)
    assert colours is not None and len(colours) > 20
    empty = render_stats_chart([DayStats(f"2026-11-{d:02d}") for d in range(1, 31)], "nothing yet")
    assert Image.open(io.BytesIO(empty)).size == (900, 750)
    jobs, spend, median = summary(days)
    assert jobs == sum(d % 7 + d % 3 + d % 2 for d in range(1, 31)) and median is not None
    assert spend == 30_000 * sum(d % 7 for d in range(1, 31)) and type(spend) is int
    assert summary([DayStats("2026-11-01")]) == (0, 0, None)


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
