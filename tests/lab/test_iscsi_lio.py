"""LIO for real in the lab VM: targets made by ggnet_targets (rtslib-fb, the VM's system
python3), checked by an initiator inside the VM, and restored after a reboot.

The initiator is libiscsi's iscsi-inq / iscsi-readcapacity16 run in the VM against its
own portal, so no traffic leaves the lab namespace.
"""

from __future__ import annotations

import json
import shlex
import time

import pytest
from ggnet_testing.playbook import run_on_lab

pytestmark = pytest.mark.lab

P = "iqn.2025-01.lan.ggnet"
SECRET = "Lab-chap-secr3t"
WORK = "/var/tmp/ggnet-iscsi-test"


@pytest.fixture(scope="module")
def lio(lab_vm):
    lab_vm.check(
        "modprobe target_core_mod && modprobe iscsi_target_mod && "
        "(mountpoint -q /sys/kernel/config || mount -t configfs none /sys/kernel/config)"
    )
    lab_vm.check("command -v iscsi-readcapacity16 && /usr/bin/python3 -c 'import rtslib_fb'")
    lab_vm.check(
        f"mkdir -p {WORK} && truncate -s 64M {WORK}/pc-01.img {WORK}/pc-02.img {WORK}/pc-02-game.img"
    )
    yield lab_vm
    lab_vm.ssh(f"rm -rf {WORK}")


def _spec(name, *disks, secret=None):
    out = {
        "name": name,
        "target_iqn": f"{P}:target.{name}",
        "initiator_iqn": f"{P}:initiator.{name}",
        "luns": [{"path": f"{WORK}/{d}", "kind": "file"} for d in disks],
    }
    if secret:
        out["chap_secret"] = secret
    return out


def _params(targets, **kw):
    return {"backend": "lio", "targets": targets, "iqn_prefix": P, "portal": "127.0.0.1", **kw}


def _inq(lab_vm, spec, initiator=None, secret=None, lun=0):
    cred = f"{spec['initiator_iqn']}%{secret}@" if secret else ""
    url = f"iscsi://{cred}127.0.0.1/{spec['target_iqn']}/{lun}"
    return lab_vm.ssh(
        f"iscsi-readcapacity16 -i {shlex.quote(initiator or spec['initiator_iqn'])} {shlex.quote(url)}"
    )


def _write_back(lab_vm) -> dict[str, bool]:
    """Whether each of the test's file backstores has LIO's write cache on."""
    probe = (
        "import json, rtslib_fb; print(json.dumps({so.udev_path.rsplit('/', 1)[1]: "
        f"so.write_back for so in rtslib_fb.RTSRoot().storage_objects "
        f"if so.udev_path.startswith('{WORK}/')}}))"
    )
    return json.loads(lab_vm.check(f"/usr/bin/python3 -c {shlex.quote(probe)}"))


def _reboot(lab_vm) -> None:
    """Cold-reset the VM through qemu's monitor: same disk, fresh kernel and configfs.

    (A guest `systemctl reboot` ends the lab's qemu, and the lab's start makes a new
    overlay disk, which would lose the saved configuration along with everything else.)
    """
    import socket

    from ggnet_lab import vm

    lab_vm.check("sync")
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as mon:
        mon.connect(str(vm.files().monitor))
        mon.sendall(b"system_reset\n")
        time.sleep(1)
    for _ in range(30):
        if not vm.ssh_ok():
            break
        time.sleep(1)
    vm.wait_for_ssh()


def test_lio_targets_login_acl_chap_and_restore_after_reboot(lio, tmp_path):
    pc1 = _spec("pc-01", "pc-01.img", secret=SECRET)
    pc2 = _spec("pc-02", "pc-02.img", "pc-02-game.img")
    # The lab converge may have made targets of its own under the same prefix: this
    # test owns the whole set while it runs (they come back at the next converge).
    first = run_on_lab("ggnet_targets", _params([pc1, pc2], force=True), tmp_path)
    # (Unchanged when an earlier run's targets came back with the VM.)
    assert not first.get("failed"), first
    assert SECRET not in json.dumps(first)
    again = run_on_lab("ggnet_targets", _params([pc1, pc2]), tmp_path)
    assert again.get("changed") is False, again

    assert _write_back(lio) == {"pc-01.img": True, "pc-02.img": True, "pc-02-game.img": True}
    assert _inq(lio, pc1, secret=SECRET).returncode == 0
    assert _inq(lio, pc1, secret="Wrong-secret-99").returncode != 0
    assert _inq(lio, pc2).returncode == 0
    assert _inq(lio, pc2, lun=1).returncode == 0  # the game disk is LIO's LUN 1
    assert _inq(lio, pc2, initiator=pc1["initiator_iqn"]).returncode != 0

    assert lio.check("stat -c %a /etc/rtslib-fb-target/saveconfig.json").strip() == "600"
    lio.check("systemctl enable rtslib-fb-targetctl.service")
    _reboot(lio)
    assert f"{P}:target.pc-01" in lio.check("ls /sys/kernel/config/target/iscsi")
    assert set(_write_back(lio).values()) == {True}  # restored with their write cache
    after = run_on_lab("ggnet_targets", _params([pc1, pc2]), tmp_path)
    assert after.get("changed") is False, after
    assert _inq(lio, pc1, secret=SECRET).returncode == 0
    assert _inq(lio, pc1, secret="Wrong-secret-99").returncode != 0
    assert _inq(lio, pc2, initiator=pc1["initiator_iqn"]).returncode != 0
    run_on_lab("ggnet_targets", _params([]), tmp_path)
