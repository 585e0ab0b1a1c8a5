"""How a rollback is run on zfs-fuse: without the tool's machine-wide drop_caches, only the
disk file's pages dropped, and the plain command whenever that cannot be done."""

from __future__ import annotations

import os
import threading

import pytest
from ggnet import storage, zfs
from ggnet.storage import pool_size
from ggnet.zfs import Zfs, ZfsError
from ggnet_testing.zfs_fakes import FakeZfsRunner

pytestmark = pytest.mark.unit

SNAP = "tank/writebacks/pc-01/system@ggnet-base"
PLAIN = ["zfs", "rollback", "-r", SNAP]


@pytest.fixture(autouse=True)
def namespace_state(monkeypatch):
    """Each test starts with a working namespace and records the pages it drops."""
    monkeypatch.setattr(zfs, "_namespace_works", [True])
    monkeypatch.setattr(pool_size, "_POOL_TOTAL", {})  # the pool-size cache stays per test
    dropped: list[list[str]] = []
    monkeypatch.setattr(zfs, "drop_pages", lambda paths: dropped.append(list(paths)))
    return dropped


def wrapped(argv):
    return argv[: len(argv) - len(PLAIN)], argv[len(argv) - len(PLAIN) :]


def test_with_files_the_rollback_runs_without_the_drop_and_drops_only_those_pages(
    namespace_state,
):
    run = FakeZfsRunner()
    z = Zfs(run, fuse=True)
    z.rollback(SNAP, True, files=["/p/disk.img"])
    assert len(run.calls) == 1
    wrapper, inner = wrapped(run.calls[0])
    assert inner == PLAIN
    assert wrapper[:4] == ["unshare", "--mount", "--propagation", "private"]
    # the bind that turns the tool's drop_caches write into a no-op, then exec of zfs
    script = wrapper[wrapper.index("-c") + 1]
    assert "mount --bind /dev/null /proc/sys/vm/drop_caches" in script
    assert script.endswith('exec "$@"')
    assert z.log == [PLAIN]
    assert namespace_state == [["/p/disk.img"]]


@pytest.mark.parametrize(
    "answer",
    [(125, ""), (1, "unshare: unshare failed: Operation not permitted"), (127, "not found")],
    ids=["bind-refused", "no-cap-sys-admin", "no-unshare"],
)
def test_no_namespace_falls_back_to_the_plain_rollback_for_good(answer, namespace_state):
    run = FakeZfsRunner(answer)
    z = Zfs(run, fuse=True)
    z.rollback(SNAP, True, files=["/p/disk.img"])
    assert run.calls[1] == PLAIN  # zfs-fuse's own rollback, with its machine-wide drop
    assert namespace_state == []
    z.rollback(SNAP, True, files=["/p/disk.img"])
    assert run.calls[2] == PLAIN  # not tried again in this process
    assert z.log == [PLAIN, PLAIN]


def test_a_failed_rollback_raises_and_drops_nothing(namespace_state):
    run = FakeZfsRunner((1, "cannot rollback to 'x': no such snapshot"))
    with pytest.raises(ZfsError, match="no such snapshot") as err:
        Zfs(run, fuse=True).rollback(SNAP, True, files=["/p/disk.img"])
    assert err.value.argv == PLAIN
    assert len(run.calls) == 1 and namespace_state == []
    assert zfs._namespace_works == [True]


def test_busy_is_retried_inside_the_namespace(namespace_state):
    run = FakeZfsRunner((1, "cannot rollback: dataset is busy"), (0, ""))
    z = Zfs(run, fuse=True)
    z.rollback(SNAP, True, files=["/p/disk.img"])
    assert [wrapped(c)[1] for c in run.calls] == [PLAIN, PLAIN]
    assert z.log == [PLAIN, PLAIN]
    assert namespace_state == [["/p/disk.img"]]


@pytest.mark.parametrize(("fuse", "files"), [(False, ["/p/disk.img"]), (True, None)])
def test_openzfs_or_no_files_is_the_plain_command(fuse, files, namespace_state):
    run = FakeZfsRunner()
    Zfs(run, fuse=fuse).rollback(SNAP, True, files=files)
    assert run.calls == [PLAIN]
    assert namespace_state == []


def test_the_boot_path_names_the_writebacks_disk_file(namespace_state):
    cfg = {"pool": "tank", "disk_format": "file", "mountpoint": "/srv/gg", "reserve": "5%"}
    rows = [
        ("tank", "available", str(900 << 30)),
        ("tank", "used", str(100 << 30)),
        ("tank/images/win11", "type", "filesystem"),
        ("tank/images/win11@v3", "type", "snapshot"),
        ("tank/images/win11@v3", "ggnet:created", "2025-01-01T00:00:00.0Z"),
        ("tank/writebacks/pc-01", "available", str(900 << 30)),
        ("tank/writebacks/pc-01/system", "origin", "tank/images/win11@v3"),
        ("tank/writebacks/pc-01/system", "creation", "1700000000"),
        ("tank/writebacks/pc-01/system@ggnet-base", "type", "snapshot"),
    ]
    run = FakeZfsRunner(listing="".join(f"{n}\t{p}\t{v}\n" for n, p, v in rows))
    clients = [{"name": "pc-01", "image": "win11", "target_iqn": "iqn.x:pc-01"}]
    result = storage.reset(
        cfg, {"win11": {"size": "64G"}}, clients, "pc-01", boot=True, zfs=Zfs(run, fuse=True)
    )
    assert [a.detail.split()[0] for a in result.actions] == ["rollback"]
    assert wrapped(run.calls[-1])[1] == PLAIN
    assert namespace_state == [["/srv/gg/writebacks/pc-01/system/disk.img"]]


def test_drop_pages_falls_back_to_the_whole_cache_when_a_file_cannot_be_opened(
    tmp_path, monkeypatch
):
    monkeypatch.undo()  # the real drop_pages
    target = tmp_path / "drop_caches"
    target.write_text("")
    monkeypatch.setattr(zfs, "DROP_CACHES", str(target))
    present = tmp_path / "disk.img"
    present.write_bytes(b"x" * 8192)
    zfs.drop_pages([str(present)])
    assert target.read_text() == ""  # a file that opens: only its pages
    zfs.drop_pages([str(present), str(tmp_path / "gone.img")])
    assert target.read_text() == "3"
    assert os.path.exists(present)


def _boot_rows():
    return [
        ("tank/images/win11", "type", "filesystem"),
        ("tank/images/win11@v3", "type", "snapshot"),
        ("tank/writebacks/pc-01", "available", str(900 << 30)),
        ("tank/writebacks/pc-01/system", "origin", "tank/images/win11@v3"),
        ("tank/writebacks/pc-01/system", "creation", "1700000000"),
        ("tank/writebacks/pc-01/system@ggnet-base", "type", "snapshot"),
    ]


class PoolBesideRunner:
    """The boot path's own read answers only once the pool's read has started: run one
    after the other, it would give up waiting and fail."""

    def __init__(self, pool_error=""):
        self.started = threading.Event()
        self.pool_error = pool_error
        self.calls: list[list[str]] = []

    def __call__(self, argv, stdin=None):
        self.calls.append(list(argv))
        if argv[-1] == "tank":
            self.started.set()
            if self.pool_error:
                return 1, "", self.pool_error
            return 0, f"tank\tavailable\t{900 << 30}\ntank\tused\t{100 << 30}\n", ""
        if not self.started.wait(10):
            return 1, "", "the boot path's read ran without the pool's beside it"
        return 0, "".join(f"{n}\t{p}\t{v}\n" for n, p, v in _boot_rows()), ""


def test_a_stale_pool_size_is_read_beside_the_boot_paths_read():
    cfg = {"pool": "tank", "disk_format": "file", "mountpoint": "/srv/gg"}
    run = PoolBesideRunner()
    names = ["tank/writebacks/pc-01", "tank/images/win11"]
    state = storage.read_state(cfg, Zfs(run, fuse=True), names)
    assert sorted(c[-1] for c in run.calls) == ["tank", "tank/images/win11"]
    assert (state.available, state.total) == (900 << 30, 1000 << 30)
    assert pool_size._POOL_TOTAL["tank"][1] == 1000 << 30
    # fresh now: the next read is the boot path's alone
    run2 = PoolBesideRunner()
    run2.started.set()
    storage.read_state(cfg, Zfs(run2, fuse=True), names)
    assert [c[-1] for c in run2.calls] == ["tank/images/win11"]


def test_a_failed_pool_read_beside_fails_the_boot_path():
    cfg = {"pool": "tank", "disk_format": "file", "mountpoint": "/srv/gg"}
    run = PoolBesideRunner(pool_error="I/O error")
    with pytest.raises(ZfsError, match="I/O error"):
        storage.read_state(cfg, Zfs(run, fuse=True), ["tank/writebacks/pc-01"])
