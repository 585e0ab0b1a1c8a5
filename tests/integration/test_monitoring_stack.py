"""The ggnet_monitoring role rendered for a one-server inventory on 127.0.0.1, checked
by promtool and amtool, then run for real: Prometheus scrapes node_exporter (whose
textfile collector carries `ggnet preflight --textfile`) and a small /metrics endpoint
standing in for the API; a stopped dnsmasq fails preflight and fires its alert.  The
rendering and Prometheus helpers (ggnet_testing.monitoring) are shared with
test_monitoring_pool_fault.py (a real pool filled past its reserve); the daemons of
both are started and stopped by ggnet_testing.daemons."""

from __future__ import annotations

import shutil
import signal
import subprocess
import sys
import threading
import urllib.request
from pathlib import Path
from wsgiref.simple_server import WSGIRequestHandler, make_server

import pytest
from ggnet_testing.daemons import daemons_fixture, free_port, wait_for  # noqa: F401  (a fixture)
from ggnet_testing.monitoring import alerts, get_json, render_role, shorten_for
from prometheus_client import CollectorRegistry, Gauge, make_wsgi_app

pytestmark = pytest.mark.integration
REPO = Path(__file__).resolve().parents[2]
GiB = 2**30


@pytest.fixture
def fake_api():
    """A real /metrics endpoint with the API's pool gauges at fixed, healthy values: the
    `ggnet_api` target of this test (the real API on a real pool is in
    test_monitoring_pool_fault.py)."""
    registry = CollectorRegistry()
    size = Gauge("ggnet_pool_size_bytes", "Pool size", ["pool"], registry=registry)
    free = Gauge("ggnet_pool_free_bytes", "Pool free space", ["pool"], registry=registry)
    size.labels("ggpool").set(100 * GiB)
    free.labels("ggpool").set(60 * GiB)

    class Quiet(WSGIRequestHandler):
        def log_message(self, *args):
            pass

    server = make_server("127.0.0.1", 0, make_wsgi_app(registry), handler_class=Quiet)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield {"port": server.server_port}
    finally:
        server.shutdown()
        server.server_close()


def preflight_textfile(tmp: Path, pidfile: Path) -> subprocess.CompletedProcess:
    settings = tmp / "preflight.yml"
    settings.write_text(f"dnsmasq_pidfile: {pidfile}\n")
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "ggnet_cli.preflight",
            "--no-inventory",
            "--settings",
            str(settings),
            "--textfile",
            str(tmp / "textfile" / "ggnet_preflight.prom"),
        ],
        capture_output=True,
        text=True,
        check=False,
    )


def test_rendered_configs_pass_promtool_and_amtool(tmp_path):
    ports = {k: free_port() for k in ("api", "prometheus", "alertmanager", "node")}
    etc = render_role(tmp_path, ports)
    for argv in (
        ["promtool", "check", "config", str(etc / "prometheus.yml")],
        ["promtool", "check", "rules", str(etc / "rules" / "ggnet-inventory.rules.yml")],
        ["amtool", "check-config", str(etc / "alertmanager.yml")],
    ):
        proc = subprocess.run(argv, capture_output=True, text=True, check=False)
        assert proc.returncode == 0, proc.stdout + proc.stderr
    inv_rules = (etc / "rules" / "ggnet-inventory.rules.yml").read_text()
    assert 'ggnet_pool_size_bytes{instance="boot1", pool="ggpool"}) * 0.1' in inv_rules
    assert f"vector({40 * GiB})" in inv_rules
    assert f"127.0.0.1:{ports['api']}" in (etc / "prometheus.yml").read_text()


def test_promtool_rule_tests_pass():
    proc = subprocess.run(
        ["promtool", "test", "rules", *map(str, sorted(REPO.glob("monitoring/tests/*.test.yml")))],
        capture_output=True,
        text=True,
        check=False,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr


@pytest.mark.skipif(
    shutil.which("prometheus-node-exporter") is None,
    reason="apt-get install prometheus-node-exporter",
)
def test_targets_up_and_faults_fire_alerts(tmp_path, daemons, fake_api):
    ports = {k: free_port() for k in ("prometheus", "alertmanager", "node")}
    ports["api"] = fake_api["port"]
    etc = render_role(tmp_path, ports)
    shorten_for(etc)

    pidfile = tmp_path / "dnsmasq.pid"
    dnsmasq = daemons.start(
        [
            "dnsmasq",
            "--keep-in-foreground",
            "--port=0",
            "--conf-file=/dev/null",
            f"--pid-file={pidfile}",
        ],
        tmp_path / "dnsmasq.log",
    )
    wait_for("dnsmasq pid file", lambda: pidfile.exists() and pidfile.read_text().strip())
    first = preflight_textfile(tmp_path, pidfile)
    assert first.returncode == 0, first.stdout + first.stderr

    daemons.start(
        [
            "prometheus-node-exporter",
            f"--web.listen-address=127.0.0.1:{ports['node']}",
            f"--collector.textfile.directory={tmp_path / 'textfile'}",
            "--collector.zfs",
        ],
        tmp_path / "node.log",
    )
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

    def up_jobs():
        data = get_json(f"{prom}/api/v1/targets")
        if not data:
            return None
        health = {t["labels"]["job"]: t["health"] for t in data["data"]["activeTargets"]}
        return health if health.get("node") == "up" and health.get("ggnet_api") == "up" else None

    wait_for("node and ggnet_api targets up", up_jobs)

    def value(query):
        data = get_json(f"{prom}/api/v1/query?query={urllib.parse.quote(query)}")
        result = data and data["data"]["result"]
        return result and float(result[0]["value"][1])

    # The textfile collector carries the preflight result; the inventory rule the reserve.
    assert wait_for(
        "dnsmasq check = 1",
        lambda: value('ggnet_preflight_check_ok{check="dnsmasq_running",instance="boot1"}') == 1,
    )
    assert (
        wait_for("reserve recorded", lambda: value('ggnet:pool_reserve_bytes{pool="ggpool"}'))
        == 10 * GiB
    )
    assert "GgnetDnsmasqDown" not in alerts(prom)
    assert "GgnetPoolBelowReserve" not in alerts(prom)

    # Fault 1: dnsmasq stops.  Preflight fails with its message; the alert fires.
    dnsmasq.send_signal(signal.SIGTERM)
    dnsmasq.wait(10)
    second = preflight_textfile(tmp_path, pidfile)
    assert second.returncode == 1
    assert "dnsmasq is not running" in second.stdout
    assert second.stdout.splitlines()[-1] == "preflight: 0 passed, 1 failed (dnsmasq_running)"
    wait_for("GgnetDnsmasqDown firing", lambda: alerts(prom).get("GgnetDnsmasqDown") == "firing")
    # The pool fault is induced for real (a zfs-fuse pool, the real API) in
    # test_monitoring_pool_fault.py.
