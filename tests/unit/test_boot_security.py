"""The boot path against the people at the PCs (issue 16): each attack of the issue
that the boot path answers, as a request through the app factory's test client, plus
the pieces that decide (who is the PC itself, the rate limiter)."""

from __future__ import annotations

import json
import re
import threading
import time

import pytest
from ggnet import chap
from ggnet_testing.api_project import (
    NETWORK,
    OLD_BOOTS_TABLE,
    STORAGE,
    hosts_yml,
    inventory_app,
    iscsi_yml,
)

pytestmark = pytest.mark.unit

CHAP = "Sup3rS3cretChap"
PC1, PC1_IP = "52:54:00:aa:00:01", "10.213.0.101"  # a fixed address (ggnet_ip)
PC2 = "52:54:00:aa:00:02"  # no fixed address: a DHCP lease or a neighbour entry
INTRUDER = {"REMOTE_ADDR": "10.213.0.66"}
HOSTS = hosts_yml(
    f"""\
    hosts:
      pc-01: {{ggnet_mac: "{PC1}", ggnet_ip: {PC1_IP}}}
      pc-02: {{ggnet_mac: "{PC2}"}}
    """
)
ALL = (
    NETWORK
    + STORAGE
    + iscsi_yml(CHAP)
    + "ggnet_images:\n  win11: {size: 64M, kind: system}\nggnet_image: win11\n"
)


@pytest.fixture
def resets(monkeypatch):
    """Every writeback reset the boot path asks for (no ZFS here)."""
    from ggnet import storage

    calls: list[str] = []
    monkeypatch.setattr(
        storage, "reset", lambda _s, _i, _c, name, **_k: calls.append(name) or storage.Result()
    )
    monkeypatch.setattr(storage, "read_for_reset", lambda *_a, **_k: None)  # no ZFS here
    return calls


def make_app(tmp_path, load=True, **settings):
    return inventory_app(
        tmp_path,
        HOSTS,
        ALL,
        load,
        **{
            "reset_on_boot": True,
            "lease_file": str(tmp_path / "dnsmasq.leases"),
            "neighbour_file": str(tmp_path / "arp"),
            **settings,
        },
    )


@pytest.fixture
def app(tmp_path, resets):
    app = make_app(tmp_path)
    yield app
    app.extensions["ggnet"].close()


def rows(app, table):
    return app.extensions["ggnet"].db.query(f"SELECT * FROM {table}")


def token_of(script: str) -> str:
    found = re.findall(r"[?&]token=([A-Za-z0-9_-]+)", script)
    assert found and len(set(found)) == 1, script
    return found[0]


def lease(tmp_path, mac, ip, expiry=None):
    expiry = int(time.time()) + 3600 if expiry is None else expiry
    (tmp_path / "dnsmasq.leases").write_text(
        f"{expiry} {mac} {ip} pc *\nduid 00:01:00:01\n{expiry} 12345 fd00::5 pc *\n"
    )


def arp(tmp_path, *entries):
    lines = ["IP address       HW type     Flags       HW address            Mask     Device"]
    lines += [
        f"{ip:<16} 0x1         {flags:<11} {mac}     *        eth1" for ip, mac, flags in entries
    ]
    (tmp_path / "arp").write_text("\n".join(lines) + "\n")


# -- a PC's script goes to that PC only -----------------------------------------------


def test_a_foreign_request_resets_nothing_carries_no_secret_and_records_no_boot(app, resets):
    resp = app.test_client().get(f"/boot/{PC1}", environ_base=INTRUDER)
    text = resp.get_data(as_text=True)
    assert resp.status_code == 200 and text.startswith("#!ipxe")
    assert "served only to that PC itself" in text and "10.213.0.66" in text
    assert "password" not in text and "sanboot" not in text
    assert CHAP not in text and chap.pc_secret(CHAP, "pc-01") not in text
    assert "/stage?" not in text  # nothing recorded, so nothing to report on
    assert resets == []
    assert rows(app, "boots") == []
    metrics = app.test_client().get("/metrics").get_data(as_text=True)
    assert "ggnet_boot_foreign_requests_total 1.0" in metrics


def test_two_hundred_foreign_requests_reset_nothing(tmp_path, resets):
    app = make_app(tmp_path, boot_limit_source=1000, boot_limit_mac=1000)
    client = app.test_client()
    for i in range(200):
        resp = client.get(f"/boot/{PC1}", environ_base={"REMOTE_ADDR": f"10.213.1.{i + 2}"})
        assert resp.status_code == 200 and "password" not in resp.get_data(as_text=True)
    assert resets == []
    assert rows(app, "boots") == []


def test_the_pcs_own_request_by_its_fixed_address_gets_its_script(app, resets):
    resp = app.test_client().get(f"/boot/{PC1}", environ_base={"REMOTE_ADDR": PC1_IP})
    text = resp.get_data(as_text=True)
    assert f"set password {chap.pc_secret(CHAP, 'pc-01')}" in text and "sanboot" in text
    assert resets == ["pc-01"]
    assert [r["client"] for r in rows(app, "boots")] == ["pc-01"]


def test_the_pcs_own_request_by_its_dhcp_lease_gets_its_script(tmp_path, app, resets):
    client = app.test_client()
    lease(tmp_path, PC2, "10.213.0.150")
    text = client.get(f"/boot/{PC2}", environ_base={"REMOTE_ADDR": "10.213.0.150"}).get_data(
        as_text=True
    )
    assert "sanboot" in text and resets == ["pc-02"]
    # A new lease (the file changes): the old address is someone else's now.
    lease(tmp_path, PC2, "10.213.0.151")
    text = client.get(f"/boot/{PC2}", environ_base={"REMOTE_ADDR": "10.213.0.150"}).get_data(
        as_text=True
    )
    assert "sanboot" not in text and resets == ["pc-02"]
    # An expired lease proves nothing.
    lease(tmp_path, PC2, "10.213.0.152", expiry=int(time.time()) - 10)
    text = client.get(f"/boot/{PC2}", environ_base={"REMOTE_ADDR": "10.213.0.152"}).get_data(
        as_text=True
    )
    assert "sanboot" not in text and resets == ["pc-02"]


def test_the_pcs_own_request_by_its_neighbour_entry_gets_its_script(tmp_path, app, resets):
    client = app.test_client()
    arp(tmp_path, ("10.0.0.7", PC2, "0x2"), ("10.0.0.8", PC1, "0x0"))
    text = client.get(f"/boot/{PC2}", environ_base={"REMOTE_ADDR": "10.0.0.7"}).get_data(
        as_text=True
    )
    assert "sanboot" in text and resets == ["pc-02"]
    # An incomplete entry (flags 0x0) names no MAC; another PC's entry is not this one's.
    for source, mac in (("10.0.0.8", PC1), ("10.0.0.7", PC1)):
        text = client.get(f"/boot/{mac}", environ_base={"REMOTE_ADDR": source}).get_data(
            as_text=True
        )
        assert "sanboot" not in text
    assert resets == ["pc-02"]


def test_origin_reads_ipv4_mapped_sources_and_skips_dhcpv6_leases(tmp_path):
    from ggnet_api.boot_origin import BootOrigin, neighbour_mac, parse_leases

    lease(tmp_path, PC2, "10.213.0.150")
    origin = BootOrigin({"lease_file": str(tmp_path / "dnsmasq.leases"), "neighbour_file": None})
    client = {"mac": PC2, "ip": None}
    assert origin.of(client, PC2, "::ffff:10.213.0.150") == "lease"
    assert origin.of(client, PC2, "fd00::5") is None
    assert origin.of(client, PC2, None) is None
    assert list(parse_leases("garbage\n1 zz 10.0.0.1 x *\n0 52-54-00-AA-00-03 10.0.0.3 x *")) == [
        "52:54:00:aa:00:03"
    ]
    table = "header\n10.0.0.11 0x1 0x2 52:54:00:aa:00:05 * eth1\n10.0.0.1 0x1 0x6 52-54-00-AA-00-04 * eth1\n"
    assert neighbour_mac(table, "10.0.0.1") == "52:54:00:aa:00:04"
    assert neighbour_mac(table, "10.0.0.2") is None


def test_unknown_macs_still_get_the_discovery_script_from_anywhere(app):
    text = (
        app.test_client()
        .get("/boot/52:54:00:bb:00:01", environ_base=INTRUDER)
        .get_data(as_text=True)
    )
    assert "/discover?" in text


# -- script before reset; errors iPXE shows ------------------------------------------


def test_a_script_that_cannot_be_rendered_costs_no_reset(tmp_path, resets):
    # The converged CHAP secret has a character iPXE's `set` cannot carry.
    targets = tmp_path / "targets.json"
    chap = {"pc-01": {"user": "iqn.2025-01.lan.ggnet:initiator.pc-01", "secret": "bad$secret12"}}
    targets.write_text(json.dumps({"backend": "tgt", "chap": chap}))
    app = make_app(tmp_path, targets_file=str(targets))
    resp = app.test_client().get(f"/boot/{PC1}", environ_base={"REMOTE_ADDR": PC1_IP})
    text = resp.get_data(as_text=True)
    assert resp.status_code == 200 and resp.content_type.startswith("text/plain")
    assert "CHAP secret contains" in text and "bad" not in text
    assert resets == []
    assert [r["result"] for r in rows(app, "boots")] == ["refused"]


def test_an_unhandled_error_on_boot_is_plain_text(app, monkeypatch):
    def broken(*_a, **_k):
        raise RuntimeError("/secret/path")

    monkeypatch.setattr(app.extensions["ggnet"].boot, "script", broken)
    resp = app.test_client().get(f"/boot/{PC1}", environ_base={"REMOTE_ADDR": PC1_IP})
    assert resp.status_code == 500 and resp.content_type.startswith("text/plain")
    assert "internal error" in resp.get_data(as_text=True)
    assert "/secret/path" not in resp.get_data(as_text=True)


# -- signed callbacks ---------------------------------------------------------------------


def _boot(client, mac=PC1, source=PC1_IP):
    return token_of(
        client.get(f"/boot/{mac}", environ_base={"REMOTE_ADDR": source}).get_data(as_text=True)
    )


def test_stages_need_the_token_of_the_latest_boot(app):
    client = app.test_client()
    old = _boot(client)
    new = _boot(client)
    for query in ("name=sanboot", f"name=sanboot&token={old}", "name=sanboot&token=forged"):
        resp = client.get(f"/boot/{PC1}/stage?{query}", environ_base={"REMOTE_ADDR": PC1_IP})
        assert resp.status_code == 403, query
        assert resp.content_type.startswith("text/plain")
    assert {(r["stage"], r["result"]) for r in rows(app, "boots")} == {("requested", "pending")}
    resp = client.get(f"/boot/{PC1}/stage?name=failed&token={new}&error=0x1", environ_base=INTRUDER)
    assert resp.status_code == 200  # the token is the proof, wherever it comes from
    last = app.extensions["ggnet"].db.last_boot(PC1)
    assert (last["stage"], last["result"]) == ("failed", "failed")
    # Only the token's hash is stored.
    assert all(new not in json.dumps(r) for r in rows(app, "boots"))


def test_a_known_pcs_report_needs_its_token_or_its_own_address(app):
    client = app.test_client()
    token = _boot(client)
    resp = client.post(f"/boot/{PC1}/report", json={"cpu": {}}, environ_base=INTRUDER)
    assert resp.status_code == 403
    assert app.extensions["ggnet"].db.last_boot(PC1)["result"] == "pending"
    resp = client.post(
        f"/boot/{PC1}/report",
        json={"cpu": {}},
        headers={"X-Ggnet-Boot-Token": token},
        environ_base=INTRUDER,
    )
    assert resp.status_code == 200
    assert app.extensions["ggnet"].db.last_boot(PC1)["stage"] == "os"
    _boot(client)
    resp = client.post(f"/boot/{PC1}/report", json={}, environ_base={"REMOTE_ADDR": PC1_IP})
    assert resp.status_code == 200
    assert app.extensions["ggnet"].db.last_boot(PC1)["stage"] == "os"


def test_old_database_gets_the_token_column(tmp_path):
    import sqlite3

    from ggnet_api.db.database import Database, hash_token

    path = tmp_path / "api.db"
    con = sqlite3.connect(path)
    con.execute(OLD_BOOTS_TABLE.format(", image TEXT"))
    con.commit()
    con.close()
    db = Database(str(path))
    db.add_boot(PC1, "pc-01", "normal", token="t0k")
    assert db.last_boot(PC1)["token_hash"] == hash_token("t0k")


# -- bounded ------------------------------------------------------------------------------


def test_an_unknown_mac_flood_stops_at_the_cap_exactly(tmp_path):
    app = make_app(tmp_path, max_discovered=50, boot_limit_source=10**6, boot_limit_mac=10**6)
    threads, per_thread = 8, 25
    barrier = threading.Barrier(threads)

    def flood(t):
        client = app.test_client()
        barrier.wait()
        for i in range(per_thread):
            mac = f"52:54:00:cc:{t:02x}:{i:02x}"
            client.get(f"/boot/{mac}")
            client.get(f"/boot/{mac}/discover?manufacturer=x")
            client.post(f"/boot/{mac}/report", json={"x": 1})

    workers = [threading.Thread(target=flood, args=(t,)) for t in range(threads)]
    for w in workers:
        w.start()
    for w in workers:
        w.join(60)
    assert len(rows(app, "discovered")) == 50
    assert len(rows(app, "boots")) == 50
    resp = app.test_client().get("/boot/52:54:00:dd:00:01/discover?manufacturer=x")
    assert resp.status_code == 503


def test_a_report_too_big_is_413_text(app):
    body = {"pad": "x" * (16 * 1024)}
    resp = app.test_client().post("/boot/52:54:00:bb:00:07/report", json=body)
    assert resp.status_code == 413 and resp.content_type.startswith("text/plain")
    assert "max_report_bytes" in resp.get_data(as_text=True)
    assert rows(app, "discovered") == []


def test_boot_requests_are_rate_limited_per_source_and_per_mac(tmp_path):
    app = make_app(tmp_path, boot_limit_source=5, boot_limit_mac=3, boot_limit_window=60.0)
    client = app.test_client()
    statuses = [
        client.get(f"/boot/52:54:00:bb:00:{i:02x}", environ_base=INTRUDER).status_code
        for i in range(7)
    ]
    assert statuses == [200] * 5 + [429] * 2
    resp = client.get("/boot/52:54:00:bb:00:01", environ_base=INTRUDER)
    assert int(resp.headers["Retry-After"]) >= 1
    assert "from this source" in resp.get_data(as_text=True)
    # One MAC from many sources: its own limit.
    statuses = [
        client.get(
            f"/boot/{PC1}/stage?name=sanboot", environ_base={"REMOTE_ADDR": f"10.9.0.{i}"}
        ).status_code
        for i in range(5)
    ]
    assert statuses == [403] * 3 + [429] * 2
    metrics = client.get("/metrics").get_data(as_text=True)
    assert 'ggnet_boot_rate_limited_total{by="source"} 3.0' in metrics
    assert 'ggnet_boot_rate_limited_total{by="mac"} 2.0' in metrics


def test_the_rate_limiter_refills_and_bounds_its_keys():
    from ggnet_api.rate_limit import RateLimiter

    now = [0.0]
    limiter = RateLimiter(2, 10.0, max_keys=3, clock=lambda: now[0])
    assert [limiter.take("a") for _ in range(3)] == [0.0, 0.0, 5.0]
    now[0] = 5.0  # one request refilled (2 per 10 s)
    assert limiter.take("a") == 0.0 and limiter.take("a") == 5.0
    for key in "bcdef":
        limiter.take(key)
    assert len(limiter) == 3


# -- no inventory ever loaded -------------------------------------------------------------


def test_without_an_inventory_boot_registers_nothing(tmp_path, resets):
    app = make_app(tmp_path, load=False)
    client = app.test_client()
    for mac in (PC1, "52:54:00:bb:00:05"):
        resp = client.get(f"/boot/{mac}", environ_base={"REMOTE_ADDR": PC1_IP})
        text = resp.get_data(as_text=True)
        assert text.startswith("#!ipxe") and "no inventory" in text
        assert "discover" not in text and "password" not in text
    assert client.get("/boot/52:54:00:bb:00:05/discover?manufacturer=x").status_code == 503
    assert client.post("/boot/52:54:00:bb:00:05/report", json={}).status_code == 503
    assert rows(app, "boots") == [] and rows(app, "discovered") == [] and resets == []
