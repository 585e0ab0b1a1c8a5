"""One thing at a time per PC and per image: jobs wait for (or are refused over) each
other's PCs and images, and a boot's writeback reset never runs during a job on its PC.
Also what keeps the API answering: 503 without a job runner, bounded event streams,
paged job lists.

The job runner's workers run for real here; only the playbook run is a stand-in that
holds until the test lets it go, so what overlaps is the test's to decide."""

from __future__ import annotations

import threading
import time

import pytest
from ggnet_testing.api_project import (
    NETWORK,
    STORAGE,
    bearer,
    hosts_yml,
    inventory_app,
    iscsi_yml,
    role_tokens,
)
from ggnet_testing.daemons import wait_for

from ggnet_api.auth import new_token
from ggnet_api.boot_service import BootRefused
from ggnet_api.jobs import JobRunner
from ggnet_api.locks import ROOM, Claim, job_claim
from ggnet_api.snapshot import Snapshot

pytestmark = pytest.mark.unit

HOSTS = hosts_yml(
    """\
    children:
      room:
        hosts:
          pc-01: {ggnet_mac: "52:54:00:aa:00:01"}
          pc-02: {ggnet_mac: "52:54:00:aa:00:02"}
          pc-03: {ggnet_mac: "52:54:00:aa:00:03", ggnet_image: linux}
    """
)
ALL = (
    NETWORK
    + STORAGE
    + iscsi_yml()
    + "ggnet_images:\n  win11: {size: 64M, kind: system}\n  linux: {size: 64M, kind: system}\n"
    + "ggnet_image: win11\n"
)
API = "http://10.213.0.10:8080"


class Playbooks:
    """Stands in for JobRunner._run: each job holds until released; overlaps are seen."""

    def __init__(self) -> None:
        self.gates: dict[str, threading.Event] = {}
        self.started: list[str] = []
        self.running: set[str] = set()
        self.overlaps: list[set[str]] = []
        self.mutex = threading.Lock()

    def gate(self, job_id: str) -> threading.Event:
        with self.mutex:
            return self.gates.setdefault(job_id, threading.Event())

    def run(self, runner: JobRunner, job_id: str) -> None:
        with self.mutex:
            self.started.append(job_id)
            self.running.add(job_id)
            self.overlaps.append(set(self.running))
        self.gate(job_id).wait(20)
        with self.mutex:
            self.running.discard(job_id)
        runner.db.update_job(job_id, state="successful", rc=0, finished=time.time())


@pytest.fixture
def playbooks(monkeypatch):
    pb = Playbooks()
    monkeypatch.setattr(JobRunner, "_run", lambda self, job_id: pb.run(self, job_id))
    return pb


def make_app(tmp_path, **settings):
    return inventory_app(tmp_path, HOSTS, ALL, **{"max_concurrent_jobs": 2, **settings})


@pytest.fixture
def app(tmp_path):
    app = make_app(tmp_path)
    yield app
    app.extensions["ggnet"].jobs.stop(timeout=5)


@pytest.fixture
def operator(app):
    return bearer(role_tokens(app, "operator")["operator"])


def wait_until(what: str, probe):
    # The stand-in playbooks move within milliseconds: look often, give up soon.
    return wait_for(what, probe, timeout=10.0, interval=0.02)


def submit(http, headers, kind, **extravars):
    resp = http.post("/api/jobs", json={"kind": kind, "extravars": extravars}, headers=headers)
    assert resp.status_code == 202, resp.json
    return resp.json["id"]


def job(app, job_id):
    return app.extensions["ggnet"].db.job(job_id)


def test_apply_and_forced_reset_of_one_pc_do_not_overlap(app, operator, playbooks):
    app.extensions["ggnet"].jobs.start()
    c = app.test_client()
    apply = submit(c, operator, "machine", op="apply", client="pc-01", comment="GPU driver")
    wait_until("apply runs", lambda: apply in playbooks.running)
    reset = submit(c, operator, "machine", op="reset", client="pc-01", force=True)
    # Two workers, one of them free: the reset still waits, and says for whom.
    time.sleep(0.3)
    waiting = job(app, reset)
    assert waiting["state"] == "queued"
    assert waiting["detail"].startswith(f"waiting for job {apply} (machine apply pc-01)")
    assert "pc pc-01" in waiting["detail"]
    playbooks.gate(apply).set()
    wait_until("the reset runs", lambda: reset in playbooks.running)
    assert job(app, reset)["detail"] is None
    playbooks.gate(reset).set()
    wait_until("the reset ends", lambda: job(app, reset)["state"] == "successful")
    assert not any({apply, reset} <= seen for seen in playbooks.overlaps)


def test_wait_false_is_refused_with_409_naming_the_conflicting_job(app, operator, playbooks):
    app.extensions["ggnet"].jobs.start()
    c = app.test_client()
    apply = submit(c, operator, "machine", op="apply", client="pc-01", comment="GPU driver")
    wait_until("apply runs", lambda: apply in playbooks.running)
    resp = c.post(
        "/api/jobs",
        json={"kind": "machine", "extravars": {"op": "reset", "client": "pc-01"}, "wait": False},
        headers=operator,
    )
    assert resp.status_code == 409
    assert f"conflicts with job {apply} (machine apply pc-01)" in resp.json["error"]
    assert app.extensions["ggnet"].db.count_jobs("queued") == 0
    playbooks.gate(apply).set()


@pytest.mark.parametrize("first", ["converge", "prune"])
def test_converge_and_prune_serialise(app, operator, playbooks, first):
    app.extensions["ggnet"].jobs.start()
    c = app.test_client()
    kinds = {"converge": ("converge", {}), "prune": ("image", {"op": "prune"})}
    second = "prune" if first == "converge" else "converge"
    a = submit(c, operator, kinds[first][0], **kinds[first][1])
    wait_until(f"{first} runs", lambda: a in playbooks.running)
    b = submit(c, operator, kinds[second][0], **kinds[second][1])
    time.sleep(0.3)
    assert job(app, b)["state"] == "queued" and f"job {a}" in job(app, b)["detail"]
    playbooks.gate(a).set()
    wait_until(f"{second} runs", lambda: b in playbooks.running)
    playbooks.gate(b).set()
    wait_until(f"{second} ends", lambda: job(app, b)["state"] == "successful")
    assert not any({a, b} <= seen for seen in playbooks.overlaps)


def test_non_conflicting_jobs_pass_a_waiting_one_and_run_together(app, operator, playbooks):
    app.extensions["ggnet"].jobs.start()
    c = app.test_client()
    reset1 = submit(c, operator, "machine", op="reset", client="pc-01")
    wait_until("reset pc-01 runs", lambda: reset1 in playbooks.running)
    apply1 = submit(c, operator, "machine", op="apply", client="pc-01", comment="x")
    reset3 = submit(c, operator, "machine", op="reset", client="pc-03")
    # pc-03 is on another image: it takes the free worker past the waiting apply.
    wait_until("reset pc-03 runs", lambda: reset3 in playbooks.running)
    assert playbooks.running == {reset1, reset3}
    assert job(app, apply1)["state"] == "queued"
    for j in (reset1, reset3):
        playbooks.gate(j).set()
    wait_until("apply runs", lambda: apply1 in playbooks.running)
    playbooks.gate(apply1).set()


def test_a_boot_during_a_job_on_its_pc_is_refused_and_resets_nothing(
    tmp_path, monkeypatch, playbooks
):
    from ggnet import storage

    resets: list[str] = []
    monkeypatch.setattr(storage, "reset", lambda *a, **k: resets.append(a[3]) or storage.Result())
    monkeypatch.setattr(storage, "read_for_reset", lambda *a, **k: None)  # no ZFS here
    app = make_app(tmp_path, reset_on_boot=True)
    e = app.extensions["ggnet"]
    token = new_token()
    e.db.add_token("op", "operator", token)
    e.jobs.start()
    try:
        c = app.test_client()
        reset = submit(
            c, {"Authorization": f"Bearer {token}"}, "machine", op="reset", client="pc-01"
        )
        wait_until("the job runs", lambda: reset in playbooks.running)
        with pytest.raises(BootRefused, match=f"job {reset} \\(machine reset pc-01\\)"):
            e.boot.script("pc-01", API, "tok")
        # pc-02 shares pc-01's image, which a reset of pc-01 only reads: it boots.
        e.boot.script("pc-02", API, "tok")
        assert resets == ["pc-02"]
        playbooks.gate(reset).set()
        wait_until("the job lets go of pc-01", lambda: not e.boot.locks.holders())
        e.boot.script("pc-01", API, "tok")
        assert resets == ["pc-02", "pc-01"]
    finally:
        e.jobs.stop(timeout=5)


def test_a_job_waits_while_a_boot_resets_its_pc(app, operator, playbooks):
    e = app.extensions["ggnet"]
    e.jobs.start()
    with e.boot.locks.boot("pc-01", e.inventory.snapshot):
        reset = submit(app.test_client(), operator, "machine", op="reset", client="pc-01")
        time.sleep(0.3)
        assert job(app, reset)["state"] == "queued"
        assert "a boot of pc-01" in job(app, reset)["detail"]
    wait_until("the job runs once the boot is done", lambda: reset in playbooks.running)
    playbooks.gate(reset).set()


def test_claims():
    snap = Snapshot(
        clients={
            "pc-01": {"image": "win11", "game_disk": "games"},
            "pc-03": {"image": "linux", "game_disk": None},
        },
        images={"win11": {}, "linux": {}, "games": {}},
    )
    reset1 = job_claim("machine", {"op": "reset", "client": "pc-01"}, snap)
    assert reset1.exclusive == {"pc:pc-01"}
    assert reset1.shared == {ROOM, "image:win11", "image:games"}
    apply_game = job_claim("machine", {"op": "apply", "client": "pc-01", "disk": "game"}, snap)
    assert apply_game.exclusive == {"pc:pc-01", "image:games"}
    rollback = job_claim("image", {"op": "rollback", "image": "win11"}, snap)
    assert rollback.exclusive == {"image:win11", "pc:pc-01"}
    assert rollback.clash(job_claim("machine", {"op": "reset", "client": "pc-03"}, snap)) is None
    prune = job_claim("image", {"op": "prune"}, snap)
    assert {"image:linux", "image:games", "pc:pc-03"} <= prune.exclusive
    converge = job_claim("converge", {}, snap)
    assert converge.clash(job_claim("preflight", {}, snap)) == ROOM
    assert job_claim("preflight", {}, snap).clash(reset1) is None
    assert Claim.of(set()).clash(Claim.of(set())) is None


# -- the job runner must be there -----------------------------------------------------


def test_submission_without_a_running_job_runner_is_503(app, operator, playbooks):
    e = app.extensions["ggnet"]
    e.config["background"] = True  # as served: the app is meant to run its jobs
    c = app.test_client()
    resp = c.post("/api/jobs", json={"kind": "converge"}, headers=operator)
    assert resp.status_code == 503
    assert "job runner is not running" in resp.json["error"]
    assert "restart" in resp.json["error"]
    e.jobs.start()
    assert c.post("/api/jobs", json={"kind": "preflight"}, headers=operator).status_code == 202
    for gate in list(playbooks.gates.values()):
        gate.set()
    e.jobs.stop(timeout=5)  # workers gone: refused again
    resp = c.post("/api/jobs", json={"kind": "converge"}, headers=operator)
    assert resp.status_code == 503
    assert e.db.count_jobs("queued") + e.db.count_jobs("running") <= 1


def test_submission_without_ansible_runner_is_503(app, operator):
    app.extensions["ggnet"].jobs._has_runner = False
    resp = app.test_client().post("/api/jobs", json={"kind": "converge"}, headers=operator)
    assert resp.status_code == 503 and "ansible-runner is not installed" in resp.json["error"]


# -- paging ---------------------------------------------------------------------------


def test_jobs_are_paged_with_a_cursor(app, operator):
    e = app.extensions["ggnet"]
    ids = [f"{i:032x}" for i in range(7)]
    for i, job_id in enumerate(ids):
        e.db.add_job(job_id, "converge", "site.yml", {}, "op")
        # Two share a creation time: the cursor must neither skip nor repeat one.
        e.db.update_job(job_id, created=1000.0 + (i if i != 4 else 3))
    c = app.test_client()
    seen: list[str] = []
    url = "/api/jobs?limit=3"
    pages = 0
    while url:
        resp = c.get(url, headers=operator)
        assert resp.status_code == 200
        assert len(resp.json["jobs"]) <= 3
        seen += [j["id"] for j in resp.json["jobs"]]
        pages += 1
        url = f"/api/jobs?limit=3&cursor={resp.json['next']}" if resp.json["next"] else ""
    assert pages == 3
    assert seen == sorted(ids, key=lambda i: (e.db.job(i)["created"], i), reverse=True)
    resp = c.get("/api/jobs?cursor=bogus!", headers=operator)
    assert resp.status_code == 400 and "cursor" in resp.json["error"]
    assert c.get("/api/jobs?limit=100000", headers=operator).status_code == 400


# -- event streams --------------------------------------------------------------------


def test_event_streams_are_capped_per_token_and_in_all(tmp_path):
    app = make_app(tmp_path, request_threads=8, max_event_streams=8)
    e = app.extensions["ggnet"]
    for job_id, state in (("a" * 32, "running"), ("c" * 32, "successful")):
        e.db.add_job(job_id, "converge", "site.yml", {}, "op")
        e.db.update_job(job_id, state=state)
    heads, ids = [], []
    for name in ("one", "two"):
        token = new_token()
        ids.append(e.db.add_token(name, "viewer", token))
        heads.append({"Authorization": f"Bearer {token}", "Accept": "text/event-stream"})
    c = app.test_client()
    running, done = (f"/api/jobs/{j * 32}/events" for j in "ac")
    slots = app.extensions["ggnet_streams"]
    # Streams open elsewhere (each holds a thread): three of token one's, one of two's.
    for token_id in (ids[0], ids[0], ids[0], ids[1]):
        assert slots.take(token_id) is None
    # Half of 8 threads: the fifth stream in all is refused, whoever asks.
    refused = c.get(running, headers=heads[1])
    assert refused.status_code == 429 and "max_event_streams" in refused.json["error"]
    assert refused.headers["Retry-After"]
    slots.give_back(ids[1])
    # A stream that runs to its end gives its slot back.
    resp = c.get(done, headers=heads[1])
    assert resp.status_code == 200 and "event: end" in resp.text
    resp.close()  # what the server does at a response's end
    assert slots.count() == 3
    # Per token: four of one token's own, then 429 naming the per-token limit.
    assert slots.take(ids[0]) is None
    mine = c.get(running, headers=heads[0])
    assert mine.status_code == 429 and "max_event_streams_per_token" in mine.json["error"]


def test_a_stream_ends_after_its_lifetime_with_reconnect_and_resumes(tmp_path):
    app = make_app(tmp_path, event_stream_lifetime=0.3)
    e = app.extensions["ggnet"]
    job_id = "b" * 32
    e.db.add_job(job_id, "converge", "site.yml", {}, "op")
    e.db.update_job(job_id, state="running")
    for seq in (1, 2, 3):
        e.db.add_event(job_id, seq, {"event": "runner_on_ok", "task": f"t{seq}"})
    token = new_token()
    e.db.add_token("v", "viewer", token)
    heads = {"Authorization": f"Bearer {token}", "Accept": "text/event-stream"}
    c = app.test_client()
    resp = c.get(
        f"/api/jobs/{job_id}/events", headers={**heads, "Last-Event-ID": "1"}, buffered=False
    )
    text, deadline = "", time.monotonic() + 5
    for chunk in resp.response:  # a stream that never ends fails here, not hangs
        text += chunk.decode()
        if time.monotonic() > deadline:
            break
    resp.close()
    assert "id: 1\n" not in text and "id: 2\n" in text and "id: 3\n" in text
    assert text.rstrip().endswith('event: reconnect\ndata: {"after": 3}')
    assert "retry: " in text and "id: 3\nevent: reconnect" in text
