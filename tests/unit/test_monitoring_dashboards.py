"""The dashboards' structure: what a person opens must have every panel it promises."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import yaml

pytestmark = pytest.mark.unit
MON = Path(__file__).resolve().parents[2] / "monitoring"
DASHBOARDS = {
    p.stem: json.loads(p.read_text()) for p in sorted((MON / "dashboards").glob("*.json"))
}
DS_UID = yaml.safe_load((MON / "provisioning/datasources/ggnet.yml").read_text())["datasources"][0][
    "uid"
]


def test_the_three_dashboards_exist():
    assert set(DASHBOARDS) == {"overview", "machine", "server"}


@pytest.mark.parametrize("name", ["overview", "machine", "server"])
def test_structure(name):
    d = DASHBOARDS[name]
    assert d["uid"] == f"ggnet-{name}" and d["title"] == f"ggnet {name}"
    ids = [p["id"] for p in d["panels"]]
    assert len(ids) == len(set(ids)), "panel ids must be unique"
    variables = {v["name"] for v in d["templating"]["list"]}
    for p in d["panels"]:
        assert p["title"] and p["targets"], p
        assert p["datasource"]["uid"] == DS_UID
        g = p["gridPos"]
        assert g["x"] + g["w"] <= 24 and g["h"] > 0
        for t in p["targets"]:
            assert t["expr"].strip()
            used = set(re.findall(r"\$(\w+)", t["expr"])) - {"__rate_interval"}
            assert used <= variables, f"{p['title']}: undefined variables {used - variables}"


def test_overview_shows_what_the_issue_asks_for():
    titles = " | ".join(p["title"] for p in DASHBOARDS["overview"]["panels"]).lower()
    for words in (
        "machines",
        "online",
        "booting",
        "sessions",
        "boot success",
        "boot duration",
        "storage",
        "growth",
    ):
        assert words in titles, words


def test_machine_drill_down_has_boots_writeback_and_iscsi():
    d = DASHBOARDS["machine"]
    assert [v["name"] for v in d["templating"]["list"]] == ["machine"]
    titles = [p["title"] for p in d["panels"]]
    assert {"Boots", "Writeback size", "iSCSI traffic"} <= set(titles)
