"""ggnet-privd, the API's root half (issue 16 item 9): a real privd server thread on a
Unix socket in tmp_path, and the API talking to it.

What privd must hold: only root and the API's user are answered (SO_PEERCRED), only
named operations with exactly their arguments, each checked against privd's own
inventory and allow-list; no secret in its replies or its log; bounded lines,
connections and waits.  The playbook run is ansible-runner's where noted, a stand-in
for ansible_runner.run elsewhere; the reset is a stand-in for ggnet.storage.reset."""

from __future__ import annotations

import contextlib
import logging
import os
import pwd
import socket
import subprocess
import threading
import time
from types import SimpleNamespace

import ansible_runner
import pytest
from ggnet_testing.api_project import CHAP, make_project, settings
from ggnet_testing.daemons import wait_for

from ggnet_api import config as config_mod
from ggnet_api.app import create_app
from ggnet_api.auth import new_token
from ggnet_api.boot_service import BootRefused
from ggnet_api.collector import Collector
from ggnet_api.locks import job_claim
from ggnet_api.privileged import SocketClient
from ggnet_api.snapshot import CurrentInventory
from ggnet_privd import protocol
from ggnet_privd.ops import Ops
from ggnet_privd.protocol import OpError
from ggnet_privd.server import Server, allowed_uids

pytestmark = pytest.mark.unit

API = "http://10.213.0.10:8080"
MAC = "52:54:00:cc:00:07"
JOB = "0123456789abcdef0123456789abcdef"


@pytest.fixture
def project(tmp_path):
    return make_project(tmp_path)


@pytest.fixture
def sock(tmp_path):
    return str(tmp_path / "privd.sock")


@pytest.fixture
def resets(monkeypatch):
    """Every writeback reset privd runs (no ZFS here)."""
    from ggnet import storage

    calls: list[str] = []
    monkeypatch.setattr(
        storage, "reset", lambda _s, _i, _c, name, **_k: calls.append(name) or storage.Result()
    )
    # A batch's one read (ggnet_privd/batches.py) stands in with nothing read.
    monkeypatch.setattr(storage, "read_for_reset", lambda *_a, **_k: None)
    return calls


class FakeRunner:
    """Stands in for ansible_runner.run: one event that quotes the CHAP secret (as a
    careless task would), then waits for its gate or for the cancel callback."""

    def __init__(self) -> None:
        self.calls: list[dict] = []
        self.gate = threading.Event()
        self.started = threading.Event()

    def __call__(self, **kw):
        self.calls.append(kw)
        kw["event_handler"](
            {
                "event": "runner_on_ok",
                "counter": 1,
                "event_data": {"host": "boot1", "task": f"show {CHAP}"},
                "stdout": f'\x1b[0;32mok: secret {CHAP} json "{CHAP}"\x1b[0m',
            }
        )
        self.started.set()
        while not self.gate.wait(0.02):
            if kw["cancel_callback"]():
                return SimpleNamespace(status="canceled", rc=254)
        return SimpleNamespace(status="successful", rc=0)


@pytest.fixture
def runner(monkeypatch):
    fake = FakeRunner()
    monkeypatch.setattr(ansible_runner, "run", fake)
    yield fake
    fake.gate.set()


def start_privd(tmp_path, project, sock, allowed=None, playbooks=None, **limits):
    """A privd server thread on `sock`, with its own inventory (as `ggnet privd` has)."""
    proj, inv = project
    more = {} if playbooks is None else {"playbooks": playbooks}
    cfg = config_mod.load(**settings(tmp_path, proj, inv, privd_socket=sock, **more))
    inventory = CurrentInventory(cfg)
    assert inventory.reload(), inventory.load_error
    ops = Ops(cfg, inventory, jobs_dir=tmp_path / "privd-jobs")
    allowed = frozenset({os.getuid()}) if allowed is None else allowed
    server = Server(ops, sock, allowed, **limits)
    server.bind()
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


@pytest.fixture
def privd(tmp_path, project, sock):
    server = start_privd(tmp_path, project, sock)
    yield server
    server.stop()


@pytest.fixture
def app(tmp_path, project, sock, privd):
    proj, inv = project
    app = create_app(
        settings(tmp_path, proj, inv, privd_socket=sock, background=False, public_url=API)
    )
    e = app.extensions["ggnet"]
    assert e.inventory.reload(), e.inventory.load_error
    yield app
    e.jobs.stop(timeout=5)


def raw(path: str, data: bytes, timeout: float = 5.0) -> list[dict]:
    """Send bytes as they are; every reply line privd sends back."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(timeout)
        s.connect(path)
        if data:
            with contextlib.suppress(BrokenPipeError):  # refused before it read
                s.sendall(data)
        with s.makefile("rb") as replies:
            return [protocol.parse_reply(line) for line in replies]


# -- who may ask ------------------------------------------------------------------------


def test_a_peer_neither_root_nor_the_api_user_is_refused_before_any_op(
    tmp_path, project, sock, resets
):
    # The test process is its own peer: allowed when its uid is, refused otherwise.
    server = start_privd(tmp_path, project, sock, allowed=frozenset({os.getuid() + 4242}))
    try:
        with pytest.raises(OpError) as refused:
            SocketClient(sock).reset("pc-01")
        assert refused.value.status == 403
        assert f"peer uid {os.getuid()} may not use ggnet-privd" in str(refused.value)
        assert resets == []
    finally:
        server.stop()
    server = start_privd(tmp_path, project, sock, allowed=frozenset({os.getuid()}))
    try:
        SocketClient(sock).reset("pc-01")
        assert resets == ["pc-01"]
    finally:
        server.stop()


def test_the_allowed_peers_are_root_and_the_configured_api_user():
    me = pwd.getpwuid(os.getuid())
    nobody = pwd.getpwnam("nobody")
    assert allowed_uids({"privd_api_user": me.pw_name}) == {0, me.pw_uid}
    assert allowed_uids({"privd_api_user": "nobody"}) == {0, nobody.pw_uid}
    with pytest.raises(ValueError, match="privd_api_user: 'no-such-user-here'"):
        allowed_uids({"privd_api_user": "no-such-user-here"})


def test_the_socket_is_0660(privd, sock):
    assert os.stat(sock).st_mode & 0o777 == 0o660


# -- what may be asked ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("op", "args", "status", "says"),
    [
        ("shell", {"cmd": "id"}, 400, "op: 'shell' is not an operation"),
        ("reset", {"client": "pc-01", "path": "/dev/sda"}, 400, "reset does not take path"),
        ("reset", {}, 400, "reset needs client"),
        ("reset", {"client": "pc-99"}, 404, "args.client: 'pc-99' is not a client"),
        ("reset", {"client": "../../etc"}, 404, "args.client: '../../etc' is not a client"),
        ("reset", {"client": "{{ lookup('pipe','id') }}"}, 400, 'args.client: "{{ lookup'),
        (
            "run_job",
            {"job_id": JOB, "kind": "rm-rf", "extravars": {}},
            400,
            "kind: 'rm-rf' is not a job kind",
        ),
        (
            "run_job",
            {"job_id": JOB, "kind": "converge", "extravars": {"playbook": "/tmp/x.yml"}},
            400,
            "extravars.playbook: not accepted",
        ),
        (
            "run_job",
            {"job_id": JOB, "kind": "machine", "extravars": {"op": "format", "client": "pc-01"}},
            400,
            "extravars.op: 'format' is not one of",
        ),
        (
            "run_job",
            {"job_id": JOB, "kind": "machine", "extravars": {"op": "reset", "client": "pc-99"}},
            404,
            "extravars.client: 'pc-99' is not a client",
        ),
        (
            "run_job",
            {"job_id": JOB, "kind": "machine", "extravars": {"op": "reset", "client": "{%x%}"}},
            400,
            "args.extravars.client: '{%x%}' contains template markers",
        ),
        (
            "run_job",
            {"job_id": "../x", "kind": "converge", "extravars": {}},
            400,
            "args.job_id: '../x' is not a job id",
        ),
        (
            "approve",
            {"mac": "not-a-mac", "name": "pc-07", "image": "win11", "groups": [], "principal": "a"},
            400,
            "args.mac: 'not-a-mac'",
        ),
        (
            "approve",
            {"mac": MAC, "name": "pc-07", "image": "win11", "groups": [], "principal": "a\nb"},
            400,
            "args.principal: 'a\\nb' is not a printable name",
        ),
        (
            "approve",
            {"mac": MAC, "name": "all", "image": "win11", "groups": [], "principal": "alice"},
            400,
            "body.name: 'all' is reserved",
        ),
    ],
)
def test_refused_requests_name_the_field_and_run_nothing(
    privd, sock, project, resets, runner, op, args, status, says
):
    _proj, inv = project
    head = subprocess.run(
        ["git", "-C", str(inv), "rev-parse", "HEAD"], capture_output=True, text=True, check=True
    ).stdout
    [reply] = raw(sock, protocol.request(op, args))
    assert reply["ok"] is False and reply["status"] == status, reply
    assert says in reply["error"], reply["error"]
    assert resets == [] and runner.calls == []
    assert not (inv / "host_vars").exists()
    assert (
        subprocess.run(
            ["git", "-C", str(inv), "rev-parse", "HEAD"], capture_output=True, text=True, check=True
        ).stdout
        == head
    )


def test_privd_checks_its_own_allow_list_not_the_apis(tmp_path, project, sock, runner):
    # The API's allow-list has `sleepy`; this privd's has only converge.
    proj, _inv = project
    mine = {"converge": {**config_mod.PLAYBOOKS["converge"], "playbook": "site.yml"}}
    server = start_privd(tmp_path, project, sock, playbooks=mine)
    try:
        with pytest.raises(OpError, match="kind: 'sleepy' is not a job kind; use one of converge"):
            SocketClient(sock).run_job(JOB, "sleepy", {"nap": "1"}, lambda _e: None)
        assert runner.calls == []
        runner.gate.set()
        SocketClient(sock).run_job(JOB, "converge", {}, lambda _e: None)
        # The playbook is the allow-list entry's, under privd's own project.
        assert runner.calls[0]["playbook"] == str(proj / "playbooks" / "site.yml")
    finally:
        server.stop()


def test_requests_that_are_not_one_line_of_json_are_refused(privd, sock, resets):
    [reply] = raw(sock, b"reset pc-01\n")
    assert reply["status"] == 400 and "not a JSON object" in reply["error"]
    [reply] = raw(sock, b'{"op": "reset", "args": {"client": "pc-01"}, "sudo": true}\n')
    assert reply["status"] == 400 and "nothing else" in reply["error"]
    assert resets == []


# -- bounds -----------------------------------------------------------------------------


def test_a_request_line_has_a_size_limit(privd, sock, resets):
    huge = protocol.request("reset", {"client": "pc-01", "pad": "x" * protocol.MAX_REQUEST})
    [reply] = raw(sock, huge)
    assert reply["status"] == 413 and f"longer than {protocol.MAX_REQUEST} bytes" in reply["error"]
    assert resets == []


def test_a_connection_that_sends_nothing_times_out(tmp_path, project, sock, resets):
    server = start_privd(tmp_path, project, sock, idle_timeout=0.3)
    try:
        t0 = time.monotonic()
        [reply] = raw(sock, b"")
        assert time.monotonic() - t0 < 3
        assert reply["status"] == 408 and "no full line within 0.3 s" in reply["error"]
        # A byte now and then does not keep it open either: one deadline for the line.
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
            s.connect(sock)
            t0 = time.monotonic()
            with contextlib.suppress(OSError):  # privd hangs up on it
                for _ in range(30):
                    s.sendall(b" ")
                    time.sleep(0.1)
            assert time.monotonic() - t0 < 1.5
    finally:
        server.stop()


def test_concurrent_connections_are_capped(tmp_path, project, sock, resets):
    server = start_privd(tmp_path, project, sock, max_connections=1, idle_timeout=5.0)
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as holder:
            holder.connect(sock)  # holds the one slot, sending nothing
            time.sleep(0.2)
            [reply] = raw(sock, protocol.request("reset", {"client": "pc-01"}))
            assert reply["status"] == 503 and "too many connections" in reply["error"]
            assert resets == []
        # The slot is free again once the holder is gone.
        wait_for(
            "the slot comes back",
            lambda: raw(sock, protocol.request("reset", {"client": "pc-01"}))[0]["ok"],
        )
        assert resets == ["pc-01"]
    finally:
        server.stop()


# -- the API through privd --------------------------------------------------------------


def test_a_boot_resets_through_privd_and_the_lock_stays_the_apis(app, resets, caplog):
    e = app.extensions["ggnet"]
    assert isinstance(e.privileged, SocketClient)
    e.config["reset_on_boot"] = True
    caplog.set_level(logging.INFO, logger="ggnet_privd.server")
    _script, kind, _version = e.boot.script("pc-01", API, e.boot.new_token())
    assert kind == "normal" and resets == ["pc-01"]
    assert "reset done" in caplog.text  # privd ran it, not the API's process
    # A job holds pc-01: the API refuses the boot before asking privd for anything.
    claim = job_claim("machine", {"op": "apply", "client": "pc-01"}, e.inventory.snapshot)
    e.boot.locks.take("job-x", claim, "job x (machine apply pc-01)")
    with pytest.raises(BootRefused, match="job x"):
        e.boot.script("pc-01", API, e.boot.new_token())
    assert resets == ["pc-01"]


def test_a_failed_reset_in_privd_refuses_the_boot(app, monkeypatch):
    from ggnet import storage

    def full(*_a, **_k):
        raise storage.CapacityError("pool ggtest has 1M free, below its reserve")

    monkeypatch.setattr(storage, "reset", full)
    monkeypatch.setattr(storage, "read_for_reset", lambda *_a, **_k: None)  # no ZFS here
    e = app.extensions["ggnet"]
    e.config["reset_on_boot"] = True
    with pytest.raises(BootRefused, match="below its reserve"):
        e.boot.script("pc-01", API, e.boot.new_token())


@pytest.fixture
def operator(app):
    token = new_token()
    app.extensions["ggnet"].db.add_token("alice", "operator", token)
    return {"Authorization": f"Bearer {token}"}


def test_a_job_runs_in_privd_and_its_events_come_back_redacted(app, operator, runner, caplog):
    caplog.set_level(logging.DEBUG)
    e = app.extensions["ggnet"]
    e.jobs.start()
    resp = app.test_client().post("/api/jobs", json={"kind": "converge"}, headers=operator)
    assert resp.status_code == 202, resp.json
    job_id = resp.json["id"]
    runner.started.wait(10)
    runner.gate.set()
    job = wait_for("the job ends", lambda: (j := e.db.job(job_id))["finished"] and j)
    assert job["state"] == "successful" and job["rc"] == 0
    [event] = e.db.events(job_id)
    assert event["stdout"] == 'ok: secret ******** json "********"'
    assert event["task"] == "show ********"
    assert CHAP not in caplog.text


def test_a_cancel_reaches_the_run_in_privd(app, operator, runner):
    e = app.extensions["ggnet"]
    e.jobs.start()
    client = app.test_client()
    job_id = client.post("/api/jobs", json={"kind": "converge"}, headers=operator).json["id"]
    assert runner.started.wait(10)
    assert client.post(f"/api/jobs/{job_id}/cancel", headers=operator).status_code == 202
    job = wait_for("the job ends", lambda: (j := e.db.job(job_id))["finished"] and j)
    assert job["state"] == "canceled" and job["rc"] == 254
    assert not runner.gate.is_set()  # it ended by the cancel, not by its gate


def test_the_collectors_sample_comes_from_privd(app, monkeypatch):
    from ggnet import iscsi

    def read_storage(self, snap, sample):
        sample.writeback_bytes = {"pc-01": 123}
        sample.pools["ggtest"] = (1000, 400)

    monkeypatch.setattr(Collector, "_read_storage", read_storage)
    monkeypatch.setattr(iscsi, "active_sessions", lambda *_a, **_k: {"pc-01": ["iqn.x:pc"]})
    e = app.extensions["ggnet"]
    e._collect()
    sample = e.collector.sample
    assert sample.writeback_bytes == {"pc-01": 123}
    assert sample.pools == {"ggtest": (1000, 400)}
    assert sample.sessions == {"pc-01": ["iqn.x:pc"]}
    assert sample.at > 0 and sample.errors == {}


def test_an_approval_is_written_and_committed_by_privd(app, operator, project, caplog):
    _proj, inv = project
    e = app.extensions["ggnet"]
    e.db.add_discovered(MAC, time.time())
    caplog.set_level(logging.INFO, logger="ggnet_privd.server")
    resp = app.test_client().post(
        f"/api/discovered/{MAC}/approve",
        json={"name": "pc-07", "image": "win11", "groups": ["office"]},
        headers=operator,
    )
    assert resp.status_code == 201, resp.json
    assert "approve done" in caplog.text
    log = subprocess.run(
        ["git", "-C", str(inv), "log", "-1", "--format=%H %B"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert log.startswith(resp.json["commit"]) and "Approved by alice" in log
    assert "pc-07" in e.inventory.snapshot.clients


def test_privd_gone_is_a_clear_503(tmp_path, sock):
    with pytest.raises(OpError) as gone:
        SocketClient(sock).reset("pc-01")
    assert gone.value.status == 503 and f"ggnet-privd at {sock}" in str(gone.value)


def test_a_real_playbook_runs_in_privd(app, operator):
    """ansible-runner for real, once: the tiny site.yml prints the CHAP secret."""
    e = app.extensions["ggnet"]
    e.jobs.start()
    resp = app.test_client().post("/api/jobs", json={"kind": "converge"}, headers=operator)
    job_id = resp.json["id"]
    job = wait_for("the job ends", lambda: (j := e.db.job(job_id))["finished"] and j, 120)
    assert job["state"] == "successful", job
    events = e.db.events(job_id)
    shown = [ev["stdout"] for ev in events if "clients pc-01" in (ev["stdout"] or "")]
    assert shown and "secret ********" in shown[0]
    assert all(CHAP not in (ev["stdout"] or "") for ev in events)


def test_a_secret_at_the_cut_of_a_long_output_is_masked_not_halved(tmp_path):
    from ggnet_privd.playbooks import MAX_STDOUT, PlaybookRuns

    secret = "chap-secret-4711-abcdef"
    runs = PlaybookRuns({}, tmp_path, lambda: [secret])
    sent: list[dict] = []
    on_event = runs._event_handler("job-1", sent.append)
    # The secret starts 5 characters before the cut: cutting first would leave its
    # first 5 characters, which no masking recognises.
    stdout = "x" * (MAX_STDOUT - 5) + secret + " tail"
    on_event({"event": "runner_on_ok", "stdout": stdout, "event_data": {"host": "boot1"}})
    (event,) = sent
    assert "chap-" not in event["stdout"]
    assert len(event["stdout"]) <= MAX_STDOUT
