"""The pool fault for real: a zfs-fuse pool with ggnet's layout (an image converged by
ggnet.storage) is filled past its reserve by a dataset's `reservation`.  Then
`ggnet preflight --json` fails with the pool-below-reserve message naming the pool,
the real API (create_app, its collector thread reading that pool) exposes the low free
space on /metrics, a real Prometheus rendered from roles/ggnet_monitoring scrapes it
and GgnetPoolBelowReserve fires.  Removing the fill makes preflight pass again and the
alert resolve."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import threading
import urllib.parse
import urllib.request
from pathlib import Path

import pytest
from ggnet import layout, storage
from ggnet_testing.daemons import daemons_fixture, free_port, wait_for  # noqa: F401  (a fixture)
from ggnet_testing.monitoring import alerts, get_json, render_role, shorten_for
from ggnet_testing.zfs_pool import pool_fixture, storage_cfg, zfs_daemon_fixture  # noqa: F401  (fixtures)
from prometheus_client.parser import text_string_to_metric_families
from werkzeug.serving import make_server

from ggnet_api.app import create_app

pytestmark = pytest.mark.integration
VENV_BIN = Path(sys.executable).parent
MiB = 2**20
IMAGES = {"os": {"size": "64M", "kind": "system"}}
RESERVE = "10%"


def pool_space(pool: str) -> tuple[int, int]:
    """(used, available) of the pool's root dataset, in bytes."""
    out = subprocess.run(
        ["zfs", "get", "-Hp", "-o", "property,value", "used,available", pool],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    values = dict(line.split("\t", 1) for line in out.splitlines())
    return int(values["used"]), int(values["available"])


def preflight(tmp: Path, pool: str) -> tuple[int, dict]:
    settings = tmp / "preflight.yml"
    settings.write_text(json.dumps({"pool": pool, "reserve": RESERVE}) + "\n")
    proc = subprocess.run(
        [
            str(VENV_BIN / "ggnet"),
            "preflight",
            "--no-inventory",
            "--settings",
            str(settings),
            "--json",
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    assert proc.stdout, proc.stderr
    return proc.returncode, json.loads(proc.stdout)


def write_inventory(root: Path, cfg: dict) -> Path:
    inv = root / "inventory"
    (inv / "group_vars").mkdir(parents=True)
    (inv / "hosts.yml").write_text(
        "all:\n  children:\n    ggnet_servers:\n      hosts:\n"
        "        boot1: {ansible_host: 127.0.0.1}\n    ggnet_clients:\n      hosts: {}\n"
    )
    (inv / "group_vars" / "all.yml").write_text(
        json.dumps({"ggnet_storage": cfg, "ggnet_images": IMAGES}, indent=2) + "\n"
    )
    return inv


@pytest.fixture
def api_server(tmp_path, pool):
    """The real API on 127.0.0.1, its collector reading the test pool every second."""
    cfg = {**storage_cfg(pool), "reserve": RESERVE}
    inv = write_inventory(tmp_path, cfg)
    app = create_app(
        {
            "state_dir": str(tmp_path / "api-state"),
            "inventory": str(inv),
            "collect_interval": 1.0,
            "inventory_poll": 3600.0,
            "reset_on_boot": False,
        }
    )
    ext = app.extensions["ggnet"]
    server = make_server("127.0.0.1", 0, app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield {"port": server.server_port, "cfg": cfg, "collector": ext.collector}
    finally:
        server.shutdown()
        server.server_close()
        ext.close()


def api_pool_gauges(port: int, pool: str) -> dict[str, float]:
    """ggnet_pool_{size,free}_bytes for `pool` as the API's /metrics shows them."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as resp:
        text = resp.read().decode()
    return {
        sample.name: sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.name in ("ggnet_pool_size_bytes", "ggnet_pool_free_bytes")
        and sample.labels.get("pool") == pool
    }


def test_pool_filled_past_reserve_fails_preflight_and_fires_alert(tmp_path, daemons, api_server):
    cfg = api_server["cfg"]
    pool = cfg["pool"]
    # ggnet's layout on the pool: images/, writebacks/, an image with its first version.
    result = storage.converge_images(cfg, IMAGES, check=False)
    assert "create_image" in [a.action for a in result.actions]
    assert layout.image_dataset(cfg, "os").startswith(f"{pool}/")

    ok_rc, ok_report = preflight(tmp_path, pool)
    assert ok_rc == 0, ok_report
    assert ok_report["checks"][0]["name"] == "pool" and ok_report["checks"][0]["ok"]

    ports = {k: free_port() for k in ("prometheus", "alertmanager", "node")}
    ports["api"] = api_server["port"]
    etc = render_role(
        tmp_path / "monitoring",
        ports,
        storage=json.dumps({"pool": pool, "reserve": RESERVE, "writeback_quota": "64M"}),
    )
    shorten_for(etc)
    daemons.start(
        [
            "prometheus",
            f"--config.file={etc / 'prometheus.yml'}",
            f"--storage.tsdb.path={tmp_path / 'tsdb'}",
            f"--web.listen-address=127.0.0.1:{ports['prometheus']}",
        ],
        tmp_path / "prometheus.log",
    )
    prom = f"http://127.0.0.1:{ports['prometheus']}"

    def query(expr):
        data = get_json(f"{prom}/api/v1/query?query={urllib.parse.quote(expr)}")
        result = data and data["data"]["result"]
        return result and float(result[0]["value"][1])

    used, avail = pool_space(pool)
    reserve = (used + avail) // 10
    assert avail > reserve, "a fresh 1G pool must start above its 10% reserve"
    recorded = wait_for(
        "reserve recorded from the API's pool size",
        lambda: query(f'ggnet:pool_reserve_bytes{{instance="boot1",pool="{pool}"}}'),
    )
    # The same pool measured twice (zfs-fuse accounts metadata lazily): within 1%.
    assert abs(recorded - reserve) < reserve / 100
    assert "GgnetPoolBelowReserve" not in alerts(prom)

    # The fault: a dataset reserving all but half the reserve's worth of free space.
    fill = f"{pool}/fill"
    size = (avail - reserve // 2) // MiB * MiB
    subprocess.run(
        ["zfs", "create", "-o", f"reservation={size}", fill], check=True, capture_output=True
    )
    _used, low = pool_space(pool)
    assert low < reserve, f"the fill left {low} bytes free, reserve {reserve}"

    rc, report = preflight(tmp_path, pool)
    assert rc == 1, report
    check = report["checks"][0]
    assert check["name"] == "pool" and check["ok"] is False
    assert re.match(
        rf"pool {pool} has [0-9.]+ MiB free, below its reserve of [0-9.]+ MiB \(10%\): "
        "boots are refused",
        check["message"],
    ), check["message"]
    assert report["summary"] == "preflight: 0 passed, 1 failed (pool)"

    def low_on_metrics():
        gauges = api_pool_gauges(api_server["port"], pool)
        return gauges if gauges.get("ggnet_pool_free_bytes", reserve) < reserve else None

    free = wait_for("the API's /metrics showing the low free space", low_on_metrics)
    assert free["ggnet_pool_size_bytes"] > 10 * free["ggnet_pool_free_bytes"]
    wait_for(
        "GgnetPoolBelowReserve firing",
        lambda: alerts(prom).get("GgnetPoolBelowReserve") == "firing",
    )
    firing = get_json(f"{prom}/api/v1/alerts")["data"]["alerts"]
    labels = next(
        a["labels"] for a in firing if a["labels"]["alertname"] == "GgnetPoolBelowReserve"
    )
    assert labels["pool"] == pool and labels["instance"] == "boot1"

    # The fix: the fill goes; preflight passes and the alert resolves.
    subprocess.run(["zfs", "set", "reservation=none", fill], check=True, capture_output=True)
    rc, report = preflight(tmp_path, pool)
    assert rc == 0, report
    assert report["checks"][0]["ok"] is True

    def resolved():
        data = get_json(f"{prom}/api/v1/alerts")
        return data is not None and all(
            a["labels"]["alertname"] != "GgnetPoolBelowReserve" for a in data["data"]["alerts"]
        )

    wait_for("GgnetPoolBelowReserve resolved", resolved)
