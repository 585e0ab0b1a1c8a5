"""Jobs running real playbooks through ansible-runner, in-process, against localhost
(ansible_connection=local) in a temporary project and inventory: events with secrets
masked, the concurrency bound, cancel with no process left, and discovery ->
approval -> git commit -> converge."""

from __future__ import annotations

import contextlib
import subprocess
import time

import psutil
import pytest
from ggnet_testing.api_project import CHAP, make_project, settings

from ggnet_api.app import create_app
from ggnet_api.auth import new_token
from ggnet_privd.playbooks import processes_of

pytestmark = pytest.mark.integration


@contextlib.contextmanager
def running_api(config):
    """The app with an operator's client; on exit, no job process is left behind."""
    app = create_app(config)
    ext = app.extensions["ggnet"]
    token = new_token()
    ext.db.add_token("alice", "operator", token)
    client = app.test_client()
    client.environ_base["HTTP_AUTHORIZATION"] = f"Bearer {token}"
    try:
        yield app, client
    finally:
        ext.close()
        for job in ext.db.jobs(limit=1000):
            for proc in processes_of(job["id"]):
                proc.kill()


@pytest.fixture
def api(tmp_path):
    project, inv = make_project(tmp_path)
    with running_api(settings(tmp_path, project, inv)) as (app, client):
        yield app, client, inv


def wait_for(predicate, timeout=120.0, what="condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


def finished(client, job_id):
    def done():
        job = client.get(f"/api/jobs/{job_id}").json
        return job if job["state"] not in ("queued", "running") else None

    return wait_for(done, what=f"job {job_id} to finish")


def test_job_runs_a_real_playbook_and_masks_secrets(api):
    _app, client, _inv = api
    resp = client.post("/api/jobs", json={"kind": "converge"})
    assert resp.status_code == 202
    job = finished(client, resp.json["id"])
    assert job["state"] == "successful" and job["rc"] == 0
    assert job["requested_by"] == "alice"
    events = client.get(f"/api/jobs/{job['id']}/events").json["events"]
    kinds = [e["event"] for e in events]
    assert kinds[0] == "playbook_on_start" and "playbook_on_stats" in kinds
    shown = [
        e["stdout"]
        for e in events
        if e["event"] == "runner_on_ok" and "clients" in (e["stdout"] or "")
    ]
    assert shown and "clients pc-01 secret ********" in shown[0]
    assert all(CHAP not in (e["stdout"] or "") for e in events)
    # SSE replays stored events and ends with the job's state.
    stream = client.get(f"/api/jobs/{job['id']}/events?stream=1").get_data(as_text=True)
    assert "event: playbook_on_start" in stream
    assert stream.rstrip().endswith('data: {"state": "successful"}')
    metrics = client.get("/metrics").get_data(as_text=True)
    assert 'ggnet_jobs_total{playbook="site.yml",result="successful"} 1.0' in metrics
    assert 'ggnet_job_duration_seconds_count{playbook="site.yml"} 1.0' in metrics


def test_one_job_at_a_time_then_the_queue(api):
    _app, client, _inv = api
    first = client.post("/api/jobs", json={"kind": "sleepy", "extravars": {"nap": "3"}}).json
    second = client.post("/api/jobs", json={"kind": "converge"}).json
    wait_for(
        lambda: client.get(f"/api/jobs/{first['id']}").json["state"] == "running",
        what="first running",
    )
    assert client.get(f"/api/jobs/{second['id']}").json["state"] == "queued"
    assert finished(client, first["id"])["state"] == "successful"
    second_done = finished(client, second["id"])
    assert second_done["state"] == "successful"
    assert second_done["started"] >= client.get(f"/api/jobs/{first['id']}").json["finished"]


def test_cancel_leaves_no_process(api):
    _app, client, _inv = api
    job = client.post("/api/jobs", json={"kind": "sleepy", "extravars": {"nap": "300"}}).json
    wait_for(
        lambda: any(
            e["task"] == "Take a while"
            for e in client.get(f"/api/jobs/{job['id']}/events").json["events"]
        ),
        what="the sleeping task",
    )

    def name(p):
        try:
            return p.name()
        except psutil.Error:  # a short-lived helper that has already gone
            return ""

    def with_sleep():
        found = processes_of(job["id"])
        return found if any(name(p) == "sleep" for p in found) else None

    procs = wait_for(with_sleep, what="the playbook's sleep process")
    names = {name(p) for p in procs}
    assert "sleep" in names and any(n.startswith("ansible-playboo") for n in names)
    resp = client.post(f"/api/jobs/{job['id']}/cancel")
    assert resp.status_code == 202
    done = finished(client, job["id"])
    assert done["state"] == "canceled"
    assert done["detail"] == "cancelled by request"
    for p in procs:
        assert not p.is_running() or p.status() == psutil.STATUS_ZOMBIE, (
            f"{p.pid} {p.name()} left running"
        )
    assert processes_of(job["id"]) == []


def test_discovery_approval_commits_and_converges(api):
    app, client, inv = api
    mac = "52:54:00:cc:00:07"
    assert "discover?" in client.get(f"/boot/{mac}").get_data(as_text=True)
    client.get(f"/boot/{mac}/discover?manufacturer=QEMU&product=Standard%20PC&platform=pcbios")
    bad = client.post(f"/api/discovered/{mac}/approve", json={"name": "pc-07", "image": "nope"})
    assert (
        bad.status_code == 400 and "body.image: 'nope' is not in ggnet_images" in bad.json["error"]
    )
    taken = client.post(f"/api/discovered/{mac}/approve", json={"name": "pc-01", "image": "win11"})
    assert taken.status_code == 409 and "already a host" in taken.json["error"]
    resp = client.post(
        f"/api/discovered/{mac}/approve",
        json={"name": "pc-07", "image": "win11", "groups": ["office"]},
    )
    assert resp.status_code == 201, resp.json
    body = resp.json
    assert (inv / "host_vars" / "pc-07.yml").read_text().count(mac) == 2
    log = subprocess.run(
        ["git", "-C", str(inv), "log", "-1", "--format=%s%n%b%n%an", "--name-only"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert "Approve pc-07 (52:54:00:cc:00:07): image win11, groups office" in log
    assert "Approved by alice" in log
    assert "inventory/host_vars/pc-07.yml" in log and "inventory/approved.yml" in log
    assert (
        subprocess.run(
            ["git", "-C", str(inv), "status", "--porcelain"], capture_output=True, text=True
        ).stdout
        == ""
    )
    # The machine is a client now: it boots its own script (asked from the address its
    # DHCP lease gives it), in its machine group.
    leases = inv.parent.parent / "dnsmasq.leases"
    leases.write_text(f"0 {mac} 10.213.0.157 pc-07 *\n")
    app.extensions["ggnet"].config["lease_file"] = str(leases)
    own = {"REMOTE_ADDR": "10.213.0.157"}
    text = client.get(f"/boot/{mac}", environ_base=own).get_data(as_text=True)
    assert "target.pc-07" in text
    assert app.extensions["ggnet"].inventory.snapshot.clients["pc-07"]["groups"] == ["office"]
    job = finished(client, body["job_id"])
    assert (
        job["state"] == "successful"
        and job["kind"] == "converge"
        and job["requested_by"] == "alice"
    )
    events = client.get(f"/api/jobs/{job['id']}/events").json["events"]
    shown = [e["stdout"] for e in events if "clients " in (e["stdout"] or "")]
    assert shown and "pc-07" in shown[0] and "pc-01" in shown[0]
    again = client.post(f"/api/discovered/{mac}/approve", json={"name": "pc-08", "image": "win11"})
    assert again.status_code == 409


def test_jobs_reach_the_apis_own_server_locally_whatever_the_inventory_says(tmp_path):
    # The inventory says how the operator reaches boot1 (SSH; here a loopback port where
    # nothing listens); the API running on boot1 must not go through it.
    project, inv = make_project(tmp_path)
    hosts = inv / "hosts.yml"
    hosts.write_text(
        hosts.read_text().replace(
            "ansible_connection: local", "ansible_connection: ssh, ansible_port: 1"
        )
    )
    results = {}
    for local_hosts in ([], ["boot1"]):
        state = tmp_path / f"state-{len(local_hosts)}"
        config = settings(tmp_path, project, inv, state_dir=str(state), local_hosts=local_hosts)
        with running_api(config) as (_app, client):
            job = client.post("/api/jobs", json={"kind": "converge"}).json
            results[bool(local_hosts)] = finished(client, job["id"])["state"]
    assert results == {False: "failed", True: "successful"}
