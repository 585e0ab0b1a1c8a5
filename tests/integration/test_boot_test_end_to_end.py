"""The boot test end to end, with nothing faked: the job (storage.boot_test_job) clones
a candidate on a real zfs-fuse pool and makes its throwaway target on a real tgtd in a
private netns, and the VM runner (ggnet.boot_test) boots that target in qemu with the
NIC's iPXE (TCG).

- A version whose boot program hangs is rejected, keeps a screenshot of the VM's
  screen, and never reaches a PC: a reset after it still gives the PC the old version.
- A good version becomes tested, with its stages in order, and may go to canary.

Each version is what a PC wrote: bootprog's disk copied onto pc-01's writeback and
applied (a candidate), as an operator's update would be made."""

from __future__ import annotations

import json
import shutil

import pytest
from ggnet import layout, rollout, storage
from ggnet.boot_test_knobs import Knobs
from ggnet.storage import boot_test_job as job
from ggnet.storage.properties import P_BOOT_TEST, P_STATE
from ggnet.zfs import Zfs
from ggnet_testing import boot_tests as bt
from ggnet_testing.tgt_netns import tgt_in_netns
from ggnet_testing.zfs_pool import pool_fixture, storage_cfg, zfs_daemon_fixture  # noqa: F401  (fixtures)

pytestmark = pytest.mark.integration

SIZE = "32M"
IMAGES = {"os": {"size": SIZE, "kind": "system"}}
CLIENT = bt.pc()
# A good BIOS boot reaches its marker in about 6 s here (docs/storage.md); a hang is
# judged at the timeout, so keep it short but well above that.
TIMEOUT = 30


@pytest.fixture
def room(pool, tmp_path):
    if shutil.which("qemu-system-x86_64") is None:
        pytest.fail("qemu-system-x86_64 is missing: the bootstrap installs qemu-system-x86")
    cfg = storage_cfg(pool)
    storage.converge_images(cfg, IMAGES, check=False)
    storage.converge_writebacks(cfg, IMAGES, [CLIENT], check=False, sessions={})
    with tgt_in_netns(tmp_path) as tgt:
        yield cfg, tgt


def write_version(cfg, tmp_path, identity: str, hang=()) -> str:
    bt.write_bootprog_disk(cfg, IMAGES, [CLIENT], "pc-01", identity, tmp_path, hang)
    return bt.apply_version(cfg, IMAGES, [CLIENT], "pc-01", identity)


def props(cfg, version: str) -> dict:
    snap = layout.version_snapshot(cfg, "os", version)
    got = Zfs().get([snap], [P_STATE, P_BOOT_TEST])[snap]
    return {"state": got[P_STATE], "record": json.loads(got[P_BOOT_TEST])}


def served_origin(cfg) -> str:
    """The version pc-01's writeback is a clone of after a reset (its next boot)."""
    storage.reset(cfg, IMAGES, [CLIENT], "pc-01", sessions={}, boot=True)
    return bt.origin(cfg, "pc-01")


def setup(tgt, tmp_path) -> job.Setup:
    return bt.job_setup(tgt, tmp_path / "boot-tests", Knobs(firmware="bios", timeout=TIMEOUT))


def test_a_hanging_version_is_rejected_and_never_served(room, tmp_path):
    cfg, tgt = room
    served = served_origin(cfg)
    bad = write_version(cfg, tmp_path, "hangs", hang=("bios", "uefi"))
    result = job.boot_test(cfg, IMAGES, "os", bad, setup(tgt, tmp_path))

    got = props(cfg, bad)
    assert got["state"] == rollout.REJECTED, got
    record = got["record"]
    assert record["passed"] is False and record["state"] == rollout.REJECTED
    assert f"within {TIMEOUT}" in record["reason"], record["reason"]
    # it got as far as the disk: the VM logged in, and the program said it hangs
    assert "login" in record["stages"] and "marker" not in record["stages"], record
    assert "GGNET-HANG fw=bios" in result.info["serial_tail"]
    shot = job.screenshot_path(tmp_path / "boot-tests", "os", bad)
    assert record["screenshot"] == str(shot)
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # nothing of the test is left, and the PC still boots what it booted before
    assert "boot-test" not in tgt.show()
    assert not Zfs().exists(layout.boot_test_dataset(cfg, "os"))
    assert served_origin(cfg) == served != bad
    with pytest.raises(storage.StorageError, match="rejected"):
        storage.set_state(cfg, IMAGES, "os", bad, rollout.CANARY)


def test_a_good_version_becomes_tested_and_may_go_to_canary(room, tmp_path):
    cfg, tgt = room
    good = write_version(cfg, tmp_path, "boots")
    job.boot_test(cfg, IMAGES, "os", good, setup(tgt, tmp_path))

    got = props(cfg, good)
    assert got["state"] == rollout.TESTED, got
    record = got["record"]
    assert record["passed"] is True and record["screenshot"] is None
    stages = record["stages"]
    assert 0 <= stages["started"] <= stages["login"] <= stages["marker"] < TIMEOUT, stages
    assert "boot-test" not in tgt.show()
    storage.set_state(cfg, IMAGES, "os", good, rollout.CANARY)
