"""Planning without ZFS: names, inputs, refusals."""

from __future__ import annotations

import pytest
from ggnet import layout, storage
from ggnet.storage.capacity import quota_bytes, reserve_bytes
from ggnet.storage.client_ops import copy_changed_blocks
from ggnet.storage.images import ImageSpec, effective_version, image_specs
from ggnet.storage.properties import format_disks, parse_disks
from ggnet.storage.results import parse_duration
from ggnet.storage.state import Image, Version
from ggnet.zfs import Zfs

pytestmark = pytest.mark.unit

CFG = {"pool": "ggpool", "disk_format": "file"}


def test_layout_names_and_paths():
    assert layout.writeback_dataset(CFG, "pc-01", "game") == "ggpool/writebacks/pc-01/game"
    assert layout.writeback_backing(CFG, "pc-01", "system") == (
        "/ggpool/writebacks/pc-01/system/disk.img",
        "file",
    )
    moved = {**CFG, "mountpoint": "/srv/gg"}
    assert layout.image_backing(moved, "win11")[0] == "/srv/gg/images/win11/disk.img"
    assert layout.split_writeback(CFG, "ggpool/writebacks/pc-01/system") == ("pc-01", "system")
    assert layout.split_writeback(CFG, "ggpool/writebacks/pc-01") is None
    assert layout.split_image(CFG, "ggpool/images/win11@v3") == ("win11", "v3")


@pytest.mark.parametrize("bad", ["../x", "a b", "", "-x", "a/b"])
def test_layout_refuses_bad_names(bad):
    with pytest.raises(layout.LayoutError, match="client name"):
        layout.writeback_dataset(CFG, bad, "system")


def test_layout_refuses_unknown_format_and_role():
    with pytest.raises(layout.LayoutError, match="disk_format 'lvm'"):
        layout.writeback_backing({**CFG, "disk_format": "lvm"}, "pc", "system")
    with pytest.raises(layout.LayoutError, match="disk role 'data'"):
        layout.writeback_dataset(CFG, "pc", "data")


@pytest.mark.parametrize(
    ("images", "message"),
    [
        ({"w": {"size": "big"}}, r"ggnet_images\.w\.size: 'big'"),
        ({"w": {"size": "1G", "kind": "os"}}, r"ggnet_images\.w\.kind: 'os'"),
        ({"w": {}}, r"ggnet_images\.w: needs size"),
        ({"w": {"size": "1G", "version": "v 1"}}, r"ggnet_images\.w\.version"),
    ],
)
def test_bad_image_specs_name_key_and_value(images, message):
    with pytest.raises(storage.StorageError, match=message):
        image_specs(images)


def test_reserve_and_quota_parsing():
    assert reserve_bytes({"reserve": "10%"}, 1000) == 100
    assert reserve_bytes({"reserve": "1K"}, 10**9) == 1024
    assert quota_bytes({"writeback_quota": "40G"}) == 40 << 30
    assert quota_bytes({"writeback_quota": "none"}) == 0
    with pytest.raises(storage.StorageError, match=r"ggnet_storage\.reserve: 'lots'"):
        reserve_bytes({"reserve": "lots"}, 1)


def test_durations():
    assert parse_duration("7d", "x") == 7 * 86400
    assert parse_duration("90m", "x") == 5400
    with pytest.raises(storage.StorageError, match="x: 'soon' is not a duration"):
        parse_duration("soon", "x")


def test_effective_version_order():
    versions = [
        Version(n, f"p/images/i@{n}", f"2025-01-0{i}", None, None)
        for i, n in enumerate(["v1", "v2", "v3"], 1)
    ]
    image = Image("i", "p/images/i", "system", None, versions)
    assert effective_version(image, None).name == "v3"
    image.current = "v2"
    assert effective_version(image, None).name == "v2"
    spec = ImageSpec("i", 1, "system", "v1", None)
    assert effective_version(image, spec).name == "v1"


def test_copy_changed_blocks_writes_only_differences(tmp_path):
    src, dst = tmp_path / "src", tmp_path / "dst"
    data = bytearray(4 << 20)
    dst.write_bytes(bytes(data))
    data[(2 << 20) + 7] = 1
    src.write_bytes(bytes(data))
    assert copy_changed_blocks(str(src), str(dst)) == 1 << 20
    assert dst.read_bytes() == src.read_bytes()
    assert copy_changed_blocks(str(src), str(dst)) == 0


@pytest.mark.parametrize(
    "disks",
    [
        {},
        {"system": ("ggpool/images/w@v3", 64 << 20)},
        {"system": ("ggpool/images/w:x@v1", 0), "game": ("ggpool/images/g@2024.1", 1 << 30)},
        {"system": (None, 0)},
    ],
)
def test_disks_record_round_trips(disks):
    assert parse_disks(format_disks(disks)) == disks


@pytest.mark.parametrize("bad", [None, "", "system", "system=x", "data=p/i@v1,0", "system=p@v,1G"])
def test_unreadable_disks_record_means_read_the_disks(bad):
    assert parse_disks(bad) is None


class FakeZfs:
    """`zfs get` answered per call from `answers` (argv -> listing); records the rest."""

    def __init__(self, answers):
        self.answers = answers
        self.calls = []

    def __call__(self, argv, stdin=None):
        self.calls.append(list(argv))
        if argv[1] == "get":
            for match, rows in self.answers:
                if match(argv):
                    return 0, "".join(f"{n}\t{p}\t{v}\n" for n, p, v in rows), ""
            return 0, "", ""
        return 0, "", ""


IMAGE_ROWS = [
    ("ggpool", "available", str(900 << 30)),
    ("ggpool", "used", str(100 << 30)),
    ("ggpool/writebacks", "creation", "1"),
    ("ggpool/images/w", "ggnet:kind", "system"),
    ("ggpool/images/w@v1", "ggnet:created", "2025-01-01T00:00:00.0Z"),
]
IMAGES = {"w": {"size": "1G"}}


def _clients(*names):
    return [{"name": n, "image": "w", "target_iqn": f"iqn.x:{n}"} for n in names]


def test_reconcile_reads_one_level_and_trusts_the_records():
    rows = [
        *IMAGE_ROWS,
        ("ggpool/writebacks/pc-1", "ggnet:disks", "system=ggpool/images/w@v1,0"),
        ("ggpool/writebacks/pc-2", "ggnet:disks", "system=ggpool/images/w@v1,0"),
    ]
    fake = FakeZfs([(lambda argv: True, rows)])
    result = storage.converge_writebacks(
        CFG, IMAGES, _clients("pc-1", "pc-2"), False, sessions={}, zfs=Zfs(fake)
    )
    assert result.changed is False
    assert len(fake.calls) == 1
    argv = fake.calls[0]
    assert argv[argv.index("-d") + 1] == "1" and "-r" not in argv
    assert argv[-3:] == ["ggpool", "ggpool/writebacks", "ggpool/images/w"]


def test_a_client_without_a_record_is_read_one_level_down_and_recorded_once():
    rows = [*IMAGE_ROWS, ("ggpool/writebacks/pc-1", "ggnet:keep", "-")]
    disks = [
        ("ggpool/writebacks/pc-1", "ggnet:keep", "-"),
        ("ggpool/writebacks/pc-1/system", "origin", "ggpool/images/w@v1"),
        ("ggpool/writebacks/pc-1/system", "quota", "0"),
        ("ggpool/writebacks/pc-1/system", "creation", "1700000000"),
    ]
    answers = [(lambda argv: argv[-1] == "ggpool/writebacks/pc-1", disks), (lambda a: True, rows)]
    fake = FakeZfs(answers)
    checked = storage.converge_writebacks(
        CFG, IMAGES, _clients("pc-1"), True, sessions={}, zfs=Zfs(fake)
    )
    assert [a.action for a in checked.actions] == ["record_disks"]
    assert [c[1] for c in fake.calls] == ["get", "get"]  # check mode writes nothing
    fake.calls.clear()
    storage.converge_writebacks(CFG, IMAGES, _clients("pc-1"), False, sessions={}, zfs=Zfs(fake))
    assert fake.calls[-1] == [
        "zfs",
        "set",
        "ggnet:disks=system=ggpool/images/w@v1,0",
        "ggpool/writebacks/pc-1",
    ]


def test_a_version_change_clears_the_record_first_and_writes_it_after(monkeypatch):
    # A fake runner makes no zvol device: the wait for it is the one thing skipped.
    monkeypatch.setattr("ggnet.storage.disks.wait_for_device", lambda path, what: None)
    rows = [
        *IMAGE_ROWS,
        ("ggpool/images/w@v2", "ggnet:created", "2025-02-01T00:00:00.0Z"),
        ("ggpool/writebacks/pc-1", "ggnet:disks", "system=ggpool/images/w@v1,0"),
    ]
    fake = FakeZfs([(lambda argv: True, rows)])
    result = storage.converge_writebacks(
        {**CFG, "disk_format": "zvol"},
        IMAGES,
        _clients("pc-1"),
        False,
        sessions={},
        zfs=Zfs(fake),
    )
    assert [a.action for a in result.actions] == ["replace_writeback"]
    verbs = [c[1] for c in fake.calls if c[1] != "get"]
    assert verbs == ["inherit", "destroy", "clone", "snapshot", "set"]
    assert fake.calls[-1][2] == "ggnet:disks=system=ggpool/images/w@v2,0"


@pytest.mark.parametrize(
    ("client", "message"),
    [
        ("pc-1", r"clients\[0\]: 'pc-1' is not a client"),
        ({"image": "w"}, r"clients\[0\]: name is missing"),
        ({"name": "pc-1"}, r"client 'pc-1': image is missing"),
        ({"name": "pc-1", "image": "w", "keep_writeback": "no"}, r"'pc-1': keep_writeback must"),
        ({"name": "pc-1", "image": "w", "game_disk": 3}, r"'pc-1': game_disk must be str or null"),
    ],
)
def test_a_bad_client_is_refused_naming_client_and_key(client, message):
    fake = FakeZfs([])
    with pytest.raises(storage.StorageError, match=message):
        storage.converge_writebacks(CFG, IMAGES, [client], False, sessions={}, zfs=Zfs(fake))
    assert fake.calls == []


def test_the_boot_path_checks_only_its_own_client():
    fake = FakeZfs([])
    clients = ["junk", {"name": "pc-1", "image": "w", "keep_writeback": "yes"}]
    with pytest.raises(storage.StorageError, match=r"client 'pc-1': keep_writeback must"):
        storage.reset(CFG, IMAGES, clients, "pc-1", boot=True, zfs=Zfs(fake))
    with pytest.raises(storage.StorageError, match=r"unknown client 'pc-2'"):
        storage.reset(CFG, IMAGES, clients, "pc-2", boot=True, zfs=Zfs(fake))
    assert fake.calls == []
