"""Command lines of the zvol path, recorded by a fake runner: OpenZFS zvols cannot run
on this machine (zfs-fuse has none), so these tests only show what would be run."""

from __future__ import annotations

import pytest
from ggnet import layout, storage
from ggnet.storage import pool_size
from ggnet.zfs import Zfs, parse_get
from ggnet_testing.zfs_fakes import FakeZfsRunner

pytestmark = pytest.mark.unit

CFG = {"pool": "tank", "disk_format": "zvol", "reserve": "10%", "writeback_quota": "40G"}


@pytest.fixture(autouse=True)
def no_zvol_devices(monkeypatch):
    """The fake runner makes no zvol device: the wait for it is the one thing skipped."""
    monkeypatch.setattr("ggnet.storage.disks.wait_for_device", lambda path, what: None)


def listing(rows):
    return "".join(f"{n}\t{p}\t{v}\n" for n, p, v in rows)


POOL_ROWS = [
    ("tank", "type", "filesystem"),
    ("tank", "available", str(900 << 30)),
    ("tank", "used", str(100 << 30)),
    ("tank/images", "type", "filesystem"),
    ("tank/writebacks", "type", "filesystem"),
    ("tank/images/win11", "type", "volume"),
    ("tank/images/win11@v3", "type", "snapshot"),
    ("tank/images/win11@v3", "ggnet:created", "2025-01-01T00:00:00.0Z"),
]


def test_zvol_backing_paths_are_device_nodes_fake_zfs():
    assert layout.writeback_backing(CFG, "pc-01", "system") == (
        "/dev/zvol/tank/writebacks/pc-01/system",
        "block",
    )
    assert layout.image_backing(CFG, "win11") == ("/dev/zvol/tank/images/win11", "block")


def test_zvol_image_create_is_sparse_volume_fake_zfs():
    fake = FakeZfsRunner(listing=listing(POOL_ROWS[:5]))
    result = storage.converge_images(
        CFG, {"games": {"size": "200G", "kind": "data"}}, False, Zfs(fake)
    )
    assert [a.action for a in result.actions] == ["create_image"]
    create = next(c for c in fake.calls if c[1] == "create")
    assert create[:5] == ["zfs", "create", "-s", "-V", str(200 << 30)]
    assert "ggnet:kind=data" in create and create[-1] == "tank/images/games"
    snap = next(c for c in fake.calls if c[1] == "snapshot")
    assert snap[-1] == "tank/images/games@v1"


def test_zvol_writeback_clone_and_freshness_use_openzfs_commands_fake_zfs():
    fake = FakeZfsRunner(listing=listing(POOL_ROWS))
    clients = [{"name": "pc-01", "image": "win11", "target_iqn": "iqn.x:pc-01"}]
    images = {"win11": {"size": "64G", "version": "v3"}}
    storage.converge_writebacks(CFG, images, clients, False, sessions={}, zfs=Zfs(fake))
    clone = next(c for c in fake.calls if c[1] == "clone")
    assert clone[:3] == ["zfs", "clone", "-p"]
    # A zvol takes no quota (OpenZFS refuses it, seen in the lab): the client's
    # dataset that `clone -p` made holds it.
    assert not any(arg.startswith("quota=") for arg in clone)
    assert clone[-2:] == ["tank/images/win11@v3", "tank/writebacks/pc-01/system"]
    quota = next(c for c in fake.calls if c[1] == "set" and c[2].startswith("quota="))
    assert quota[2:] == [f"quota={40 << 30}", "tank/writebacks/pc-01"]


def test_zvol_reset_destroys_without_unmount_fake_zfs():
    rows = [
        *POOL_ROWS,
        ("tank/writebacks/pc-01", "type", "filesystem"),
        ("tank/writebacks/pc-01/system", "type", "volume"),
        ("tank/writebacks/pc-01/system", "origin", "tank/images/win11@v3"),
        ("tank/writebacks/pc-01/system", "creation", "1700000000"),
        ("tank/writebacks/pc-01/system", "written", "8192"),
    ]
    fake = FakeZfsRunner(listing=listing(rows))
    clients = [{"name": "pc-01", "image": "win11", "target_iqn": "iqn.x:pc-01"}]
    result = storage.reset(
        CFG, {"win11": {"size": "64G"}}, clients, "pc-01", boot=True, zfs=Zfs(fake)
    )
    assert [a.action for a in result.actions] == ["reset_writeback"]
    verbs = [c[1] for c in fake.calls if c[1] != "get"]
    # no umount: a zvol is not mounted; no @ggnet-base yet, so a new clone and its base,
    # the quota on the client's dataset, then the client's record of its disks (no
    # record existed, so none to clear first)
    assert verbs == ["destroy", "clone", "snapshot", "set", "set"]
    assert fake.calls[-3][-1] == "tank/writebacks/pc-01/system@ggnet-base"
    assert fake.calls[-2][2:] == [f"quota={40 << 30}", "tank/writebacks/pc-01"]
    assert fake.calls[-1][2:] == [
        f"ggnet:disks=system=tank/images/win11@v3,{40 << 30}",
        "tank/writebacks/pc-01",
    ]


def test_zvol_reset_same_version_is_one_rollback_fake_zfs():
    rows = [
        *POOL_ROWS,
        ("tank/writebacks/pc-01", "type", "filesystem"),
        ("tank/writebacks/pc-01/system", "type", "volume"),
        ("tank/writebacks/pc-01/system", "origin", "tank/images/win11@v3"),
        ("tank/writebacks/pc-01/system", "creation", "1700000000"),
        ("tank/writebacks/pc-01/system", "written", "8192"),
        ("tank/writebacks/pc-01/system@ggnet-base", "type", "snapshot"),
        ("tank/writebacks/pc-01", "available", str(900 << 30)),
    ]
    fake = FakeZfsRunner(listing=listing(rows))
    clients = [{"name": "pc-01", "image": "win11", "target_iqn": "iqn.x:pc-01"}]
    result = storage.reset(
        CFG, {"win11": {"size": "64G"}}, clients, "pc-01", boot=True, zfs=Zfs(fake)
    )
    assert [a.action for a in result.actions] == ["reset_writeback"]
    changes = [c for c in fake.calls if c[1] != "get"]
    assert changes == [["zfs", "rollback", "-r", "tank/writebacks/pc-01/system@ggnet-base"]]


def test_whole_pool_read_skips_writeback_base_snapshots_fake_zfs():
    fake = FakeZfsRunner(listing=listing(POOL_ROWS))
    storage.read_state(CFG, Zfs(fake))
    gets = [c for c in fake.calls if c[1] == "get"]
    assert len(gets) == 2
    assert gets[1][-2:] == ["tank/images", "tank/writebacks"]
    assert gets[1][gets[1].index("-d") + 1] == "2" and "-r" not in gets[1]


def test_parse_get_maps_dash_to_none():
    text = "tank\torigin\t-\ntank/a\tquota\t1024\n"
    assert parse_get(text) == {"tank": {"origin": None}, "tank/a": {"quota": "1024"}}


def test_zvol_boot_reset_reads_written_with_the_state_fake_zfs():
    rows = [
        *POOL_ROWS,
        ("tank/writebacks/pc-01", "type", "filesystem"),
        ("tank/writebacks/pc-01/system", "origin", "tank/images/win11@v3"),
        ("tank/writebacks/pc-01/system", "creation", "1700000000"),
        ("tank/writebacks/pc-01/system", "written", "0"),
        ("tank/writebacks/pc-01/system@ggnet-base", "type", "snapshot"),
        ("tank/writebacks/pc-01", "available", str(900 << 30)),
    ]
    fake = FakeZfsRunner(listing=listing(rows))
    clients = [{"name": "pc-01", "image": "win11", "target_iqn": "iqn.x:pc-01"}]
    pool_size._POOL_TOTAL["tank"] = (float("inf"), 1000 << 30)
    try:
        result = storage.reset(
            CFG, {"win11": {"size": "64G"}}, clients, "pc-01", boot=True, zfs=Zfs(fake)
        )
    finally:
        pool_size._POOL_TOTAL.pop("tank", None)
    assert result.changed is False
    # one `zfs get -r` answers everything, `written` included: untouched, nothing to do
    assert len(fake.calls) == 1 and fake.calls[0][1] == "get"
    assert "written" in fake.calls[0][fake.calls[0].index("-r") + 1].split(",")


def test_a_version_change_of_both_disks_closes_the_luns_once_fake_zfs():
    # The boot path's closer removes and re-adds the client's LUNs: once per reset,
    # around every re-clone, not once per disk.
    rows = [
        *POOL_ROWS,
        ("tank/images/win11@v4", "type", "snapshot"),
        ("tank/images/win11@v4", "ggnet:created", "2025-02-01T00:00:00.0Z"),
        ("tank/images/games", "type", "volume"),
        ("tank/images/games", "ggnet:kind", "data"),
        ("tank/images/games@v2", "type", "snapshot"),
        ("tank/images/games@v2", "ggnet:created", "2025-02-01T00:00:00.0Z"),
        ("tank/writebacks/pc-01", "type", "filesystem"),
        ("tank/writebacks/pc-01/system", "type", "volume"),
        ("tank/writebacks/pc-01/system", "origin", "tank/images/win11@v3"),
        ("tank/writebacks/pc-01/game", "type", "volume"),
        ("tank/writebacks/pc-01/game", "origin", "tank/images/games@v1"),
    ]
    fake = FakeZfsRunner(listing=listing(rows))
    spans: list[tuple[str, int, int | None]] = []

    class Closing:
        def __init__(self, client):
            self.client = client

        def __enter__(self):
            spans.append((self.client, len(fake.calls), None))

        def __exit__(self, *exc):
            client, start, _ = spans[-1]
            spans[-1] = (client, start, len(fake.calls))

    clients = [{"name": "pc-01", "image": "win11", "game_disk": "games", "target_iqn": "iqn.x"}]
    images = {
        "win11": {"size": "64G", "version": "v4"},
        "games": {"size": "10G", "kind": "data", "version": "v2"},
    }
    result = storage.reset(CFG, images, clients, "pc-01", boot=True, zfs=Zfs(fake), closer=Closing)
    assert sorted(a.target for a in result.actions) == [
        "tank/writebacks/pc-01/game",
        "tank/writebacks/pc-01/system",
    ]
    assert len(spans) == 1 and spans[0][0] == "pc-01"
    _, start, end = spans[0]
    destroys = [i for i, c in enumerate(fake.calls) if c[1] == "destroy"]
    assert len(destroys) == 2 and all(start <= i < end for i in destroys)


def test_a_zvol_device_that_never_appears_names_the_disk_and_what_to_do(monkeypatch):
    from ggnet.storage import disks

    monkeypatch.undo()  # this test is about the wait itself
    monkeypatch.setattr("ggnet.storage.disks.wait_block_device", lambda path: False)
    with pytest.raises(storage.StorageError) as err:
        disks.wait_for_device("/dev/zvol/tank/writebacks/pc-01/system", "pc-01's system disk")
    assert str(err.value) == (
        "pc-01's system disk: the device /dev/zvol/tank/writebacks/pc-01/system did not "
        "appear within 30 s (udev); look at `udevadm monitor`, then run it again"
    )
