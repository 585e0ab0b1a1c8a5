"""The alert rules keep their promises: enough of them, each with its severity, summary
and runbook entry, each proven by a promtool case that fires and one that stays quiet.  promtool itself
runs those cases in tests/integration/test_monitoring_stack.py (about 30 s here)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

from ggnet_api.db.stats import BOOT_BUCKETS

pytestmark = pytest.mark.unit
REPO = Path(__file__).resolve().parents[2]
# Every rule file the ggnet_monitoring role installs (ggnet-inventory.rules.yml is
# rendered from the inventory and holds no alerts).
RULE_FILES = sorted((REPO / "monitoring/rules").glob("*.rules.yml"))
TESTS = sorted((REPO / "monitoring/tests").glob("*.test.yml"))
DOCS = REPO / "docs/monitoring.md"
SEVERITIES = {"critical", "warning", "info"}


def rules(kind: str) -> list[dict]:
    groups = [g for f in RULE_FILES for g in yaml.safe_load(f.read_text())["groups"]]
    return [r for g in groups for r in g["rules"] if kind in r]


def test_every_rule_file_is_installed():
    """The role copies and Prometheus loads exactly the rule files of monitoring/rules."""
    role_vars = yaml.safe_load((REPO / "roles/ggnet_monitoring/vars/main.yml").read_text())
    assert len(RULE_FILES) >= 2
    assert sorted(role_vars["_ggnet_monitoring_rule_files"]) == [f.name for f in RULE_FILES]
    template = (REPO / "roles/ggnet_monitoring/templates/prometheus.yml.j2").read_text()
    assert "{% for file in _ggnet_monitoring_rule_files %}" in template


def alert_cases() -> list[tuple[str, bool]]:
    """(alertname, fires) of every alert_rule_test case in monitoring/tests/."""
    cases = []
    for path in TESTS:
        for test in yaml.safe_load(path.read_text())["tests"]:
            for case in test.get("alert_rule_test", []):
                cases.append((case["alertname"], bool(case.get("exp_alerts"))))
    return cases


def doc_anchors() -> set[str]:
    """GitHub's anchors of the docs' headings: lower case, punctuation dropped."""
    headings = re.findall(r"^#+\s+(.+?)\s*$", DOCS.read_text(), re.MULTILINE)
    return {re.sub(r"[^\w\- ]", "", h).strip().lower().replace(" ", "-") for h in headings}


def test_enough_alerts_and_recording_rules():
    alerts = rules("alert")
    assert len(alerts) >= 17
    assert len(rules("record")) >= 25
    assert {a["labels"]["severity"] for a in alerts} == SEVERITIES


@pytest.mark.parametrize("alert", rules("alert"), ids=lambda a: a["alert"])
def test_alert_has_severity_summary_and_runbook(alert):
    assert alert["labels"]["severity"] in SEVERITIES
    notes = alert["annotations"]
    assert notes["summary"].strip()
    anchor = f"docs/monitoring.md#{alert['alert'].lower()}"
    assert notes["runbook_url"] == anchor
    assert anchor.split("#")[1] in doc_anchors(), f"no runbook entry for {alert['alert']}"


def test_every_alert_fires_and_stays_quiet_in_a_test():
    names = {a["alert"] for a in rules("alert")}
    cases = alert_cases()
    assert names - {n for n, fires in cases if fires} == set(), "alerts with no firing case"
    assert names - {n for n, fires in cases if not fires} == set(), "alerts with no quiet case"
    assert {n for n, _ in cases} <= names, "cases of alerts that do not exist"


def test_the_slo_objectives_and_threshold_match_the_docs():
    objectives = {r["record"]: r["expr"] for r in rules("record") if ":objective" in r["record"]}
    assert objectives == {
        "ggnet:slo_boot_success:objective": "vector(0.99)",
        "ggnet:slo_time_to_boot:objective": "vector(0.95)",
    }
    docs = DOCS.read_text()
    assert "99 % of boots end `ok`" in docs and "95 % of successful boots within 60 s" in docs
    # The time-to-boot SLO counts the 60 s bucket: it must be one of the API's buckets.
    assert 60 in BOOT_BUCKETS
    burn = [r["expr"] for r in rules("record") if "slo_time_to_boot:burn_rate" in r["record"]]
    assert len(burn) == 7
    assert all('le=~"60(\\\\.0)?"' in e for e in burn)


@pytest.mark.parametrize("slo", ["boot_success", "time_to_boot"])
def test_an_slos_burn_rates_differ_only_in_their_window(slo):
    # PromQL cannot take the window as a parameter, so each window is its own copy of
    # one expression; this keeps the copies one rule.
    burns = {
        r["record"].rsplit("burn_rate", 1)[1]: r["expr"]
        for r in rules("record")
        if r["record"].startswith(f"ggnet:slo_{slo}:burn_rate")
    }
    assert set(burns) == {"5m", "30m", "1h", "2h", "6h", "1d", "3d"}
    shapes = {window: expr.replace(f"[{window}]", "[W]") for window, expr in burns.items()}
    assert len(set(shapes.values())) == 1, shapes
    assert "[W]" in shapes["5m"]
