"""The families of issue 21's metrics: the collector fills them from dnsmasq's log, the
lease file, LIO's configfs and the zfs read; /metrics renders them; promtool lints it."""

from __future__ import annotations

import shutil
import subprocess
import types

import pytest
from ggnet_testing.api_project import STORAGE, hosts_yml, inventory_app, iscsi_yml
from prometheus_client.parser import text_string_to_metric_families

from ggnet_api import collector as collector_mod
from ggnet_api.collector import Sample, sample_from_json, sample_to_json
from ggnet_api.db import instrument

pytestmark = pytest.mark.unit

HOSTS = hosts_yml(
    """\
    hosts:
      pc-01: {ggnet_mac: "52:54:00:bb:00:01"}
      pc-02: {ggnet_mac: "52:54:00:bb:00:02"}
    """,
    server="",
)
ALL = (
    "ggnet_network: {interface: eth1, server_ip: 10.213.0.10, subnet: 10.213.0.0/24, "
    "dhcp_mode: proxy}\n"
    + STORAGE
    + iscsi_yml(None, backend="lio")
    + "ggnet_images: {win11: {size: 64M, kind: system}}\nggnet_image: win11\n"
)


def values(text: str) -> dict[str, dict[tuple, float]]:
    """{family: {sorted labels of a sample (and its name when not the family's): value}}"""
    out: dict[str, dict[tuple, float]] = {}
    for fam in text_string_to_metric_families(text):
        for s in fam.samples:
            out.setdefault(fam.name, {})[(s.name, *sorted(s.labels.items()))] = s.value
    return out


@pytest.fixture
def app(tmp_path):
    a = inventory_app(tmp_path, HOSTS, ALL)
    yield a
    a.extensions["ggnet"].close()


def fake_state():
    version = types.SimpleNamespace(name="v1", created=1.0, comment="", applied_from=None, guid="1")
    image = types.SimpleNamespace(versions=[version, version])
    return types.SimpleNamespace(
        writebacks={},
        raw={"ggtest/images/win11": {}, "ggtest/images/win11@v1": {}, "ggtest/images/win11@v2": {}},
        pool_exists=False,
        images={"win11": image, "lin": types.SimpleNamespace(versions=[])},
    )


def test_collector_fills_every_new_family(app, tmp_path, monkeypatch):
    e = app.extensions["ggnet"]
    snap = e.inventory.snapshot
    iqn = snap.clients["pc-01"]["target_iqn"]
    # LIO's configfs: logins of pc-01's target, and one of an IQN not in the inventory.
    lio = tmp_path / "lio"
    for target, accepts in ((iqn, 4), ("iqn.2000-01.other:x", 9)):
        stats = lio / target / "fabric_statistics" / "iscsi_login_stats"
        stats.mkdir(parents=True)
        (stats / "accepts").write_text(f"{accepts}\n")
        (stats / "authenticate_fails").write_text("1\n")
    log = tmp_path / "dnsmasq.log"
    log.write_text("")
    leases = tmp_path / "dnsmasq.leases"
    leases.write_text("0 52:54:00:bb:00:01 10.213.0.50 pc-01 *\n")
    config = {
        **e.config,
        "lio_stats_root": str(lio),
        "dnsmasq_log": str(log),
        "lease_file": str(leases),
        "tftp_root": str(tmp_path),
    }
    monkeypatch.setattr(collector_mod.storage, "read_state", lambda *a: fake_state())
    monkeypatch.setattr(
        collector_mod.iscsi,
        "active_sessions",
        lambda *a, **k: {iqn: ["iqn.2000-01.pc:x"], "iqn.x": []},
    )
    c = collector_mod.Collector(config, e.inventory)
    c.collect()  # the first run: the log is followed from its end
    log.write_text(
        "Dec  6 22:00:01 dnsmasq-dhcp[1]: DHCPDISCOVER(eth1) 52:54:00:bb:00:01\n"
        f"Dec  6 22:00:02 dnsmasq-tftp[1]: sent {tmp_path}/undionly.kpxe to 10.213.0.50\n"
    )
    (tmp_path / "undionly.kpxe").write_bytes(b"x" * 70)
    # Crossing privd's socket as JSON loses nothing.
    sample = sample_from_json(sample_to_json(c.collect()))

    assert sample.storage_counts == {"images": 2, "versions": 2, "snapshots": 2}
    assert (sample.targets_total, sample.targets_active) == (2, 1)
    assert sample.leases == 1
    assert sample.target_stats is not None
    assert ["pc-01", "logins", "", 4] in sample.target_stats
    assert ["pc-01", "login_failures", "authenticate", 1] in sample.target_stats
    assert all(row[0] in snap.clients for row in sample.target_stats)
    assert not [r for r in sample.target_stats if r[1] != "logins" and r[3] == 0]
    assert sample.dnsmasq is not None
    assert ["discover", 1] in sample.dnsmasq["dhcp"]
    assert sample.dnsmasq["tftp_bytes"] == [["undionly.kpxe", 70]]


def populated_sample() -> Sample:
    return Sample(
        at=1234.5,
        writeback_bytes={"pc-01": 4096},
        pools={"ggtest": (2**40, 2**39)},
        sessions={"iqn.a": ["i1"]},
        traffic={"pc-01": (1, 2)},
        storage_counts={"images": 2, "versions": 5, "snapshots": 6},
        targets_total=2,
        targets_active=1,
        target_stats=[
            ["pc-01", "logins", "", 4],
            ["pc-01", "login_failures", "authenticate", 1],
            ["pc-01", "errors", "digest", 3],
        ],
        dnsmasq={
            "dhcp": [["discover", 10], ["nak", 1]],
            "dhcp_errors": [["no_address", 2]],
            "tftp_requests": [["undionly.kpxe", 3], ["other", 1]],
            "tftp_errors": [["other", "client_abort", 3]],
            "tftp_bytes": [["undionly.kpxe", 210]],
        },
        leases=7,
    )


def test_exposition_has_every_new_family(app):
    e = app.extensions["ggnet"]
    e.collector.sample = populated_sample()
    got = values(app.test_client().get("/metrics").get_data(as_text=True))
    expect = {
        "ggnet_dhcp_messages": {("ggnet_dhcp_messages_total", ("type", "discover")): 10},
        "ggnet_dhcp_errors": {("ggnet_dhcp_errors_total", ("kind", "no_address")): 2},
        "ggnet_dhcp_leases_active": {("ggnet_dhcp_leases_active",): 7},
        "ggnet_tftp_requests": {("ggnet_tftp_requests_total", ("file", "undionly.kpxe")): 3},
        "ggnet_tftp_errors": {
            ("ggnet_tftp_errors_total", ("file", "other"), ("kind", "client_abort")): 3
        },
        "ggnet_tftp_sent_bytes": {("ggnet_tftp_sent_bytes_total", ("file", "undionly.kpxe")): 210},
        "ggnet_iscsi_logins": {("ggnet_iscsi_logins_total", ("client", "pc-01")): 4},
        "ggnet_iscsi_login_failures": {
            ("ggnet_iscsi_login_failures_total", ("client", "pc-01"), ("reason", "authenticate")): 1
        },
        "ggnet_iscsi_errors": {
            ("ggnet_iscsi_errors_total", ("client", "pc-01"), ("kind", "digest")): 3
        },
        "ggnet_iscsi_targets": {("ggnet_iscsi_targets",): 2},
        "ggnet_iscsi_targets_active": {("ggnet_iscsi_targets_active",): 1},
        "ggnet_storage_images": {("ggnet_storage_images",): 2},
        "ggnet_storage_image_versions": {("ggnet_storage_image_versions",): 5},
        "ggnet_storage_snapshots": {("ggnet_storage_snapshots",): 6},
        "ggnet_api_restarts": {("ggnet_api_restarts_total",): 0},
    }
    for family, samples in expect.items():
        for key, value in samples.items():
            assert got[family][key] == value, (family, key)
    # The families that move by themselves: there, and sane.
    assert got["ggnet_api_uptime_seconds"][("ggnet_api_uptime_seconds",)] >= 0
    assert ("process_start_time_seconds",) in got["process_start_time_seconds"]
    assert got["ggnet_api_db_queries"][("ggnet_api_db_queries_total", ("statement", "select"))] > 0
    hist = got["ggnet_api_db_query_duration_seconds"]
    inf = hist[("ggnet_api_db_query_duration_seconds_bucket", ("le", "+Inf"))]
    assert inf == hist[("ggnet_api_db_query_duration_seconds_count",)] > 0
    assert set(got["ggnet_api_db_errors"]) == {
        ("ggnet_api_db_errors_total", ("error", k)) for k in instrument.ERRORS
    }


def test_absent_sources_leave_their_families_out(app):
    """tgt (no LIO counters), proxy DHCP (no lease file), no dnsmasq log: no series
    rather than zeros that would read as 'nothing happened'."""
    e = app.extensions["ggnet"]
    e.collector.sample = Sample(at=1.0)
    text = app.test_client().get("/metrics").get_data(as_text=True)
    for family in ("ggnet_dhcp_", "ggnet_tftp_", "ggnet_iscsi_logins", "ggnet_storage_"):
        assert family not in text


def test_restarts_count_the_starts_after_the_first(tmp_path):
    a = inventory_app(tmp_path, HOSTS, ALL)
    a.extensions["ggnet"].close()
    b = inventory_app(tmp_path, HOSTS, ALL)  # the same state_dir, so the same database
    try:
        text = b.test_client().get("/metrics").get_data(as_text=True)
        assert "ggnet_api_restarts_total 1.0\n" in text
    finally:
        b.extensions["ggnet"].close()


@pytest.mark.skipif(shutil.which("promtool") is None, reason="promtool (Debian's prometheus)")
def test_promtool_finds_no_lint_problem(app):
    e = app.extensions["ggnet"]
    e.collector.sample = populated_sample()
    e.metrics.requests.labels(endpoint="/metrics", method="GET", status="200").inc()
    body = app.test_client().get("/metrics").get_data()
    assert b"ggnet_dhcp_messages_total" in body and b"ggnet_api_db_queries_total" in body
    res = subprocess.run(
        ["promtool", "check", "metrics"], input=body, capture_output=True, timeout=60
    )
    assert res.returncode == 0 and not res.stdout and not res.stderr, (
        res.stdout.decode() + res.stderr.decode()
    )
