"""The monitoring that ships with the bot (deploy/): the alert rules pass promtool's checks and their
own unit tests, every metric a rule or the dashboard queries is one the real bot exports, the
dashboard is a well-formed Grafana model, and docker-compose.yml's ``monitoring`` profile wires
Prometheus and Grafana to the files and ports they need."""

from __future__ import annotations

import asyncio
import json
import re
import shutil
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from tests.fake_balance import FakeBalance
from tests.harness import PROVIDER_TOKEN, ROOT, BotProcess, free_port
from tests.test_metrics_e2e import get

PROMETHEUS = ROOT / "deploy" / "prometheus"
GRAFANA = ROOT / "deploy" / "grafana"
RULES = PROMETHEUS / "alerts.yml"
RULE_TESTS = PROMETHEUS / "alerts.test.yml"
DASHBOARD = GRAFANA / "atelier.json"
# Series Prometheus makes itself for every target; the rules may use them.
PROMETHEUS_SERIES = {"up"}


# promtool ---------------------------------------------------------------------------------


def promtool() -> str:
    """promtool from PATH or this virtualenv (where scripts/install-promtool puts it); fails, never skips."""
    found = shutil.which("promtool") or shutil.which("promtool", path=str(Path(sys.executable).parent))
    if found is None:
        pytest.fail("promtool is missing: run scripts/install-promtool (it takes it from Debian's prometheus package)")
    return found


def run_promtool(*args: str) -> str:
    result = subprocess.run([promtool(), *args], capture_output=True, text=True, timeout=120, cwd=ROOT)
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    return output


def test_promtool_accepts_the_rules_and_the_prometheus_config() -> None:
    assert "SUCCESS" in run_promtool("check", "rules", str(RULES))
    assert "SUCCESS" in run_promtool("check", "config", str(PROMETHEUS / "prometheus.yml"))


def test_the_rules_pass_their_unit_tests() -> None:
    assert "SUCCESS" in run_promtool("test", "rules", str(RULE_TESTS))


def alert_rules() -> list[dict[str, Any]]:
    groups = yaml.safe_load(RULES.read_text())["groups"]
    return [rule for group in groups for rule in group["rules"] if "alert" in rule]


def test_every_rule_is_tested_firing_and_silent_and_tells_the_operator_what_to_do() -> None:
    """Each alert has a unit test where it fires and one where it stays silent, a severity, and words."""
    checks = [check for test in yaml.safe_load(RULE_TESTS.read_text())["tests"] for check in test["alert_rule_test"]]
    rules = alert_rules()
    assert len(rules) >= 10
    for rule in rules:
        name = rule["alert"]
        mine = [check for check in checks if check["alertname"] == name]
        assert any(check["exp_alerts"] for check in mine), f"{name}: no unit test where it fires"
        assert any(not check["exp_alerts"] for check in mine), f"{name}: no unit test where it stays silent"
        assert rule["labels"]["severity"] in ("warning", "critical"), name
        assert rule["annotations"]["summary"].strip() and len(rule["annotations"]["description"]) > 80, name
    assert {check["alertname"] for check in checks} <= {rule["alert"] for rule in rules}


# What the queries name ------------------------------------------------------------------------

_STRING = re.compile(r'"(?:\\.|[^"\\])*"|\'(?:\\.|[^\'\\])*\'|`[^`]*`')
_LABEL_LIST = re.compile(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^()]*\)")
_IDENTIFIER = re.compile(r"(?<![\w:.$])[A-Za-z_:][A-Za-z0-9_:]*")
_KEYWORDS = {"and", "or", "unless", "bool", "offset", "inf", "nan"} | {
    "by", "without", "on", "ignoring", "group_left", "group_right"
}  # fmt: skip
_SELECTOR = re.compile(r"([A-Za-z_:][A-Za-z0-9_:]*)\s*\{([^}]*)\}")
_MATCHER = re.compile(r'(\w+)\s*(=~|!~|!=|=)\s*"([^"]*)"')


def metric_names(expr: str) -> set[str]:
    """The metric names a PromQL expression selects: identifiers that are not functions, aggregations,
    keywords, label names (in braces and in by/on/… lists), strings, durations or numbers."""
    bare = _STRING.sub('""', expr)
    bare = re.sub(r"\{[^}]*\}", " ", bare)  # label matchers
    bare = re.sub(r"\[[^\]]*\]", " ", bare)  # ranges and subqueries
    bare = _LABEL_LIST.sub(" ", bare)
    names = set()
    for match in _IDENTIFIER.finditer(bare):
        follows = bare[match.end() :].lstrip()
        if follows.startswith("(") or match.group().lower() in _KEYWORDS:
            continue  # a function or an aggregation; an operator
        names.add(match.group())
    return names


def label_matchers(expr: str) -> list[tuple[str, str, str, str]]:
    """(metric, label, operator, value) for each matcher written after a metric name."""
    return [(name, *matcher.groups()) for name, body in _SELECTOR.findall(expr) for matcher in _MATCHER.finditer(body)]


def test_the_query_parser_finds_metric_names_and_only_them() -> None:
    """The parser the checks below rely on, on the shapes the rules and panels use."""
    expr = (
        'histogram_quantile(0.9, sum by (le) (rate(atelier_api_call_seconds_bucket{job=~"$job"}[$__rate_interval])))'
        ' / on (job) group_left max(up{job="atelier_not_a_metric"} offset 5m) > bool 1e-3'
        ' unless sum without (instance) (increase(atelier_jobs_total{outcome=~"succeeded|failed"}[30m:1m]))'
    )
    assert metric_names(expr) == {"atelier_api_call_seconds_bucket", "up", "atelier_jobs_total"}
    assert ("atelier_jobs_total", "outcome", "=~", "succeeded|failed") in label_matchers(expr)
    assert metric_names("absent(up{job='x'})") == {"up"}
    assert metric_names("max(atelier_typo_metric)") == {"atelier_typo_metric"}


def rule_queries() -> dict[str, str]:
    """Each rule's expression, and the metric names its annotations point operators to."""
    queries = {rule["alert"]: rule["expr"] for rule in alert_rules()}
    for rule in alert_rules():
        mentioned = re.findall(r"\batelier_[a-z_]+\b", " ".join(rule["annotations"].values()))
        if mentioned:
            queries[f"{rule['alert']} (annotations)"] = " + ".join(mentioned)
    return queries


def dashboard_panels() -> Iterator[dict[str, Any]]:
    for panel in json.loads(DASHBOARD.read_text())["panels"]:
        yield panel
        yield from panel.get("panels", [])  # a collapsed row keeps its panels inside


def dashboard_queries() -> dict[str, str]:
    return {
        f"{panel['title']} ({target['refId']})": target["expr"]
        for panel in dashboard_panels()
        for target in panel.get("targets", [])
    }


# The real bot's metrics ---------------------------------------------------------------------------


class Exported:
    """What a scrape of ``/metrics`` offers to PromQL: series names, and each label's values."""

    def __init__(self, text: str) -> None:
        self.names = set(PROMETHEUS_SERIES)
        self.values: dict[tuple[str, str], set[str]] = {}
        self.samples: dict[str, float] = {}
        for family in text_string_to_metric_families(text):
            # A labelled family with no child yet has no sample: its name comes from its type.
            self.names |= {
                "counter": {f"{family.name}_total"},
                "histogram": {f"{family.name}_bucket", f"{family.name}_count", f"{family.name}_sum"},
                "summary": {family.name, f"{family.name}_count", f"{family.name}_sum"},
                "info": {f"{family.name}_info"},
            }.get(family.type, {family.name})
            for sample in family.samples:
                self.names.add(sample.name)
                if not sample.labels:
                    self.samples[sample.name] = sample.value
                for label, value in sample.labels.items():
                    self.values.setdefault((sample.name, label), set()).add(value)

    def unknown(self, queries: dict[str, str]) -> list[str]:
        """Every metric a query names that is not exported, and every label value it matches that no
        series has (``job``, ``instance`` and ``role`` are Prometheus's, from the scrape config)."""
        problems = []
        for where, expr in queries.items():
            problems += [f"{where}: {name}" for name in sorted(metric_names(expr) - self.names)]
            for name, label, operator, value in label_matchers(expr):
                if label in ("job", "instance", "role") or name in PROMETHEUS_SERIES:
                    continue
                seen = self.values.get((name, label))
                if seen is None:
                    problems.append(f"{where}: {name} has no label {label}")
                elif operator in ("=", "=~") and re.fullmatch(r"[\w|]+", value):
                    problems += [
                        f"{where}: {name}{{{label}={v!r}}} never exported" for v in value.split("|") if v not in seen
                    ]
        return problems


@pytest.fixture
async def balance() -> AsyncIterator[FakeBalance]:
    fake = FakeBalance(PROVIDER_TOKEN, dollars=8.0)
    await fake.start()
    yield fake
    await fake.stop()


async def scrape_everything(bot_process: BotProcess, bot_env: dict[str, str], balance: FakeBalance) -> Exported:
    """Start the real bot with every optional metric turned on, and read its ``/metrics`` once it has the balance."""
    port = free_port()
    bot_env.update(
        METRICS_PORT=str(port),
        DAILY_BUDGET_USD="5",
        PROVIDER_BALANCE_URL=balance.url,
        PROVIDER_ACCESS_TOKEN=PROVIDER_TOKEN,
        BALANCE_WARN_USD="10",
        BALANCE_FLOOR_USD="2",
        IMAGE_MODELS="gpt-image-2-vip=0.03,gpt-image-2-all=0.02",
        IMAGE_FALLBACK_MODEL="gpt-image-2-all",
    )
    await bot_process.start()
    await balance.wait_for_polls(1)
    for _ in range(100):  # the reading lands a moment after the request; 5 s at most
        status, text = await get(port, "/metrics")
        assert status == 200
        exported = Exported(text)
        if exported.samples.get("atelier_provider_balance_usd") == 8.0:
            return exported
        await asyncio.sleep(0.05)
    raise AssertionError(f"the balance never reached the metrics:\n{text}")


async def test_every_metric_the_rules_use_is_one_the_bot_exports(
    bot_process: BotProcess, bot_env: dict[str, str], balance: FakeBalance
) -> None:
    exported = await scrape_everything(bot_process, bot_env, balance)
    queries = rule_queries()
    assert exported.unknown(queries) == []
    used = set().union(*map(metric_names, queries.values()))
    # The rules watch what the issue asks for (a rule dropped by mistake fails here too).
    assert {
        "up",
        "atelier_provider_balance_usd",
        "atelier_provider_balance_warn_usd",
        "atelier_provider_balance_floor_usd",
        "atelier_model_fallback_active",
        "atelier_queue_oldest_wait_seconds",
        "atelier_queue_depth",
        "atelier_jobs_total",
        "atelier_api_attempts_total",
        "atelier_notice_oldest_pending_seconds",
    } <= used
    # The thresholds the rules compare with are the configured ones; nothing is waiting or owed.
    assert exported.samples["atelier_provider_balance_warn_usd"] == 10
    assert exported.samples["atelier_provider_balance_floor_usd"] == 2
    assert exported.samples["atelier_daily_budget_usd"] == 5
    assert exported.samples["atelier_queue_oldest_wait_seconds"] == 0
    assert exported.samples["atelier_notices_pending"] == 0
    assert exported.samples["atelier_notice_oldest_pending_seconds"] == 0


async def test_every_metric_the_dashboard_queries_is_one_the_bot_exports(
    bot_process: BotProcess, bot_env: dict[str, str], balance: FakeBalance
) -> None:
    exported = await scrape_everything(bot_process, bot_env, balance)
    queries = dashboard_queries()
    assert exported.unknown(queries) == []
    used = set().union(*map(metric_names, queries.values()))
    assert {
        "atelier_queue_depth",
        "atelier_queue_oldest_wait_seconds",
        "atelier_jobs_total",
        "atelier_api_call_seconds_bucket",
        "atelier_spend_today_usd",
        "atelier_daily_budget_usd",
        "atelier_provider_balance_usd",
        "atelier_provider_balance_warn_usd",
        "atelier_provider_balance_floor_usd",
        "atelier_model_fallback_active",
        "atelier_notices_pending",
        "up",
        "atelier_build_info",
    } <= used


def test_the_name_check_catches_a_misspelt_metric_or_label_value() -> None:
    """The check above against a made-up exposition: it must not pass whatever the queries say."""
    text = (
        "# TYPE atelier_jobs_total counter\n"
        'atelier_jobs_total{kind="edit",outcome="failed"} 0\n'
        "# TYPE atelier_api_call_seconds histogram\n"
        'atelier_api_call_seconds_bucket{le="+Inf"} 0\n'
        "atelier_api_call_seconds_count 0\natelier_api_call_seconds_sum 0\n"
    )
    exported = Exported(text)
    assert exported.unknown({"ok": 'sum(rate(atelier_jobs_total{outcome="failed"}[5m])) and up'}) == []
    assert exported.unknown({"ok": "rate(atelier_api_call_seconds_bucket[5m])"}) == []
    assert exported.unknown({"a": "atelier_job_total"}) == ["a: atelier_job_total"]
    assert exported.unknown({"b": "atelier_api_call_seconds"}) == ["b: atelier_api_call_seconds"]
    assert exported.unknown({"c": 'atelier_jobs_total{outcome=~"failed|lost"}'}) == [
        "c: atelier_jobs_total{outcome='lost'} never exported"
    ]
    assert exported.unknown({"d": 'atelier_jobs_total{result="failed"}'}) == [
        "d: atelier_jobs_total has no label result"
    ]


# The dashboard ------------------------------------------------------------------------------------


def test_the_dashboard_is_a_grafana_model_with_a_query_in_every_panel() -> None:
    dashboard = json.loads(DASHBOARD.read_text())
    assert dashboard["uid"] == "atelier" and dashboard["schemaVersion"] >= 39
    variables = {v["name"]: v for v in dashboard["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource" and variables["datasource"]["query"] == "prometheus"
    panels = list(dashboard_panels())
    assert len({panel["id"] for panel in panels}) == len(panels), "panel ids repeat"
    covered: set[tuple[int, int]] = set()
    for panel in panels:
        title = panel["title"]
        box = panel["gridPos"]
        assert box["x"] >= 0 and box["w"] > 0 and box["x"] + box["w"] <= 24, title
        cells = {(x, y) for x in range(box["x"], box["x"] + box["w"]) for y in range(box["y"], box["y"] + box["h"])}
        assert not cells & covered, f"{title} overlaps another panel"
        covered |= cells
        if panel["type"] == "row":
            continue
        assert panel["datasource"] == {"type": "prometheus", "uid": "${datasource}"}, title
        assert panel.get("targets"), f"{title} has no query"
        for target in panel["targets"]:
            assert target["expr"].strip() and target["datasource"]["uid"] == "${datasource}", title
    titles = " | ".join(panel["title"].lower() for panel in panels)
    for subject in ("queue", "oldest", "outcome", "latency", "budget", "balance", "breaker", "notices", "processes"):
        assert subject in titles, f"no panel about {subject}"
    latency = next(panel for panel in panels if "latency" in panel["title"].lower())
    assert all("histogram_quantile" in target["expr"] for target in latency["targets"])


# docker-compose's monitoring profile ---------------------------------------------------------------


def test_the_monitoring_profile_wires_prometheus_and_grafana_to_the_bot() -> None:
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    services = compose["services"]
    assert services["prometheus"]["profiles"] == ["monitoring"] and services["grafana"]["profiles"] == ["monitoring"]
    assert all("profiles" not in services[name] for name in ("postgres", "gateway", "worker"))  # opt-in only

    mounts: dict[str, Path] = {}
    for name in ("prometheus", "grafana"):
        for volume in services[name]["volumes"]:
            source, target, *_ = volume.split(":")
            if source.startswith("./"):
                assert (ROOT / source).exists(), f"{name} mounts {source}, which does not exist"
                mounts[target] = ROOT / source
            else:
                assert source in compose["volumes"], f"{name} uses the undeclared volume {source}"

    # Prometheus: its config and the rule file it names, where it looks for them.
    assert mounts["/etc/prometheus/prometheus.yml"] == PROMETHEUS / "prometheus.yml"
    config = yaml.safe_load((PROMETHEUS / "prometheus.yml").read_text())
    assert all(mounts[f"/etc/prometheus/{rules}"] == PROMETHEUS / rules for rules in config["rule_files"])
    assert mounts["/etc/prometheus/alerts.yml"] == RULES
    # It scrapes the gateway and each worker on the port they serve metrics on, and (with METRICS_HOST
    # from .env) they listen beyond their own loopback.
    for role in ("gateway", "worker"):
        environment = services[role]["environment"]
        assert environment["METRICS_HOST"] == "${METRICS_HOST:-127.0.0.1}", role
        port = environment["METRICS_PORT"]
        job = next(job for job in config["scrape_configs"] if job["job_name"] == "atelier")
        static = [target for group in job.get("static_configs", []) for target in group["targets"]]
        dns = [(name, str(sd["port"])) for sd in job.get("dns_sd_configs", []) for name in sd["names"]]
        assert f"{role}:{port}" in static or (role, port) in dns, f"Prometheus does not scrape the {role}"
    rules_job = re.findall(r'job="([^"]+)"', RULES.read_text())
    assert set(rules_job) == {"atelier"}, "the rules name another job than the scrape config"

    # Grafana: the data source is this Prometheus, and the dashboard is where its provider looks.
    datasources = yaml.safe_load(mounts["/etc/grafana/provisioning"].joinpath("datasources/prometheus.yml").read_text())
    prometheus_port = services["prometheus"]["ports"][0].rsplit(":", 1)[1]
    assert datasources["datasources"][0]["url"] == f"http://prometheus:{prometheus_port}"
    providers = yaml.safe_load(mounts["/etc/grafana/provisioning"].joinpath("dashboards/atelier.yml").read_text())
    folder = providers["providers"][0]["options"]["path"]
    assert mounts[f"{folder}/atelier.json"] == DASHBOARD
    # Nothing is published beyond the host's loopback unless the operator says so.
    assert all(port.startswith("127.0.0.1:") for name in ("prometheus", "grafana") for port in services[name]["ports"])
