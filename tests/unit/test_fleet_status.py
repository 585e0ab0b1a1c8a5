"""The node agent's answers: /v1/status from the collector's sample, the inventory and
the boots table; /v1/metrics as /metrics; the collector's reader of version guids."""

from __future__ import annotations

import time

import ggnet
import pytest
from ggnet.zfs import Zfs
from ggnet_testing.api_project import ALL, HOSTS, inventory_app
from ggnet_testing.zfs_fakes import FakeZfsRunner

from ggnet_api import collector as collector_mod
from ggnet_api import fleet_signing as fs
from ggnet_api.collector import Sample

pytestmark = pytest.mark.unit

KEY = "f" * 64


@pytest.fixture
def app(tmp_path):
    app = inventory_app(tmp_path, HOSTS, ALL, fleet_key=KEY)
    yield app
    app.extensions["ggnet"].close()


def status(app):
    resp = app.test_client().get("/v1/status", headers=fs.sign(KEY, "GET", "/v1/status"))
    assert resp.status_code == 200, resp.get_json()
    return resp.get_json()


def test_status_reports_host_pool_sessions_clients_images_and_version(app):
    e = app.extensions["ggnet"]
    iqn = e.inventory.snapshot.clients["pc-01"]["target_iqn"]
    e.collector.sample = Sample(
        at=time.time(),
        pools={"ggtest": (1000, 400)},
        sessions={iqn: ["iqn.initiator:pc-01", "iqn.initiator:other"]},
        versions={"win11": [{"name": "v1", "guid": "1234"}, {"name": "v2", "guid": None}]},
    )
    boot = e.db.add_boot("52:54:00:aa:00:01", "pc-01", "normal", image="win11")
    e.db.set_boot_stage(boot, "sanboot", time.time(), "ok", 9.0, None)
    body = status(app)
    assert body["version"] == ggnet.__version__
    assert body["server"] == "boot1"
    assert body["pools"] == {"ggtest": {"size": 1000, "free": 400}}
    assert body["iscsi_sessions"] == 2
    assert body["clients"] == {"placed": 1, "booted": 1}
    assert body["images"] == {
        "win11": [{"name": "v1", "guid": "1234"}, {"name": "v2", "guid": None}]
    }
    host = body["host"]
    assert host["memory"]["total"] > 0 and 0 <= host["memory"]["percent"] <= 100
    assert len(host["load"]) == 3 and host["cpus"] >= 1
    assert body["collector"]["errors"] == []


def test_status_says_what_the_collector_could_not_read(app):
    e = app.extensions["ggnet"]
    e.collector.sample = Sample(at=time.time(), errors={"storage": "no pool", "iscsi": "down"})
    body = status(app)
    assert body["images"] is None and body["iscsi_sessions"] is None
    assert body["collector"]["errors"] == ["iscsi", "storage"]


def test_status_never_runs_a_probe(app, monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("a status call ran a subprocess")

    monkeypatch.setattr("subprocess.run", refuse)
    monkeypatch.setattr("subprocess.Popen", refuse)
    status(app)


def test_v1_metrics_is_metrics_without_auth(app):
    client = app.test_client()
    v1 = client.get("/v1/metrics")
    assert v1.status_code == 200
    assert v1.content_type == client.get("/metrics").content_type
    assert "ggnet_api_requests_total" in v1.get_data(as_text=True)


def test_collector_reads_each_versions_guid(app, monkeypatch):
    listing = "\n".join(
        [
            "ggtest\tavailable\t600",
            "ggtest\tused\t400",
            "ggtest/images\tused\t0",
            "ggtest/images/win11\tggnet:kind\tsystem",
            "ggtest/images/win11@v1\tggnet:created\t2026-01-01T00:00:00Z",
            "ggtest/images/win11@v1\tguid\t9876543210",
            "ggtest/images/win11@v2\tggnet:created\t2026-01-02T00:00:00Z",
        ]
    )
    runner = FakeZfsRunner(listing=listing + "\n")
    monkeypatch.setattr(collector_mod, "Zfs", lambda: Zfs(runner=runner))
    sample = app.extensions["ggnet"].collector.collect()
    assert "storage" not in sample.errors, sample.errors
    guids = {v["name"]: v["guid"] for v in sample.versions["win11"]}
    assert guids == {"v1": "9876543210", "v2": None}
    # Asked in the same `zfs get` as the versions' own properties, not a call of its own.
    props = [arg.split(",") for argv in runner.calls for arg in argv if "," in arg]
    assert any("guid" in p and "ggnet:created" in p for p in props)
    assert not any(p == ["guid"] for p in props)
