"""/api/anomalies against a fake Prometheus: an HTTP server on 127.0.0.1 in this
process that answers /api/v1/alerts with what each test puts in it."""

from __future__ import annotations

import json
import socket
import threading
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path

import pytest
import yaml
from ggnet_testing.api_project import bearer, inventory_app, role_tokens

from ggnet_api.blueprints.anomalies import ANOMALY_ALERTS

pytestmark = pytest.mark.unit

RULES = Path(__file__).resolve().parents[2] / "monitoring/rules/ggnet-anomaly.rules.yml"
HOSTS = "all:\n  children:\n    ggnet_servers:\n      hosts:\n        boot1: {}\n"
ALL = "ggnet_images: {}\n"


def _alert(name, state="firing", **labels):
    return {
        "labels": {"alertname": name, "severity": "warning", "job": "ggnet_api", **labels},
        "annotations": {"summary": f"{name} on {labels.get('instance')}"},
        "state": state,
        "activeAt": "2026-12-06T10:00:00Z",
        "value": "7.2e+01",
    }


class FakePrometheus:
    """A stand-in for Prometheus's HTTP API: /api/v1/alerts only."""

    def __init__(self) -> None:
        self.status = 200
        self.body: dict = {"status": "success", "data": {"alerts": []}}
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self):
                if self.path != "/api/v1/alerts":
                    self.send_error(404)
                    return
                data = json.dumps(fake.body).encode()
                self.send_response(fake.status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args):
                pass

        self.server = HTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_port}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def fake_prometheus():
    fake = FakePrometheus()
    yield fake
    fake.close()


def _app(tmp_path, url):
    return inventory_app(tmp_path, HOSTS, ALL, load=False, prometheus_url=url)


@pytest.fixture
def client_for(tmp_path):
    apps = []

    def make(url):
        app = _app(tmp_path, url)
        apps.append(app)
        token = role_tokens(app, "viewer")["viewer"]
        return app.test_client(), bearer(token)

    yield make
    for app in apps:
        app.extensions["ggnet"].close()


def test_the_anomaly_alerts_are_those_of_the_rules_file():
    groups = yaml.safe_load(RULES.read_text())["groups"]
    alerts = {r["alert"] for g in groups for r in g["rules"] if "alert" in r}
    assert alerts == set(ANOMALY_ALERTS)


def test_lists_the_firing_anomalies_only(fake_prometheus, client_for):
    fake_prometheus.body["data"]["alerts"] = [
        _alert("GgnetBootTimeAnomaly", instance="boot1", image="win11"),
        _alert("GgnetBootErrorRateAnomaly", state="pending", instance="boot1"),
        _alert("GgnetPoolBelowReserve", instance="boot1", pool="ggpool"),
        _alert("GgnetBootErrorRateAnomaly", instance="boot2"),
    ]
    client, auth = client_for(fake_prometheus.url)
    resp = client.get("/api/anomalies", headers=auth)
    assert resp.status_code == 200, resp.json
    assert resp.json["prometheus"] == fake_prometheus.url
    assert resp.json["anomalies"] == [
        {
            "alert": "GgnetBootErrorRateAnomaly",
            "severity": "warning",
            "group": {"job": "ggnet_api", "instance": "boot2"},
            "since": "2026-12-06T10:00:00Z",
            "value": 72.0,
            "summary": "GgnetBootErrorRateAnomaly on boot2",
        },
        {
            "alert": "GgnetBootTimeAnomaly",
            "severity": "warning",
            "group": {"job": "ggnet_api", "instance": "boot1", "image": "win11"},
            "since": "2026-12-06T10:00:00Z",
            "value": 72.0,
            "summary": "GgnetBootTimeAnomaly on boot1",
        },
    ]


def test_nothing_anomalous_is_an_empty_list(fake_prometheus, client_for):
    client, auth = client_for(fake_prometheus.url)
    resp = client.get("/api/anomalies", headers=auth)
    assert resp.status_code == 200 and resp.json["anomalies"] == []


def test_needs_a_token(fake_prometheus, client_for):
    client, _ = client_for(fake_prometheus.url)
    assert client.get("/api/anomalies").status_code == 401


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_no_prometheus_is_a_503_that_says_what_to_do(client_for):
    url = f"http://127.0.0.1:{_closed_port()}"
    client, auth = client_for(url)
    resp = client.get("/api/anomalies", headers=auth)
    assert resp.status_code == 503
    assert f"Prometheus at {url} does not answer" in resp.json["error"]
    assert "prometheus_url" in resp.json["error"]


def test_a_failing_prometheus_is_a_503(fake_prometheus, client_for):
    fake_prometheus.status = 500
    client, auth = client_for(fake_prometheus.url)
    resp = client.get("/api/anomalies", headers=auth)
    assert resp.status_code == 503 and "HTTP 500" in resp.json["error"]


def test_no_prometheus_configured_is_a_503(client_for):
    client, auth = client_for("")
    resp = client.get("/api/anomalies", headers=auth)
    assert resp.status_code == 503 and "prometheus_url is empty" in resp.json["error"]
