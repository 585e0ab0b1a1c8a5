"""The boot-test job on a real zfs-fuse pool and a real tgtd (in a private netns): the
throwaway clone of the candidate, its throwaway target with a fresh CHAP secret, the
state and record it leaves, and that nothing of it is left after.

The VM is the one part not run: the runner is a FAKE that, instead of booting qemu,
logs in to the target it was handed with a real initiator (qemu-io's iSCSI driver,
with the CHAP credentials it got) and reads the disk, the way the VM's firmware would
read its boot sector.  The real-qemu end-to-end comes with the VM runner
(ggnet.boot_test)."""

from __future__ import annotations

import json
import subprocess

import pytest
from ggnet import layout, rollout, storage
from ggnet.iscsi import lun_number
from ggnet.storage import boot_test_job as job
from ggnet.storage.properties import P_BOOT_TEST, P_STATE
from ggnet.zfs import Zfs
from ggnet_testing import boot_tests as bt
from ggnet_testing.playbook import run_module
from ggnet_testing.tgt_netns import PREFIX, tgt_in_netns
from ggnet_testing.zfs_pool import pool_fixture, storage_cfg, zfs_daemon_fixture  # noqa: F401  (fixtures)

pytestmark = pytest.mark.integration

IMAGES = {"os": {"size": "32M", "kind": "system"}}
MARK = b"GGNET-V2-BOOT-SECTOR"
CLIENT = bt.pc()


@pytest.fixture
def candidate(pool):
    """A pool with os@v1 (promoted) and os@v2, a candidate whose disk starts with MARK."""
    cfg = storage_cfg(pool)
    storage.converge_images(cfg, IMAGES, check=False)
    storage.converge_writebacks(cfg, IMAGES, [CLIENT], check=False, sessions={})
    disk = layout.writeback_backing(cfg, "pc-01", "system")[0]
    with open(disk, "r+b") as fh:
        fh.write(MARK)
    storage.apply_writeback(cfg, IMAGES, [CLIENT], "pc-01", "new driver", sessions={})
    return cfg


@pytest.fixture
def tgt(tmp_path):
    with tgt_in_netns(tmp_path) as t:
        yield t


class FakeRunnerReadingTheLun:
    """A FAKE VM runner: reads the first sector through the target with a real
    initiator holding a session (qemu-io), and judges by the MARK it finds."""

    def __init__(self, tgt):
        self.tgt = tgt
        self.fields: dict = {}
        self.logged_in_during: bool | None = None
        self.logged_in_before: bool | None = None

    def __call__(self, fields, logged_in, progress):
        self.fields = dict(fields)
        self.logged_in_before = logged_in()
        target = (fields["initiator_iqn"], fields["target_iqn"], lun_number("tgt", 0))
        creds = {"user": fields["chap_user"], "secret": fields["chap_secret"]}
        with self.tgt.session(*target, **creds):
            self.logged_in_during = logged_in()
        read = self.tgt.qemu_io(["read -v 0 512"], *target, **creds)
        progress("read the first sector")
        # qemu-io -v prints "00000000:  47 47 4e 45 ...": the MARK's bytes in hex
        found = MARK[:8].hex(" ") in read.stdout
        return _FakeResult(
            passed=found,
            reason="marker seen" if found else f"no marker (rc {read.returncode})",
            stages={"started": 0.1, "login": 0.2, "marker": 0.3},
            screenshot=None,
            serial_tail=read.stdout[-200:],
        )


class _FakeResult:
    def __init__(self, **kw):
        self.__dict__.update(kw)


def _setup(tgt, tmp_path) -> job.Setup:
    return bt.job_setup(tgt, tmp_path / "boot-tests")


def _state(cfg, version):
    snap = layout.version_snapshot(cfg, "os", version)
    return Zfs().get([snap], [P_STATE, P_BOOT_TEST])[snap]


def test_a_candidate_booted_through_the_real_target_becomes_tested(candidate, tgt, tmp_path):
    cfg = candidate
    runner = FakeRunnerReadingTheLun(tgt)
    result = job.boot_test(cfg, IMAGES, "os", "v2", _setup(tgt, tmp_path), runner=runner)
    # the runner reached the clone of v2 through a target of its own, with CHAP
    assert runner.fields["target_iqn"] == f"{PREFIX}:boot-test-target.os"
    assert runner.logged_in_before is False and runner.logged_in_during is True
    props = _state(cfg, "v2")
    assert props[P_STATE] == rollout.TESTED
    record = json.loads(props[P_BOOT_TEST])
    assert record["passed"] is True and record["state"] == "tested"
    assert result.info["state"] == "tested"
    # nothing left: no target, no clone, no secret in what it answers
    assert "boot-test" not in tgt.show()
    assert not Zfs().exists(layout.boot_test_dataset(cfg, "os"))
    assert runner.fields["chap_secret"] not in json.dumps(result.as_dict())
    # and the PCs' side is untouched: pc-01 still has its writeback, v1 is served
    state = storage.read_state(cfg, Zfs())
    assert list(state.writebacks) == [("pc-01", "system")]
    # tested may now go to canary without force
    storage.set_state(cfg, IMAGES, "os", "v2", "canary")


def test_a_wrong_secret_is_refused_by_the_target(candidate, tgt, tmp_path):
    """The target really checks the fresh secret: a login with another one fails."""
    cfg = candidate
    seen: dict = {}

    def fake_runner_with_a_wrong_secret(fields, logged_in, progress):
        target = (fields["initiator_iqn"], fields["target_iqn"], lun_number("tgt", 0))
        seen["right"] = tgt.inq(*target, fields["chap_user"], fields["chap_secret"]).returncode
        seen["wrong"] = tgt.inq(*target, fields["chap_user"], "Wrong0Secret12").returncode
        seen["pc"] = tgt.inq(f"{PREFIX}:initiator.pc-01", *target[1:], fields["chap_user"],
                             fields["chap_secret"]).returncode  # fmt: skip
        return _FakeResult(passed=False, reason="no marker", stages={}, screenshot=None,
                           serial_tail="")  # fmt: skip

    result = job.boot_test(
        cfg, IMAGES, "os", "v2", _setup(tgt, tmp_path), runner=fake_runner_with_a_wrong_secret
    )
    assert seen["right"] == 0 and seen["wrong"] != 0 and seen["pc"] != 0
    assert _state(cfg, "v2")[P_STATE] == rollout.REJECTED
    assert result.info["boot_test"]["passed"] is False
    assert "boot-test" not in tgt.show()
    assert not Zfs().exists(layout.boot_test_dataset(cfg, "os"))


def test_a_crashed_runs_target_and_clone_are_cleaned_first(candidate, tgt, tmp_path):
    cfg = candidate
    setup = _setup(tgt, tmp_path)

    def fake_runner_that_dies(fields, logged_in, progress):
        raise KeyboardInterrupt  # as a killed job: finally still tears down

    with pytest.raises(KeyboardInterrupt):
        job.boot_test(cfg, IMAGES, "os", "v2", setup, runner=fake_runner_that_dies)
    assert "boot-test" not in tgt.show()
    assert not Zfs().exists(layout.boot_test_dataset(cfg, "os"))
    assert _state(cfg, "v2")[P_STATE] == rollout.CANDIDATE
    # a run killed before its finally (SIGKILL): what it left is removed by the next
    dataset = layout.boot_test_dataset(cfg, "os")
    subprocess.run(
        ["zfs", "clone", "-p", layout.version_snapshot(cfg, "os", "v2"), dataset], check=True
    )
    iqn = job.target_iqn("os", PREFIX)
    tgt.tgtadm("--op", "new", "--mode", "target", "--tid", "9", "--targetname", iqn)
    runner = FakeRunnerReadingTheLun(tgt)
    result = job.boot_test(cfg, IMAGES, "os", "v2", setup, runner=runner)
    left = [a.describe() for a in result.actions if a.detail == "left by an earlier run"]
    assert [a["action"] for a in left] == ["delete_target", "destroy"]
    assert runner.logged_in_during is True
    assert _state(cfg, "v2")[P_STATE] == rollout.TESTED
    assert "boot-test" not in tgt.show() and not Zfs().exists(dataset)


def test_the_module_in_check_mode_plans_and_changes_nothing(candidate, tgt, tmp_path):
    """ggnet_image_op op=boot_test as image.yml runs it (--check: no VM is needed)."""
    cfg = candidate
    before = _state(cfg, "v2")
    params = {
        "op": "boot_test",
        "image": "os",
        "version": "v2",
        "storage": cfg,
        "images": IMAGES,
        "iscsi_backend": "tgt",
        "iscsi_options": {"control_port": tgt.control_port, "netns": tgt.netns},
        "iqn_prefix": PREFIX,
        "boot_test": {"firmware": "uefi", "timeout": "2m"},
        "state_dir": str(tmp_path / "boot-tests"),
    }
    result, out = run_module("ggnet_image_op", params, tmp_path, check=True)
    assert not result.get("failed"), out
    assert [a["action"] for a in result["actions"]] == [
        "clone", "create_target", "boot", "delete_target", "destroy", "set_state",
    ]  # fmt: skip
    assert "VM (uefi), 120 s" in json.dumps(result["actions"])
    assert _state(cfg, "v2") == before and "boot-test" not in tgt.show()
    # a bad knob is refused naming key and value
    params["boot_test"] = {"memory": 8}
    result, out = run_module("ggnet_image_op", params, tmp_path, check=True)
    assert result.get("failed") and "ggnet_boot_test.memory" in result["msg"], out
    assert "(value: 8)" in result["msg"]
