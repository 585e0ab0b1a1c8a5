"""A converge refuses a pool it cannot use before it changes anything: a pool whose
device vanished (UNAVAIL or SUSPENDED: its first write would block), a vdev that is
not there, and devices that already hold a pool that is not imported.  zpool's answers
come from a scripted runner (names end in `fake_zpool`); the lab runs the missing-device
and exported-pool cases on OpenZFS (molecule/default/tests/test_pool_faults.py)."""

from __future__ import annotations

import pytest
from ggnet import storage
from ggnet.zfs import Zfs

pytestmark = pytest.mark.unit

CFG = {"pool": "tank", "disk_format": "zvol", "reserve": "10%", "writeback_quota": "40G"}
IMAGES = {"games": {"size": "1G", "kind": "data"}}
POOL = "tank\ttype\tfilesystem\ntank\tavailable\t1000000000\ntank\tused\t1000\n"


class ScriptedZpool:
    """`zfs get` answers `listing`; `zpool list -o health` answers `health`; `zpool
    import` lists `importable`; everything else succeeds.  Every argv is recorded."""

    def __init__(self, listing: str, health: str = "ONLINE", importable: str = ""):
        self.listing, self.health, self.importable = listing, health, importable
        self.calls: list[list[str]] = []

    def __call__(self, argv, stdin=None):
        self.calls.append(list(argv))
        if argv[:2] == ["zfs", "get"]:
            return 0, self.listing, ""
        if argv[:2] == ["zpool", "list"] and "health" in argv:
            return 0, self.health + "\n", ""
        if argv[:2] == ["zpool", "import"]:
            found = f"   pool: {self.importable}\n     id: 42\n  state: ONLINE\n"
            return (0, found, "") if self.importable else (1, "", "no pools available\n")
        return 0, "", ""

    def changes(self) -> list[list[str]]:
        reads = (["zfs", "get"], ["zpool", "list"], ["zpool", "import"])
        return [c for c in self.calls if c[:2] not in reads]


@pytest.mark.parametrize("health", ["UNAVAIL", "SUSPENDED", "FAULTED"])
def test_a_pool_whose_device_vanished_is_refused_and_nothing_changes_fake_zpool(health):
    runner = ScriptedZpool(POOL, health=health)
    with pytest.raises(storage.StorageError) as err:
        storage.converge_images(CFG, IMAGES, False, Zfs(runner))
    message = str(err.value)
    assert f"pool 'tank' is {health}" in message and "zpool status -x tank" in message
    assert "nothing was changed" in message
    assert runner.changes() == []


def test_a_degraded_pool_still_converges_fake_zpool(monkeypatch):
    monkeypatch.setattr("ggnet.storage.disks.wait_for_device", lambda path, what: None)
    runner = ScriptedZpool(POOL, health="DEGRADED")
    result = storage.converge_images(CFG, IMAGES, False, Zfs(runner))
    assert [a.action for a in result.actions][-1] == "create_image"
    assert any(c[:2] == ["zfs", "create"] for c in runner.changes())


def test_a_missing_vdev_is_named_and_no_pool_is_created_fake_zpool(tmp_path):
    present = tmp_path / "disk0.img"
    present.write_bytes(b"")
    gone = tmp_path / "disk1.img"
    cfg = {**CFG, "vdevs": [str(present), str(gone)]}
    runner = ScriptedZpool("")
    with pytest.raises(storage.StorageError) as err:
        storage.converge_images(cfg, IMAGES, False, Zfs(runner))
    assert str(err.value).startswith(f"ggnet_storage.vdevs: {gone} not found on this server")
    assert str(present) not in str(err.value)
    assert runner.changes() == []


def test_devices_holding_an_exported_pool_are_never_created_over_fake_zpool(tmp_path):
    disk = tmp_path / "disk0.img"
    disk.write_bytes(b"")
    runner = ScriptedZpool("", importable="tank")
    with pytest.raises(storage.StorageError) as err:
        storage.converge_images({**CFG, "vdevs": [str(disk)]}, IMAGES, False, Zfs(runner))
    assert "zpool import tank" in str(err.value)
    assert runner.changes() == []
    # A file vdev is looked for where it lies, devices where zpool looks by itself.
    search = next(c for c in runner.calls if c[:2] == ["zpool", "import"])
    assert search == ["zpool", "import", "-d", str(tmp_path), "-d", "/dev"]


def test_another_pools_name_on_the_devices_does_not_stop_a_new_pool_fake_zpool(tmp_path):
    disk = tmp_path / "disk0.img"
    disk.write_bytes(b"")
    runner = ScriptedZpool("", importable="tank2")
    result = storage.converge_images({**CFG, "vdevs": [str(disk)]}, IMAGES, True, Zfs(runner))
    assert result.actions[0].action == "create_pool"
    assert runner.changes() == []


def test_a_busy_zvol_at_reclone_names_its_device_and_is_not_cloned_over_fake_zpool(
    monkeypatch,
):
    from ggnet.storage import disks

    monkeypatch.setattr("ggnet.zfs.BUSY_PAUSE", 0)
    busy = (1, "", "cannot destroy 'tank/writebacks/pc-01/system': dataset is busy")
    runner = ScriptedZpool("")
    answers = iter([busy] * 100)
    plain = runner.__call__

    def destroy_busy(argv, stdin=None):
        return next(answers) if argv[:2] == ["zfs", "destroy"] else plain(argv, stdin)

    zfs = Zfs(destroy_busy)
    with pytest.raises(storage.StorageError) as err:
        disks.recreate(CFG, "pc-01", "system", "tank/images/os@v1", zfs)
    message = str(err.value)
    assert message.startswith("tank/writebacks/pc-01/system is busy")
    assert "fuser -v /dev/zvol/tank/writebacks/pc-01/system" in message
    assert not any(c[:2] == ["zfs", "clone"] for c in runner.calls)
