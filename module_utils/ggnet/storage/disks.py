"""A writeback's disk: cloned from a version, re-cloned with its client's LUNs closed,
rolled back to its @ggnet-base, and the client's ggnet:disks record kept true around
every change."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass

from .. import layout
from ..host_os import BLOCK_DEVICE_WAIT, wait_block_device
from ..zfs import Zfs, ZfsError, mtime_now
from .capacity import quota_bytes
from .properties import P_CLIENT, P_DISK, P_DISKS, P_MANAGED, format_disks
from .results import StorageError
from .state import State, Writeback

# client name -> a context inside which nothing holds that client's disk files open
# (ggnet.lun_release.closer builds one from the iSCSI backend, without importing this).
Closer = Callable[[str], contextlib.AbstractContextManager[None]]


# Taken right after a writeback is cloned: resetting a writeback whose version did not
# change is one `zfs rollback -r <writeback>@ggnet-base`, not destroy + clone.
BASE_SNAPSHOT = "ggnet-base"


def writeback_props(cfg: dict, client: str, role: str) -> dict[str, str]:
    props = {P_MANAGED: "yes", P_CLIENT: client, P_DISK: role}
    quota = quota_bytes(cfg)
    if quota and layout.disk_format(cfg) == "file":
        props["quota"] = str(quota)
    return props


def quota_holder(cfg: dict, client: str, role: str) -> str:
    """The dataset that carries a writeback's quota.  A zvol takes none (ZFS: "'quota'
    does not apply to datasets of this type"), so on zvol the client's dataset holds
    it, bounding that client's disks together."""
    if layout.disk_format(cfg) == "zvol":
        return layout.client_dataset(cfg, client)
    return layout.writeback_dataset(cfg, client, role)


def set_quota(cfg: dict, client: str, role: str, zfs: Zfs) -> None:
    quota = quota_bytes(cfg)
    zfs.set(quota_holder(cfg, client, role), {"quota": str(quota) if quota else "none"})


@dataclass
class ClientDisks:
    disks: dict[str, tuple[str | None, int]]
    removed: bool = False  # the client dataset itself was destroyed


@contextlib.contextmanager
def recording(state: State, client: str, zfs: Zfs) -> Iterator[ClientDisks]:
    """Keep a client's ggnet:disks true across changes to its disks.

    The record is cleared before the first change (an interrupted change must not
    leave a record claiming disks that are gone) and written from what was done once
    every change succeeded.  The caller updates the yielded {role: (origin, quota)},
    seeded from `state`, as it goes."""
    cfg = state.cfg
    dataset = layout.client_dataset(cfg, client)
    rec = ClientDisks(
        {w.role: (w.origin, w.quota) for w in state.writebacks.values() if w.client == client}
    )
    existed = dataset in state.raw
    if existed and state.raw[dataset].get(P_DISKS) is not None:
        zfs.inherit(dataset, P_DISKS)
    yield rec
    if not rec.removed and (rec.disks or existed):
        zfs.set(dataset, {P_DISKS: format_disks(rec.disks)})


def rollback_disk(
    zfs: Zfs, snapshot: str, backing: tuple[str, str], recursive: bool = False
) -> None:
    """Roll a disk's dataset back; a disk file's cached pages are dropped with it (not
    the machine's whole page cache), so whoever holds it open reads the old content."""
    path, kind = backing
    zfs.rollback(snapshot, recursive, files=[path] if kind == "file" else None)


def base_snapshot(dataset: str) -> str:
    return f"{dataset}@{BASE_SNAPSHOT}"


def wait_for_device(path: str, what: str) -> None:
    """A new zvol's device: `zfs create` and `zfs clone` return before udev has made its
    /dev/zvol link (seconds later on a busy server), and a LUN or a write on the path
    before then fails."""
    if not wait_block_device(path):
        raise StorageError(
            f"{what}: the device {path} did not appear within {BLOCK_DEVICE_WAIT:g} s "
            "(udev); look at `udevadm monitor`, then run it again"
        )


def clone_writeback(cfg: dict, client: str, role: str, snapshot: str, zfs: Zfs) -> None:
    """Clone a version as a client's disk and take its @ggnet-base right away."""
    dataset = layout.writeback_dataset(cfg, client, role)
    zfs.clone(snapshot, dataset, writeback_props(cfg, client, role))
    path, kind = layout.writeback_backing(cfg, client, role)
    if kind == "block":
        wait_for_device(path, f"{client}'s {role} disk")
    zfs.snapshot(base_snapshot(dataset))
    if layout.disk_format(cfg) == "zvol" and quota_bytes(cfg):
        # `clone -p` made the client's dataset without one (a version change re-sets
        # the same value: one cheap call on a rare path).
        set_quota(cfg, client, role, zfs)


def closed(closer: Closer | None, client: str) -> contextlib.AbstractContextManager[None]:
    return closer(client) if closer else contextlib.nullcontext()


def recreate(
    cfg: dict, client: str, role: str, snapshot: str, zfs: Zfs, closer: Closer | None = None
) -> None:
    """A new clone of `snapshot` in place of the client's disk (a version change).

    On zfs-fuse this must not run while anything holds the disk file open (a LUN): the
    forced unmount succeeds, but the dataset then stays busy until the daemon restarts.
    `closer` closes the client's LUNs around it.  See docs/storage.md, "Reset and open
    files"."""
    dataset = layout.writeback_dataset(cfg, client, role)
    with closed(closer, client):
        try:
            zfs.destroy(dataset, recursive=True, unmount_first=layout.disk_format(cfg) == "file")
        except ZfsError as exc:
            if not exc.busy:
                raise
            path = layout.writeback_backing(cfg, client, role)[0]
            raise StorageError(
                f"{dataset} is busy: something still holds {path} open (a LUN that was not "
                f"closed, or a process: `fuser -v {path}`). Its disk is as it was; let go "
                f"of it, then reset {client} again (its next boot does)"
            ) from exc
        clone_writeback(cfg, client, role, snapshot, zfs)


def writeback_is_fresh(cfg: dict, wb: Writeback, zfs: Zfs) -> bool:
    """Nothing was written into `wb` since it was cloned.

    file: versions' disk files are back-dated at snapshot time, so any write after the
    clone leaves an mtime at or after the clone's creation second.  zvol: OpenZFS's
    `written` property (not available on zfs-fuse, which has no zvols anyway)."""
    path, kind = layout.writeback_backing(cfg, wb.client, wb.role)
    if kind == "file":
        if wb.creation is None:
            return False  # read from the record: not known, so never skip work on it
        try:
            # Not os.stat: after a rollback the kernel may still hold the discarded
            # write's mtime (zfs.mtime_now).
            return mtime_now(path) < wb.creation
        except OSError:
            return False
    if wb.written is not None:
        return wb.written == 0
    try:
        return zfs.get([wb.dataset], ["written"]).get(wb.dataset, {}).get("written") == "0"
    except ZfsError:
        return False
