"""Pure engine parts: the fair queue, quota arithmetic, configuration, and the SQLite store."""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime
from pathlib import Path

import pytest

from bot.config import Config, load_config
from bot.errors import ConfigError
from bot.jobs import Job, JobStatus, utc_day
from bot.ledger import DayUsage, UsageLedger
from bot.limits import (
    AccessDeniedError,
    GuildLimits,
    LimitReachedError,
    Requester,
    check_access,
    check_quota,
    describe_wait,
    next_reset,
)
from bot.queue import FairQueue
from bot.storage import SQLiteJobStore

CONFIG = Config(discord_token="t" * 20, image_api_key="k" * 20, data_dir=Path("unused"))
MEMBER = Requester(
    user_id=1, guild_id=10, channel_id=100, parent_channel_id=None, role_ids=frozenset(), is_manager=False
)
NOON = datetime(2026, 11, 25, 12, 0, tzinfo=UTC).timestamp()


def usage(**kw: object) -> DayUsage:
    base = DayUsage(user_today=0, guild_today=0, spend_today=0.0, user_active=0, user_last_accepted=None)
    return dataclasses.replace(base, **kw)  # type: ignore[arg-type]


def limits(**kw: object) -> GuildLimits:
    return dataclasses.replace(GuildLimits.resolve(CONFIG, {}), **kw)  # type: ignore[arg-type]


def test_fair_queue_takes_one_job_per_member_in_turn() -> None:
    queue = FairQueue()
    for n in range(1, 6):
        queue.push(1, f"a{n}", n)
    queue.push(2, "b1", 10)
    assert queue.pop() == "a1"
    # Member 1 just had a turn, so member 2 goes next, then they alternate.
    assert queue.positions() == {"b1": 1, "a2": 2, "a3": 3, "a4": 4, "a5": 5}
    assert [queue.pop() for _ in range(5)] == ["b1", "a2", "a3", "a4", "a5"]
    assert queue.pop() is None and len(queue) == 0


def test_fair_queue_keeps_a_members_order_by_acceptance_and_can_withdraw() -> None:
    queue = FairQueue()
    queue.push(1, "late", 2.0)
    queue.push(1, "early", 1.0)
    queue.push(2, "other", 3.0)
    assert queue.remove("early") and not queue.remove("early")
    assert queue.remove("other")
    assert queue.positions() == {"late": 1}


def test_quota_refuses_over_the_daily_limit_and_says_when_it_resets() -> None:
    check_quota(CONFIG, limits(user_daily_limit=2), MEMBER, usage(user_today=1), NOON)
    with pytest.raises(
        LimitReachedError, match=r"used 2 of your 2 edits for today; the limit resets at 00:00 UTC \(in 12 h 0 min\)"
    ):
        check_quota(CONFIG, limits(user_daily_limit=2), MEMBER, usage(user_today=2), NOON)


def test_exempt_members_skip_member_limits_but_not_the_budget_or_guild_limit() -> None:
    exempt = dataclasses.replace(MEMBER, role_ids=frozenset({7}))
    rules = limits(user_daily_limit=1, exempt_role_ids=frozenset({7}))
    check_quota(CONFIG, rules, exempt, usage(user_today=50, user_active=9), NOON)
    budget = dataclasses.replace(CONFIG, daily_budget_usd=0.06)
    with pytest.raises(LimitReachedError, match="budget"):
        check_quota(budget, rules, exempt, usage(spend_today=0.06), NOON)
    with pytest.raises(LimitReachedError, match="This server has used all 3"):
        check_quota(CONFIG, dataclasses.replace(rules, guild_daily_limit=3), exempt, usage(guild_today=3), NOON)


def test_active_cap_and_cooldown() -> None:
    with pytest.raises(LimitReachedError, match="already have 2 edits queued or running"):
        check_quota(CONFIG, limits(), MEMBER, usage(user_active=2), NOON)
    with pytest.raises(LimitReachedError, match="in 20 s"):
        check_quota(CONFIG, limits(user_cooldown_seconds=30), MEMBER, usage(user_last_accepted=NOON - 10), NOON)
    check_quota(CONFIG, limits(user_cooldown_seconds=30), MEMBER, usage(user_last_accepted=NOON - 31), NOON)


def test_access_by_channel_thread_parent_role_and_dm() -> None:
    rules = limits(allowed_channel_ids=frozenset({100}))
    check_access(CONFIG, rules, MEMBER)
    in_thread = dataclasses.replace(MEMBER, channel_id=555, parent_channel_id=100)
    check_access(CONFIG, rules, in_thread)
    with pytest.raises(AccessDeniedError, match="<#100>"):
        check_access(CONFIG, rules, dataclasses.replace(MEMBER, channel_id=101))
    with pytest.raises(AccessDeniedError, match="<@&5>"):
        check_access(CONFIG, limits(allowed_role_ids=frozenset({5})), MEMBER)
    dm = dataclasses.replace(MEMBER, guild_id=None)
    with pytest.raises(AccessDeniedError, match="servers only"):
        check_access(CONFIG, None, dm)
    check_access(dataclasses.replace(CONFIG, allow_dms=True), None, dm)


def test_reset_time_and_durations() -> None:
    assert next_reset(NOON) - NOON == 12 * 3600
    assert utc_day(NOON) == "2026-11-25"
    assert describe_wait(40) == "40 s" and describe_wait(125) == "3 min" and describe_wait(7500) == "2 h 5 min"


def test_config_names_the_bad_variable() -> None:
    with pytest.raises(ConfigError, match="DISCORD_TOKEN is required"):
        load_config({"IMAGE_API_KEY": "x"})
    with pytest.raises(ConfigError, match="MAX_CONCURRENT_JOBS must be at least 1"):
        load_config({"DISCORD_TOKEN": "t", "IMAGE_API_KEY": "k", "MAX_CONCURRENT_JOBS": "0"})
    with pytest.raises(ConfigError, match="ALLOWED_CHANNEL_IDS must be a comma-separated list"):
        load_config({"DISCORD_TOKEN": "t", "IMAGE_API_KEY": "k", "ALLOWED_CHANNEL_IDS": "general"})
    config = load_config(
        {"DISCORD_TOKEN": "tok", "IMAGE_API_KEY": "key", "USER_DAILY_LIMIT": "unlimited", "EXEMPT_ROLE_IDS": "1, 2"}
    )
    assert config.user_daily_limit is None and config.exempt_role_ids == {1, 2}
    assert "tok" not in repr(config) and "key" not in repr(config)


def make_job(job_id: str, **kw: object) -> Job:
    base = Job(
        id=job_id, kind="edit", status=JobStatus.QUEUED, user_id=1, guild_id=10, channel_id=100, prompt="p",
        size=None, input_count=1, parent_job_id=None, delivery={"type": "message"}, created_at=NOON,
        charge_day=utc_day(NOON), charged=True, cost_usd=0.03,
    )  # fmt: skip
    return dataclasses.replace(base, **kw)  # type: ignore[arg-type]


async def test_store_migrates_once_and_counts_charged_jobs(tmp_path: Path) -> None:
    store = SQLiteJobStore(tmp_path / "db.sqlite3")
    await store.open()
    await store.insert_job(make_job("aa01"))
    await store.insert_job(make_job("aa02", status=JobStatus.RUNNING))
    await store.insert_job(make_job("aa03", status=JobStatus.FAILED, charged=False))
    await store.insert_job(make_job("aa04", user_id=2, status=JobStatus.SUCCEEDED))
    day = utc_day(NOON)
    ledger = UsageLedger()
    ledger.load(day, await store.ledger_snapshot(day, NOON - 86400))
    counted = ledger.usage(1, 10, day)
    assert (counted.user_today, counted.guild_today, counted.user_active) == (2, 3, 2)
    assert counted.spend_today == pytest.approx(0.09)
    assert counted.user_last_accepted == NOON
    await store.update_job("aa01", status=JobStatus.CANCELLED, charged=False)
    assert ledger.end(await store.get_job("aa01"), refund=True)  # type: ignore[arg-type]
    assert not ledger.end(await store.get_job("aa01"), refund=True)  # type: ignore[arg-type]
    assert ledger.usage(1, 10, day).user_today == 1 and ledger.usage(1, 10, day).user_active == 1
    fresh = UsageLedger()
    fresh.load(day, await store.ledger_snapshot(day, NOON - 86400))
    assert fresh.usage(1, 10, day) == ledger.usage(1, 10, day)
    loaded = await store.get_job("aa01")
    assert loaded is not None and loaded.status is JobStatus.CANCELLED and loaded.delivery == {"type": "message"}
    await store.save_guild_settings(10, {"user_daily_limit": None}, by=5)
    await store.close()
    again = SQLiteJobStore(tmp_path / "db.sqlite3")
    await again.open()  # migrations are not re-applied
    assert await again.guild_settings(10) == {"user_daily_limit": None}
    assert [j.id for j in await again.jobs_with_status([JobStatus.RUNNING])] == ["aa02"]
    await again.close()
