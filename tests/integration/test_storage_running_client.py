"""Apply on a client that is really running: zfs-fuse + tgtd + a real initiator.

A client's writeback (a disk file on a real zfs-fuse pool) is exported by a real tgtd
(its own netns and control port, tgt_netns.py) and a qemu-io initiator holds a session
open.  The apply goes through the real playbook, playbooks/machine.yml, whose task asks
the backend for sessions (iscsi_backend from the inventory, iscsi_options to reach this
tgtd); nothing passes `sessions` by hand.

Order matters on zfs-fuse: a LUN that is still configured holds the writeback file
open, and a destroy of that clone then leaves the dataset "busy" until the daemon
restarts.  So the refusal is first proven in check mode (the same code path up to the
refusal, which never destroys anything); the apply that re-clones closes the LUN around
the re-clone and puts it back (ggnet.lun_release), which the test checks through
tgtd's descriptors and a read through iSCSI; and teardown removes the target (and
stops tgtd) before the pool is destroyed.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from ggnet import layout, storage
from ggnet.iscsi import lun_number
from ggnet.net import initiator_iqn, target_iqn
from ggnet_testing.playbook import REPO, VENV_BIN, run_playbook, task_result
from ggnet_testing.tgt_netns import tgt_in_netns
from ggnet_testing.zfs_pool import pool_fixture, storage_cfg, zfs_daemon_fixture  # noqa: F401  (fixtures)

pytestmark = pytest.mark.integration

CLIENT = "pc-01"
TARGET = target_iqn(CLIENT)
INITIATOR = initiator_iqn(CLIENT)
LUN = lun_number("tgt", 0)
IMAGES = {"os": {"size": "32M", "kind": "system"}}
TASK = "Run the operation on the client's server"
# What a change could touch; `creation` proves no re-clone, the ggnet: ones the pointers.
PROPS = (
    "type,origin,creation,quota,mountpoint,ggnet:current,ggnet:comment,ggnet:client,ggnet:disk,"
    "ggnet:state"
)


def write_inventory(root: Path, cfg: dict) -> Path:
    (root / "group_vars").mkdir(parents=True)
    hosts = {
        "all": {
            "children": {
                "ggnet_servers": {
                    "hosts": {
                        "boot1": {
                            "ansible_host": "127.0.0.1",
                            "ansible_connection": "local",
                            "ansible_python_interpreter": sys.executable,
                        }
                    }
                },
                "ggnet_clients": {
                    "hosts": {
                        CLIENT: {
                            "ggnet_mac": "52:54:00:00:00:01",
                            "ggnet_ip": "10.9.0.21",
                            "ggnet_image": "os",
                        },
                        "pc-02": {
                            "ggnet_mac": "52:54:00:00:00:02",
                            "ggnet_ip": "10.9.0.22",
                            "ggnet_image": "os",
                        },
                    }
                },
            }
        }
    }
    settings = {
        "ggnet_network": {
            "interface": "eth0",
            "server_ip": "10.9.0.10",
            "subnet": "10.9.0.0/24",
            "dhcp_mode": "full",
            "dhcp_range": ["10.9.0.100", "10.9.0.199"],
        },
        "ggnet_storage": cfg,
        "ggnet_iscsi": {"backend": "tgt", "chap": False},
        "ggnet_images": IMAGES,
    }
    (root / "hosts.yml").write_text(yaml.safe_dump(hosts))
    (root / "group_vars" / "all.yml").write_text(yaml.safe_dump(settings))
    return root


def machine_op(inventory: Path, tgt, *extra: str, check: bool = False) -> tuple[dict, str]:
    """playbooks/machine.yml as an operator runs it; returns the op task's result."""
    opts = json.dumps({"iscsi_options": {"control_port": tgt.control_port, "netns": tgt.netns}})
    argv = ["-i", str(inventory), str(REPO / "playbooks" / "machine.yml"), "-e", opts, *extra]
    data, output = run_playbook(argv, check=check, timeout=600)
    try:
        return task_result(data, "boot1", TASK), output
    except LookupError:
        raise AssertionError(f"the operation task did not run:\n{output}") from None


def pool_state(pool: str) -> str:
    """`zfs get -Hp` of every dataset and snapshot of the pool (names, origins, times)."""
    return subprocess.run(
        ["zfs", "get", "-Hp", "-r", "-o", "name,property,value", PROPS, pool],
        capture_output=True,
        text=True,
        check=True,
        env={**os.environ, "LC_ALL": "C"},
    ).stdout


def file_state(path: str) -> tuple[str, int, int]:
    st = os.stat(path)
    with open(path, "rb") as fh:
        digest = hashlib.sha256(fh.read()).hexdigest()
    return digest, st.st_size, st.st_mtime_ns


def open_by(pid: int, path: str) -> bool:
    """Whether process `pid` holds `path` open."""
    fd_dir = Path(f"/proc/{pid}/fd")
    for fd in fd_dir.iterdir():
        try:
            if os.readlink(fd) == path:
                return True
        except OSError:
            continue
    return False


@pytest.fixture
def running(pool, tmp_path):
    """The pool converged for two clients and pc-01's writeback exported by tgtd.

    Set up after the pool and so torn down before it: the target (and tgtd) go first.
    """
    cfg = storage_cfg(pool)
    clients = [
        {"name": n, "image": "os", "game_disk": None, "keep_writeback": False}
        for n in (CLIENT, "pc-02")
    ]
    storage.converge_images(cfg, IMAGES, check=False)
    storage.converge_writebacks(cfg, IMAGES, clients, check=False, sessions={})
    # "Untouched" is judged by mtime against the creation second.
    time.sleep(1.05)
    path = layout.writeback_backing(cfg, CLIENT, "system")[0]
    inventory = write_inventory(tmp_path / "inventory", cfg)
    with tgt_in_netns(tmp_path) as tgt:
        tgt.tgtadm("--op", "new", "--mode", "target", "--tid", "1", "-T", TARGET)
        tgt.tgtadm(
            "--op", "new", "--mode", "logicalunit", "--tid", "1", "--lun", str(LUN), "-b", path
        )
        tgt.tgtadm("--op", "bind", "--mode", "target", "--tid", "1", "--initiator-name", INITIATOR)
        yield cfg, tgt, inventory, path


def test_apply_is_refused_while_a_real_initiator_is_logged_in_then_succeeds(running):
    cfg, tgt, inventory, path = running
    apply = ("-e", "op=apply", "-e", f"client={CLIENT}", "-e", "comment='GPU driver'")
    # The PC writes through iSCSI, as a booted OS would.
    wrote = tgt.qemu_io(["write -P 0xab 1M 1M"], INITIATOR, TARGET, LUN)
    assert wrote.returncode == 0 and "wrote" in wrote.stdout, wrote.stdout + wrote.stderr
    assert open_by(tgt.proc.pid, path), "tgtd's LUN holds the writeback file open"

    with tgt.session(INITIATOR, TARGET, LUN) as held:
        before = pool_state(cfg["pool"]), file_state(path)
        # Check mode first: the same refusal, and it never reaches a destroy (a real
        # apply that failed to refuse would re-clone under tgtd's open file and wedge
        # zfs-fuse for everyone).
        result, out = machine_op(inventory, tgt, *apply, check=True)
        assert result.get("failed"), out
        assert f"apply {CLIENT}: the client is running" in result["msg"], out
        result, out = machine_op(inventory, tgt, *apply)
        assert result.get("failed") and result.get("changed") is False, out
        assert result["msg"] == (
            f"apply {CLIENT}: the client is running (live iSCSI session on {TARGET} "
            f"from {INITIATOR}): shut it down first, then apply"
        )
        assert held.alive(), "the refusal must not drop the session"
        assert (pool_state(cfg["pool"]), file_state(path)) == before
        assert "@v2" not in before[0]

    # The PC is off: no session, but the LUN still holds the file.  The apply re-clones
    # the writeback, so it closes the LUN around the re-clone itself (ggnet.lun_release;
    # without that, zfs-fuse would keep the dataset busy until its daemon restarts).
    assert f"Initiator: {INITIATOR} " not in tgt.show()
    assert open_by(tgt.proc.pid, path), "the configured LUN holds the writeback open"

    result, out = machine_op(inventory, tgt, *apply)
    assert not result.get("failed") and result["changed"] is True, out
    assert result["version"] == "v2"
    image = layout.image_dataset(cfg, "os")
    after = pool_state(cfg["pool"])
    assert f"{image}@v2\tggnet:comment\tGPU driver" in after
    # a candidate: the image's pointer stays where it was (no other PC boots v2)
    assert f"{image}@v2\tggnet:state\tcandidate" in after
    assert f"{image}\tggnet:current\tv2" not in after
    wb = layout.writeback_dataset(cfg, CLIENT, "system")
    assert f"{wb}\torigin\t{image}@v2" in after
    # The re-cloned writeback carries what the PC wrote; the other PC's is untouched.
    with open(path, "rb") as fh:
        fh.seek(1 << 20)
        assert fh.read(1 << 20) == b"\xab" * (1 << 20)
    with open(layout.writeback_backing(cfg, "pc-02", "system")[0], "rb") as fh:
        fh.seek(1 << 20)
        assert fh.read(16) == bytes(16)

    # The same LUN is back on the new clone (a new file at the same path), open again,
    # and the PC reads the new version through iSCSI with nothing re-exported by hand.
    shown = tgt.show()
    assert f"LUN: {LUN}" in shown and f"Backing store path: {path}" in shown, shown
    assert open_by(tgt.proc.pid, path), "the LUN was not put back on the new clone"
    read = tgt.qemu_io(["read -P 0xab 1M 1M"], INITIATOR, TARGET, LUN)
    assert read.returncode == 0 and "read 1048576/1048576" in read.stdout, read.stdout


def test_unknown_client_and_unreadable_sessions_are_refused_through_the_playbook(running):
    cfg, tgt, inventory, path = running
    before = pool_state(cfg["pool"]), file_state(path)
    proc_out = machine_op_unknown(inventory, tgt)
    assert "unknown client pc-99: not in the ggnet_clients group of the inventory" in proc_out
    # A tgtd that cannot be asked (wrong control port) is "unknown", never "nobody runs".
    wrong = type(tgt)(tgt.netns, tgt.control_port + 1, tgt.workdir)
    result, out = machine_op(
        inventory, wrong, "-e", "op=apply", "-e", f"client={CLIENT}", "-e", "comment=x"
    )
    assert result.get("failed"), out
    assert "cannot tell whether it is running" in result["msg"], out
    assert (pool_state(cfg["pool"]), file_state(path)) == before


def machine_op_unknown(inventory: Path, tgt) -> str:
    """An unknown client stops at the playbook's own check, before the module runs."""
    env = {**os.environ, "ANSIBLE_CONFIG": str(REPO / "ansible.cfg"), "NO_COLOR": "1"}
    proc = subprocess.run(
        [
            str(VENV_BIN / "ansible-playbook"),
            *("-i", str(inventory), str(REPO / "playbooks" / "machine.yml")),
            *("-e", "op=apply", "-e", "client=pc-99", "-e", "comment=x"),
        ],
        capture_output=True,
        text=True,
        env={**env, "PATH": f"{VENV_BIN}:{os.environ['PATH']}"},
        cwd=REPO,
        timeout=600,
        check=False,
    )
    assert proc.returncode != 0
    return proc.stdout + proc.stderr
