"""Replication of image versions between two real zfs-fuse pools (ggnet.replication).

Both ends run on this machine: the source pool is the shared `pool` fixture, the target
a second pool made here.  zfs-fuse has no resumable receive, so a killed transfer must
restart cleanly; the resume path (OpenZFS) is covered by the planner's unit tests.
"""

from __future__ import annotations

import os
import signal
import subprocess

import pytest
from ggnet import layout, storage
from ggnet.replication import (
    FULL,
    INCREMENTAL,
    DivergedError,
    ReplicaError,
    ReplicationError,
    Replicator,
    Side,
)
from ggnet.storage.properties import P_BOOT_TEST, P_STATE, format_boot_test
from ggnet.zfs import Zfs
from ggnet_testing.zfs_pool import (  # noqa: F401  (fixtures)
    destroy_pool,
    make_pool,
    pool_fixture,
    storage_cfg,
    zfs_daemon_fixture,
)

pytestmark = pytest.mark.integration

IMAGES = {"os": {"size": "16M", "kind": "system"}}
MIB = 1 << 20


@pytest.fixture
def target_pool(zfs_daemon, tmp_path):
    base = tmp_path / "target"
    base.mkdir()
    cfg = make_pool(base)
    try:
        yield cfg
    finally:
        destroy_pool(cfg)


@pytest.fixture
def sides(pool, target_pool):
    """The source with image `os` (v1, empty), the target with its roots and no image."""
    src_cfg, tgt_cfg = storage_cfg(pool), storage_cfg(target_pool)
    storage.converge_images(src_cfg, IMAGES, check=False)
    storage.converge_images(tgt_cfg, {}, check=False)
    return src_cfg, tgt_cfg


def new_version(cfg, version, mib, offset_mib=0):
    """Write `mib` MiB of random data into the image's disk, then snapshot a version."""
    path, _ = layout.image_backing(cfg, "os")
    with open(path, "r+b") as disk:
        disk.seek(offset_mib * MIB)
        disk.write(os.urandom(mib * MIB))
        disk.flush()
        os.fsync(disk.fileno())
    storage.snapshot_version(cfg, "os", version, f"test {version}", Zfs())


def guids(cfg):
    raw = Zfs().get([layout.image_dataset(cfg, "os")], ["guid"], depth=1)
    return {name.partition("@")[2]: p["guid"] for name, p in raw.items() if "@" in name}


def datasets(cfg):
    """Every dataset and snapshot of the pool, hidden %recv clones included where
    zfs-fuse lists them."""
    out = subprocess.run(
        ["zfs", "list", "-H", "-r", "-t", "all", "-o", "name", layout.pool(cfg)],
        capture_output=True,
        text=True,
        check=True,
        env={**os.environ, "LC_ALL": "C"},
    ).stdout
    return sorted(out.split())


class KillSendAfter:
    """Progress callback: SIGKILL the `zfs send` once `limit` bytes went through."""

    def __init__(self, limit):
        self.limit = limit
        self.killed_at = None

    def __call__(self, progress):
        if self.killed_at is None and progress.bytes >= self.limit:
            self.killed_at = progress.bytes
            os.kill(progress.send_pid, signal.SIGKILL)


def test_full_send_then_incremental_and_the_guid_check(sides):
    src_cfg, tgt_cfg = sides
    r = Replicator(Side(src_cfg), Side(tgt_cfg))
    assert not r.source.resumable() and not r.target.resumable()  # zfs-fuse
    with pytest.raises(ReplicaError, match=r"image os version v1 .*target guid none"):
        r.check_bootable("os", "v1")
    before = r.metrics("os", now=4e9)
    assert before["bytes_behind_method"] == "referenced" and before["bytes_behind"] > 0
    assert before["lag_seconds"] > 0 and before["last_success_timestamp"] is None

    first = r.replicate("os")
    assert [s.kind for s in first.steps_done] == [FULL]
    assert guids(tgt_cfg) == guids(src_cfg) and len(guids(src_cfg)) == 1
    r.check_bootable("os", "v1")

    new_version(src_cfg, "v2", 2)
    behind = r.metrics("os")
    assert behind["newest_replicated"] == "v1" and not behind["in_sync"]
    assert behind["bytes_behind"] is None and behind["bytes_behind_method"] == "unknown"
    second = r.replicate("os")
    assert [(s.kind, s.base, s.version) for s in second.steps_done] == [(INCREMENTAL, "v1", "v2")]
    assert second.bytes > 2 * MIB
    assert guids(tgt_cfg) == guids(src_cfg) and set(guids(src_cfg)) == {"v1", "v2"}
    r.check_bootable("os", "v2")
    # The version's ggnet properties came along; a state change on the source follows,
    # with the boot test's result that made it.
    record = format_boot_test({"passed": False, "reason": "no marker", "state": "rejected"})
    Zfs().set(
        layout.version_snapshot(src_cfg, "os", "v2"), {P_STATE: "rejected", P_BOOT_TEST: record}
    )
    third = r.replicate("os")
    assert third.steps_done == [] and third.as_dict()["changed"] is False
    tgt_snap = layout.version_snapshot(tgt_cfg, "os", "v2")
    got = Zfs().get([tgt_snap], [P_STATE, P_BOOT_TEST])[tgt_snap]
    assert got[P_STATE] == "rejected" and got[P_BOOT_TEST] == record
    after = r.metrics("os")
    assert after["in_sync"] and after["lag_seconds"] == 0 and after["bytes_behind"] == 0
    assert after["last_success_timestamp"] is not None


def test_a_killed_full_send_restarts_with_no_operator_action(sides):
    src_cfg, tgt_cfg = sides
    new_version(src_cfg, "v2", 6)
    kill = KillSendAfter(2 * MIB)
    r = Replicator(Side(src_cfg), Side(tgt_cfg), progress=kill)
    with pytest.raises(ReplicationError, match=r"image os: full send of @v2 failed after") as err:
        r.replicate("os", wanted=["v2"])
    assert "the send died" in str(err.value) and "next run starts this step again" in str(err.value)
    assert kill.killed_at is not None
    # Nothing half-received is left, and nothing of it is bootable.
    assert not any("/images/os" in d for d in datasets(tgt_cfg)), datasets(tgt_cfg)
    with pytest.raises(ReplicaError, match=r"image os version v2 .*source guid \d+"):
        r.check_bootable("os", "v2")
    again = r.replicate("os", wanted=["v2"])
    assert [s.kind for s in again.steps_done] == [FULL]
    assert guids(tgt_cfg) == {"v2": guids(src_cfg)["v2"]}
    r.check_bootable("os", "v2")


def test_a_killed_incremental_restarts_and_a_diverged_replica_is_refused(sides):
    src_cfg, tgt_cfg = sides
    r = Replicator(Side(src_cfg), Side(tgt_cfg))
    r.replicate("os")
    new_version(src_cfg, "v2", 6)
    kill = KillSendAfter(2 * MIB)
    r.progress = kill
    with pytest.raises(ReplicationError, match=r"incremental @v1 -> @v2 failed after"):
        r.replicate("os")
    assert kill.killed_at is not None
    left = datasets(tgt_cfg)
    assert layout.version_snapshot(tgt_cfg, "os", "v2") not in left
    assert not any("%recv" in d for d in left), left
    with pytest.raises(ReplicaError, match=r"v2 is not bootable"):
        r.check_bootable("os", "v2")
    r.progress = None
    again = r.replicate("os")
    assert [(s.kind, s.version) for s in again.steps_done] == [(INCREMENTAL, "v2")]
    r.check_bootable("os", "v2")

    # A replica with its own v3 (another guid): refused, nothing changed, and the guid
    # check refuses that snapshot; force replaces it with the source's.
    Zfs().snapshot(layout.version_snapshot(tgt_cfg, "os", "v3"))
    new_version(src_cfg, "v3", 1)
    before = datasets(tgt_cfg)
    with pytest.raises(DivergedError, match=r"@v3 has guid \d+ on the target but \d+"):
        r.replicate("os")
    assert datasets(tgt_cfg) == before
    with pytest.raises(ReplicaError, match=r"different guid.*source guid \d+, target guid \d+"):
        r.check_bootable("os", "v3")
    forced = r.replicate("os", force=True)
    assert forced.plan.destroy == ["v3"]
    assert guids(tgt_cfg) == guids(src_cfg)
    r.check_bootable("os", "v3")
