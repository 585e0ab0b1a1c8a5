"""Storage logic against a real zfs-fuse pool: every operation, check mode, refusals."""

from __future__ import annotations

import os
import shutil
import subprocess
import time

import pytest
from ggnet import layout, storage
from ggnet.zfs import Zfs
from ggnet_testing.zfs_pool import pool_fixture, storage_cfg, zfs_daemon_fixture  # noqa: F401  (fixtures)

from ggnet_api.snapshot import Snapshot
from ggnet_cli import images as images_cli

pytestmark = pytest.mark.integration

IMAGES = {"os": {"size": "32M", "kind": "system"}, "games": {"size": "16M", "kind": "data"}}


def clients(n=3, **extra):
    return [
        {
            "name": f"pc-{i:02d}",
            "image": "os",
            "game_disk": "games" if i == 1 else None,
            "keep_writeback": False,
            "target_iqn": f"iqn.2024-01.test:pc-{i:02d}",
            **extra,
        }
        for i in range(1, n + 1)
    ]


def snapshot_of_pool(cfg):
    """Everything a change could touch: names, origins, ggnet properties."""
    raw = Zfs().get([cfg["pool"]], storage.STATE_PROPS, recursive=True)
    skip = {"used", "available", "creation"}
    return {n: {k: v for k, v in p.items() if k not in skip} for n, p in raw.items()}


def write(path, data, offset=0):
    with open(path, "r+b") as f:
        f.seek(offset)
        f.write(data)


def read(path, size, offset=0):
    with open(path, "rb") as f:
        f.seek(offset)
        return f.read(size)


def disk(cfg, client, role="system"):
    return layout.writeback_backing(cfg, client, role)[0]


@pytest.fixture
def ready(pool):
    cfg = storage_cfg(pool)
    storage.converge_images(cfg, IMAGES, check=False)
    storage.converge_writebacks(cfg, IMAGES, clients(), check=False, sessions={})
    # Writebacks are judged untouched by mtime against their creation second.
    time.sleep(1.05)
    return cfg


def test_converge_creates_layout_then_second_run_changes_nothing(pool):
    cfg = storage_cfg(pool)
    first = storage.converge_images(cfg, IMAGES, check=False)
    assert [a.action for a in first.actions].count("create_image") == 2
    again = storage.converge_images(cfg, IMAGES, check=False)
    assert again.changed is False and again.info["unlisted"] == []
    # An image dropped from the inventory is kept and reported, never destroyed.
    fewer = {k: v for k, v in IMAGES.items() if k != "games"}
    dropped = storage.converge_images(cfg, fewer, check=False)
    assert dropped.changed is False and dropped.info["unlisted"] == ["games"]
    assert layout.image_dataset(cfg, "games") in Zfs().get(
        [layout.images_root(cfg)], ["name"], depth=1
    )
    wbs = storage.converge_writebacks(cfg, IMAGES, clients(), check=False, sessions={})
    assert len([a for a in wbs.actions if a.action == "create_writeback"]) == 4
    again = storage.converge_writebacks(cfg, IMAGES, clients(), check=False, sessions={})
    assert again.changed is False and again.actions == []
    props = Zfs().get(
        [layout.writeback_dataset(cfg, "pc-01", "game")], ["origin", "quota", "ggnet:client"]
    )
    got = props[layout.writeback_dataset(cfg, "pc-01", "game")]
    assert got["origin"] == layout.version_snapshot(cfg, "games", "v1")
    assert got["ggnet:client"] == "pc-01"
    assert int(got["quota"]) == 64 << 20


def test_a_pool_from_before_the_disks_record_is_read_right_and_recorded_once(ready):
    """Older code made writebacks without ggnet:disks on the client datasets."""
    cfg = ready
    for client in clients():
        subprocess.run(
            ["zfs", "inherit", storage.P_DISKS, layout.client_dataset(cfg, client["name"])],
            check=True,
        )
    before = snapshot_of_pool(cfg)
    planned = storage.converge_writebacks(cfg, IMAGES, clients(), check=True, sessions={})
    assert [(a.action, a.client) for a in planned.actions] == [
        ("record_disks", "pc-01"),
        ("record_disks", "pc-02"),
        ("record_disks", "pc-03"),
    ]
    assert planned.after == {
        "pc-01/system": layout.version_snapshot(cfg, "os", "v1"),
        "pc-01/game": layout.version_snapshot(cfg, "games", "v1"),
        "pc-02/system": layout.version_snapshot(cfg, "os", "v1"),
        "pc-03/system": layout.version_snapshot(cfg, "os", "v1"),
    }
    assert snapshot_of_pool(cfg) == before
    storage.converge_writebacks(cfg, IMAGES, clients(), check=False, sessions={})
    record = Zfs().get([layout.client_dataset(cfg, "pc-01")], [storage.P_DISKS])
    assert record[layout.client_dataset(cfg, "pc-01")][storage.P_DISKS] == (
        f"game={layout.version_snapshot(cfg, 'games', 'v1')},{64 << 20} "
        f"system={layout.version_snapshot(cfg, 'os', 'v1')},{64 << 20}"
    )
    zfs = Zfs()
    again = storage.converge_writebacks(cfg, IMAGES, clients(), check=False, sessions={}, zfs=zfs)
    assert again.changed is False
    assert [c[1] for c in zfs.log] == ["get"]  # one listing, no per-writeback read


def test_removing_a_client_destroys_its_dataset_and_a_new_one_is_recorded(ready):
    cfg = ready
    fewer = [c for c in clients() if c["name"] != "pc-01"]
    done = storage.converge_writebacks(cfg, IMAGES, fewer, check=False, sessions={})
    assert sorted(a.target for a in done.actions) == [
        layout.writeback_dataset(cfg, "pc-01", "game"),
        layout.writeback_dataset(cfg, "pc-01", "system"),
    ]
    assert not Zfs().exists(layout.client_dataset(cfg, "pc-01"))
    back = storage.converge_writebacks(cfg, IMAGES, clients(), check=False, sessions={})
    assert len(back.actions) == 2
    assert storage.converge_writebacks(cfg, IMAGES, clients(), False, {}).changed is False


def test_check_mode_reports_but_changes_nothing(pool):
    cfg = storage_cfg(pool)
    before = snapshot_of_pool(cfg)
    planned = storage.converge_images(cfg, IMAGES, check=True)
    assert planned.changed and snapshot_of_pool(cfg) == before
    assert planned.as_dict()["diff"]["after"]["os"]["version"] == "v1"
    storage.converge_images(cfg, IMAGES, check=False)
    before = snapshot_of_pool(cfg)
    planned = storage.converge_writebacks(cfg, IMAGES, clients(), check=True, sessions={})
    assert len(planned.actions) == 4
    assert snapshot_of_pool(cfg) == before


def test_copy_on_write_isolation(ready):
    cfg = ready
    write(disk(cfg, "pc-01"), b"ONLY-PC-01", 4096)
    assert read(disk(cfg, "pc-01"), 10, 4096) == b"ONLY-PC-01"
    assert read(disk(cfg, "pc-02"), 10, 4096) == bytes(10)
    assert read(layout.image_backing(cfg, "os")[0], 10, 4096) == bytes(10)


def test_reset_discards_writes_and_is_idempotent(ready):
    cfg = ready
    assert storage.reset(cfg, IMAGES, clients(), "pc-02", sessions={}).changed is False
    write(disk(cfg, "pc-02"), b"dirty")
    result = storage.reset(cfg, IMAGES, clients(), "pc-02", sessions={})
    assert [a.action for a in result.actions] == ["reset_writeback"]
    assert read(disk(cfg, "pc-02"), 5) == bytes(5)
    time.sleep(1.05)
    assert storage.reset(cfg, IMAGES, clients(), "pc-02", sessions={}).changed is False


def test_reset_of_an_unchanged_version_is_a_rollback_to_the_base_snapshot(ready):
    cfg = ready
    dataset = layout.writeback_dataset(cfg, "pc-02", "system")
    base = f"{dataset}@{storage.BASE_SNAPSHOT}"
    assert Zfs().exists(base), "every new writeback gets its @ggnet-base"
    creation = Zfs().get([dataset], ["creation"])[dataset]["creation"]
    write(disk(cfg, "pc-02"), b"dirty", 8192)
    zfs = Zfs()
    result = storage.reset(cfg, IMAGES, clients(), "pc-02", boot=True, zfs=zfs)
    assert [a.action for a in result.actions] == ["reset_writeback"]
    assert [c[1] for c in zfs.log if c[1] != "get"] == ["rollback"]
    assert read(disk(cfg, "pc-02"), 5, 8192) == bytes(5)
    # the same dataset (no re-clone), its base still there, and untouched again at once
    assert Zfs().get([dataset], ["creation"])[dataset]["creation"] == creation
    assert Zfs().exists(base)
    assert storage.reset(cfg, IMAGES, clients(), "pc-02", boot=True).changed is False


def test_a_reset_writeback_is_fresh_at_once_for_the_next_reset(ready):
    """The boot path's check after a reset (the one after its session ended): the next
    reset finds it fresh without anything opening the file in between, although the
    kernel still caches the discarded write's mtime (fuse-attr-timeout)."""
    cfg = ready
    write(disk(cfg, "pc-02"), b"dirty", 8192)
    time.sleep(1.05)  # the write's mtime is past the writeback's creation second
    os.stat(disk(cfg, "pc-02"))  # cached by the kernel from here
    assert storage.reset(cfg, IMAGES, clients(), "pc-02", sessions={}).changed
    zfs = Zfs()
    assert storage.reset(cfg, IMAGES, clients(), "pc-02", boot=True, zfs=zfs).changed is False
    assert [c[1] for c in zfs.log] == ["get"]


def test_reset_after_a_version_change_reclones_with_a_new_base(ready):
    cfg = ready
    write(disk(cfg, "pc-01"), b"NEWVER", 4096)
    storage.apply_writeback(cfg, IMAGES, clients(), "pc-01", "new", sessions={}, promote=True)
    write(disk(cfg, "pc-02"), b"dirty")
    zfs = Zfs()
    storage.reset(cfg, IMAGES, clients(), "pc-02", sessions={}, zfs=zfs)
    # the client's ggnet:disks record is cleared before the re-clone and written after
    assert [c[1] for c in zfs.log if c[1] not in ("get", "umount")] == [
        "inherit",
        "destroy",
        "clone",
        "snapshot",
        "set",
    ]
    record = Zfs().get([layout.client_dataset(cfg, "pc-02")], [storage.P_DISKS])
    assert record[layout.client_dataset(cfg, "pc-02")][storage.P_DISKS] == (
        f"system={layout.version_snapshot(cfg, 'os', 'v2')},{64 << 20}"
    )
    dataset = layout.writeback_dataset(cfg, "pc-02", "system")
    assert Zfs().get([dataset], ["origin"])[dataset]["origin"].endswith("@v2")
    assert read(disk(cfg, "pc-02"), 6, 4096) == b"NEWVER"
    # and the next same-version reset is a rollback again
    time.sleep(1.05)
    write(disk(cfg, "pc-02"), b"again", 4096)
    zfs = Zfs()
    storage.reset(cfg, IMAGES, clients(), "pc-02", boot=True, zfs=zfs)
    assert [c[1] for c in zfs.log if c[1] != "get"] == ["rollback"]
    assert read(disk(cfg, "pc-02"), 6, 4096) == b"NEWVER"


def test_a_file_held_open_across_a_rollback_sees_the_rolled_back_content(ready):
    """What a tgtd file-backstore LUN sees across a reset: it opens the disk file once
    and keeps the descriptor across the client's reboots."""
    cfg = ready
    path = disk(cfg, "pc-03")
    fd = os.open(path, os.O_RDWR)
    try:
        os.pwrite(fd, b"\xab" * (1 << 20), 1 << 20)
        os.fsync(fd)
        assert os.pread(fd, 4, 1 << 20) == b"\xab" * 4  # now in the page cache too
        result = storage.reset(cfg, IMAGES, clients(), "pc-03", boot=True)
        assert [a.detail.split()[0] for a in result.actions] == ["rollback"]
        # the old descriptor reads the rolled-back content (no stale pages) ...
        assert os.pread(fd, 4, 1 << 20) == bytes(4)
        assert os.fstat(fd).st_size == 32 << 20
        # ... and its writes land in the live writeback, as a new open sees them
        os.pwrite(fd, b"AFTER", 0)
        os.fsync(fd)
        assert read(path, 5) == b"AFTER"
    finally:
        os.close(fd)


def _cached_pages(path) -> int:
    out = subprocess.run(
        ["fincore", "--noheadings", "--output", "PAGES", str(path)],
        capture_output=True,
        text=True,
        check=True,
    )
    return int(out.stdout.split()[0])


def test_a_reset_drops_the_disk_files_pages_not_the_machines_page_cache(ready, tmp_path):
    """zfs-fuse's own `zfs rollback` ends with `echo 3 > /proc/sys/vm/drop_caches`; the
    boot path's reset drops only the disk file's cached pages instead."""
    if shutil.which("fincore") is None:
        pytest.skip("fincore (util-linux) is not installed")
    cfg = ready
    path = disk(cfg, "pc-02")
    write(path, b"\xcd" * 4096, 2 << 20)
    assert read(path, 4, 2 << 20) == b"\xcd" * 4  # in the page cache, no descriptor held
    other = tmp_path / "other-file"
    other.write_bytes(os.urandom(1 << 20))
    with open(other, "rb+") as f:
        os.fsync(f.fileno())  # clean pages: what a drop_caches would drop
        f.read()
    assert _cached_pages(other) == 256
    result = storage.reset(cfg, IMAGES, clients(), "pc-02", boot=True)
    assert [a.detail.split()[0] for a in result.actions] == ["rollback"]
    # a new open reads the rolled-back content, not the cached pages of the write
    assert read(path, 4, 2 << 20) == bytes(4)
    # another file's cached pages are still there: no machine-wide drop
    assert _cached_pages(other) == 256
    # and the bind over drop_caches stayed inside the rollback's mount namespace
    with open("/proc/self/mountinfo") as f:
        assert " /proc/sys/vm/drop_caches " not in f.read()


def test_apply_makes_a_candidate_then_promote_and_rollback_checked_by_content(ready):
    cfg = ready
    write(disk(cfg, "pc-01"), b"UPDATE-1", 1 << 20)
    applied = storage.apply_writeback(cfg, IMAGES, clients(), "pc-01", "driver 560", sessions={})
    assert applied.info["version"] == "v2" and applied.info["state"] == "candidate"
    # a second apply of the unchanged writeback is a no-op
    again = storage.apply_writeback(cfg, IMAGES, clients(), "pc-01", "driver 560", sessions={})
    assert again.changed is False and again.info["version"] == "v2"
    v2 = layout.version_snapshot(cfg, "os", "v2")
    raw = Zfs().get([v2], ["ggnet:comment", "ggnet:applied_from", "ggnet:state"])
    assert raw[v2] == {
        "ggnet:comment": "driver 560",
        "ggnet:applied_from": "pc-01",
        "ggnet:state": "candidate",
    }
    # a candidate reaches no PC: pc-02's next reset stays on v1
    time.sleep(1.05)
    storage.reset(cfg, IMAGES, clients(), "pc-02", sessions={})
    assert read(disk(cfg, "pc-02"), 8, 1 << 20) == bytes(8)
    # promoted, pc-02's next reset boots v2
    promoted = storage.set_state(cfg, IMAGES, "os", "v2", "promoted")
    assert [a.action for a in promoted.actions] == ["set_state", "rollback_image"]
    assert storage.set_state(cfg, IMAGES, "os", "v2", "promoted").changed is False
    storage.reset(cfg, IMAGES, clients(), "pc-02", sessions={})
    assert read(disk(cfg, "pc-02"), 8, 1 << 20) == b"UPDATE-1"
    # roll back: the converge re-clones off clients onto v1, their disks lose the update
    rolled = storage.rollback(cfg, IMAGES, "os", "v1")
    assert rolled.changed
    assert storage.rollback(cfg, IMAGES, "os", "v1").changed is False
    wbs = storage.converge_writebacks(cfg, IMAGES, clients(), check=False, sessions={})
    assert {a.client for a in wbs.actions} == {"pc-01", "pc-02"}  # pc-03 never left v1
    assert read(disk(cfg, "pc-02"), 8, 1 << 20) == bytes(8)
    # ... and forward again
    storage.rollback(cfg, IMAGES, "os", "v2")
    storage.converge_writebacks(cfg, IMAGES, clients(), check=False, sessions={})
    assert read(disk(cfg, "pc-03"), 8, 1 << 20) == b"UPDATE-1"


def test_canary_pcs_boot_the_canary_and_a_rejected_version_leaves_them(ready):
    """What is promoted is what is served: the writeback's origin after the boot path's
    reset, per PC, through a whole rollout and its rollback."""
    cfg = ready
    canary = clients()
    canary[2] = {**canary[2], "canary": True}  # pc-03
    write(disk(cfg, "pc-01"), b"CANARY-2", 1 << 20)
    storage.apply_writeback(cfg, IMAGES, canary, "pc-01", "new driver", sessions={})

    def origins():
        for name in ("pc-02", "pc-03"):
            storage.reset(cfg, IMAGES, canary, name, boot=True)
        return {
            name: storage.read_state(cfg, Zfs()).writebacks[(name, "system")].origin.split("@")[1]
            for name in ("pc-02", "pc-03")
        }

    assert origins() == {"pc-02": "v1", "pc-03": "v1"}  # a candidate: nobody
    before = snapshot_of_pool(cfg)
    for bad, error in [
        (("v1", "candidate"), "os@v1 is promoted: only apply makes a candidate"),
        (("v1", "canary"), "os@v1 is promoted: it can become rejected, not canary"),
        (("v1", "rejected"), "os@v1: it is the version PCs boot; roll back"),
        (("v9", "canary"), r"unknown version 'v9' \(existing: v1 promoted, v2 candidate\)"),
        (("v2", "canary"), "os@v2 is candidate: a candidate goes to canary only once its boot"),
    ]:
        with pytest.raises(storage.StorageError, match=error):
            storage.set_state(cfg, IMAGES, "os", *bad)
    assert snapshot_of_pool(cfg) == before
    storage.set_state(cfg, IMAGES, "os", "v2", "tested")  # as its passed boot test does
    before = snapshot_of_pool(cfg)
    with pytest.raises(storage.StorageError, match=r"pins ggnet_images\.os\.version: v1"):
        pinned = {**IMAGES, "os": {**IMAGES["os"], "version": "v1"}}
        storage.set_state(cfg, pinned, "os", "v2", "canary")
    assert snapshot_of_pool(cfg) == before
    storage.set_state(cfg, IMAGES, "os", "v2", "canary")
    assert origins() == {"pc-02": "v1", "pc-03": "v2"}
    assert read(disk(cfg, "pc-03"), 8, 1 << 20) == b"CANARY-2"
    # `ggnet images` shows the same from the pool
    snap = Snapshot(images=IMAGES, clients={c["name"]: c for c in canary})
    rows = images_cli.gather(snap, storage.read_state(cfg, Zfs(), writebacks=storage.NO_WRITEBACKS))
    os_row = next(r for r in rows if r["image"] == "os")
    assert (os_row["served"], os_row["canary"], os_row["canary_pcs"]) == ("v1", "v2", ["pc-03"])
    assert [(v["name"], v["state"]) for v in os_row["versions"]] == [
        ("v1", "promoted"),
        ("v2", "canary"),
    ]
    assert "os: PCs boot v1; canary v2 on pc-03" in images_cli.text(rows)
    # a second rollout of the image is refused while this one runs
    write(disk(cfg, "pc-01"), b"CANARY-3", 1 << 20)
    storage.apply_writeback(cfg, IMAGES, canary, "pc-01", "newer", sessions={})
    with pytest.raises(storage.StorageError, match="os@v2 is already in canary: one rollout"):
        storage.set_state(cfg, IMAGES, "os", "v3", "canary", force=True)
    # the canary version is neither pruned nor deletable while it runs
    with pytest.raises(storage.StorageError, match="it is in canary"):
        storage.delete_version(cfg, IMAGES, "os", "v2", force=True)
    # rejected: canaries go back to the promoted version at their next boot
    storage.set_state(cfg, IMAGES, "os", "v2", "rejected")
    assert origins() == {"pc-02": "v1", "pc-03": "v1"}
    # and a rejected version stays rejected: neither promotion nor rollback revive it
    before = snapshot_of_pool(cfg)
    with pytest.raises(storage.StorageError, match="os@v2 is rejected: a rejected version"):
        storage.set_state(cfg, IMAGES, "os", "v2", "promoted")
    with pytest.raises(storage.StorageError, match="version v2 is rejected and is never served"):
        storage.rollback(cfg, IMAGES, "os", "v2")
    pinned = {**IMAGES, "os": {**IMAGES["os"], "version": "v2"}}
    for pinned_op in (
        lambda: storage.converge_images(cfg, pinned, check=True),
        lambda: storage.reset(cfg, pinned, canary, "pc-02", boot=True),
    ):
        with pytest.raises(storage.StorageError, match=r"version: v2 is rejected and is never"):
            pinned_op()
    assert snapshot_of_pool(cfg) == before
    # rollback (or forward) to any retained version that is not rejected: v3 promoted
    storage.rollback(cfg, IMAGES, "os", "v3")
    assert origins() == {"pc-02": "v3", "pc-03": "v3"}
    state = storage.read_state(cfg, Zfs()).images["os"]
    assert {v.name: v.state for v in state.versions} == {
        "v1": "promoted",
        "v2": "rejected",
        "v3": "promoted",
    }


def test_a_pool_from_before_version_states_boots_what_it_booted(ready):
    cfg = ready
    write(disk(cfg, "pc-01"), b"OLD-APPLY", 1 << 20)
    storage.apply_writeback(cfg, IMAGES, clients(), "pc-01", "old", sessions={}, promote=True)
    for v in ("v1", "v2"):
        Zfs().inherit(layout.version_snapshot(cfg, "os", v), storage.P_STATE)
    state = storage.read_state(cfg, Zfs()).images["os"]
    assert [(v.state_raw, v.state) for v in state.versions] == [(None, "promoted")] * 2
    canary = [{**c, "canary": True} for c in clients()]
    for who in (clients(), canary):
        storage.reset(cfg, IMAGES, who, "pc-02", boot=True)
        assert read(disk(cfg, "pc-02"), 9, 1 << 20) == b"OLD-APPLY"


def test_running_or_maintenance_clients_keep_their_writeback_until_reset(ready):
    cfg = ready
    write(disk(cfg, "pc-01"), b"NEW", 0)
    storage.apply_writeback(cfg, IMAGES, clients(), "pc-01", "new", sessions={}, promote=True)
    write(disk(cfg, "pc-02"), b"session data")
    sessions = {"iqn.2024-01.test:pc-02": ["iqn.init:pc-02"]}
    result = storage.converge_writebacks(cfg, IMAGES, clients(), check=False, sessions=sessions)
    assert {p["client"]: p["why"] for p in result.pending} == {"pc-02": "in session"}
    assert read(disk(cfg, "pc-02"), 12) == b"session data"
    unknown = storage.converge_writebacks(cfg, IMAGES, clients(), check=False, sessions=None)
    assert unknown.changed is False and unknown.pending[0]["why"] == "session state unknown"


def test_maintenance_refuses_reset_unless_forced_and_boot_path_keeps(ready):
    cfg = ready
    assert storage.set_keep(cfg, clients(), "pc-03", True).changed
    assert storage.set_keep(cfg, clients(), "pc-03", True).changed is False
    write(disk(cfg, "pc-03"), b"installed")
    with pytest.raises(storage.StorageError, match=r"pc-03 is in maintenance.*force=true"):
        storage.reset(cfg, IMAGES, clients(), "pc-03", sessions={})
    booted = storage.reset(cfg, IMAGES, clients(), "pc-03", boot=True)
    assert booted.changed is False and booted.info["kept"] is True
    assert read(disk(cfg, "pc-03"), 9) == b"installed"
    storage.reset(cfg, IMAGES, clients(), "pc-03", force=True, sessions={})
    assert read(disk(cfg, "pc-03"), 9) == bytes(9)
    assert storage.set_keep(cfg, clients(), "pc-03", False).changed


def test_removed_client_in_maintenance_is_refused_unless_forced(ready):
    cfg = ready
    storage.set_keep(cfg, clients(), "pc-03", True)
    fewer = clients(2)
    before = snapshot_of_pool(cfg)
    with pytest.raises(storage.StorageError, match=r"pc-03 \(system, in maintenance\).*force=true"):
        storage.converge_writebacks(cfg, IMAGES, fewer, check=False, sessions={})
    assert snapshot_of_pool(cfg) == before
    done = storage.converge_writebacks(cfg, IMAGES, fewer, check=False, sessions={}, force=True)
    assert [a.action for a in done.actions] == ["destroy_writeback"]
    assert not Zfs().exists(layout.client_dataset(cfg, "pc-03"))


def test_bad_requests_are_refused_and_change_nothing(ready):
    cfg = ready
    before = snapshot_of_pool(cfg)
    with pytest.raises(storage.StorageError, match="unknown client 'pc-99'"):
        storage.reset(cfg, IMAGES, clients(), "pc-99", sessions={})
    with pytest.raises(
        storage.StorageError, match=r"unknown version 'v9' \(existing: v1 promoted\)"
    ):
        storage.rollback(cfg, IMAGES, "os", "v9")
    with pytest.raises(storage.StorageError, match=r"unknown version 'v9'"):
        storage.converge_writebacks(
            cfg, {**IMAGES, "os": {"size": "32M", "version": "v9"}}, clients(), False, {}
        )
    running = {"iqn.2024-01.test:pc-01": ["iqn.init:pc-01"]}
    with pytest.raises(storage.StorageError, match="pc-01: the client is running"):
        storage.apply_writeback(cfg, IMAGES, clients(), "pc-01", "x", sessions=running)
    with pytest.raises(storage.StorageError, match="cannot tell whether it is running"):
        storage.apply_writeback(cfg, IMAGES, clients(), "pc-01", "x", sessions=None)
    with pytest.raises(storage.StorageError, match=r"ggnet_images\.os\.size"):
        storage.converge_images(cfg, {"os": {"size": "lots"}}, check=False)
    with pytest.raises(storage.StorageError, match="'nope' is not in ggnet_images"):
        storage.converge_writebacks(cfg, IMAGES, clients(1, image="nope"), False, {})
    assert snapshot_of_pool(cfg) == before


def test_capacity_guard_refuses_new_writebacks_and_boot_reset(ready):
    cfg = ready
    free = storage.read_state(cfg, Zfs()).available
    tight = {**cfg, "reserve": str(free + (8 << 20))}
    before = snapshot_of_pool(cfg)
    with pytest.raises(storage.CapacityError, match=r"below its reserve.*pc-04"):
        storage.converge_writebacks(tight, IMAGES, clients(4), check=False, sessions={})
    write(disk(cfg, "pc-02"), b"dirty")
    with pytest.raises(storage.CapacityError, match="no new writeback for pc-02"):
        storage.reset(tight, IMAGES, clients(), "pc-02", boot=True)
    assert snapshot_of_pool(cfg) == before
    # an unchanged reconcile needs no space and still succeeds
    assert storage.converge_writebacks(tight, IMAGES, clients(), False, {}).changed is False


def test_capacity_guard_with_a_really_full_pool(ready):
    cfg = ready
    filler = layout.writeback_backing(cfg, "pc-01", "system")[0] + ".fill"
    # the quota stops one client from filling the pool...
    with pytest.raises(OSError), open(filler, "wb") as f:
        for _ in range(200):
            f.write(os.urandom(1 << 20))
            f.flush()
            os.fsync(f.fileno())
    used = int(
        Zfs().get([layout.writeback_dataset(cfg, "pc-01", "system")], ["used"])[
            layout.writeback_dataset(cfg, "pc-01", "system")
        ]["used"]
    )
    assert used <= 70 << 20
    # ... while a reserve above what is free refuses the next client
    state = storage.read_state(cfg, Zfs())
    nearly = {**cfg, "reserve": str(state.available + (1 << 20))}
    with pytest.raises(storage.CapacityError):
        storage.converge_writebacks(nearly, IMAGES, clients(4), False, {})


def test_prune_versions_and_idle_writebacks(ready):
    cfg = ready
    for n in range(2, 5):
        write(disk(cfg, "pc-01"), f"version {n}".encode())
        storage.apply_writeback(cfg, IMAGES, clients(), "pc-01", f"v{n}", sessions={}, promote=True)
    # pc-02/pc-03 still hang on v1; only idle-pruning them frees it
    result = storage.prune(cfg, IMAGES, clients(), keep_versions=2, idle="1h", sessions={})
    assert [a.target.split("@")[1] for a in result.actions] == ["v2"]
    write(disk(cfg, "pc-02"), b"old session")
    later = time.time() + 7200
    check = storage.prune(
        cfg, IMAGES, clients(), keep_versions=2, idle="1h", check=True, sessions={}, now=later
    )
    assert "v1" in {a.target.split("@")[-1] for a in check.actions}
    done = storage.prune(cfg, IMAGES, clients(), keep_versions=2, idle="1h", sessions={}, now=later)
    assert {a.action for a in done.actions} == {"reset_writeback", "destroy_version"}
    versions = storage.read_state(cfg, Zfs()).images["os"].versions
    assert [v.name for v in versions] == ["v3", "v4"]
    assert read(disk(cfg, "pc-02"), 9) == b"version 4"
    again = storage.prune(
        cfg, IMAGES, clients(), keep_versions=2, idle="1h", sessions={}, now=later
    )
    assert again.changed is False


def test_delete_version_with_dependants_needs_force(ready):
    cfg = ready
    write(disk(cfg, "pc-01"), b"two")
    storage.apply_writeback(cfg, IMAGES, clients(), "pc-01", "v2", sessions={}, promote=True)
    with pytest.raises(
        storage.StorageError,
        match=r"writebacks depend on it \(pc-02/system, pc-03/system\).*force=true",
    ):
        storage.delete_version(cfg, IMAGES, "os", "v1")
    done = storage.delete_version(cfg, IMAGES, "os", "v1", force=True)
    assert done.actions[-1].action == "destroy_version"
    assert storage.delete_version(cfg, IMAGES, "os", "v1").changed is False
    assert storage.converge_writebacks(cfg, IMAGES, clients(), False, {}).changed


@pytest.mark.parametrize("fmt", ["raw", "qcow2"])
def test_import_from_source_file(pool, tmp_path, fmt):
    cfg = storage_cfg(pool)
    raw = tmp_path / "src.raw"
    with open(raw, "wb") as f:
        f.truncate(8 << 20)
        f.seek(512)
        f.write(b"BOOTSECTOR-MARK")
    src = raw
    if fmt == "qcow2":
        src = tmp_path / "src.qcow2"
        subprocess.run(["qemu-img", "convert", "-O", "qcow2", str(raw), str(src)], check=True)
    images = {"imp": {"source": str(src), "kind": "system", "version": "base"}}
    storage.converge_images(cfg, images, check=False)
    head = layout.image_backing(cfg, "imp")[0]
    assert read(head, 15, 512) == b"BOOTSECTOR-MARK"
    assert os.path.getsize(head) == 8 << 20
    assert [v.name for v in storage.read_state(cfg, Zfs()).images["imp"].versions] == ["base"]
    with pytest.raises(storage.StorageError, match="is not a file or block device on this server"):
        storage.converge_images(cfg, {"other": {"source": str(tmp_path / "missing.raw")}}, False)


def test_check_mode_plans_the_clones_of_an_image_not_created_yet(ready):
    """ggnet diff (a --check converge) of a room with a new image: the images converge
    creates nothing in check mode, so the writebacks plan from the version it would make."""
    cfg = ready
    more = {**IMAGES, "os-b": {"size": "32M", "kind": "system"}}
    moved = [{**c, "image": "os-b"} if c["name"] == "pc-02" else c for c in clients()]
    with pytest.raises(storage.StorageError, match="does not exist on pool"):
        storage.converge_writebacks(cfg, more, moved, check=False, sessions={})
    planned = storage.converge_writebacks(cfg, more, moved, check=True, sessions={})
    (action,) = [a for a in planned.actions if a.client == "pc-02"]
    assert action.action == "replace_writeback"
    assert action.detail.endswith(layout.version_snapshot(cfg, "os-b", "v1"))
    assert layout.image_dataset(cfg, "os-b") not in Zfs().get(
        [layout.images_root(cfg)], ["name"], depth=1
    )
