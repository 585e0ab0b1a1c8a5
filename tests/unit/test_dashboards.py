"""The Grafana dashboards: their structure, their drill-down links, and every query,
parsed by promtool and reading only series that exist (a recording rule of
monitoring/rules, or a raw series listed below with where it comes from)."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

pytestmark = pytest.mark.unit
REPO = Path(__file__).resolve().parents[2]
MON = REPO / "monitoring"
DASHBOARDS = {
    p.stem: json.loads(p.read_text()) for p in sorted((MON / "dashboards").glob("*.json"))
}
DS_UID = yaml.safe_load((MON / "provisioning/datasources/ggnet.yml").read_text())["datasources"][0][
    "uid"
]
# What Grafana puts in place of its own variables; the dashboards' variables get a sample.
GRAFANA_VARIABLES = {"__rate_interval": "1m", "__interval": "1m", "__range": "1h"}

# Raw series the queries and the dashboards' rules may read, by source.
# The API's /metrics (ggnet_api/metrics.py; a test below finds each there).
API_SERIES = {
    "ggnet_boots_total",
    "ggnet_boot_duration_seconds_bucket",
    "ggnet_boot_duration_seconds_count",
    "ggnet_clients",
    "ggnet_iscsi_sessions",
    "ggnet_iscsi_read_bytes_total",
    "ggnet_iscsi_write_bytes_total",
    "ggnet_jobs_total",
    "ggnet_jobs_active",
    "ggnet_job_duration_seconds_bucket",
    "ggnet_machine_boots_total",
    "ggnet_machine_last_boot_duration_seconds",
    "ggnet_pool_free_bytes",
    "ggnet_writeback_bytes",
    "ggnet_dhcp_messages_total",
    "ggnet_dhcp_errors_total",
    "ggnet_dhcp_leases_active",
    "ggnet_tftp_requests_total",
    "ggnet_tftp_errors_total",
    "ggnet_tftp_sent_bytes_total",
    "ggnet_iscsi_logins_total",
    "ggnet_iscsi_login_failures_total",
    "ggnet_iscsi_errors_total",
    "ggnet_iscsi_targets",
    "ggnet_iscsi_targets_active",
    "ggnet_storage_images",
    "ggnet_storage_image_versions",
    "ggnet_storage_snapshots",
    "ggnet_boot_session_duration_seconds_bucket",
    "ggnet_image_version_state",
    "ggnet_image_rollout",
}
# node_exporter (Debian's prometheus-node-exporter) and its textfile collector, which
# carries `ggnet preflight --textfile`; `up` is Prometheus's own, per target.
NODE_SERIES = {
    "node_memory_MemAvailable_bytes",
    "node_zfs_arc_size",
    "node_network_receive_bytes_total",
    "node_network_transmit_bytes_total",
    "node_disk_read_bytes_total",
    "node_disk_written_bytes_total",
    "ggnet_preflight_check_ok",
    "up",
}
# The ggnet_monitoring role renders these per site from the inventory.
INVENTORY_RECORDS = set(
    re.findall(
        r"record: (\S+)",
        (REPO / "roles/ggnet_monitoring/templates/ggnet-inventory.rules.yml.j2").read_text(),
    )
)
DASHBOARD_RULES = MON / "rules/ggnet-dashboards.rules.yml"
KEYWORDS = {"by", "without", "on", "ignoring", "group_left", "group_right", "bool", "offset"}
KEYWORDS |= {"and", "or", "unless", "inf", "nan"}


def rules() -> list[dict]:
    return [
        r
        for path in sorted((MON / "rules").glob("*.yml"))
        for g in yaml.safe_load(path.read_text())["groups"]
        for r in g["rules"]
    ]


RECORDS = {r["record"] for r in rules() if "record" in r} | INVENTORY_RECORDS


def metric_names(expr: str) -> set[str]:
    """The series names a PromQL expression reads: identifiers that are neither a
    function, a keyword, a label in braces or in a by/on/without list, nor a duration."""
    expr = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)  # string literals
    expr = re.sub(r"\{[^}]*\}", "", expr)  # label matchers
    expr = re.sub(r"\[[^\]]*\]", "", expr)  # ranges and subqueries
    expr = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", "", expr)
    names = set()
    for m in re.finditer(r"[A-Za-z_:][\w:]*", expr):
        after = expr[m.end() :].lstrip()
        if after.startswith("(") or m.group().lower() in KEYWORDS:
            continue
        if m.start() and (expr[m.start() - 1].isdigit() or expr[m.start() - 1] == "."):
            continue  # 1e3, 0.5
        names.add(m.group())
    return names


def panels(board: dict) -> list[dict]:
    out = []
    for p in board["panels"]:
        out.append(p)
        out.extend(p.get("panels", []))  # a collapsed row keeps its panels inside
    return out


def queries() -> list[tuple[str, str]]:
    """(where, expr with every variable substituted) of every panel and variable."""
    out = []
    for name, board in DASHBOARDS.items():
        sample = dict(GRAFANA_VARIABLES)
        sample.update({v["name"]: f"sample-{v['name']}" for v in board["templating"]["list"]})
        exprs = [
            (f"{name}: {p['title']} {t['refId']}", t["expr"])
            for p in panels(board)
            for t in p.get("targets", [])
        ]
        for v in board["templating"]["list"]:
            m = re.fullmatch(r"label_values\((.+),\s*\w+\)", v["query"]["query"])
            assert m, f"{name}: variable {v['name']} is not label_values(selector, label)"
            exprs.append((f"{name}: variable {v['name']}", m.group(1)))
        for where, expr in exprs:
            for var, value in sample.items():
                expr = re.sub(rf"\$\{{{var}\}}|\${var}\b", value, expr)
            assert "$" not in expr, f"{where}: unknown variable in {expr}"
            out.append((where, expr))
    return out


def link_urls(board: dict) -> list[str]:
    urls = [link["url"] for link in board["links"]]
    for p in panels(board):
        field = p.get("fieldConfig", {})
        urls += [link["url"] for link in field.get("defaults", {}).get("links", [])]
        for o in field.get("overrides", []):
            for prop in o["properties"]:
                if prop["id"] == "links":
                    urls += [link["url"] for link in prop["value"]]
    return urls


def test_the_four_dashboards_exist():
    assert set(DASHBOARDS) == {"overview", "fleet", "server", "machine"}


@pytest.mark.parametrize("name", sorted(DASHBOARDS))
def test_structure(name):
    d = DASHBOARDS[name]
    assert d["uid"] == f"ggnet-{name}" and d["title"] == f"ggnet {name}"
    ids = [p["id"] for p in panels(d)]
    assert len(ids) == len(set(ids)), "panel ids must be unique"
    for p in panels(d):
        g = p["gridPos"]
        assert g["x"] + g["w"] <= 24 and g["h"] > 0
        if p["type"] == "row":
            continue
        assert p["title"] and p["targets"], p
        assert p["datasource"]["uid"] == DS_UID
        assert all(t["expr"].strip() for t in p["targets"])
    for v in d["templating"]["list"]:
        assert v["datasource"]["uid"] == DS_UID


def test_the_overview_has_18_panels_in_its_rows():
    d = DASHBOARDS["overview"]
    assert len([p for p in panels(d) if p["type"] != "row"]) >= 18
    rows = [p["title"].split(":")[0].lower() for p in d["panels"] if p["type"] == "row"]
    assert rows == ["slo", "capacity", "network", "jobs"]
    assert d["panels"][0]["type"] == "row", "every panel sits in a row"
    titles = " | ".join(p["title"] for p in panels(d)).lower()
    for words in (
        "availability",
        "boot success",
        "p95 time to boot by group",
        "dhcp",
        "tftp",
        "iscsi",
        "machines",
        "online",
        "booting",
        "sessions",
        "storage",
        "growth",
        "jobs",
    ):
        assert words in titles, words


def test_drill_down_fleet_server_machine():
    uids = {d["uid"]: d for d in DASHBOARDS.values()}
    for name, board in DASHBOARDS.items():
        for url in link_urls(board):
            m = re.match(r"/d/([\w-]+)", url)
            assert m and m.group(1) in uids, f"{name}: link to a dashboard that is not here: {url}"
            target_vars = {v["name"] for v in uids[m.group(1)]["templating"]["list"]}
            passed = set(re.findall(r"var-(\w+)=", url))
            assert passed <= target_vars, f"{name}: {url} sets variables {passed - target_vars}"

    def targets(name):
        return {re.match(r"/d/([\w-]+)", u).group(1) for u in link_urls(DASHBOARDS[name])}

    assert "ggnet-server" in targets("fleet") and "ggnet-server" in targets("overview")
    assert "ggnet-machine" in targets("server")
    assert {"ggnet-server", "ggnet-fleet"} <= targets("machine")


@pytest.mark.skipif(shutil.which("promtool") is None, reason="promtool (Debian prometheus)")
def test_every_query_parses_with_promtool(tmp_path):
    found = queries()
    assert len(found) > 60
    path = tmp_path / "panels.rules.yml"
    records = [{"record": f"ggnet_dashboard:q{i}", "expr": e} for i, (_w, e) in enumerate(found)]
    path.write_text(yaml.safe_dump({"groups": [{"name": "panels", "rules": records}]}))
    proc = subprocess.run(
        ["promtool", "check", "rules", str(path)], capture_output=True, text=True, check=False
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr


@pytest.mark.skipif(shutil.which("promtool") is None, reason="promtool (Debian prometheus)")
def test_promtool_rejects_a_broken_query(tmp_path):
    path = tmp_path / "bad.rules.yml"
    bad = {"record": "a:b", "expr": "sum(rate(x[1m])"}
    path.write_text(yaml.safe_dump({"groups": [{"name": "x", "rules": [bad]}]}))
    proc = subprocess.run(
        ["promtool", "check", "rules", str(path)], capture_output=True, text=True, check=False
    )
    assert proc.returncode != 0


def test_every_query_reads_a_rule_or_a_known_series():
    known = RECORDS | API_SERIES | NODE_SERIES
    unknown = {(where, n) for where, expr in queries() for n in metric_names(expr)}
    unknown = {(where, n) for where, n in unknown if n not in known}
    assert unknown == set()


def test_the_dashboards_rules_read_known_series():
    known = RECORDS | API_SERIES | NODE_SERIES
    for r in yaml.safe_load(DASHBOARD_RULES.read_text())["groups"][0]["rules"]:
        assert metric_names(r["expr"]) <= known, r["record"]


def test_metric_names_finds_series_and_nothing_else():
    expr = (
        'histogram_quantile(0.95, sum by (job, le) (rate(a_bucket{le=~"6.*"}[5m])))'
        " / on (instance) group_left () b:c offset 5m > 1e3 or vector(1) and up == bool 0"
    )
    assert metric_names(expr) == {"a_bucket", "b:c", "up"}
    assert "nosuch_metric" in {
        n for n in metric_names("rate(nosuch_metric[5m])") if n not in RECORDS
    }


def test_the_api_series_are_exported():
    source = (REPO / "ggnet_api/metrics.py").read_text()
    for name in API_SERIES:
        base = re.sub(r"(_total|_bucket|_count|_sum)$", "", name)
        assert f'"{base}"' in source, name


def test_the_monitoring_role_installs_every_rule_file():
    role_vars = yaml.safe_load((REPO / "roles/ggnet_monitoring/vars/main.yml").read_text())
    files = sorted(p.name for p in (MON / "rules").glob("*.yml"))
    assert sorted(role_vars["_ggnet_monitoring_rule_files"]) == files
