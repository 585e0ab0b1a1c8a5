"""Planning without ZFS: names, inputs, refusals."""

from __future__ import annotations

import pytest
from ggnet import layout, storage

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
        storage.image_specs(images)


def test_reserve_and_quota_parsing():
    assert storage.reserve_bytes({"reserve": "10%"}, 1000) == 100
    assert storage.reserve_bytes({"reserve": "1K"}, 10**9) == 1024
    assert storage.quota_bytes({"writeback_quota": "40G"}) == 40 << 30
    assert storage.quota_bytes({"writeback_quota": "none"}) == 0
    with pytest.raises(storage.StorageError, match=r"ggnet_storage\.reserve: 'lots'"):
        storage.reserve_bytes({"reserve": "lots"}, 1)


def test_durations():
    assert storage.parse_duration("7d", "x") == 7 * 86400
    assert storage.parse_duration("90m", "x") == 5400
    with pytest.raises(storage.StorageError, match="x: 'soon' is not a duration"):
        storage.parse_duration("soon", "x")


def test_effective_version_order():
    versions = [
        storage.Version(n, f"p/images/i@{n}", f"2025-01-0{i}", None, None)
        for i, n in enumerate(["v1", "v2", "v3"], 1)
    ]
    image = storage.Image("i", "p/images/i", "system", None, versions)
    assert storage.effective_version(image, None).name == "v3"
    image.current = "v2"
    assert storage.effective_version(image, None).name == "v2"
    spec = storage.ImageSpec("i", 1, "system", "v1", None)
    assert storage.effective_version(image, spec).name == "v1"


def test_copy_changed_blocks_writes_only_differences(tmp_path):
    src, dst = tmp_path / "src", tmp_path / "dst"
    data = bytearray(4 << 20)
    dst.write_bytes(bytes(data))
    data[(2 << 20) + 7] = 1
    src.write_bytes(bytes(data))
    assert storage.copy_changed_blocks(str(src), str(dst)) == 1 << 20
    assert dst.read_bytes() == src.read_bytes()
    assert storage.copy_changed_blocks(str(src), str(dst)) == 0
