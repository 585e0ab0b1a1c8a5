"""One client's writeback: reset it, keep it (maintenance), or apply it as a new
version of its image."""

from __future__ import annotations

import fcntl
import os
import re
from collections.abc import Mapping
from typing import Any

from .. import layout, rollout
from ..host_os import is_block_device
from ..zfs import Zfs
from .capacity import check_capacity, quota_bytes
from .clients import client_running, find_client, wanted_disks
from .disks import (
    BASE_SNAPSHOT,
    Closer,
    base_snapshot,
    clone_writeback,
    closed,
    recording,
    recreate,
    rollback_disk,
    writeback_is_fresh,
)
from .images import ImageSpec, desired_snapshot, image_specs, snapshot_version
from .own_names import image_parts
from .properties import P_CURRENT, P_KEEP
from .results import FORCE_HINT, Action, Result, StorageError
from .state import Image, State, Writeback, read_state

_VERSION_N = re.compile(r"^v(\d+)$")
CHUNK = 1 << 20


def reset(
    cfg: dict,
    images: Mapping[str, Any],
    clients: list[Mapping[str, Any]],
    client_name: str,
    check: bool = False,
    force: bool = False,
    sessions: Mapping[str, list] | None = None,
    boot: bool = False,
    zfs: Zfs | None = None,
    closer: Closer | None = None,
    state: State | None = None,
) -> Result:
    """Give a client fresh writebacks of its image's booted version.

    boot=True is the boot path (GET /boot/<mac>): a client in maintenance keeps its
    writeback without error, and a live session is taken as the one being replaced
    by this very boot.  Otherwise maintenance and live sessions are refused unless
    forced.  Below the reserve, no writeback is re-created (CapacityError).

    state: what read_for_reset read for a batch of clients this one is in (one zfs
    call for all of them); None reads this client's alone."""
    zfs = zfs or Zfs()
    specs = image_specs(images)
    client = find_client(clients, client_name)
    wanted = {role: c["_disk_image"] for (n, role), c in wanted_disks([client]).items()}
    if state is None:
        state = read_state(cfg, zfs, reset_datasets(cfg, images, [client]))
    result = Result()
    have_any = [state.writebacks.get((client_name, role)) for role in wanted]
    keep = bool(client.get("keep_writeback")) or any(w is not None and w.keep for w in have_any)
    if keep and not force:
        if not boot:
            raise StorageError(
                f"{client_name} is in maintenance (ggnet_keep_writeback or op=keep): resetting "
                f"would discard its writeback; {FORCE_HINT}"
            )
        result.info["kept"] = True
    if not boot and not force and client_running(client, sessions):
        raise StorageError(
            f"{client_name} has a live iSCSI session: resetting would pull its disk from under "
            f"the running OS; shut it down first, or {FORCE_HINT}"
        )
    canary = bool(client.get("canary"))
    stale = _plan_reset(state, specs, client_name, wanted, keep and not force, canary, zfs, result)
    if result.actions:
        check_capacity(state, [client_name])
    result.before = {
        f"{client_name}/{r}": (w.origin if w else None)
        for r in wanted
        for w in [state.writebacks.get((client_name, r))]
    }
    result.after = {**result.before, **{f"{client_name}/{r}": s for r, s, _ in stale}}
    # What each disk boots now (the boot path records it with the boot).
    result.info["versions"] = {
        r: image_parts(cfg, s)[1] if s else None
        for r in wanted
        for s in [result.after.get(f"{client_name}/{r}")]
    }
    if result.actions and not check:
        _apply_reset(state, client_name, stale, zfs, closer)
    return result


def reset_datasets(
    cfg: dict, images: Mapping[str, Any], clients: list[Mapping[str, Any]]
) -> list[str]:
    """What a reset of CLIENTS reads: their client datasets (with their disks below)
    and the datasets of the images their disks are cloned from."""
    specs = image_specs(images)
    used = {c["_disk_image"] for c in wanted_disks(list(clients)).values()}  # checks them
    names = [layout.client_dataset(cfg, c["name"]) for c in clients]
    return names + [layout.image_dataset(cfg, image) for image in sorted(used) if image in specs]


def read_for_reset(
    cfg: dict, images: Mapping[str, Any], clients: list[Mapping[str, Any]], zfs: Zfs
) -> State:
    """One read of what resetting every one of CLIENTS needs (reset's `state`)."""
    return read_state(cfg, zfs, reset_datasets(cfg, images, clients))


def _plan_reset(
    state: State,
    specs: dict[str, ImageSpec],
    client_name: str,
    wanted: dict[str, str],
    skip_kept: bool,
    canary: bool,
    zfs: Zfs,
    result: Result,
) -> list[tuple[str, str, str]]:
    """The client's disks that need a reset, as (role, version snapshot, how): how is
    "create", "rollback" or "recreate"; their Actions go to `result`."""
    cfg = state.cfg
    stale: list[tuple[str, str, str]] = []
    for role, image in sorted(wanted.items()):
        snapshot = desired_snapshot(
            state, specs, image, f"{client_name} ({role} disk)", canary=canary
        )
        have = state.writebacks.get((client_name, role))
        dataset = layout.writeback_dataset(cfg, client_name, role)
        if have is None:
            how, detail = "create", f"clone of {snapshot}"
            result.actions.append(Action("create_writeback", dataset, detail, client_name))
        elif skip_kept:
            continue
        elif have.origin != snapshot:
            # A version change needs a new clone (anything holding the disk file open
            # must let go first: see recreate).
            how, detail = "recreate", f"clone of {snapshot}"
            result.actions.append(Action("reset_writeback", dataset, detail, client_name))
        elif not writeback_is_fresh(cfg, have, zfs):
            # Same version, written to: back to the state right after its clone.  A
            # writeback from before @ggnet-base existed is re-cloned once instead.
            if base_snapshot(dataset) in state.raw:
                how, detail = "rollback", f"rollback to @{BASE_SNAPSHOT} ({snapshot})"
            else:
                how, detail = "recreate", f"clone of {snapshot}"
            result.actions.append(Action("reset_writeback", dataset, detail, client_name))
        else:
            continue
        stale.append((role, snapshot, how))
    return stale


def _apply_reset(
    state: State,
    client_name: str,
    stale: list[tuple[str, str, str]],
    zfs: Zfs,
    closer: Closer | None,
) -> None:
    cfg = state.cfg
    for role, _snapshot, how in stale:
        if how == "rollback":
            # Origin and quota stay: the client's ggnet:disks record stays true.
            rollback_disk(
                zfs,
                base_snapshot(layout.writeback_dataset(cfg, client_name, role)),
                layout.writeback_backing(cfg, client_name, role),
                recursive=True,
            )
    if any(how != "rollback" for _, _, how in stale):
        # One close of the client's LUNs for all its re-clones (system and game).
        recloning = any(how == "recreate" for _, _, how in stale)
        with (
            recording(state, client_name, zfs) as rec,
            closed(closer if recloning else None, client_name),
        ):
            for role, snapshot, how in stale:
                if how == "recreate":
                    recreate(cfg, client_name, role, snapshot, zfs)
                elif how == "create":
                    clone_writeback(cfg, client_name, role, snapshot, zfs)
                rec.disks[role] = (snapshot, quota_bytes(cfg))


def set_keep(
    cfg: dict,
    clients: list[Mapping[str, Any]],
    client_name: str,
    keep: bool,
    check: bool = False,
    zfs: Zfs | None = None,
) -> Result:
    """Maintenance on/off, recorded on the client's dataset (its disks inherit it)."""
    zfs = zfs or Zfs()
    client = find_client(clients, client_name)
    wanted_disks([client])
    dataset = layout.client_dataset(cfg, client_name)
    state = read_state(cfg, zfs, [dataset])
    if dataset not in state.raw:
        raise StorageError(f"{client_name} has no writeback yet: converge the storage role first")
    have = state.raw[dataset].get(P_KEEP) == "on"
    result = Result(before={"keep": have}, after={"keep": keep})
    if have != keep:
        result.actions.append(
            Action("set_keep" if keep else "clear_keep", dataset, "", client_name)
        )
        if not check:
            if keep:
                zfs.set(dataset, {P_KEEP: "on"})
            else:
                zfs.inherit(dataset, P_KEEP)
    if not keep and client.get("keep_writeback"):
        result.warnings.append(
            f"{client_name} stays in maintenance: ggnet_keep_writeback is true in the inventory"
        )
    return result


def _next_version_name(image: Image) -> str:
    numbers = [int(m.group(1)) for v in image.versions if (m := _VERSION_N.match(v.name))]
    return f"v{max(numbers, default=0) + 1}"


def apply_writeback(
    cfg: dict,
    images: Mapping[str, Any],
    clients: list[Mapping[str, Any]],
    client_name: str,
    comment: str,
    version: str | None = None,
    disk: str = "system",
    check: bool = False,
    sessions: Mapping[str, list] | None = None,
    zfs: Zfs | None = None,
    closer: Closer | None = None,
    promote: bool = False,
) -> Result:
    """Make a client's writeback the new version of its image: a candidate, which no
    PC boots until it is promoted (or put on the canary PCs); promote=True promotes it
    at once (the operator skips the rollout), as apply did before version states.

    Refused while the client has a live session: its OS may still have data in flight.
    The changed blocks are copied into the image's head, which is then snapshotted,
    so the new version shares every unchanged block with the previous one."""
    zfs = zfs or Zfs()
    specs = image_specs(images)
    client = find_client(clients, client_name)
    if not comment:
        raise StorageError(f"apply {client_name}: a comment is required (-e comment='...')")
    image_name = _image_of_disk(specs, client, client_name, disk)
    _refuse_while_running(client, client_name, sessions)
    state = read_state(
        cfg,
        zfs,
        [layout.client_dataset(cfg, client_name), layout.image_dataset(cfg, image_name)],
    )
    image = state.images.get(image_name)
    wb = state.writebacks.get((client_name, disk))
    if image is None or wb is None:
        raise StorageError(f"apply {client_name}: no writeback or image on the pool to apply")
    path, _ = layout.writeback_backing(cfg, client_name, disk)
    if writeback_is_fresh(cfg, wb, zfs):
        return _nothing_to_apply(cfg, client_name, wb)
    name = version or _next_version_name(image)
    result, snapshot = _plan_new_version(
        cfg, image, image_name, specs[image_name], name, comment, client_name, promote
    )
    if check:
        return result
    result.info["copied_bytes"] = _copy_into_new_version(
        cfg, image, image_name, name, comment, client_name, path, zfs, promote
    )
    # Its content is now that version: re-cloning loses nothing, frees its space, and
    # makes a repeated apply a no-op.
    with recording(state, client_name, zfs) as rec:
        recreate(cfg, client_name, disk, snapshot, zfs, closer)
        rec.disks[disk] = (snapshot, quota_bytes(cfg))
    return result


def _image_of_disk(
    specs: Mapping[str, ImageSpec], client: Mapping[str, Any], client_name: str, disk: str
) -> str:
    """The image the client's `disk` is a writeback of; it must be in ggnet_images."""
    wanted = {role: c["_disk_image"] for (n, role), c in wanted_disks([client]).items()}
    if disk not in wanted:
        raise StorageError(f"apply {client_name}: it has no {disk} disk")
    image_name = wanted[disk]
    if image_name not in specs:
        raise StorageError(f"apply {client_name}: image {image_name!r} is not in ggnet_images")
    return image_name


def _refuse_while_running(
    client: Mapping[str, Any], client_name: str, sessions: Mapping[str, list] | None
) -> None:
    running = client_running(client, sessions)
    if running is None:
        raise StorageError(
            f"apply {client_name}: cannot tell whether it is running (no iSCSI session "
            "information); give iscsi_backend or sessions"
        )
    if running:
        assert sessions is not None  # client_running knew
        who = ", ".join(sessions.get(client.get("target_iqn") or "") or [])
        raise StorageError(
            f"apply {client_name}: the client is running (live iSCSI session on "
            f"{client.get('target_iqn')} from {who}): shut it down first, then apply"
        )


def _nothing_to_apply(cfg: dict, client_name: str, wb: Writeback) -> Result:
    # Untouched since its clone (also right after an apply, which re-clones it from
    # the new version): there is nothing to make a version of.
    result = Result()
    result.info["version"] = image_parts(cfg, wb.origin)[1] if wb.origin else None
    result.warnings.append(f"apply {client_name}: its writeback is unchanged; nothing to apply")
    return result


def _plan_new_version(
    cfg: dict,
    image: Image,
    image_name: str,
    spec: ImageSpec,
    name: str,
    comment: str,
    client_name: str,
    promote: bool,
) -> tuple[Result, str]:
    """(the Result an apply as version `name` reports, that version's snapshot)."""
    if image.version(name):
        raise StorageError(
            f"apply {client_name}: version {name!r} of {image_name} already exists: choose another"
        )
    try:
        layout.version_snapshot(cfg, image_name, name)
    except layout.LayoutError as exc:
        raise StorageError(f"apply {client_name}: {exc}") from None
    state = rollout.PROMOTED if promote else rollout.CANDIDATE
    result = Result(
        before={"versions": [v.name for v in image.versions], "current": image.current},
        after={
            "versions": [*[v.name for v in image.versions], name],
            "current": name if promote else image.current,
        },
    )
    snapshot = layout.version_snapshot(cfg, image_name, name)
    result.actions.append(Action("apply_writeback", snapshot, f"{comment} ({state})", client_name))
    result.info["version"] = name
    result.info["state"] = state
    if spec.version:
        result.warnings.append(
            f"ggnet_images.{image_name}.version pins {spec.version}: set it to {name} "
            "in the inventory for clients to boot the new version"
        )
    return result, snapshot


def _copy_into_new_version(
    cfg: dict,
    image: Image,
    image_name: str,
    name: str,
    comment: str,
    client_name: str,
    path: str,
    zfs: Zfs,
    promote: bool,
) -> int:
    """Copy the writeback's changed blocks into the image head and snapshot it as `name`,
    a candidate (promoted, and the image's current version, with `promote`); returns
    the bytes copied."""
    newest = image.versions[-1]
    # A half-finished earlier apply may have left the head dirty: start from the newest.
    head, head_kind = layout.image_backing(cfg, image_name)
    rollback_disk(zfs, newest.snapshot, (head, head_kind))
    copied = copy_changed_blocks(path, head)
    state = rollout.PROMOTED if promote else rollout.CANDIDATE
    snapshot_version(cfg, image_name, name, comment, zfs, applied_from=client_name, state=state)
    if promote:
        zfs.set(image.dataset, {P_CURRENT: name})
    return copied


# BLKFLSBUF (_IO(0x12, 97)): write back and drop a block device's page cache.
_BLKFLSBUF = 0x1261


def drop_block_cache(fd: int) -> None:
    """Forget what the page cache holds of a block device (a zvol), so it is read from
    the device.  LIO's block backstore writes a PC's zvol beneath that cache, and a
    rollback swaps a zvol's blocks beneath it too: without this, pages cached by an
    earlier read (seen in the lab: the boot counter a test had read) come back as the
    disk's content, and apply would copy what the PC wrote before its last boots.
    Nothing to do for a file (its filesystem keeps one cache)."""
    if is_block_device(fd):
        fcntl.ioctl(fd, _BLKFLSBUF)


def copy_changed_blocks(source: str, target: str, chunk: int = CHUNK) -> int:
    """Write into `target` only the chunks that differ from `source`; returns bytes written.

    Unchanged chunks are never rewritten, so ZFS keeps sharing them with older versions."""
    written = 0
    with open(source, "rb") as src, open(target, "r+b") as dst:
        for disk in (src, dst):
            drop_block_cache(disk.fileno())
        src_size = os.fstat(src.fileno()).st_size if os.path.isfile(source) else None
        offset = 0
        while True:
            data = src.read(chunk)
            if not data:
                break
            old = dst.read(len(data))
            if old != data:
                dst.seek(offset)
                dst.write(data)
                written += len(data)
            offset += len(data)
            dst.seek(offset)
        if src_size is not None and os.path.isfile(target):
            dst.truncate(src_size)
        dst.flush()
        os.fsync(dst.fileno())
    return written
