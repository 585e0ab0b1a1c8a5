"""The operator API holds its bounds against what the people at the PCs can send and
what an operator can get wrong (issue 16): approvals that would break the inventory,
inventories that do not load, invented HTTP methods, a discovered list that grows
without end, boot history kept forever."""

from __future__ import annotations

import json
import subprocess
import time

import pytest
from ggnet_testing.api_project import bearer, make_project, role_tokens, settings
from prometheus_client.parser import text_string_to_metric_families

from ggnet_api import approval
from ggnet_api.app import create_app

pytestmark = pytest.mark.unit

MAC = "52:54:00:cc:00:07"
PC01 = "52:54:00:aa:00:01"
DAY = 86400.0


@pytest.fixture
def project(tmp_path):
    return make_project(tmp_path)


def _app(tmp_path, project, **more):
    proj, inv = project
    return create_app(settings(tmp_path, proj, inv, **{"background": False, **more}))


@pytest.fixture
def app(tmp_path, project):
    app = _app(tmp_path, project)
    e = app.extensions["ggnet"]
    assert e.inventory.reload(), e.inventory.load_error
    yield app
    e.close()


@pytest.fixture
def client(app):
    return app.test_client()


@pytest.fixture
def tokens(app):
    return role_tokens(app, "viewer", "operator")


h = bearer


def _files(inv):
    """Every file of the inventory's repository (outside .git) and its bytes."""
    repo = inv.parent
    return {
        p.relative_to(repo).as_posix(): p.read_bytes()
        for p in sorted(repo.rglob("*"))
        if p.is_file() and ".git" not in p.relative_to(repo).parts
    }


def _git_status(inv):
    return subprocess.run(
        ["git", "-C", str(inv), "status", "--porcelain"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout


# -- approvals ------------------------------------------------------------------------


@pytest.mark.parametrize(
    "name",
    # (ggnet_clients and ggnet_servers are refused as IQN names already: no underscore.)
    ["all", "ungrouped", "localhost", "vip", "office", "boot1"],
)
def test_approval_refuses_reserved_group_and_server_names(app, client, tokens, project, name):
    _proj, inv = project
    app.extensions["ggnet"].db.add_discovered(MAC, time.time())
    before = _files(inv)
    resp = client.post(
        f"/api/discovered/{MAC}/approve",
        json={"name": name, "image": "win11"},
        headers=h(tokens["operator"]),
    )
    assert resp.status_code == 400, resp.json
    assert "body.name" in resp.json["error"] and repr(name) in resp.json["error"]
    assert _files(inv) == before
    assert _git_status(inv) == ""
    assert app.extensions["ggnet"].db.discovered(MAC)["state"] == "discovered"


def _approve(client, tokens, name="pc-07"):
    return client.post(
        f"/api/discovered/{MAC}/approve",
        json={"name": name, "image": "win11", "groups": ["office"]},
        headers=h(tokens["operator"]),
    )


def test_an_approval_that_raises_leaves_the_inventory_as_it_was(
    app, client, tokens, project, monkeypatch
):
    _proj, inv = project
    app.extensions["ggnet"].db.add_discovered(MAC, time.time())
    before = _files(inv)

    def boom(root):
        raise KeyError("all")

    monkeypatch.setattr(approval, "_validate", boom)
    resp = _approve(client, tokens)
    assert resp.status_code == 500
    assert _files(inv) == before
    assert not (inv / "host_vars").exists()
    assert _git_status(inv) == ""


def test_an_approval_whose_commit_fails_unstages_and_restores(
    app, client, tokens, project, monkeypatch
):
    _proj, inv = project
    app.extensions["ggnet"].db.add_discovered(MAC, time.time())
    # An approval made before: approved.yml exists and must come back byte for byte.
    assert _approve(client, tokens, "pc-05").status_code == 201
    mac2 = "52:54:00:cc:00:08"
    app.extensions["ggnet"].db.add_discovered(mac2, time.time())
    before = _files(inv)
    real_git = approval._git

    def git(repo, *args, env=None):
        if args[0] == "commit":
            raise approval.ApprovalError("git commit failed: no space left", 500)
        return real_git(repo, *args, env=env)

    monkeypatch.setattr(approval, "_git", git)
    resp = client.post(
        f"/api/discovered/{mac2}/approve",
        json={"name": "pc-08", "image": "win11"},
        headers=h(tokens["operator"]),
    )
    assert resp.status_code == 500 and "git commit failed" in resp.json["error"]
    assert _files(inv) == before
    assert _git_status(inv) == ""


# -- reloads --------------------------------------------------------------------------


def test_a_yaml_typo_after_start_keeps_the_snapshot_and_health_is_degraded(
    app, client, tokens, project
):
    _proj, inv = project
    e = app.extensions["ggnet"]
    good = e.inventory.snapshot
    assert client.get("/health").json == {"status": "ok"}
    (inv / "hosts.yml").write_text("all:\n  children: [unclosed\n")
    assert not e.inventory.reload()
    assert e.inventory.snapshot is good and "pc-01" in good.clients
    resp = client.get("/health")
    assert resp.status_code == 503
    assert resp.json["status"] == "degraded"
    assert resp.json["inventory"]["serving_since"] == good.loaded_at
    status = client.get("/api/status", headers=h(tokens["viewer"])).json
    assert status["inventory"]["error"] and status["inventory"]["clients"] == 1


def test_a_type_error_at_start_does_not_crash_create_app(tmp_path, project):
    _proj, inv = project
    all_yml = inv / "group_vars" / "all.yml"
    all_yml.write_text(all_yml.read_text().replace("ggnet_images:\n", "ggnet_images: 5\n#"))
    app = _app(tmp_path, project, background=True, collect_interval=3600.0)
    try:
        client = app.test_client()
        resp = client.get("/health")
        assert resp.status_code == 503 and resp.json["status"] == "degraded"
        # The text of the error stays behind the token: it may quote the inventory.
        assert "5" not in resp.json["inventory"]["error"]
        error = app.extensions["ggnet"].inventory.load_error
        assert error and "Error: " in error  # the kind of failure, then its text
    finally:
        app.extensions["ggnet"].close()


# -- metric labels --------------------------------------------------------------------


def test_invented_methods_count_as_other(app, client):
    for i in range(300):
        client.open("/api/status", method=f"FOO{i}")
        client.open(f"/no/such/path/{i}", method="GET")
    text = client.get("/metrics").get_data(as_text=True)
    series = [
        s
        for f in text_string_to_metric_families(text)
        if f.name == "ggnet_api_requests"
        for s in f.samples
        if s.name.endswith("_total")
    ]
    assert len(series) < 10, [s.labels for s in series]
    methods = {s.labels["method"] for s in series}
    assert "other" in methods and methods <= {"GET", "other"}
    assert {s.labels["endpoint"] for s in series} <= {"unmatched", "/api/status", "/metrics"}


# -- the discovered list --------------------------------------------------------------


def _discover(db, n, start=1000.0, report=None):
    macs = []
    for i in range(n):
        mac = f"52:54:00:dd:{i // 256:02x}:{i % 256:02x}"
        db.add_discovered(mac, start + i)
        db.seen_discovered(mac, start + i, report=report)
        macs.append(mac)
    return macs


def test_the_discovered_list_comes_a_page_at_a_time(app, client, tokens):
    macs = _discover(app.extensions["ggnet"].db, 7)
    seen, after, pages = [], None, 0
    while True:
        query = "/api/discovered?limit=3" + (f"&cursor={after}" if after else "")
        body = client.get(query, headers=h(tokens["viewer"])).json
        seen += [r["mac"] for r in body["discovered"]]
        pages += 1
        after = body["next"]
        if after is None:
            break
    assert seen == macs and pages == 3
    default = client.get("/api/discovered", headers=h(tokens["viewer"])).json
    assert len(default["discovered"]) == 7 and default["next"] is None
    for bad in (
        "limit=0",
        "limit=501",
        "limit=x",
        "cursor=!!",
        "cursor=bm90IGpzb24",
        "cursor=1.5-52540000",
    ):
        resp = client.get(f"/api/discovered?{bad}", headers=h(tokens["viewer"]))
        assert resp.status_code == 400, bad


def test_a_page_of_large_reports_stays_small(app, client, tokens):
    db = app.extensions["ggnet"].db
    big = {"disks": ["x" * 60_000]}
    macs = _discover(db, 300, report=big)
    resp = client.get("/api/discovered?limit=500", headers=h(tokens["viewer"]))
    assert len(resp.data) < 1_000_000
    first = resp.json["discovered"][0]
    assert first["report"]["truncated"] is True and first["report"]["bytes"] > 60_000
    whole = client.get(f"/api/discovered/{macs[0]}", headers=h(tokens["viewer"])).json
    assert whole["report"] == big


def test_bulk_forget_by_age_and_all_waiting(app, client, tokens):
    db = app.extensions["ggnet"].db
    now = time.time()
    old = _discover(db, 5, start=now - 10 * DAY)
    new = ["52:54:00:ee:00:01", "52:54:00:ee:00:02"]
    for mac in new:
        db.add_discovered(mac, now)
    url = "/api/discovered"
    op = h(tokens["operator"])
    viewer = client.delete(f"{url}?seen_before=7d", headers=h(tokens["viewer"]))
    assert viewer.status_code == 403
    bad = client.delete(f"{url}?seen_before=7x", headers=op)
    assert bad.status_code == 400 and "seen_before" in bad.json["error"]
    unknown = client.delete(f"{url}?mac={new[0]}", headers=op)
    assert unknown.status_code == 400 and "mac" in unknown.json["error"]
    resp = client.delete(f"{url}?seen_before=7d", headers=op)
    assert resp.status_code == 200 and resp.json == {"forgotten": 5}
    assert all(db.discovered(m) is None for m in old)
    # No filter: the whole waiting list.
    resp = client.delete(url, headers=op)
    assert resp.json == {"forgotten": 2} and db.count_discovered() == 0


# -- retention ------------------------------------------------------------------------


def _boot(db, mac, client, started, result, duration=None):
    boot_id = db.add_boot(mac, client, "normal" if client else "discovery")
    if result != "pending":
        db.set_boot_stage(boot_id, "san", started, result, duration, None)
    db.execute("UPDATE boots SET started = ? WHERE id = ?", (started, boot_id))
    return boot_id


def _counters(text):
    """The counter and histogram samples of the boots, which retention must not lower."""
    keep = ("ggnet_boots", "ggnet_machine_boots", "ggnet_boot_duration_seconds")
    return sorted(
        (s.name, tuple(sorted(s.labels.items())), s.value)
        for f in text_string_to_metric_families(text)
        if f.name in keep
        for s in f.samples
    )


def test_retention_deletes_old_boots_but_keeps_each_machines_latest(app, client):
    e = app.extensions["ggnet"]
    db = e.db
    now = time.time()
    old = now - 40 * DAY
    gone = _boot(db, PC01, "pc-01", old, "ok", 4.0)
    last_ok = _boot(db, PC01, "pc-01", old + 1, "ok", 7.0)
    latest = _boot(db, PC01, "pc-01", old + 2, "failed", 9.0)
    fake = [_boot(db, f"52:54:00:ff:00:{i:02x}", None, old + i, "discovery") for i in range(20)]
    recent = _boot(db, "52:54:00:ff:01:01", None, now - DAY, "discovery")
    db.add_discovered("52:54:00:ff:00:01", old)
    db.add_discovered("52:54:00:ff:01:01", now - DAY)
    before = _counters(client.get("/metrics").get_data(as_text=True))

    boots, discovered = e.prune(now)

    assert (boots, discovered) == (1 + len(fake), 1)
    assert db.boot(gone) is None and all(db.boot(b) is None for b in fake)
    assert db.boot(last_ok) and db.boot(latest) and db.boot(recent)
    assert db.discovered("52:54:00:ff:00:01") is None
    assert db.discovered("52:54:00:ff:01:01") is not None
    # The Machines view and /metrics still read pc-01's latest boot and latest ok one.
    assert db.last_boot(PC01)["id"] == latest
    text = client.get("/metrics").get_data(as_text=True)
    assert 'ggnet_machine_last_boot_duration_seconds{client="pc-01"} 7' in text
    assert _counters(text) == before
    # The fake MACs left the stats too, so they cannot grow them without bound.
    macs = {r["mac"] for r in db.query("SELECT mac FROM stats_boot_last")}
    assert macs == {PC01, "52:54:00:ff:01:01"}
    assert e.prune(now) == (0, 0)


def test_retention_settings_are_durations(tmp_path, project):
    with pytest.raises(ValueError, match="boot_retention"):
        _app(tmp_path, project, boot_retention="a month")
    app = _app(tmp_path, project, boot_retention=0, discovered_retention="0")
    e = app.extensions["ggnet"]
    e.inventory.reload()
    _boot(e.db, PC01, "pc-01", 1.0, "ok", 1.0)
    _boot(e.db, PC01, "pc-01", 2.0, "ok", 1.0)
    e.db.add_discovered(MAC, 1.0)
    assert e.prune() == (0, 0)


def test_a_reply_is_json(app, client, tokens):
    # The cursor is opaque but plain: URL-safe, no padding to escape.
    _discover(app.extensions["ggnet"].db, 2)
    body = client.get("/api/discovered?limit=1", headers=h(tokens["viewer"])).json
    assert body["next"] and "=" not in body["next"]
    json.dumps(body)
