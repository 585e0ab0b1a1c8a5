"""The API's rollouts: the images view with states, served and canary versions and the
decision over the boots table; the jobs a decision starts; the metrics."""

from __future__ import annotations

import re
import time

import pytest
from ggnet.notation import iso_seconds, iso_time
from ggnet_testing.api_project import (
    NETWORK,
    STORAGE,
    hosts_yml,
    inventory_app,
    iscsi_yml,
    role_tokens,
)

from ggnet_api.collector import Sample, sample_from_json, sample_to_json
from ggnet_api.rollouts import image_rollout

pytestmark = pytest.mark.unit

HOSTS = hosts_yml(
    """\
    children:
      vip:
        hosts:
          pc-01: {ggnet_mac: "52:54:00:cc:00:01", ggnet_ip: 10.213.0.101}
          pc-02: {ggnet_mac: "52:54:00:cc:00:02", ggnet_ip: 10.213.0.102}
          pc-03: {ggnet_mac: "52:54:00:cc:00:03", ggnet_ip: 10.213.0.103}
    """
)
ALL = (
    NETWORK
    + STORAGE
    + iscsi_yml(None)
    + "ggnet_images: {win11: {size: 64M, kind: system}}\nggnet_image: win11\n"
    + "ggnet_rollout: {promote_after: 2, max_failures: 1, canary: {vip: {machines: [pc-03]}}}\n"
)
STARTED = "2026-01-01T00:00:00.000000000Z"


def sample(*states: str, current: str | None = None) -> Sample:
    versions = [
        {"name": f"v{i}", "created": STARTED, "comment": "", "applied_from": None, "guid": str(i),
         "state": state, "state_at": STARTED}
        for i, state in enumerate(states, 1)
    ]  # fmt: skip
    return Sample(at=time.time(), versions={"win11": versions}, image_current={"win11": current})


@pytest.fixture
def app(tmp_path):
    a = inventory_app(tmp_path, HOSTS, ALL)
    yield a
    a.extensions["ggnet"].close()


def boot(db, client, version, result, duration):
    boot_id = db.add_boot(f"mac-{client}", client, "normal", image="win11", version=version)
    db.set_boot_stage(boot_id, "os", time.time(), result, duration, None)


def view(app):
    token = role_tokens(app, "viewer")["viewer"]
    resp = app.test_client().get("/api/images/win11", headers={"Authorization": f"Bearer {token}"})
    assert resp.status_code == 200, resp.get_json()
    return resp.get_json()


def test_the_canary_set_is_in_the_snapshot(app):
    clients = app.extensions["ggnet"].inventory.snapshot.clients
    assert {n: c["canary"] for n, c in clients.items()} == {
        "pc-01": False,
        "pc-02": False,
        "pc-03": True,
    }


def test_images_view_shows_states_served_and_the_decision(app):
    e = app.extensions["ggnet"]
    e.collector.sample = sample("promoted", "promoted", "canary", current="v1")
    for d in (20.0, 21.0, 22.0):
        boot(e.db, "pc-01", "v1", "ok", d)
    got = view(app)
    assert [(v["name"], v["state"]) for v in got["versions"]] == [
        ("v1", "promoted"),
        ("v2", "promoted"),
        ("v3", "canary"),
    ]
    assert (got["served"], got["canary"], got["canary_clients"]) == ("v1", "v3", ["pc-03"])
    assert got["rollout"]["action"] == "pause"  # years since STARTED, no canary boot
    boot(e.db, "pc-03", "v3", "ok", 21.0)
    boot(e.db, "pc-03", "v3", "ok", 23.0)
    got = view(app)["rollout"]
    assert (got["action"], got["ok"], got["canary_p95"], got["previous_p95"]) == (
        "promote",
        2,
        23.0,
        22.0,
    )
    boot(e.db, "pc-03", "v3", "failed", None)
    assert view(app)["rollout"]["action"] == "rollback"


def test_no_rollout_no_decision(app):
    e = app.extensions["ggnet"]
    e.collector.sample = sample("promoted", "candidate")
    got = view(app)
    assert (got["served"], got["canary"], got["rollout"]) == ("v1", None, None)


def test_a_decision_starts_its_job_once_and_metrics_show_it(app):
    e = app.extensions["ggnet"]
    e.collector.sample = sample("promoted", "canary")
    boot(e.db, "pc-01", "v1", "ok", 20.0)
    boot(e.db, "pc-03", "v2", "timeout", None)
    submitted = []

    def submit(kind, extravars, requested_by, wait=True):  # stands in for the job runner
        submitted.append((kind, extravars, requested_by))
        return {"id": f"job{len(submitted)}"}

    e.jobs.submit = submit
    assert e.rollouts.tick() == ["job1"]
    assert submitted == [
        (
            "image",
            {"op": "state", "image": "win11", "version": "v2", "state": "rejected"},
            "rollout",
        )
    ]
    assert e.rollouts.tick() == []  # once per decision
    text = e.metrics.exposition().decode()
    assert 'ggnet_image_version_state{image="win11",version="v2",state="canary"} 1' in text
    assert 'ggnet_image_rollout{image="win11",version="v2",action="rollback"} 1' in text
    assert 'ggnet_rollout_actions_total{action="rollback"} 1.0' in text
    e.config["rollout_auto"] = False
    e.rollouts.started.clear()
    assert e.rollouts.tick() == [] and len(submitted) == 1


def test_image_rollout_of_a_pinned_image_has_no_rollout(app):
    e = app.extensions["ggnet"]
    versions = sample("promoted", "canary").versions["win11"]
    got = image_rollout("win11", {"version": "v1"}, versions, None, None, e.db, time.time())
    assert got == {"served": "v1", "canary": None, "decision": None}


def test_sample_carries_states_and_current_across_privd():
    s = sample("promoted", "canary", current="v1")
    again = sample_from_json(sample_to_json(s))
    assert again.image_current == {"win11": "v1"}
    assert [v["state"] for v in again.versions["win11"]] == ["promoted", "canary"]


def test_a_boot_in_the_second_before_the_state_change_is_no_evidence(app):
    # The version became canary a microsecond after this boot started, within the same
    # second: the boot got the version before its rollout and counts for nothing.  (A
    # stamp read to the whole second only would count it.)
    e = app.extensions["ggnet"]
    boot(e.db, "pc-03", "v2", "ok", 20.0)
    started = e.db.version_boots("win11", "v2")[0]["started"]
    versions = sample("promoted", "canary").versions["win11"]
    versions[1]["state_at"] = iso_time(int(started * 1e9) + 1000)
    assert int(iso_seconds(versions[1]["state_at"]) or 0) == int(started)  # same second
    snap = e.inventory.snapshot
    got = image_rollout("win11", {}, versions, "v1", snap.rollout, e.db, started + 1)
    assert got["decision"]["ok"] == 0
    versions[1]["state_at"] = iso_time(int(started * 1e9) - 1000)
    got = image_rollout("win11", {}, versions, "v1", snap.rollout, e.db, started + 1)
    assert got["decision"]["ok"] == 1


def test_a_canarys_failed_stage_makes_the_rollout_decide_at_once(app, monkeypatch):
    from ggnet import storage

    e = app.extensions["ggnet"]
    e.config["reset_on_boot"] = True
    given = {"pc-01": "v1", "pc-03": "v2"}
    monkeypatch.setattr(
        storage,
        "reset",
        lambda _s, _i, _c, name, **_k: storage.Result(info={"versions": {"system": given[name]}}),
    )
    monkeypatch.setattr(storage, "read_for_reset", lambda *_a, **_k: None)  # a batch's read
    e.collector.sample = sample("promoted", "canary")
    submitted = []
    e.jobs.submit = lambda kind, extravars, by, wait=True: (  # stands in for the runner
        submitted.append(extravars) or {"id": "job"}
    )
    client = app.test_client()

    def boot_and_fail(name: str) -> None:
        mac, at = f"52:54:00:cc:00:0{name[-1]}", {"REMOTE_ADDR": f"10.213.0.10{name[-1]}"}
        script = client.get(f"/boot/{mac}", environ_base=at).text
        token = re.search(r"stage\?name=sanboot&token=([\w-]+)", script).group(1)
        assert (
            client.get(f"/boot/{mac}/stage?name=failed&token={token}", environ_base=at).text
            == "ok\n"
        )

    boot_and_fail("pc-01")  # not a canary: nothing to decide
    assert submitted == [] and e.rollouts.latest == {}
    boot_and_fail("pc-03")  # the canary's failure: decided within its callback
    assert submitted == [{"op": "state", "image": "win11", "version": "v2", "state": "rejected"}]
    assert e.db.query("SELECT client, version, result FROM boots ORDER BY id") == [
        {"client": "pc-01", "version": "v1", "result": "failed"},
        {"client": "pc-03", "version": "v2", "result": "failed"},
    ]
