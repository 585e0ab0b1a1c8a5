"""The API's routes in-process (Flask test client): auth, bad input, the boot path,
discovery callbacks, metrics.  No threads, no ZFS: the writeback reset is exercised
through a stand-in for ggnet.storage.reset where noted."""

from __future__ import annotations

import json
import re
import textwrap
from pathlib import Path

import pytest
from ggnet import chap
from ggnet_testing import api_project
from ggnet_testing.api_project import (
    NETWORK,
    OLD_BOOTS_TABLE,
    STORAGE,
    bearer,
    hosts_yml,
    inventory_app,
    iscsi_yml,
    role_tokens,
)

from ggnet_api.app import create_app

pytestmark = pytest.mark.unit

CHAP = "Sup3rS3cretChap"

HOSTS = hosts_yml(
    """\
    children:
      vip:
        hosts:
          pc-01: {ggnet_mac: "52:54:00:aa:00:01", ggnet_ip: 10.213.0.101}
      office:
        hosts:
          pc-02: {ggnet_mac: "52:54:00:aa:00:02", ggnet_ip: 10.213.0.102, ggnet_keep_writeback: true}
    """
)
ALL = (
    NETWORK
    + STORAGE
    + iscsi_yml(CHAP)
    + "ggnet_images:\n  win11: {size: 64M, kind: system}\n  games: {size: 32M, kind: data}\n"
    + "ggnet_image: win11\n"
)


# A PC's script goes to the PC only: requests come from its fixed address.
AT = {
    "52:54:00:aa:00:01": {"REMOTE_ADDR": "10.213.0.101"},
    "52:54:00:aa:00:02": {"REMOTE_ADDR": "10.213.0.102"},
}


def boot(client, mac):
    """GET the PC's script from the PC's own address: (response, the boot's token)."""
    resp = client.get(f"/boot/{mac}", environ_base=AT[mac])
    found = re.search(r"[?&]token=([A-Za-z0-9_-]+)", resp.get_data(as_text=True))
    return resp, found.group(1) if found else None


def write_inventory(root):
    return api_project.write_inventory(root, HOSTS, ALL, vip="ggnet_game_disk: games\n")


@pytest.fixture
def app(tmp_path):
    write_inventory(tmp_path / "inventory")
    app = inventory_app(tmp_path, HOSTS, ALL, max_body_bytes=4096, auth_fail_limit=5)
    yield app
    app.extensions["ggnet"].close()


@pytest.fixture
def client(app):
    return app.test_client()


@pytest.fixture
def tokens(app):
    return role_tokens(app, "viewer", "operator", "admin")


h = bearer


def test_health_and_metrics_need_no_token(client):
    assert client.get("/health").json == {"status": "ok"}
    resp = client.get("/metrics")
    assert resp.status_code == 200
    assert b"ggnet_jobs_active" in resp.data


def test_api_needs_a_token(client, tokens):
    resp = client.get("/api/status")
    assert resp.status_code == 401
    assert "bearer token is required" in resp.json["error"]
    resp = client.get("/api/status", headers=h("ggn_wrong"))
    assert resp.status_code == 401
    assert "not valid" in resp.json["error"]
    resp = client.get("/api/status", headers={"Authorization": "Basic abc"})
    assert resp.status_code == 401 and "Bearer scheme" in resp.json["error"]
    assert client.get("/api/status", headers=h(tokens["viewer"])).status_code == 200


def test_roles(client, tokens):
    resp = client.post("/api/jobs", json={"kind": "converge"}, headers=h(tokens["viewer"]))
    assert resp.status_code == 403
    assert "operator role" in resp.json["error"]
    assert client.get("/api/tokens", headers=h(tokens["operator"])).status_code == 403
    listed = client.get("/api/tokens", headers=h(tokens["admin"]))
    assert listed.status_code == 200
    # Hashes and tokens never leave the database.
    body = listed.get_data(as_text=True)
    assert all(t not in body for t in tokens.values())
    assert "hash" not in body


def test_auth_failures_are_limited_and_counted(client, tokens):
    for _ in range(5):
        assert client.get("/api/status", headers=h("ggn_guess")).status_code == 401
    resp = client.get("/api/status", headers=h(tokens["viewer"]))
    assert resp.status_code == 429
    assert int(resp.headers["Retry-After"]) >= 1
    assert "too many failed" in resp.json["error"]
    metrics = client.get("/metrics").get_data(as_text=True)
    assert 'ggnet_api_auth_failures_total{reason="invalid"} 5.0' in metrics
    assert 'ggnet_api_auth_failures_total{reason="rate_limited"} 1.0' in metrics


def test_revoked_token_is_refused(client, tokens, app):
    db = app.extensions["ggnet"].db
    token_id = db.token(tokens["viewer"])["id"]
    assert client.delete(f"/api/tokens/{token_id}", headers=h(tokens["admin"])).status_code == 200
    assert client.get("/api/status", headers=h(tokens["viewer"])).status_code == 401


@pytest.mark.parametrize(
    ("body", "status", "message"),
    [
        ({"kind": "reboot-everything"}, 400, "body.kind: 'reboot-everything' is not a job kind"),
        ({"kind": "converge", "extravars": {"x": 1}}, 400, "extravars.x: not accepted"),
        (
            {"kind": "machine", "extravars": {"op": "apply"}},
            400,
            "needs client",
        ),
        (
            {
                "kind": "machine",
                "extravars": {
                    "op": "apply",
                    "client": "{{ lookup('pipe','id') }}",
                },
            },
            400,
            "template markers",
        ),
        (
            {
                "kind": "machine",
                "extravars": {"op": "explode", "client": "pc-01"},
            },
            400,
            "not one of",
        ),
        ({"kind": "converge", "extravars": []}, 400, "extravars: must be an object"),
        ({"kind": "converge", "extravars": None}, 400, "extravars: must be an object"),
        ({"kind": "converge", "limit": "all"}, 400, "unknown field(s) limit"),
        ({}, 400, "body.kind: required"),
    ],
)
def test_bad_job_requests(client, tokens, body, status, message):
    resp = client.post("/api/jobs", json=body, headers=h(tokens["operator"]))
    assert resp.status_code == status
    assert message in resp.json["error"]


def test_job_body_must_be_json_and_small(client, tokens):
    resp = client.post("/api/jobs", data="kind=converge", headers=h(tokens["operator"]))
    assert resp.status_code == 415
    assert "application/json" in resp.json["error"]
    big = json.dumps({"kind": "converge", "pad": "x" * 5000})
    resp = client.post(
        "/api/jobs", data=big, content_type="application/json", headers=h(tokens["operator"])
    )
    assert resp.status_code == 413
    assert "4096 bytes" in resp.json["error"]


def test_job_ids_are_checked(client, tokens):
    resp = client.get("/api/jobs/../../etc", headers=h(tokens["viewer"]))
    assert resp.status_code == 404
    resp = client.get("/api/jobs/nothex", headers=h(tokens["viewer"]))
    assert resp.status_code == 404 and "32 hex digits" in resp.json["error"]
    resp = client.get("/api/jobs/" + "0" * 32, headers=h(tokens["viewer"]))
    assert resp.status_code == 404 and "no such job" in resp.json["error"]
    resp = client.get("/api/jobs?state=weird", headers=h(tokens["viewer"]))
    assert resp.status_code == 400 and "state" in resp.json["error"]


def test_queued_job_is_accepted_and_cancelled(client, tokens, app):
    # No worker threads in this app: the job stays queued, so cancel takes the queued path.
    resp = client.post("/api/jobs", json={"kind": "converge"}, headers=h(tokens["operator"]))
    assert resp.status_code == 202
    job = resp.json
    assert job["state"] == "queued" and job["requested_by"] == "test-operator"
    assert resp.headers["Location"] == f"/api/jobs/{job['id']}"
    resp = client.post(f"/api/jobs/{job['id']}/cancel", headers=h(tokens["operator"]))
    assert resp.status_code == 202 and resp.json["state"] == "canceled"
    resp = client.post(f"/api/jobs/{job['id']}/cancel", headers=h(tokens["operator"]))
    assert resp.status_code == 409 and "already canceled" in resp.json["error"]


def test_boot_script_of_known_pc_with_game_disk(client, app):
    resp = client.get("/boot/52-54-00-AA-00-01", environ_base=AT["52:54:00:aa:00:01"])
    assert resp.status_code == 200
    text = resp.get_data(as_text=True)
    assert text.startswith("#!ipxe")
    # tgt: the system disk is LUN 1, the game disk LUN 2 of the client's own target.
    assert " iscsi:10.213.0.10::3260:1:iqn.2025-01.lan.ggnet:target.pc-01 " in text
    assert " iscsi:10.213.0.10::3260:2:iqn.2025-01.lan.ggnet:target.pc-01 " in text
    assert "http://10.213.0.10:8080/boot/52:54:00:aa:00:01/stage?name=script-loaded" in text
    # iPXE must answer the CHAP challenge, with pc-01's own secret, never the server's.
    assert f"set password {chap.pc_secret(CHAP, 'pc-01')}\n" in text and CHAP not in text
    assert resp.headers["Cache-Control"] == "no-store"
    boot = app.extensions["ggnet"].db.one("SELECT * FROM boots")
    assert (boot["client"], boot["kind"], boot["result"]) == ("pc-01", "normal", "pending")


def test_boot_of_pc_in_maintenance(client, app):
    text = client.get("/boot/52:54:00:aa:00:02", environ_base=AT["52:54:00:aa:00:02"]).get_data(
        as_text=True
    )
    assert " iscsi:10.213.0.10::3260:1:iqn.2025-01.lan.ggnet:target.pc-02 " in text
    assert "::3260:2:" not in text
    assert app.extensions["ggnet"].db.one("SELECT kind FROM boots")["kind"] == "maintenance"


def test_boot_resets_the_writeback_unless_in_maintenance(tmp_path, monkeypatch):
    from ggnet import storage

    calls = []

    def reset(cfg, images, clients, name, boot, closer, **_k):
        calls.append((name, boot, callable(closer)))
        return storage.Result(info={"versions": {"system": "v7"}})

    monkeypatch.setattr(storage, "reset", reset)
    monkeypatch.setattr(storage, "read_for_reset", lambda *_a, **_k: None)  # no ZFS here
    inv = write_inventory(tmp_path / "inventory")
    app = create_app({"state_dir": str(tmp_path / "s"), "inventory": str(inv), "background": False})
    app.extensions["ggnet"].inventory.reload()
    c = app.test_client()
    assert c.get("/boot/52:54:00:aa:00:01", environ_base=AT["52:54:00:aa:00:01"]).status_code == 200
    assert c.get("/boot/52:54:00:aa:00:02", environ_base=AT["52:54:00:aa:00:02"]).status_code == 200
    # The closer lets a version change re-clone the disk its LUN holds open.
    assert calls == [("pc-01", True, True)]
    # Each boot records the version the reset gave it (none for the kept one).
    rows = app.extensions["ggnet"].db.query("SELECT client, version FROM boots ORDER BY id")
    assert rows == [{"client": "pc-01", "version": "v7"}, {"client": "pc-02", "version": None}]


def test_boot_refused_below_reserve(tmp_path, monkeypatch):
    from ggnet import storage

    def full(*_a, **_k):
        raise storage.CapacityError("pool ggtest has 1M free, below its reserve")

    monkeypatch.setattr(storage, "reset", full)
    monkeypatch.setattr(storage, "read_for_reset", lambda *_a, **_k: None)  # no ZFS here
    inv = write_inventory(tmp_path / "inventory")
    app = create_app({"state_dir": str(tmp_path / "s"), "inventory": str(inv), "background": False})
    app.extensions["ggnet"].inventory.reload()
    c = app.test_client()
    text = c.get("/boot/52:54:00:aa:00:01", environ_base=AT["52:54:00:aa:00:01"]).get_data(
        as_text=True
    )
    assert "echo ggnet: pool ggtest has 1M free, below its reserve" in text
    assert "sanboot" not in text and CHAP not in text
    boot = app.extensions["ggnet"].db.one("SELECT * FROM boots")
    assert boot["result"] == "refused" and "reserve" in boot["detail"]


def test_bad_mac_is_400_with_a_clear_message(client):
    for bad in ("zz", "ff:ff:ff:ff:ff:ff", "01:00:5e:00:00:01", "52:54:00:aa:00"):
        resp = client.get(f"/boot/{bad}")
        assert resp.status_code == 400
        assert resp.get_data(as_text=True).startswith(f"MAC address {bad!r} in the URL")
    assert client.get("/boot/zz/stage?name=sanboot").status_code == 400


def test_unknown_mac_gets_discovery_and_is_listed(client, tokens, app):
    text = client.get("/boot/52:54:00:bb:00:09").get_data(as_text=True)
    assert "/boot/${mac}/discover?manufacturer=${manufacturer:uristring}" in text
    client.get("/boot/52:54:00:bb:00:09")  # the PC polls; still one boot row
    db = app.extensions["ggnet"].db
    assert db.one("SELECT COUNT(*) AS n FROM boots")["n"] == 1
    resp = client.get(
        "/boot/52:54:00:bb:00:09/discover?manufacturer=QEMU&product=Standard%20PC&serial=&uuid=1234&platform=efi&buildarch=x86_64"
    )
    assert resp.status_code == 200
    listed = client.get("/api/discovered", headers=h(tokens["viewer"])).json["discovered"]
    assert [d["mac"] for d in listed] == ["52:54:00:bb:00:09"]
    assert listed[0]["facts"] == {
        "manufacturer": "QEMU",
        "product": "Standard PC",
        "uuid": "1234",
        "platform": "efi",
        "buildarch": "x86_64",
    }
    resp = client.post("/boot/52:54:00:bb:00:09/report", json={"cpu": {"cores": 8}})
    assert resp.status_code == 200
    one = client.get("/api/discovered/52-54-00-BB-00-09", headers=h(tokens["viewer"])).json
    assert one["report"] == {"cpu": {"cores": 8}}
    assert "ggnet_discovered_machines 1.0" in client.get("/metrics").get_data(as_text=True)


def test_discovery_keeps_plus_and_ampersand_that_ipxe_leaves_unescaped(client, tokens):
    # What Debian's iPXE really sends for qemu's i440FX board: '+' and '&' raw.
    client.get(
        "/boot/52:54:00:bb:00:0a/discover?manufacturer=A&B Corp&product=Standard PC "
        "(i440FX + PIIX, 1996)&serial=&uuid=00000000-0000-0000-0000-000000000000"
        "&platform=pcbios&buildarch=i386"
    )
    listed = client.get("/api/discovered", headers=h(tokens["viewer"])).json["discovered"]
    facts = next(d["facts"] for d in listed if d["mac"] == "52:54:00:bb:00:0a")
    assert facts["manufacturer"] == "A&B Corp"
    assert facts["product"] == "Standard PC (i440FX + PIIX, 1996)"
    assert facts["platform"] == "pcbios"


def test_stages_give_a_boot_its_result_and_duration(client, tokens, app):
    _, token = boot(client, "52:54:00:aa:00:01")
    resp = client.get(f"/boot/52:54:00:aa:00:01/stage?name=script-loaded&token={token}")
    assert resp.status_code == 200
    row = app.extensions["ggnet"].db.one("SELECT * FROM boots")
    assert (row["stage"], row["result"]) == ("script-loaded", "pending")
    client.get(f"/boot/52:54:00:aa:00:01/stage?name=sanboot&token={token}")
    row = app.extensions["ggnet"].db.one("SELECT * FROM boots")
    assert row["result"] == "ok" and row["duration"] >= 0
    _, token = boot(client, "52:54:00:aa:00:02")
    client.get(f"/boot/52:54:00:aa:00:02/stage?name=failed&token={token}&error=0x3c0c6039")
    machines = {
        m["name"]: m
        for m in client.get("/api/machines", headers=h(tokens["viewer"])).json["machines"]
    }
    assert machines["pc-01"]["state"] == "booted"
    assert machines["pc-02"]["state"] == "maintenance"
    assert machines["pc-02"]["last_boot"]["result"] == "failed"
    assert machines["pc-02"]["last_boot"]["detail"] == "failed: 0x3c0c6039"
    metrics = client.get("/metrics").get_data(as_text=True)
    assert 'ggnet_boots_total{result="ok"} 1.0' in metrics
    assert 'ggnet_boots_total{result="failed"} 1.0' in metrics
    assert 'ggnet_boot_duration_seconds_count{image="win11"} 1.0' in metrics
    assert 'ggnet_clients{state="booted"} 1.0' in metrics
    assert 'ggnet_machine_boots_total{client="pc-01",result="ok"} 1.0' in metrics
    assert 'ggnet_machine_boots_total{client="pc-02",result="failed"} 1.0' in metrics
    # Only finished (ok) boots have a last duration; pc-02's failed boot has none.
    assert 'ggnet_machine_last_boot_duration_seconds{client="pc-01"}' in metrics
    assert 'ggnet_machine_last_boot_duration_seconds{client="pc-02"}' not in metrics
    resp = client.get(f"/boot/52:54:00:aa:00:01/stage?name=bogus&token={token}")
    assert resp.status_code == 400 and "not one of" in resp.get_data(as_text=True)


def test_views_never_show_secrets(client, tokens):
    for path in (
        "/api/machines",
        "/api/machines/pc-01",
        "/api/images",
        "/api/images/win11",
        "/api/status",
    ):
        resp = client.get(path, headers=h(tokens["admin"]))
        assert resp.status_code == 200, path
        assert CHAP not in resp.get_data(as_text=True), path
    assert CHAP not in client.get("/metrics").get_data(as_text=True)
    resp = client.get("/api/machines/pc-99", headers=h(tokens["viewer"]))
    assert resp.status_code == 404 and "pc-99" in resp.json["error"]
    image = client.get("/api/images/win11", headers=h(tokens["viewer"])).json
    assert image["clients"] == ["pc-01", "pc-02"]


def test_unknown_endpoint_and_method(client, tokens):
    resp = client.get("/api/nothing", headers=h(tokens["viewer"]))
    assert resp.status_code == 404 and "no such endpoint" in resp.json["error"]
    resp = client.delete("/api/jobs", headers=h(tokens["viewer"]))
    assert resp.status_code == 405


def test_openapi_is_served_and_lists_every_route(client, tokens, app):
    import yaml

    resp = client.get("/api/openapi.yml", headers=h(tokens["viewer"]))
    assert resp.status_code == 200
    spec = yaml.safe_load(resp.data)
    documented = set()
    for path, ops in spec["paths"].items():
        for method in ops:
            if method in ("get", "post", "delete", "put", "patch"):
                documented.add((method.upper(), path))
    routes = set()
    for rule in app.url_map.iter_rules():
        if rule.endpoint == "static" or rule.endpoint.startswith("ui."):
            continue  # the console's pages (/ui) are HTML for browsers, not the API
        path = rule.rule.replace("<int:", "{").replace("<", "{").replace(">", "}")
        for method in rule.methods - {"HEAD", "OPTIONS"}:
            routes.add((method, path))
    assert routes - documented == set(), "routes missing from openapi.yml"


def test_config_rejects_unknown_settings(tmp_path):
    from ggnet_api import config

    path = tmp_path / "api.yml"
    path.write_text(textwrap.dedent("state_dir: /tmp/x\nmax_jobs: 3\n"))
    with pytest.raises(ValueError, match="unknown setting"):
        config.load(path)


def test_boot_duration_is_labelled_with_the_image_booted(client, app):
    _, token = boot(client, "52:54:00:aa:00:01")
    client.get(f"/boot/52:54:00:aa:00:01/stage?name=sanboot&token={token}")
    db = app.extensions["ggnet"].db
    assert db.one("SELECT image FROM boots")["image"] == "win11"
    db.execute("UPDATE boots SET duration = 7.5")
    metrics = client.get("/metrics").get_data(as_text=True)
    assert 'ggnet_boot_duration_seconds_bucket{image="win11",le="5.0"} 0.0' in metrics
    assert 'ggnet_boot_duration_seconds_bucket{image="win11",le="10.0"} 1.0' in metrics
    assert 'ggnet_machine_last_boot_duration_seconds{client="pc-01"} 7.5' in metrics


def test_old_database_gets_the_image_column(tmp_path):
    import sqlite3

    from ggnet_api.db.database import Database

    path = tmp_path / "api.db"
    con = sqlite3.connect(path)
    con.execute(OLD_BOOTS_TABLE.format(""))
    con.execute("INSERT INTO boots (mac, kind, started) VALUES ('m', 'normal', 1)")
    con.commit()
    con.close()
    db = Database(str(path))
    db.add_boot("52:54:00:aa:00:01", "pc-01", "normal", image="win11")
    assert [r["image"] for r in db.query("SELECT image FROM boots ORDER BY id")] == [None, "win11"]


def _lio_session(root, target, initiator, tx, rx):
    stats = root / target / "tpgt_1" / "acls" / initiator / "fabric_statistics" / "iscsi_sess_stats"
    stats.mkdir(parents=True, exist_ok=True)
    (stats / "txdata_octs").write_text(f"{tx}\n" if tx is not None else "")
    (stats / "rxdata_octs").write_text(f"{rx}\n" if rx is not None else "")


def test_iscsi_traffic_from_lio_counters_survives_session_resets(tmp_path, app, client):
    import dataclasses

    from ggnet_api.collector import Sample

    e = app.extensions["ggnet"]
    snap = e.inventory.snapshot
    iqn1, iqn2 = snap.clients["pc-01"]["target_iqn"], snap.clients["pc-02"]["target_iqn"]
    root = tmp_path / "configfs"
    _lio_session(root, iqn1, "iqn.x:initiator.pc-01", 1000, 300)
    _lio_session(root, iqn2, "iqn.x:initiator.pc-02", None, None)  # no session: empty files
    _lio_session(root, "iqn.2099-01.other:target.x", "iqn.x:i", 5, 5)  # not in the inventory
    e.collector.config["lio_stats_root"] = str(root)
    lio = dataclasses.replace(snap, iscsi={**snap.iscsi, "backend": "lio"}, storage={})
    e.inventory.set(lio)
    assert e.collector.traffic(lio) == {"pc-01": (1000, 300), "pc-02": (0, 0)}
    _lio_session(root, iqn1, "iqn.x:initiator.pc-01", 1500, 400)
    assert e.collector.traffic(lio)["pc-01"] == (1500, 400)
    # The PC rebooted: a new session starts at 0; the totals keep growing.
    _lio_session(root, iqn1, "iqn.x:initiator.pc-01", 200, 50)
    e.collector.sample = Sample(at=1.0, traffic=e.collector.traffic(lio))
    metrics = client.get("/metrics").get_data(as_text=True)
    assert 'ggnet_iscsi_read_bytes_total{client="pc-01"} 1700.0' in metrics
    assert 'ggnet_iscsi_write_bytes_total{client="pc-01"} 450.0' in metrics
    assert "other" not in metrics.split("ggnet_iscsi_read_bytes")[1].split("# HELP")[0]


def test_iscsi_traffic_is_absent_without_lio(tmp_path, app, client):
    e = app.extensions["ggnet"]
    e.collector.config["lio_stats_root"] = str(tmp_path / "missing")
    assert e.collector.traffic(e.inventory.snapshot) is None
    assert "ggnet_iscsi_read_bytes" not in client.get("/metrics").get_data(as_text=True)


def test_inventory_reload_sees_host_vars_added_since(tmp_path):
    """Ansible caches which host_vars files exist; load_inventory must not keep it."""
    from ggnet.inventory import load_inventory

    inv = write_inventory(tmp_path / "inventory")
    assert load_inventory(inv).hostvars["pc-01"].get("ggnet_boot") != "uefi"
    (inv / "host_vars").mkdir()
    (inv / "host_vars" / "pc-01.yml").write_text("ggnet_boot: uefi\n")
    assert load_inventory(inv).hostvars["pc-01"]["ggnet_boot"] == "uefi"
    (inv / "host_vars" / "pc-02.yml").write_text("ggnet_boot: bios\n")
    assert load_inventory(inv).hostvars["pc-02"]["ggnet_boot"] == "bios"


def _app_with(tmp_path, **settings):
    """An app on the test inventory with these settings, inventory not yet loaded."""
    inv = write_inventory(tmp_path / "inventory")
    return create_app(
        {"state_dir": str(tmp_path / "s"), "inventory": str(inv), "background": False, **settings}
    )


def test_boot_script_takes_chap_from_the_converged_file_not_the_inventory(tmp_path):
    # On the server the inventory's secret may be a vault or a controller-side lookup;
    # the converge writes what it gave the targets, and that is what iPXE must send.
    targets_file = tmp_path / "targets.json"
    converged = "C0nvergedSecr3t"
    user = "iqn.2025-01.lan.ggnet:initiator.pc-01"
    chap = {"pc-01": {"user": user, "secret": converged}}
    targets_file.write_text(json.dumps({"backend": "lio", "chap": chap}))
    app = _app_with(tmp_path, reset_on_boot=False, targets_file=str(targets_file))
    inventory = app.extensions["ggnet"].inventory
    assert inventory.reload(), inventory.load_error
    text = (
        app.test_client()
        .get("/boot/52:54:00:aa:00:01", environ_base=AT["52:54:00:aa:00:01"])
        .get_data(as_text=True)
    )
    assert f"set password {converged}" in text and CHAP not in text
    assert converged in inventory.secrets()  # redacted from logs like every other secret
    # A client missing from the file boots without CHAP credentials rather than stale ones.
    text = (
        app.test_client()
        .get("/boot/52:54:00:aa:00:02", environ_base=AT["52:54:00:aa:00:02"])
        .get_data(as_text=True)
    )
    assert "set password" not in text


def test_boot_script_points_at_the_converged_backends_lun_not_the_inventory_copys(tmp_path):
    # The server's inventory copy says lio; the last converge moved the targets to tgt,
    # whose disk is LUN 1.  A script with LIO's LUN 0 would sanboot tgt's controller.
    targets_file = tmp_path / "targets.json"
    app = _app_with(tmp_path, reset_on_boot=False, targets_file=str(targets_file))
    inventory = app.extensions["ggnet"].inventory
    iqn = "iqn.2025-01.lan.ggnet:target.pc-01"
    for backend, lun in (("tgt", 1), ("lio", 0)):
        targets_file.write_text(json.dumps({"backend": backend, "chap": {}}))
        assert inventory.reload(), inventory.load_error
        assert inventory.snapshot.iscsi["backend"] == backend
        text = (
            app.test_client()
            .get("/boot/52:54:00:aa:00:01", environ_base=AT["52:54:00:aa:00:01"])
            .get_data(as_text=True)
        )
        assert f":3260:{lun}:{iqn}" in text, text


@pytest.mark.parametrize(
    ("content", "named"),
    [
        ('{"backend": "iet", "chap": {}}', "backend 'iet'"),
        ('{"pc-01": {"user": "u", "secret": "s"}}', "backend None"),
        ('{"backend": "lio", "chap": {"pc-01": {"user": "u"}}}', "chap entries of pc-01"),
        ("[1, 2]", "JSON object"),
        ("{", "not JSON"),
    ],
)
def test_a_bad_targets_file_is_a_load_error_that_names_the_problem(tmp_path, content, named):
    targets_file = tmp_path / "targets.json"
    targets_file.write_text(content)
    app = _app_with(tmp_path, targets_file=str(targets_file))
    inventory = app.extensions["ggnet"].inventory
    assert not inventory.reload()
    assert str(targets_file) in inventory.load_error and named in inventory.load_error, (
        inventory.load_error
    )


def test_an_unreadable_targets_file_is_a_load_error(tmp_path):
    app = _app_with(tmp_path, targets_file=str(tmp_path / "missing.json"))
    inventory = app.extensions["ggnet"].inventory
    assert not inventory.reload()
    assert "missing.json" in inventory.load_error


def test_the_served_commit_follows_the_repository_and_ggnet_status_reports_it(tmp_path):
    """A converge waits until the boot path serves its commit: the API records the commit
    it loaded and every PC's entry (no secrets), and a commit alone makes it reload."""
    import subprocess

    from ggnet_cli.status import gather

    app = _app_with(tmp_path, served_file=str(tmp_path / "s" / "served.json"))
    e = app.extensions["ggnet"]
    inv = Path(e.config["inventory"])

    def git(*args):
        subprocess.run(
            ["git", "-C", str(inv), "-c", "user.name=t", "-c", "user.email=t@t", *args],
            check=True, capture_output=True,
        )  # fmt: skip

    git("init", "-q")
    git("add", "-A")
    git("commit", "-qm", "room")
    e.inventory.reload()
    served = json.loads((tmp_path / "s" / "served.json").read_text())
    head = subprocess.run(
        ["git", "-C", str(inv), "rev-parse", "HEAD"], capture_output=True, text=True
    ).stdout.strip()
    assert served["commit"] == head == e.inventory.snapshot.commit
    assert set(served["entries"]) == set(e.inventory.snapshot.clients)
    assert "secret" not in json.dumps(served).lower()
    assert gather(e.config)["in_step"] is True
    git("commit", "-q", "--allow-empty", "-m", "nothing but a commit")
    assert gather(e.config)["in_step"] is False
    e.inventory.reload_if_changed()
    assert e.inventory.snapshot.commit != head and gather(e.config)["in_step"] is True
