"""Pure engine parts: configuration, money in micro-dollars, quota bounds and their explanations, access,
presets, privacy, and who may reuse or delete a result.

(The fair order, the ledger and each limit's verdict are the store's now: ``test_postgres_queue.py`` and
``test_store_backends.py`` run them on both databases.)
"""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path

import pytest

from bot.config import Config, load_config
from bot.core.job import Job, JobRequest, styled_prompt, utc_day
from bot.core.money import MICROS_PER_USD, MoneyError, format_price, format_usd, parse_usd, usd_float
from bot.core.overrides import UNSET, GuildOverrides, PrivateResults, RoleLimits
from bot.core.quota import DayUsage, Limit, Quota, describe_wait, next_reset
from bot.core.states import JobState
from bot.errors import ConfigError, InputError
from bot.servers.limits import (
    AccessDeniedError,
    GuildLimits,
    Requester,
    apply_privacy,
    check_access,
    check_can_delete,
    check_can_reuse,
    member_limits,
    member_standing,
    quota_for,
)
from bot.servers.presets import preset_name, preset_text

CONFIG = Config(discord_token="t" * 20, image_api_key="k" * 20, data_dir=Path("unused"))
MEMBER = Requester(
    user_id=1, guild_id=10, channel_id=100, parent_channel_id=None, role_ids=frozenset(), is_manager=False
)
NOON = datetime(2026, 11, 25, 12, 0, tzinfo=UTC).timestamp()
BASE = {"DISCORD_TOKEN": "t", "IMAGE_API_KEY": "k"}


def usage(**kw: object) -> DayUsage:
    base = DayUsage(user_today=0, guild_today=0, spend_today=0, user_active=0, user_last_accepted=None)
    return dataclasses.replace(base, **kw)  # type: ignore[arg-type]


def limits(**kw: object) -> GuildLimits:
    return dataclasses.replace(GuildLimits.resolve(CONFIG, GuildOverrides()), **kw)  # type: ignore[arg-type]


# Configuration -------------------------------------------------------------------------------------------


def test_config_names_the_bad_variable() -> None:
    with pytest.raises(ConfigError, match="DISCORD_TOKEN is required"):
        load_config({"IMAGE_API_KEY": "x"})
    with pytest.raises(ConfigError, match="MAX_CONCURRENT_JOBS must be at least 1"):
        load_config({**BASE, "MAX_CONCURRENT_JOBS": "0"})
    with pytest.raises(ConfigError, match="ALLOWED_CHANNEL_IDS must be a comma-separated list"):
        load_config({**BASE, "ALLOWED_CHANNEL_IDS": "general"})
    config = load_config(
        {"DISCORD_TOKEN": "tok", "IMAGE_API_KEY": "key", "USER_DAILY_LIMIT": "unlimited", "EXEMPT_ROLE_IDS": "1, 2"}
    )
    assert config.user_daily_limit is None and config.exempt_role_ids == {1, 2}
    assert "tok" not in repr(config) and "key" not in repr(config)


def test_a_process_makes_at_most_its_worker_slots_of_the_calls_all_share() -> None:
    assert load_config({**BASE, "MAX_CONCURRENT_JOBS": "16"}).process_slots == 16  # unset: all of them
    assert load_config({**BASE, "MAX_CONCURRENT_JOBS": "16", "WORKER_SLOTS": "4"}).process_slots == 4
    assert load_config({**BASE, "MAX_CONCURRENT_JOBS": "2", "WORKER_SLOTS": "4"}).process_slots == 2
    with pytest.raises(ConfigError, match="WORKER_SLOTS must be a whole number"):
        load_config({**BASE, "WORKER_SLOTS": "half"})


def test_prices_and_budgets_are_read_as_exact_micro_dollars() -> None:
    config = load_config({**BASE, "PRICE_PER_IMAGE": "0.03", "DAILY_BUDGET_USD": "12.5"})
    assert config.price_per_image == 30_000 and type(config.price_per_image) is int
    assert config.daily_budget == 12_500_000 and config.default_model.price == 30_000
    assert load_config(BASE).price_per_image == 30_000 and load_config(BASE).daily_budget is None
    assert load_config({**BASE, "PRICE_PER_IMAGE": "$0.1"}).price_per_image == 100_000
    assert load_config({**BASE, "PRICE_PER_IMAGE": "0.000001"}).price_per_image == 1
    for no_budget in ("0", "unlimited", "none"):
        assert load_config({**BASE, "DAILY_BUDGET_USD": no_budget}).daily_budget is None
    for name in ("PRICE_PER_IMAGE", "DAILY_BUDGET_USD"):
        for bad in ("abc", "-0.01", "0.0000001", "1e-7", "nan", "inf", "0.03 USD"):
            with pytest.raises(ConfigError, match=rf"^{name} must be an amount of dollars with at most 6 decimals"):
                load_config({**BASE, name: bad})


def test_retention_settings_are_read_and_documented_defaults_hold() -> None:
    config = load_config(BASE)
    assert config.input_retention_hours == 24 and config.input_retention_bytes == 1024 * 1024 * 1024
    assert config.private_results is PrivateResults.ALLOWED
    tuned = load_config({**BASE, "INPUT_RETENTION_MB": "0.5", "PRIVATE_RESULTS": "Always"})
    assert tuned.input_retention_bytes == 512 * 1024 and tuned.private_results is PrivateResults.ALWAYS
    with pytest.raises(ConfigError, match="PRIVATE_RESULTS must be allowed, never or always"):
        load_config({**BASE, "PRIVATE_RESULTS": "sometimes"})


# Money ---------------------------------------------------------------------------------------------------


def test_parse_usd_reads_dollars_as_exact_integer_micro_dollars() -> None:
    cases = {"0.03": 30_000, "$1.5": 1_500_000, " 2 ": 2_000_000, "0": 0, "0.000001": 1, "1e2": 100_000_000,
             "0.1": 100_000, "19.99": 19_990_000, "123456789.123456": 123_456_789_123_456}  # fmt: skip
    for text, micros in cases.items():
        parsed = parse_usd(text)
        assert parsed == micros and type(parsed) is int, text
    # Ten dimes are a dollar exactly (as floats they are 0.9999999999999999).
    assert sum(parse_usd("0.1") for _ in range(10)) == MICROS_PER_USD
    for bad in ("", "abc", "-0.01", "0.0000001", "1e-7", "nan", "inf", "-inf", "$", "1,000", "0.03 USD"):
        with pytest.raises(MoneyError):
            parse_usd(bad)


def test_format_usd_rounds_half_up_by_integer_arithmetic() -> None:
    assert [format_usd(m) for m in (30_000, 5_000, 4_999, 0, 1, 12_345, 1_500_000, 995_000, 9_995_000)] == [
        "0.03", "0.01", "0.00", "0.00", "0.00", "0.01", "1.50", "1.00", "10.00",
    ]  # fmt: skip
    assert [format_usd(m) for m in (-30_000, -5_000, -4_999)] == ["-0.03", "-0.01", "0.00"]
    assert (format_usd(1_499_999, 0), format_usd(1_500_000, 0), format_usd(12_345, 4)) == ("1", "2", "0.0123")
    # Far beyond a float's 53 bits, the last micro-dollar is still there.
    assert format_usd(10**18 + 1, 6) == "1000000000000.000001"
    assert format_usd(10**18 + 5_000, 2) == "1000000000000.01"


def test_format_price_is_as_short_as_it_reads_exactly_and_parses_back() -> None:
    assert [format_price(m) for m in (30_000, 35_000, 12_345, 1, 0, 1_500_000, 100_000_000)] == [
        "0.03", "0.035", "0.012345", "0.000001", "0.00", "1.50", "100.00",
    ]  # fmt: skip
    for micros in [*range(0, 2_000_000, 7_919), 10**15 + 7]:
        assert parse_usd(format_price(micros)) == micros
    assert usd_float(30_000) == 0.03 and usd_float(0) == 0.0
    assert Decimal(format_usd(10**18 + 1, 6)) * MICROS_PER_USD == 10**18 + 1


# Quota bounds and their explanations ---------------------------------------------------------------------


def test_reset_time_and_durations() -> None:
    assert next_reset(NOON) - NOON == 12 * 3600
    assert next_reset(NOON - 12 * 3600) == NOON + 12 * 3600  # at midnight, the next midnight
    assert utc_day(NOON) == "2026-11-25" and utc_day(NOON + 12 * 3600) == "2026-11-26"
    assert [str(describe_wait(s)) for s in (0, 0.2, 40, 59.5, 60, 125, 3600, 7500, -5)] == [
        "0 s", "1 s", "40 s", "1 min", "1 min", "3 min", "1 h 0 min", "2 h 5 min", "0 s",
    ]  # fmt: skip


def test_quota_for_bounds_each_total_at_the_most_it_may_be_for_one_more_edit() -> None:
    config = dataclasses.replace(CONFIG, daily_budget=90_000, user_max_active=2)
    rules = limits(user_daily_limit=4, guild_daily_limit=3, user_cooldown_seconds=30.0)
    quota = quota_for(config, rules, MEMBER, NOON, price=30_000)
    assert (quota.spend_today, quota.guild_today, quota.user_active, quota.user_today) == (60_000, 2, 1, 3)
    assert quota.user_last_accepted == NOON - 30
    assert (quota.budget, quota.guild_limit, quota.daily_limit, quota.max_active, quota.cooldown) == (
        90_000, 3, 4, 2, 30.0,
    )  # fmt: skip
    # Without a price, the configured price per image; no budget, no server limit: no bound.
    plain = quota_for(CONFIG, limits(), MEMBER, NOON)
    assert (plain.spend_today, plain.guild_today, plain.user_last_accepted) == (None, None, None)
    assert (plain.user_active, plain.user_today) == (CONFIG.user_max_active - 1, CONFIG.user_daily_limit - 1)  # type: ignore[operator]
    assert quota_for(dataclasses.replace(CONFIG, daily_budget=90_000), None, MEMBER, NOON).spend_today == 60_000


def test_exempt_members_skip_member_limits_but_not_the_budget_or_the_servers_limit() -> None:
    config = dataclasses.replace(CONFIG, daily_budget=90_000)
    rules = limits(user_daily_limit=1, guild_daily_limit=3, user_cooldown_seconds=30.0, exempt_role_ids=frozenset({7}))
    for exempt in (dataclasses.replace(MEMBER, role_ids=frozenset({7})), dataclasses.replace(MEMBER, is_manager=True)):
        quota = quota_for(config, rules, exempt, NOON, price=30_000)
        assert (quota.user_active, quota.user_today, quota.user_last_accepted) == (None, None, None)
        assert (quota.spend_today, quota.guild_today) == (60_000, 2)
    # A job on its server's own key is outside the operator's budget, never outside the other limits.
    own = quota_for(config, rules, MEMBER, NOON, price=30_000, own_key=True)
    assert own.spend_today is None and (own.guild_today, own.user_today) == (2, 0)


def test_each_refusal_says_which_limit_how_much_is_used_and_when_it_resets() -> None:
    quota = Quota(NOON, budget=90_000, guild_limit=3, daily_limit=4, max_active=2, cooldown=30.0)
    seen = usage(user_today=4, guild_today=3, spend_today=90_000, user_active=2, user_last_accepted=NOON - 10)
    resets = "resets at 00:00 UTC (in 12 h 0 min)"
    assert {limit: str(quota.refusal(limit, seen).user_message) for limit in Limit} == {
        Limit.BUDGET: f"Today's budget for image edits is used up ($0.09 of $0.09); it {resets}.",
        Limit.GUILD: f"This server has used all 3 of its edits for today; the limit {resets}.",
        Limit.ACTIVE: "You already have 2 edits queued or running (the most at once is 2). "
        "Wait for one to finish, or cancel one.",
        Limit.DAILY: f"You've used 4 of your 4 edits for today; the limit {resets}.",
        Limit.COOLDOWN: "Slow down a little: you can start another edit in 20 s.",
    }
    one = dataclasses.replace(quota, max_active=1)
    assert str(one.refusal(Limit.ACTIVE, usage(user_active=1)).user_message).startswith(
        "You already have 1 edit queued or running (the most at once is 1)."
    )
    assert quota.refusal(Limit.DAILY, seen).log_detail == "refused: daily limit"


def test_a_members_standing_against_the_limits() -> None:
    rules = limits(user_daily_limit=5, user_cooldown_seconds=30.0)
    standing = member_standing(CONFIG, rules, MEMBER, usage(user_today=3, user_active=1, user_last_accepted=NOON - 10),
                               NOON)  # fmt: skip
    assert (standing.exempt, standing.left_today, standing.active, standing.cooldown_wait) == (False, 2, 1, 20.0)
    over = member_standing(CONFIG, rules, MEMBER, usage(user_today=9), NOON)
    assert over.left_today == 0 and over.cooldown_wait == 0.0
    assert member_standing(CONFIG, limits(user_daily_limit=None), MEMBER, usage(), NOON).left_today is None


def test_a_members_limits_are_the_most_generous_of_their_roles_limit_by_limit() -> None:
    rules = limits(
        user_daily_limit=10,
        user_max_active=2,
        user_cooldown_seconds=60.0,
        role_limits={
            5: RoleLimits(user_daily_limit=3, user_cooldown_seconds=0.0),
            6: RoleLimits(user_daily_limit=None),  # unlimited beats any number
            7: RoleLimits(user_daily_limit=20, user_max_active=4),
            8: RoleLimits(user_cooldown_seconds=30.0),
        },
    )

    def mine(*roles: int) -> tuple[object, ...]:
        got = member_limits(CONFIG, rules, dataclasses.replace(MEMBER, role_ids=frozenset(roles)))
        return got.daily, got.daily_from, got.max_active, got.max_active_from, got.cooldown, got.cooldown_from

    assert mine() == (10, None, 2, None, 60.0, None)  # no role sets anything: the server's
    assert mine(5) == (3, 5, 2, None, 0.0, 5)  # a role's limit replaces the server's, even a tighter one
    assert mine(5, 7) == (20, 7, 4, 7, 0.0, 5)
    assert mine(5, 6, 7) == (None, 6, 4, 7, 0.0, 5)
    assert mine(8, 5) == (3, 5, 2, None, 0.0, 5)  # the shorter cooldown
    assert mine(99) == (10, None, 2, None, 60.0, None)  # a role without limits changes nothing
    both = member_limits(CONFIG, rules, dataclasses.replace(MEMBER, role_ids=frozenset({5, 7})))
    assert both.from_roles == [7, 5] and both.all_from_roles
    quota = quota_for(CONFIG, rules, dataclasses.replace(MEMBER, role_ids=frozenset({5, 7})), NOON)
    assert (quota.user_today, quota.user_active, quota.user_last_accepted) == (19, 3, None)
    exempt = quota_for(CONFIG, rules, dataclasses.replace(MEMBER, role_ids=frozenset({5}), is_manager=True), NOON)
    assert (exempt.user_today, exempt.user_active) == (None, None)  # exemption is as it was
    dm = member_limits(CONFIG, None, dataclasses.replace(MEMBER, guild_id=None))
    assert (dm.daily, dm.max_active, dm.from_roles) == (CONFIG.user_daily_limit, CONFIG.user_max_active, [])


def test_role_limits_round_trip_through_json_and_forgetting_the_last_one_unsets_them() -> None:
    overrides = GuildOverrides(user_max_active=3).with_role_limits(5, RoleLimits(user_daily_limit=None))
    overrides = overrides.with_role_limits(5, RoleLimits(user_max_active=4))  # merged with what role 5 had
    overrides = overrides.with_role_limits(6, RoleLimits(user_cooldown_seconds=2.5))
    data = overrides.to_json()
    assert data == {
        "user_max_active": 3,
        "role_limits": {
            "5": {"user_daily_limit": None, "user_max_active": 4},
            "6": {"user_cooldown_seconds": 2.5},
        },
    }
    assert GuildOverrides.from_json(data) == overrides
    resolved = GuildLimits.resolve(CONFIG, GuildOverrides.from_json(data))
    assert resolved.user_max_active == 3 and set(resolved.role_limits) == {5, 6}
    gone = overrides.with_role_limits(5, None).with_role_limits(6, None)
    assert gone.role_limits is UNSET and gone.to_json() == {"user_max_active": 3}


# Access, presets, privacy, reuse -------------------------------------------------------------------------


def test_access_by_channel_thread_parent_role_and_dm() -> None:
    rules = limits(allowed_channel_ids=frozenset({100}))
    check_access(CONFIG, rules, MEMBER)
    in_thread = dataclasses.replace(MEMBER, channel_id=555, parent_channel_id=100)
    check_access(CONFIG, rules, in_thread)
    with pytest.raises(AccessDeniedError, match="<#100>"):
        check_access(CONFIG, rules, dataclasses.replace(MEMBER, channel_id=101))
    check_access(CONFIG, rules, dataclasses.replace(MEMBER, channel_id=101, is_manager=True))
    with pytest.raises(AccessDeniedError, match="<@&5>"):
        check_access(CONFIG, limits(allowed_role_ids=frozenset({5})), MEMBER)
    check_access(CONFIG, limits(allowed_role_ids=frozenset({5})), dataclasses.replace(MEMBER, role_ids=frozenset({5})))
    dm = dataclasses.replace(MEMBER, guild_id=None)
    with pytest.raises(AccessDeniedError, match="servers only"):
        check_access(CONFIG, None, dm)
    check_access(dataclasses.replace(CONFIG, allow_dms=True), None, dm)


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
    request = JobRequest("edit", 1, 10, 100, "make it dusk", None, 1, style="noir", style_text=", as film noir")
    assert request.api_prompt == "make it dusk, as film noir"


def test_the_private_setting_refuses_forces_or_allows() -> None:
    request = JobRequest("edit", 1, 10, 100, "p", None, 1, private=True)
    with pytest.raises(AccessDeniedError, match="doesn't allow private results"):
        apply_privacy(limits(private_results=PrivateResults.NEVER), request)
    public = dataclasses.replace(request, private=False)
    assert apply_privacy(limits(private_results=PrivateResults.ALWAYS), public).private is True
    assert apply_privacy(limits(), request).private is True and apply_privacy(limits(), public).private is False
    assert apply_privacy(None, request).private is True  # a DM: as asked
    overrides = GuildOverrides.from_json(GuildOverrides(private_results=PrivateResults.NEVER).to_json())
    assert overrides.private_results is PrivateResults.NEVER
    assert GuildLimits.resolve(CONFIG, overrides).private_results is PrivateResults.NEVER


def make_job(job_id: str, *, private: bool = False) -> Job:
    request = JobRequest("edit", 1, 10, 100, "p", None, 1, private=private)
    return Job(job_id, request, JobState.SUCCEEDED, NOON, utc_day(NOON), 30_000)


def test_only_the_requester_reuses_a_private_result_and_moderators_delete() -> None:
    private = make_job("bb01", private=True)
    check_can_reuse(private, 1)
    check_can_reuse(make_job("bb02"), 2)  # a public result: anyone may refine or reroll it
    with pytest.raises(AccessDeniedError, match="private"):
        check_can_reuse(private, 2)
    check_can_delete(private, 1, is_moderator=False)
    check_can_delete(private, 2, is_moderator=True)
    with pytest.raises(AccessDeniedError, match="Manage Messages"):
        check_can_delete(private, 2, is_moderator=False)
