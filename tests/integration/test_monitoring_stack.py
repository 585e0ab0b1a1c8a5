"""The ggnet_monitoring role rendered for a one-server inventory on 127.0.0.1, checked
by promtool and amtool, then run for real: Prometheus scrapes node_exporter (whose
textfile collector carries `ggnet preflight --textfile`) and a small /metrics endpoint
standing in for the API; a stopped dnsmasq fails preflight and fires its alert.  The
monitoring helpers here are shared with test_monitoring_pool_fault.py (a real pool
filled past its reserve); the daemons of both are started and stopped by daemons.py."""

from __future__ import annotations

import json
import os
import re
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
from prometheus_client import CollectorRegistry, Gauge, make_wsgi_app

pytestmark = pytest.mark.integration
REPO = Path(__file__).resolve().parents[2]
VENV_BIN = Path(sys.executable).parent
GiB = 2**30


def get_json(url):
    try:
        with urllib.request.urlopen(url, timeout=5) as resp:
            return json.load(resp)
    except OSError:
        return None


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


DEFAULT_STORAGE = "{pool: ggpool, reserve: 10%, writeback_quota: 40G}"


def render_role(tmp: Path, ports: dict, storage: str = DEFAULT_STORAGE) -> Path:
    """Run the role (config only) against localhost; returns the config dir.

    `storage` is the server's ggnet_storage (YAML flow mapping): the inventory rules
    derive the pool's reserve from it."""
    inv = tmp / "inventory"
    (inv / "group_vars").mkdir(parents=True)
    (inv / "hosts.yml").write_text(
        "all:\n  children:\n    ggnet_servers:\n      hosts:\n        boot1:\n"
        "          ansible_host: 127.0.0.1\n          ansible_connection: local\n"
        f"          ansible_python_interpreter: {sys.executable}\n"
        f"          ggnet_api_port: {ports['api']}\n"
    )
    (inv / "group_vars" / "all.yml").write_text(
        f"ggnet_storage: {storage}\n"
        f"ggnet_monitoring_config_dir: {tmp / 'etc'}\n"
        f"ggnet_monitoring_textfile_dir: {tmp / 'textfile'}\n"
        f"ggnet_monitoring_prometheus_port: {ports['prometheus']}\n"
        f"ggnet_monitoring_alertmanager_port: {ports['alertmanager']}\n"
        f"ggnet_monitoring_node_exporter_port: {ports['node']}\n"
        "ggnet_monitoring_scrape_interval: 1s\n"
        "ggnet_monitoring_evaluation_interval: 1s\n"
        "ggnet_monitoring_install_packages: false\n"
        "ggnet_monitoring_manage_service: false\n"
    )
    play = tmp / "play.yml"
    play.write_text(
        "- name: Monitoring\n  hosts: ggnet_servers\n  gather_facts: false\n"
        f"  vars: {{ggnet_source_dir: {REPO}}}\n"
        "  roles: [ggnet_monitoring]\n"
    )
    env = {
        **os.environ,
        "ANSIBLE_CONFIG": str(REPO / "ansible.cfg"),
        "ANSIBLE_ROLES_PATH": str(REPO / "roles"),
        "PATH": f"{VENV_BIN}:{os.environ['PATH']}",
    }
    proc = subprocess.run(
        [str(VENV_BIN / "ansible-playbook"), "-i", str(inv), str(play)],
        capture_output=True,
        text=True,
        env=env,
        check=False,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-2000:]
    return tmp / "etc"


def shorten_for(etc: Path) -> None:
    """The rules as shipped, but with `for:` shortened so a fault is seen in seconds."""
    rules = etc / "rules" / "ggnet.rules.yml"
    rules.write_text(re.sub(r"(\n\s+for: )\S+", r"\g<1>2s", rules.read_text()))


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


def alerts(prom: str) -> dict[str, str]:
    data = get_json(f"{prom}/api/v1/alerts") or {"data": {"alerts": []}}
    return {a["labels"]["alertname"]: a["state"] for a in data["data"]["alerts"]}


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
        ["promtool", "test", "rules", str(REPO / "monitoring/tests/ggnet.rules.test.yml")],
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
