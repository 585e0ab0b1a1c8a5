"""Every dashboard panel's query is valid PromQL: promtool parses them all as rules."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest
import yaml

pytestmark = pytest.mark.integration
MON = Path(__file__).resolve().parents[2] / "monitoring"
# What Grafana puts in place of the dashboards' variables.
SUBSTITUTE = {"$__rate_interval": "1m", "$machine": "pc-01", "$server": "boot1"}


def queries():
    for path in sorted((MON / "dashboards").glob("*.json")):
        for panel in json.loads(path.read_text())["panels"]:
            for target in panel["targets"]:
                yield f"{path.stem}: {panel['title']} {target['refId']}", target["expr"]


def test_every_panel_query_parses(tmp_path):
    rules = []
    for i, (_where, expr) in enumerate(queries()):
        for var, value in SUBSTITUTE.items():
            expr = expr.replace(var, value)
        rules.append({"record": f"ggnet_dashboard:q{i}", "expr": expr})
    assert len(rules) > 20
    path = tmp_path / "panels.rules.yml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "panels", "rules": rules}]}))
    proc = subprocess.run(
        ["promtool", "check", "rules", str(path)], capture_output=True, text=True, check=False
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_a_broken_query_is_caught(tmp_path):
    path = tmp_path / "bad.rules.yml"
    path.write_text(
        yaml.safe_dump(
            {"groups": [{"name": "x", "rules": [{"record": "a:b", "expr": "sum(rate(x[1m])"}]}]}
        )
    )
    proc = subprocess.run(
        ["promtool", "check", "rules", str(path)], capture_output=True, text=True, check=False
    )
    assert proc.returncode != 0
