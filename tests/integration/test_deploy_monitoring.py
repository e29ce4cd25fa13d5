"""Monitoring as shipped: deploy/prometheus/alerts.yml passes `promtool check rules` and its unit tests
(`promtool test rules`), reads only metrics the engine exports, links a runbook that names it; the Grafana
dashboard has a panel for every alert, and every panel query is valid PromQL (checked by promtool too)."""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from engine.runtime.metrics import Metrics
from tests.support import require_binary

ROOT = Path(__file__).resolve().parents[2]
RULES = ROOT / "deploy" / "prometheus" / "alerts.yml"
RULE_TESTS = ROOT / "deploy" / "prometheus" / "alerts.test.yml"
DASHBOARD = ROOT / "deploy" / "grafana" / "dashboard.json"
METRIC = re.compile(r"\b(failover_engine_[a-z0-9_]+|up)\b")
RECONCILE = ("failover_engine_reconcile_differences",)  # exported once a reconciliation ran


def promtool() -> str:
    return require_binary("promtool", hint="apt-get install -y prometheus (scripts/bootstrap does)")


def alerts() -> dict[str, dict[str, Any]]:
    return {rule["alert"]: rule for group in yaml.safe_load(RULES.read_text())["groups"] for rule in group["rules"]}


def exported_metrics() -> set[str]:
    """Every series name /metrics can carry (histograms with their _bucket/_sum/_count), plus Prometheus' `up`."""
    metrics = Metrics()
    metrics.describe_service("shop", rpo=30, rto_slo=300, runbook_deadline=900)
    names = {"up", *RECONCILE}
    for family in metrics.registry.collect():
        suffix = {"counter": ["_total"], "info": ["_info"],
                  "histogram": ["_bucket", "_sum", "_count"]}.get(family.type, [""])
        names |= {family.name + s for s in suffix}
    return names


def run(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(args, capture_output=True, text=True, cwd=cwd, timeout=120, check=False)


def test_promtool_check_rules_accepts_the_alerts() -> None:
    """`promtool check rules` finds every rule valid (PromQL and annotation templates)."""
    result = run(promtool(), "check", "rules", str(RULES), cwd=ROOT)
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"SUCCESS: {len(alerts())} rules found" in result.stdout


def test_promtool_unit_tests_of_the_alerts_pass() -> None:
    """`promtool test rules` passes: each alert fires on its failure, with its labels and annotations."""
    result = run(promtool(), "test", "rules", RULE_TESTS.name, cwd=RULE_TESTS.parent)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout


def test_every_alert_has_a_firing_unit_test() -> None:
    """No alert goes without a promtool test case in which it fires."""
    cases = yaml.safe_load(RULE_TESTS.read_text())["tests"]
    fired = {case["alertname"] for test in cases for case in test["alert_rule_test"] if case.get("exp_alerts")}
    assert set(alerts()) - fired == set()


def test_alerts_read_only_exported_metrics_and_link_a_runbook_that_names_them() -> None:
    """Each alert's metrics exist in /metrics; it has a severity, a summary, a description and a runbook that
    exists and names the alert."""
    exported = exported_metrics()
    for name, rule in alerts().items():
        used = set(METRIC.findall(rule["expr"]))
        assert used and used <= exported, f"{name} reads {sorted(used - exported)}, which the engine does not export"
        assert rule["labels"]["severity"] in ("page", "ticket"), name
        notes = rule["annotations"]
        assert notes["summary"] and notes["description"], name
        runbook = ROOT / notes["runbook_url"]
        assert runbook.parent == ROOT / "runbooks" and runbook.is_file(), f"{name}: no runbook {runbook}"
        assert f"`{name}`" in runbook.read_text(), f"{runbook.name} does not name {name}"


def panels() -> list[dict[str, Any]]:
    return [p for p in json.loads(DASHBOARD.read_text())["panels"] if p["type"] != "row"]


def test_dashboard_has_a_panel_for_every_alert() -> None:
    """Every alert is named by a panel whose queries read at least one metric of the alert's expression."""
    by_alert: dict[str, list[dict[str, Any]]] = {}
    for panel in panels():
        for name in re.findall(r"\b(FailoverEngine[A-Za-z]+)\b", panel.get("description", "")):
            by_alert.setdefault(name, []).append(panel)
    rules = alerts()
    assert set(by_alert) - set(rules) == set(), "panels name alerts that do not exist"
    for name, rule in rules.items():
        assert name in by_alert, f"no panel for {name}"
        alert_metrics = set(METRIC.findall(rule["expr"]))
        panel_metrics = {m for p in by_alert[name] for t in p["targets"] for m in METRIC.findall(t["expr"])}
        assert alert_metrics & panel_metrics, f"the panel for {name} does not show {sorted(alert_metrics)}"


def test_dashboard_queries_are_valid_promql_on_exported_metrics(tmp_path: Path) -> None:
    """Every panel query parses (promtool checks it as a recording rule) and reads only exported metrics;
    panel ids are unique."""
    exported = exported_metrics()
    ids = [p["id"] for p in json.loads(DASHBOARD.read_text())["panels"]]
    assert len(ids) == len(set(ids))
    records = []
    for panel in panels():
        for target in panel["targets"]:
            used = set(METRIC.findall(target["expr"]))
            assert used <= exported, f"{panel['title']}: {sorted(used - exported)} not exported"
            records.append({"record": f"dashboard:panel_{panel['id']}_{target['refId']}:check", "expr": target["expr"]})
    rules = tmp_path / "dashboard-queries.yml"
    rules.write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": records}]}))
    result = run(promtool(), "check", "rules", str(rules), cwd=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize("name", ["journal-unwritable.md", "replication-slot-retention.md", "dns-drift.md"])
def test_new_runbooks_are_listed_in_the_index(name: str) -> None:
    """The runbooks added for alerts are in runbooks/README.md and follow the problem/does/do/verify layout."""
    text = (ROOT / "runbooks" / name).read_text()
    assert f"]({name})" in (ROOT / "runbooks" / "README.md").read_text()
    headings = re.findall(r"^## (.+)$", text, flags=re.MULTILINE)
    assert headings == ["The problem", "What the engine does", "What you do", "How to verify"]
