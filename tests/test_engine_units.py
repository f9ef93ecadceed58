"""Pure engine parts: the fair queue, quota arithmetic, configuration, and the SQLite store."""

from __future__ import annotations

import dataclasses
import sqlite3
from datetime import UTC, datetime
from pathlib import Path

import pytest
from bot.queue import FairQueue
from bot.sqlite_store import SQLiteJobStore
from bot.storage import MIGRATIONS

from bot.config import Config, load_config
from bot.core.job import Delivered, Destination, Job, JobKind, JobRequest, utc_day
from bot.core.overrides import GuildOverrides, PrivateResults
from bot.core.quota import DayUsage, UsageLedger
from bot.core.states import JobState
from bot.errors import ConfigError, InputError
from bot.servers.limits import (
    AccessDeniedError,
    GuildLimits,
    LimitReachedError,
    Requester,
    apply_privacy,
    check_access,
    check_can_delete,
    check_can_reuse,
    check_quota,
    describe_wait,
    next_reset,
)
from bot.servers.presets import preset_name, preset_text, styled_prompt

CONFIG = Config(discord_token="t" * 20, image_api_key="k" * 20, data_dir=Path("unused"))
MEMBER = Requester(
    user_id=1, guild_id=10, channel_id=100, parent_channel_id=None, role_ids=frozenset(), is_manager=False
)
NOON = datetime(2026, 11, 25, 12, 0, tzinfo=UTC).timestamp()


def usage(**kw: object) -> DayUsage:
    base = DayUsage(user_today=0, guild_today=0, spend_today=0.0, user_active=0, user_last_accepted=None)
    return dataclasses.replace(base, **kw)  # type: ignore[arg-type]


def limits(**kw: object) -> GuildLimits:
    return dataclasses.replace(GuildLimits.resolve(CONFIG, GuildOverrides()), **kw)  # type: ignore[arg-type]


def test_fair_queue_takes_one_job_per_member_in_turn() -> None:
    queue = FairQueue()
    for n in range(1, 6):
        queue.add(1, f"a{n}", n, ready=True)
    queue.add(2, "b1", 10, ready=True)
    assert queue.take() == "a1"
    # Member 1 just had a turn, so member 2 goes next, then they alternate.
    assert queue.positions() == {"b1": 1, "a2": 2, "a3": 3, "a4": 4, "a5": 5}
    assert [queue.take() for _ in range(5)] == ["b1", "a2", "a3", "a4", "a5"]
    assert queue.take() is None and len(queue) == 0


def test_fair_queue_keeps_a_members_order_by_acceptance_and_can_withdraw() -> None:
    queue = FairQueue()
    queue.add(1, "late", 2.0, ready=True)
    queue.add(1, "early", 1.0, ready=True)
    queue.add(2, "other", 3.0, ready=True)
    queue.remove("early")
    assert "early" not in queue
    queue.remove("other")
    assert queue.positions() == {"late": 1}


def test_a_members_later_job_waits_for_their_earlier_one_to_be_ready() -> None:
    queue = FairQueue()
    queue.add(1, "first", 1.0)  # still fetching its images
    queue.add(1, "second", 2.0, ready=True)
    queue.add(2, "other", 3.0)
    assert queue.take() is None and not queue.has_ready()
    queue.mark_ready("other")
    assert queue.take() == "other"
    queue.mark_ready("first")
    assert [queue.take(), queue.take(), queue.take()] == ["first", "second", None]


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
    assert [str(describe_wait(s)) for s in (40, 125, 7500)] == ["40 s", "3 min", "2 h 5 min"]


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


def make_job(job_id: str, user_id: int = 1) -> Job:
    request = JobRequest(JobKind.EDIT, user_id, guild_id=10, channel_id=100, prompt="p", size=None, input_count=1)
    return Job(
        id=job_id,
        request=request,
        state=JobState.ACCEPTED,
        created_at=NOON,
        charge_day=utc_day(NOON),
        cost_usd=0.03,
        destination=Destination(upload_limit=8_000_000, data={"type": "message"}),
    )


async def test_store_migrates_once_moves_conditionally_and_refunds_once(tmp_path: Path) -> None:
    store = SQLiteJobStore(tmp_path / "db.sqlite3")
    await store.open()
    for job in (make_job("aa01"), make_job("aa02"), make_job("aa03"), make_job("aa04", user_id=2)):
        await store.create_job(job)
    day = utc_day(NOON)
    ledger = UsageLedger()
    ledger.load(day, await store.ledger_snapshot(day, NOON - 86400))
    counted = ledger.usage(1, 10, day, active=0)
    assert (counted.user_today, counted.guild_today) == (3, 4)
    assert counted.spend_today == pytest.approx(0.12)
    assert counted.user_last_accepted == NOON
    # A move happens only from the state the store holds, and a refund row is written once.
    moved = await store.move_job("aa01", JobState.ACCEPTED, JobState.CANCELLED, {"finished_at": NOON}, refund=True)
    assert moved.moved and moved.refunded
    again = await store.move_job("aa01", JobState.ACCEPTED, JobState.FAILED, {}, refund=True)
    assert not again.moved and not again.refunded
    fresh = UsageLedger()
    fresh.load(day, await store.ledger_snapshot(day, NOON - 86400))
    assert fresh.usage(1, 10, day, active=0).user_today == 2
    assert fresh.usage(1, 10, day, active=0).spend_today == pytest.approx(0.09)
    loaded = await store.get_job("aa01")
    assert loaded is not None and loaded.state is JobState.CANCELLED
    assert loaded.destination == Destination(upload_limit=8_000_000, data={"type": "message"})
    await store.save_guild_overrides(10, GuildOverrides(user_daily_limit=None), by=5)
    await store.close()
    reopened = SQLiteJobStore(tmp_path / "db.sqlite3")
    await reopened.open()  # migrations are not re-applied
    overrides = await reopened.guild_overrides(10)
    assert overrides.is_set("user_daily_limit") and overrides.user_daily_limit is None
    assert not overrides.is_set("guild_daily_limit")
    assert [j.id for j in await reopened.unfinished_jobs()] == ["aa02", "aa03", "aa04"]
    await reopened.close()


def test_a_style_is_added_to_the_instruction_as_written() -> None:
    assert styled_prompt("make it dusk", None) == "make it dusk"
    assert styled_prompt("make it dusk.", "as a watercolour") == "make it dusk, as a watercolour"
    assert styled_prompt("make it dusk ", preset_text("…, as a watercolour")) == "make it dusk, as a watercolour"
    assert styled_prompt("make it dusk", preset_text("...; no text")) == "make it dusk; no text"
    assert preset_name("  Loose   Watercolour ") == "loose watercolour"
    for bad in ("", "-dash first", "x" * 33, "semi;colon"):
        with pytest.raises(InputError):
            preset_name(bad)
    with pytest.raises(InputError, match="at most 500"):
        preset_text("y" * 501)
    with pytest.raises(InputError, match="needs a text"):
        preset_text(" …, ")


def test_the_private_setting_refuses_forces_or_allows() -> None:
    request = JobRequest(JobKind.EDIT, 1, 10, 100, "p", None, 1, private=True)
    with pytest.raises(AccessDeniedError, match="doesn't allow private results"):
        apply_privacy(limits(private_results=PrivateResults.NEVER), request)
    public = dataclasses.replace(request, private=False)
    assert apply_privacy(limits(private_results=PrivateResults.ALWAYS), public).private is True
    assert apply_privacy(limits(), request).private is True and apply_privacy(limits(), public).private is False
    overrides = GuildOverrides.from_json(GuildOverrides(private_results=PrivateResults.NEVER).to_json())
    assert overrides.private_results is PrivateResults.NEVER
    assert GuildLimits.resolve(CONFIG, overrides).private_results is PrivateResults.NEVER


def test_only_the_requester_reuses_a_private_result_and_moderators_delete() -> None:
    private = dataclasses.replace(
        make_job("bb01"), request=JobRequest(JobKind.EDIT, 1, 10, 100, "p", None, 1, private=True)
    )
    check_can_reuse(private, 1)
    check_can_reuse(make_job("bb02"), 2)  # a public result: anyone may refine or reroll it
    with pytest.raises(AccessDeniedError, match="private"):
        check_can_reuse(private, 2)
    check_can_delete(private, 1, is_moderator=False)
    check_can_delete(private, 2, is_moderator=True)
    with pytest.raises(AccessDeniedError, match="Manage Messages"):
        check_can_delete(private, 2, is_moderator=False)


def test_retention_settings_are_read_and_documented_defaults_hold() -> None:
    config = load_config({"DISCORD_TOKEN": "t", "IMAGE_API_KEY": "k"})
    assert config.input_retention_hours == 24 and config.input_retention_bytes == 1024 * 1024 * 1024
    assert config.private_results is PrivateResults.ALLOWED
    tuned = load_config(
        {"DISCORD_TOKEN": "t", "IMAGE_API_KEY": "k", "INPUT_RETENTION_MB": "0.5", "PRIVATE_RESULTS": "Always"}
    )
    assert tuned.input_retention_bytes == 512 * 1024 and tuned.private_results is PrivateResults.ALWAYS
    with pytest.raises(ConfigError, match="PRIVATE_RESULTS must be allowed, never or always"):
        load_config({"DISCORD_TOKEN": "t", "IMAGE_API_KEY": "k", "PRIVATE_RESULTS": "sometimes"})


async def test_migration_3_marks_earlier_results_posted_and_keeps_new_fields(tmp_path: Path) -> None:
    path = tmp_path / "db.sqlite3"
    db = sqlite3.connect(path)
    db.execute("CREATE TABLE schema_migrations (version INTEGER PRIMARY KEY, applied_at DOUBLE PRECISION)")
    for version, statements in enumerate(MIGRATIONS[:2], start=1):
        for statement in statements:
            db.execute(statement)
        db.execute("INSERT INTO schema_migrations VALUES (?, 0)", (version,))
    db.execute(
        "INSERT INTO jobs (id, kind, status, user_id, guild_id, channel_id, prompt, size, input_count, delivery, "
        "created_at, charge_day, cost_usd) VALUES ('old1', 'edit', 'succeeded', 1, 10, 100, 'p', NULL, 1, '{}', "
        "0, '2026-01-01', 0.03)"
    )
    db.commit()
    db.close()
    store = SQLiteJobStore(path)
    await store.open()
    old = await store.get_job("old1")
    assert old is not None and old.delivered is Delivered.POSTED and old.request.private is False
    styled = dataclasses.replace(
        make_job("new1"), request=JobRequest(JobKind.MESSAGE, 1, 10, 100, "p", None, 2, None, True, "noir", ", noir")
    )
    await store.create_job(styled)
    loaded = await store.get_job("new1")
    assert loaded is not None and loaded.request == styled.request
    (entry,) = (e for e in await store.history(1, 10, 0, 10) if e.job.id == "new1")
    assert not entry.result_deleted
    await store.record_result_deleted("new1", by=5, at=1.0)
    await store.record_result_deleted("new1", by=6, at=2.0)  # once
    assert [e.result_deleted for e in await store.history(1, 10, 0, 10)] == [True, False]
    await store.close()
