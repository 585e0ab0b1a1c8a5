"""The replication runner's OpenZFS path (resumable receives) against a FAKE zfs.

OpenZFS cannot run on this machine (zfs-fuse has no `receive -s`, no resume tokens), so
these tests drive the real Replicator, with its real pipes and processes, against
FAKE_ZFS below: a small model of OpenZFS's send/receive, state in a JSON file.  It
checks the commands the runner chooses (`receive -s`, `send -t`, `receive -A`) and what
it does after an interruption; the zfs-fuse path runs on real pools in
tests/integration/test_replication.py.
"""

import json
import os
import signal
import sys

import pytest
from ggnet.replication import (
    FULL,
    INCREMENTAL,
    RESUME,
    Endpoint,
    Replicator,
    Side,
    TransferError,
)

pytestmark = pytest.mark.unit

FAKE_ZFS = r"""
import json, os, sys
state_path = sys.argv[1]
with open(state_path) as f:
    st = json.load(f)
args = sys.argv[3:]  # after the state file and "zfs"
with open(state_path + ".log", "a") as log:  # one line per command, appended
    log.write(json.dumps(args) + "\n")

def save():  # atomic: send and receive run at once; only receive, set, -A write
    with open(state_path + ".tmp", "w") as f:
        json.dump(st, f)
    os.rename(state_path + ".tmp", state_path)

def ds(name):
    return st["datasets"].get(name)

cmd = args[0]
if cmd == "get" and "value" in args:  # the resume-support probe
    save(); print("-"); sys.exit(0)
if cmd == "get":
    name = args[-1]
    d = ds(name)
    if d is None:
        save(); print(f"cannot open '{name}': dataset does not exist", file=sys.stderr); sys.exit(1)
    print(f"{name}\tcreation\t900")
    print(f"{name}\treceive_resume_token\t{d.get('token') or '-'}")
    for snap in d["snaps"]:
        for prop in ("guid", "createtxg", "creation"):
            print(f"{name}@{snap['name']}\t{prop}\t{snap[prop]}")
        for prop, value in snap.get("props", {}).items():
            print(f"{name}@{snap['name']}\t{prop}\t{value}")
    save(); sys.exit(0)
if cmd == "send":
    if args[1] == "-t":
        token = args[2]
        if token not in st["tokens"]:
            save(); print("cannot resume send: used in the initial send no longer exists", file=sys.stderr); sys.exit(255)
        snap, done = st["tokens"][token]
    else:
        snap, done = args[-1], 0
    dataset, _, version = snap.partition("@")
    size = st["sizes"][version]
    guid = next(s["guid"] for s in ds(dataset)["snaps"] if s["name"] == version)
    header = json.dumps({"version": version, "guid": guid, "size": size, "from": done}).encode()
    out = sys.stdout.buffer
    out.write(header.ljust(256)); out.flush()
    left = size - done
    while left:
        n = min(left, 1 << 16); out.write(b"x" * n); out.flush(); left -= n
    sys.exit(0)
if cmd == "receive":
    target = args[-1]
    dataset = target.partition("@")[0]
    resumable = "-s" in args
    if "-A" in args:
        d = ds(dataset)
        d["token"] = None
        if not d["snaps"]:
            del st["datasets"][dataset]
        save(); sys.exit(0)
    raw = sys.stdin.buffer.read(256)
    if not raw:
        print("cannot receive: failed to read from stream", file=sys.stderr); sys.exit(1)
    header = json.loads(raw)
    got = header["from"] + len(sys.stdin.buffer.read())
    d = st["datasets"].setdefault(dataset, {"snaps": [], "token": None})
    if got < header["size"]:
        if resumable:
            token = f"tok-{header['version']}-{got}"
            d["token"] = token
            st["tokens"][token] = [f"{st['source']}@{header['version']}", got]
        elif not d["snaps"]:
            del st["datasets"][dataset]
        save(); print("cannot receive: incomplete stream", file=sys.stderr); sys.exit(1)
    d["token"] = None
    txg = max([s["createtxg"] for s in d["snaps"]], default=0) + 1
    d["snaps"].append({"name": header["version"], "guid": header["guid"], "createtxg": txg,
                       "creation": 1000})
    save(); sys.exit(0)
if cmd == "set":
    key, _, value = args[1].partition("=")
    dataset, _, version = args[2].partition("@")
    d = ds(dataset)
    if version:
        next(s for s in d["snaps"] if s["name"] == version).setdefault("props", {})[key] = value
    save(); sys.exit(0)
save(); print(f"fake zfs: unexpected {args}", file=sys.stderr); sys.exit(2)
"""

SRC = "s/images/os"
TGT = "t/images/os"


@pytest.fixture
def fake(tmp_path):
    script = tmp_path / "fake_zfs.py"
    script.write_text(FAKE_ZFS)
    state = tmp_path / "state.json"
    snaps = [
        {"name": "v1", "guid": "111", "createtxg": 5, "creation": 1000},
        {"name": "v2", "guid": "222", "createtxg": 9, "creation": 1060},
    ]
    state.write_text(
        json.dumps(
            {
                "datasets": {SRC: {"snaps": snaps, "token": None}},
                "sizes": {"v1": 3 << 20, "v2": 2 << 20},
                "tokens": {},
                "source": SRC,
            }
        )
    )
    # The state file is an argument: the runner's commands get the C-locale environment
    # ggnet.zfs made at import, not this test's.
    endpoint = Endpoint((sys.executable, str(script), str(state)), label="fake-openzfs")

    def read():
        log = state.with_name(state.name + ".log")
        lines = log.read_text().splitlines() if log.exists() else []
        return {**json.loads(state.read_text()), "log": [json.loads(x) for x in lines]}

    def replicator(progress=None):
        return Replicator(
            Side({"pool": "s"}, endpoint), Side({"pool": "t"}, endpoint), progress=progress
        )

    def write(new):
        state.write_text(json.dumps(new))

    return read, write, replicator


def kill_send_after(limit):
    def progress(p):
        if p.bytes >= limit and not getattr(progress, "done", False):
            progress.done = True
            os.kill(p.send_pid, signal.SIGKILL)

    return progress


def test_a_killed_receive_is_kept_and_the_next_run_resumes_it(fake):
    read, _write, replicator = fake
    with pytest.raises(TransferError, match=r"full send of @v1 failed.*next run resumes"):
        replicator(kill_send_after(1 << 20)).replicate("os")
    token = read()["datasets"][TGT]["token"]
    assert token and token.startswith("tok-v1-")
    assert ["receive", "-u", "-s", f"{TGT}@v1"] in read()["log"]

    out = replicator().replicate("os")
    assert [s.kind for s in out.steps_done] == [RESUME, INCREMENTAL]
    assert out.as_dict()["actions"] == ["resume the interrupted receive", "incremental @v1 -> @v2"]
    assert ["send", "-t", token] in read()["log"]
    assert out.bytes < (3 << 20) + (2 << 20)  # the resume sent only the rest of v1
    got = read()["datasets"][TGT]
    assert [(s["name"], s["guid"]) for s in got["snaps"]] == [("v1", "111"), ("v2", "222")]
    assert got["token"] is None


def test_a_token_that_leads_nowhere_is_dropped_and_the_next_run_starts_over(fake):
    read, write, replicator = fake
    with pytest.raises(TransferError):
        replicator(kill_send_after(1 << 20)).replicate("os")
    state = read()
    state["tokens"] = {}  # the snapshot the token names is gone from the source
    del state["log"]
    write(state)
    with pytest.raises(TransferError, match=r"resume .*dropped \(receive -A\)"):
        replicator().replicate("os")
    assert ["receive", "-A", TGT] in read()["log"]
    out = replicator().replicate("os")
    assert [s.kind for s in out.steps_done] == [FULL, INCREMENTAL]


def test_an_exception_from_the_progress_callback_interrupts_like_a_dropped_link(fake):
    read, _write, replicator = fake

    def stop(p):
        if p.bytes >= 1 << 20:
            raise RuntimeError("link down")

    with pytest.raises(TransferError, match=r"interrupted by the progress callback.*link down"):
        replicator(stop).replicate("os")
    assert read()["datasets"][TGT]["token"].startswith("tok-v1-")
