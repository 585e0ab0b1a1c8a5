"""A real zfs-fuse pool on a sparse file for the storage tests.

One zfs-fuse daemon serves the whole machine (fixed socket): the fixture starts it if
none runs, remembers that it did, and stops only a daemon it started.  Every pool is
destroyed after its test, failed or not.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import time
import uuid
from pathlib import Path

import pytest

SOCKET = Path("/var/run/zfs/zfs_socket")


def _zfs_ok() -> bool:
    return (
        subprocess.run(
            ["zpool", "list"], capture_output=True, env={**os.environ, "LC_ALL": "C"}
        ).returncode
        == 0
    )


@contextlib.contextmanager
def daemon(workdir: Path):
    """A zfs-fuse daemon for the block: the running one (left running) or one started
    here (stopped at the end); yields the pid of the one it started, else None."""
    if _zfs_ok():
        yield None  # someone else's daemon: use it, leave it running
        return
    SOCKET.parent.mkdir(parents=True, exist_ok=True)
    pidfile = workdir / "zfs-fuse.pid"
    subprocess.run(["zfs-fuse", "--no-kstat-mount", "-p", str(pidfile)], check=True)
    deadline = time.monotonic() + 10
    while not _zfs_ok():
        if time.monotonic() > deadline:
            raise RuntimeError("zfs-fuse did not start answering within 10 s")
        time.sleep(0.1)
    pid = int(pidfile.read_text().strip())
    try:
        yield pid
    finally:
        _stop(pid)


def _stop(pid: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGTERM)
    for _ in range(100):
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            break
        time.sleep(0.1)


@pytest.fixture(scope="session", name="zfs_daemon")
def zfs_daemon_fixture(tmp_path_factory):
    if shutil.which("zfs-fuse") is None or shutil.which("zfs") is None:
        pytest.skip("zfs-fuse is not installed (apt-get install zfs-fuse)")
    with daemon(tmp_path_factory.mktemp("zfs-fuse")) as pid:
        yield pid


def make_pool(base: Path, size: str = "1G") -> dict:
    """A new pool on a sparse file under `base`; returns its ggnet_storage settings."""
    name = f"ggt{uuid.uuid4().hex[:8]}"
    vdev = base / f"{name}.img"
    subprocess.run(["truncate", "-s", size, str(vdev)], check=True)
    mnt = base / "mnt"
    subprocess.run(
        ["zpool", "create", "-m", "none", name, str(vdev)], check=True, capture_output=True
    )
    return {
        "pool": name,
        "disk_format": "file",
        "reserve": "5%",
        "writeback_quota": "64M",
        "mountpoint": str(mnt),
        "_vdev": str(vdev),
    }


def destroy_pool(cfg: dict, timeout: float = 60.0) -> None:
    """Destroy the pool, retrying while zfs-fuse says "busy"; then remove its file.

    zfs-fuse can stay busy for several seconds after a test's last write or unmount
    (20 tries over 4 s were seen to give up), so the retries back off up to `timeout`.
    A pool that still cannot be destroyed is an error, and its file is kept: deleting
    the vdev under a live pool would leave a faulted pool in the shared daemon.
    """
    deadline = time.monotonic() + timeout
    delay = 0.2
    while True:
        proc = subprocess.run(
            ["zpool", "destroy", "-f", cfg["pool"]],
            capture_output=True,
            text=True,
            env={**os.environ, "LC_ALL": "C"},
        )
        if proc.returncode == 0 or "no such pool" in proc.stderr:
            break
        if time.monotonic() + delay > deadline:
            raise RuntimeError(
                f"zpool destroy {cfg['pool']} still fails after {timeout:.0f} s: "
                f"{proc.stderr.strip()} (vdev {cfg['_vdev']} kept; is a file on it "
                "still open, e.g. by a tgtd LUN?)"
            )
        time.sleep(delay)
        delay = min(delay * 1.5, 2.0)
    with contextlib.suppress(FileNotFoundError):
        os.unlink(cfg["_vdev"])


@pytest.fixture(name="pool")
def pool_fixture(zfs_daemon, tmp_path):
    cfg = make_pool(tmp_path)
    try:
        yield cfg
    finally:
        destroy_pool(cfg)


def storage_cfg(cfg: dict) -> dict:
    """The settings as the inventory would give them (without the fixture's own keys)."""
    return {k: v for k, v in cfg.items() if not k.startswith("_")}
