"""Images, versions and per-client writebacks on ZFS: plan against what exists, apply.

Every entry point reads the pool's state with as few `zfs get` calls as it can (the
reconcile: one, see read_state), plans, and (unless check mode) applies.  Plans are lists of Action; bad input raises StorageError before
anything changes.  Names and paths come from layout, commands from zfs.

Semantics an operator can rely on:
- An image's booted version: ggnet_images.<image>.version if set, else the version an
  operation picked last (apply / rollback record it in the image's ggnet:current
  property), else the newest version.
- A writeback is only ever re-cloned when its client is known to be off (no iSCSI
  session) and not in maintenance; otherwise the new version waits for its next reset.
- Maintenance (ggnet_keep_writeback, or `machine.yml -e op=keep`) keeps a writeback
  across reboots; destroying or resetting it needs force.
"""

from __future__ import annotations

import contextlib
import os
import re
import stat
import subprocess
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from . import layout
from .model import parse_duration as _parse_duration
from .model import parse_size, parse_size_or_percent
from .zfs import ZFS, Zfs, ZfsError

# client name -> a context inside which nothing holds that client's disk files open
# (ggnet.lun_release.closer builds one from the iSCSI backend).
Closer = Callable[[str], contextlib.AbstractContextManager[None]]

P_MANAGED = "ggnet:managed"
P_KIND = "ggnet:kind"
P_SOURCE = "ggnet:source"
P_CURRENT = "ggnet:current"
P_COMMENT = "ggnet:comment"
P_CREATED = "ggnet:created"
P_APPLIED_FROM = "ggnet:applied_from"
P_CLIENT = "ggnet:client"
P_DISK = "ggnet:disk"
P_KEEP = "ggnet:keep"
# On each client dataset: its disks as ggnet last made them, "<role>=<origin>,<quota>"
# separated by spaces ("none" for no disks).  The reconcile reads it from a one-level
# listing instead of walking every writeback: zfs-fuse pays a socket round trip per
# dataset listed.  Cleared before ggnet changes a disk and written after, so an
# interrupted change leaves no record, and a missing record means "read the disks".
P_DISKS = "ggnet:disks"

STATE_PROPS = (
    "type",
    "origin",
    "creation",
    "used",
    "available",
    "quota",
    "volsize",
    P_MANAGED,
    P_KIND,
    P_SOURCE,
    P_CURRENT,
    P_COMMENT,
    P_CREATED,
    P_APPLIED_FROM,
    P_CLIENT,
    P_DISK,
    P_KEEP,
    P_DISKS,
)
# What the whole-pool read asks for: only what State and its users read.  zfs-fuse's
# cost is per dataset (~0.3-0.9 ms each), far more than per property, but fewer
# properties still mean fewer lines to print and parse.
# The ggnet properties every read needs: an image's versions and pointer, a client's
# maintenance flag and disks record.
_GGNET_READ = (P_KIND, P_CURRENT, P_COMMENT, P_CREATED, P_APPLIED_FROM, P_KEEP, P_DISKS)
READ_PROPS = ("origin", "creation", "used", "quota", *_GGNET_READ)
# The reconcile's one read (`zfs get -d 1`): the pool's space, the images it needs with
# their versions, and one line set per client dataset (keep, the disks record).
SHALLOW_PROPS = ("available", "used", "creation", *_GGNET_READ)
# A client dataset without a record: its disks are read instead (pools made before
# ggnet:disks existed, or a change that was interrupted).
DISK_PROPS = ("origin", "creation", "quota", P_KEEP, P_DISKS)
# How read_state reads writebacks: every disk dataset (the truth, for operations that
# need creation times or exact origins), the client datasets' records, or not at all.
DISKS, RECORDS, NO_WRITEBACKS = "disks", "records", "none"
# Taken right after a writeback is cloned: resetting a writeback whose version did not
# change is one `zfs rollback -r <writeback>@ggnet-base`, not destroy + clone.
BASE_SNAPSHOT = "ggnet-base"
IMAGE_KINDS = ("system", "data")
DEFAULT_KEEP_VERSIONS = 3
FORCE_HINT = "pass force=true (playbooks: -e force=true) to do it anyway"
_VERSION_N = re.compile(r"^v(\d+)$")
CHUNK = 1 << 20


class StorageError(Exception):
    """Refused request: nothing was changed.  The message says what, where and what to do."""


class CapacityError(StorageError):
    """The pool is below its reserve: no new writebacks, boots refused."""


@dataclass
class Action:
    action: str
    target: str
    detail: str = ""
    client: str | None = None

    def describe(self) -> dict[str, Any]:
        out = {"action": self.action, "target": self.target}
        if self.detail:
            out["detail"] = self.detail
        if self.client:
            out["client"] = self.client
        return out


@dataclass
class Result:
    actions: list[Action] = field(default_factory=list)
    pending: list[dict[str, Any]] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    before: dict[str, Any] = field(default_factory=dict)
    after: dict[str, Any] = field(default_factory=dict)
    info: dict[str, Any] = field(default_factory=dict)

    @property
    def changed(self) -> bool:
        return bool(self.actions)

    def as_dict(self) -> dict[str, Any]:
        return {
            "changed": self.changed,
            "actions": [a.describe() for a in self.actions],
            "pending": self.pending,
            "warnings": self.warnings,
            "diff": {"before": self.before, "after": self.after},
            **self.info,
        }


def now_iso() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime()) + f".{time.time_ns() % 10**9:09d}Z"


def parse_duration(value: object, where: str) -> int:
    try:
        return _parse_duration(value)
    except ValueError as exc:
        raise StorageError(f"{where}: {value!r} {exc}") from None


# -- state ---------------------------------------------------------------------------


@dataclass
class Version:
    name: str
    snapshot: str
    created: str
    comment: str | None
    applied_from: str | None


@dataclass
class Image:
    name: str
    dataset: str
    kind: str | None
    current: str | None
    versions: list[Version]  # oldest first

    def version(self, name: str) -> Version | None:
        return next((v for v in self.versions if v.name == name), None)


@dataclass
class Writeback:
    client: str
    role: str
    dataset: str
    origin: str | None
    creation: int | None  # None when read from the record (the reconcile needs none)
    quota: int
    keep: bool
    written: int | None = None  # OpenZFS `written`, read on the zvol boot path


@dataclass
class State:
    cfg: dict
    pool_exists: bool
    raw: dict[str, dict[str, str | None]]
    images: dict[str, Image]
    writebacks: dict[tuple[str, str], Writeback]
    available: int
    total: int
    # Clients whose dataset has no ggnet:disks: their disks were read one level down.
    unrecorded: set[str] = field(default_factory=set)

    def dependants(self, snapshot: str) -> list[Writeback]:
        return [w for w in self.writebacks.values() if w.origin == snapshot]


def read_state(
    cfg: dict,
    zfs: Zfs,
    names: Iterable[str] | None = None,
    *,
    images: Iterable[str] | None = None,
    writebacks: str = DISKS,
) -> State:
    """The pool's images and writebacks.

    - `names`: only those datasets and what is below them (`zfs get -r`), for the boot
      path, plus the pool's space (cached, see _pool_space).
    - `images` given (image names): one `zfs get -d 1` on the pool, those images and,
      with writebacks=RECORDS, the writebacks root: the client datasets and their
      ggnet:disks records, never the disks themselves.  Clients without a record get a
      second read of their disks.  This is the reconcile's read: zfs-fuse's cost is one
      socket round trip per dataset listed, so it lists one dataset per client, not three.
    - otherwise: `zfs get` of the pool's space, then `zfs get -d 2` of `<pool>/images`
      (versions) and, with writebacks=DISKS, `<pool>/writebacks` (client datasets and
      their disks but not the disks' @ggnet-base snapshots at depth 3)."""
    pool = layout.pool(cfg)
    wb_root = layout.writebacks_root(cfg)
    if names is not None:
        props = STATE_PROPS
        if layout.disk_format(cfg) == "zvol":
            # OpenZFS only (zfs-fuse has no zvols and no `written`): freshness comes in
            # the same read instead of a second one.
            props = (*props, "written")
        # Never `-r` on the pool here: the boot path must not enumerate every client.
        # The pool's own read, when its cached size is stale, runs beside it.
        pool_read = _PoolRead(zfs, pool) if _pool_total_stale(pool) else None
        raw = zfs.get(names, props, recursive=True)
        pool_props = _pool_space(zfs, pool, raw, names, pool_read)
        pool_exists = bool(pool_props)
    elif images is not None:
        targets = [pool]
        if writebacks != NO_WRITEBACKS:
            targets.append(wb_root)
        targets += [layout.image_dataset(cfg, image) for image in images]
        raw = zfs.get(targets, SHALLOW_PROPS, depth=1)
        pool_props = raw.get(pool, {})
        pool_exists = pool in raw
    else:
        roots = [layout.images_root(cfg)]
        if writebacks == NO_WRITEBACKS:
            # One level below the pool still shows whether the writebacks root exists.
            top = zfs.get([pool], ["available", "used"], depth=1)
        else:
            top = zfs.get([pool], ["available", "used"])
            roots.append(wb_root)
        pool_props = top.get(pool, {})
        pool_exists = bool(pool_props)
        raw = {**top, **zfs.get(roots, READ_PROPS, depth=2)} if pool_exists else {}
    records: dict[str, dict[str, tuple[str | None, int]]] = {}
    unrecorded: set[str] = set()
    if images is not None and writebacks == RECORDS:
        for name, props in raw.items():
            if (client := layout.split_client(cfg, name)) is not None:
                disks = parse_disks(props.get(P_DISKS))
                if disks is None:
                    unrecorded.add(client)
                else:
                    records[client] = disks
        if unrecorded:
            clients = sorted(layout.client_dataset(cfg, c) for c in unrecorded)
            raw.update(zfs.get(clients, DISK_PROPS, depth=1))
    images_found: dict[str, Image] = {}
    snapshots: list[tuple[str, str, dict]] = []
    found: dict[tuple[str, str], Writeback] = {}
    for client, disks in records.items():
        keep = raw[layout.client_dataset(cfg, client)].get(P_KEEP) == "on"
        for role, (origin, quota) in disks.items():
            found[(client, role)] = Writeback(
                client=client,
                role=role,
                dataset=layout.writeback_dataset(cfg, client, role),
                origin=origin,
                creation=None,
                quota=quota,
                keep=keep,
            )
    for name, props in raw.items():
        if (wb := layout.split_writeback(cfg, name)) is not None:
            if wb[0] in records:
                continue
            written = props.get("written")
            found[wb] = Writeback(
                client=wb[0],
                role=wb[1],
                dataset=name,
                origin=props.get("origin"),
                creation=int(props.get("creation") or 0),
                quota=int(props.get("quota") or 0),
                keep=props.get(P_KEEP) == "on",
                written=int(written) if written is not None else None,
            )
        elif (img := layout.split_image(cfg, name)) is not None:
            image, version = img
            if version is None:
                images_found[image] = Image(
                    image, name, props.get(P_KIND), props.get(P_CURRENT), []
                )
            else:
                snapshots.append((image, version, props))
    for image, version, props in snapshots:
        if image in images_found:
            images_found[image].versions.append(
                Version(
                    name=version,
                    snapshot=layout.version_snapshot(cfg, image, version),
                    created=props.get(P_CREATED) or _iso(int(props.get("creation") or 0)),
                    comment=props.get(P_COMMENT),
                    applied_from=props.get(P_APPLIED_FROM),
                )
            )
    for img in images_found.values():
        img.versions.sort(key=lambda v: (v.created, v.name))
    available = int(pool_props.get("available") or 0)
    total = available + int(pool_props.get("used") or 0)
    return State(cfg, pool_exists, raw, images_found, found, available, total, unrecorded)


def format_disks(disks: Mapping[str, tuple[str | None, int]]) -> str:
    """The ggnet:disks value for {role: (origin, quota)}."""
    items = [f"{role}={origin or '-'},{quota}" for role, (origin, quota) in sorted(disks.items())]
    return " ".join(items) or "none"


def parse_disks(value: str | None) -> dict[str, tuple[str | None, int]] | None:
    """{role: (origin, quota)} from a ggnet:disks value; None when absent or unreadable
    (the caller then reads the disks themselves)."""
    if not value:
        return None
    if value == "none":
        return {}
    disks: dict[str, tuple[str | None, int]] = {}
    for item in value.split():
        role, eq, rest = item.partition("=")
        origin, comma, quota = rest.rpartition(",")
        if not (eq and comma and origin and quota.isdigit()) or role not in layout.DISK_ROLES:
            return None
        disks[role] = (None if origin == "-" else origin, int(quota))
    return disks


_POOL_TOTAL: dict[str, tuple[float, int]] = {}
POOL_TOTAL_TTL = 60.0


def _pool_total_stale(pool: str) -> bool:
    cached = _POOL_TOTAL.get(pool)
    return cached is None or time.monotonic() - cached[0] > POOL_TOTAL_TTL


class _PoolRead:
    """`zfs get available,used <pool>` in a thread, started before the boot path's own
    read and joined after it: the two are independent reads, and zfs-fuse's cost is
    mostly the process start and the socket round trips, not the daemon's CPU."""

    def __init__(self, zfs: Zfs, pool: str):
        self._out: list[Any] = []
        self._thread = threading.Thread(target=self._run, args=(zfs, pool), daemon=True)
        self._thread.start()

    def _run(self, zfs: Zfs, pool: str) -> None:
        try:
            self._out.append(zfs.get([pool], ["available", "used"]).get(pool, {}))
        except BaseException as e:  # re-raised in the caller's thread
            self._out.append(e)

    def result(self) -> dict[str, str | None]:
        self._thread.join()
        if isinstance(self._out[0], BaseException):
            raise self._out[0]
        return self._out[0]


def _pool_space(
    zfs: Zfs, pool: str, raw: dict, names: Iterable[str], pool_read: _PoolRead | None = None
) -> dict[str, str | None]:
    """The pool's used/available without a second `zfs get` on the hot path.

    The writebacks root has no quota, so its `available` is the pool's; the pool's size
    (for a percentage reserve) changes rarely and is cached for a minute.  When it is
    stale, `pool_read` (started beside the caller's read) or a read now refreshes it."""
    root = next((n for n in names if n.startswith(f"{pool}/") and n in raw), None)
    cached = _POOL_TOTAL.get(pool)
    if root is None or pool_read is not None or _pool_total_stale(pool):
        props = pool_read.result() if pool_read is not None else None
        if props is None:
            props = zfs.get([pool], ["available", "used"]).get(pool, {})
        if props:
            total = int(props.get("available") or 0) + int(props.get("used") or 0)
            _POOL_TOTAL[pool] = (time.monotonic(), total)
        return props
    assert cached is not None
    available = int(raw[root].get("available") or 0)
    return {"available": str(available), "used": str(cached[1] - available)}


def _iso(seconds: int) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S.000000000Z", time.gmtime(seconds))


# -- desired state -------------------------------------------------------------------


@dataclass
class ImageSpec:
    name: str
    size: int | None
    kind: str
    version: str | None
    source: str | None


def image_specs(images: Mapping[str, Any]) -> dict[str, ImageSpec]:
    specs = {}
    for name, spec in (images or {}).items():
        where = f"ggnet_images.{name}"
        try:
            layout.image_dataset({"pool": "p"}, name)
        except layout.LayoutError as exc:
            raise StorageError(f"{where}: {exc}") from None
        spec = spec or {}
        if not isinstance(spec, Mapping):
            raise StorageError(f"{where}: must be a mapping with size, kind, version, source")
        size = spec.get("size")
        if size is not None:
            try:
                size = parse_size(size)
            except ValueError as exc:
                raise StorageError(f"{where}.size: {size!r} {exc}") from None
        kind = spec.get("kind") or "system"
        if kind not in IMAGE_KINDS:
            raise StorageError(f"{where}.kind: {kind!r} is not one of {', '.join(IMAGE_KINDS)}")
        version = spec.get("version")
        if version is not None:
            version = str(version)
            try:
                layout.version_snapshot({"pool": "p"}, name, version)
            except layout.LayoutError as exc:
                raise StorageError(f"{where}.version: {exc}") from None
        source = spec.get("source")
        if size is None and not source:
            raise StorageError(f"{where}: needs size (an empty disk) or source (a raw/qcow2 file)")
        specs[name] = ImageSpec(name, size, kind, version, source)
    return specs


def effective_version(image: Image, spec: ImageSpec | None) -> Version | None:
    """The version clients of `image` boot (see module docstring); None if it has none."""
    if spec is not None and spec.version:
        return image.version(spec.version)
    if image.current and (chosen := image.version(image.current)):
        return chosen
    return image.versions[-1] if image.versions else None


def _desired_snapshot(state: State, specs: dict[str, ImageSpec], image: str, where: str) -> str:
    if image not in specs:
        raise StorageError(
            f"{where}: image {image!r} is not in ggnet_images (known: {', '.join(sorted(specs)) or 'none'})"
        )
    found = state.images.get(image)
    if found is None or not found.versions:
        raise StorageError(
            f"{where}: image {image!r} does not exist on pool {layout.pool(state.cfg)} yet: "
            "converge the storage role (ggnet_images) first"
        )
    chosen = effective_version(found, specs[image])
    if chosen is None:
        raise StorageError(
            f"ggnet_images.{image}.version: unknown version {specs[image].version!r} "
            f"(existing: {', '.join(v.name for v in found.versions)})"
        )
    return chosen.snapshot


def reserve_bytes(cfg: dict, total: int) -> int:
    value = cfg.get("reserve", "10%")
    try:
        unit, amount = parse_size_or_percent(value)
    except ValueError as exc:
        raise StorageError(f"ggnet_storage.reserve: {value!r} {exc}") from None
    return int(total * amount / 100) if unit == "percent" else int(amount)


def quota_bytes(cfg: dict) -> int:
    value = cfg.get("writeback_quota")
    if value in (None, "none", 0, "0"):
        return 0
    try:
        return parse_size(value)
    except ValueError as exc:
        raise StorageError(f"ggnet_storage.writeback_quota: {value!r} {exc}") from None


def check_capacity(state: State, clients: list[str]) -> None:
    reserve = reserve_bytes(state.cfg, state.total)
    if state.available < reserve:
        raise CapacityError(
            f"pool {layout.pool(state.cfg)} has {_human(state.available)} free, below its reserve "
            f"ggnet_storage.reserve={state.cfg.get('reserve', '10%')} ({_human(reserve)}): "
            f"no new writeback for {', '.join(clients)}. Free space (playbooks/image.yml -e op=prune) "
            "or lower the reserve."
        )


def _human(n: int) -> str:
    for unit in ("B", "K", "M", "G", "T"):
        if abs(n) < 1024 or unit == "T":
            return f"{n:.0f}{unit}" if unit == "B" else f"{n:.1f}{unit}"
        n /= 1024
    return str(n)


# -- pool and images -----------------------------------------------------------------


def plan_images(state: State, specs: dict[str, ImageSpec]) -> list[Action]:
    cfg = state.cfg
    pool = layout.pool(cfg)
    actions: list[Action] = []
    if not state.pool_exists:
        vdevs = cfg.get("vdevs") or []
        if not vdevs:
            raise StorageError(
                f"ggnet_storage.pool: pool {pool!r} does not exist: create it, or list the "
                "devices/files to build it from in ggnet_storage.vdevs"
            )
        actions.append(Action("create_pool", pool, " ".join(vdevs)))
    for dataset, mountpoint in layout.top_mountpoints(cfg).items():
        have = state.raw.get(dataset)
        if have is None:
            actions.append(Action("create_dataset", dataset, f"mountpoint={mountpoint}"))
    fmt = layout.disk_format(cfg)
    for name, spec in sorted(specs.items()):
        image = state.images.get(name)
        dataset = layout.image_dataset(cfg, name)
        if image is None:
            # A block device (an install medium, a disk to copy) imports like a file.
            if spec.source and not (os.path.isfile(spec.source) or _is_block(spec.source)):
                raise StorageError(
                    f"ggnet_images.{name}.source: {spec.source!r} is not a file or block "
                    "device on this server"
                )
            how = f"import {spec.source}" if spec.source else f"empty {spec.size} bytes"
            first = spec.version or "v1"
            actions.append(Action("create_image", dataset, f"{fmt}, {how}, first version {first}"))
            continue
        if not image.versions:
            actions.append(Action("snapshot_version", f"{dataset}@{spec.version or 'v1'}"))
        elif spec.version and image.version(spec.version) is None:
            raise StorageError(
                f"ggnet_images.{name}.version: unknown version {spec.version!r} "
                f"(existing: {', '.join(v.name for v in image.versions)})"
            )
    return actions


def apply_images(
    state: State, specs: dict[str, ImageSpec], actions: list[Action], zfs: Zfs
) -> None:
    cfg = state.cfg
    for action in actions:
        if action.action == "create_pool":
            zfs.zpool_create(action.target, cfg["vdevs"], None)
        elif action.action == "create_dataset":
            mountpoint = layout.top_mountpoints(cfg)[action.target]
            # atime off: reading a version's file must not dirty the head.
            zfs.create(action.target, {"mountpoint": mountpoint, "atime": "off"}, parents=True)
        elif action.action == "create_image":
            name = layout.split_image(cfg, action.target)[0]
            _create_image(cfg, specs[name], zfs)
        elif action.action == "snapshot_version":
            name, version = layout.split_image(cfg, action.target)
            _snapshot_version(cfg, name, version, "first version", zfs)


def _is_block(path: str) -> bool:
    try:
        return stat.S_ISBLK(os.stat(path).st_mode)
    except OSError:
        return False


def _source_size(source: str) -> int:
    proc = subprocess.run(
        ["qemu-img", "info", "--output=json", source],
        capture_output=True,
        text=True,
        check=False,
        env={**os.environ, "LC_ALL": "C"},
    )
    if proc.returncode != 0:
        raise StorageError(f"cannot read source image {source}: {proc.stderr.strip()}")
    import json

    return int(json.loads(proc.stdout)["virtual-size"])


def _round_up(n: int, unit: int = 1 << 20) -> int:
    return (n + unit - 1) // unit * unit


def _create_image(cfg: dict, spec: ImageSpec, zfs: Zfs) -> None:
    dataset = layout.image_dataset(cfg, spec.name)
    size = spec.size or 0
    if spec.source:
        source_size = _source_size(spec.source)
        if spec.size and source_size > spec.size:
            raise StorageError(
                f"ggnet_images.{spec.name}: source {spec.source} is {source_size} bytes, larger "
                f"than size {spec.size}: raise size or leave it out"
            )
        size = max(size, source_size)
    size = _round_up(size)
    props = {P_MANAGED: "yes", P_KIND: spec.kind}
    if spec.source:
        props[P_SOURCE] = spec.source
    path, _ = layout.image_backing(cfg, spec.name)
    if layout.disk_format(cfg) == "zvol":
        zfs.create(dataset, props, volsize=size)
        _wait_for(path)
    else:
        zfs.create(dataset, props)
        with open(path, "wb") as disk:
            disk.truncate(size)
    if spec.source:
        _qemu_img_convert(spec.source, path)
    comment = f"imported from {spec.source}" if spec.source else "empty disk"
    _snapshot_version(cfg, spec.name, spec.version or "v1", comment, zfs)


def _qemu_img_convert(source: str, target: str) -> None:
    # -n: the target (file or zvol) exists with its size; never recreate it.
    proc = subprocess.run(
        ["qemu-img", "convert", "-n", "-O", "raw", source, target],
        capture_output=True,
        text=True,
        check=False,
    )
    if proc.returncode != 0:
        raise StorageError(f"importing {source} into {target} failed: {proc.stderr.strip()}")


def _wait_for(path: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not os.path.exists(path):
        if time.monotonic() > deadline:
            raise StorageError(f"{path} did not appear within {timeout:.0f}s (udev running?)")
        time.sleep(0.05)


def _snapshot_version(
    cfg: dict, image: str, version: str, comment: str, zfs: Zfs, applied_from: str | None = None
) -> None:
    path, kind = layout.image_backing(cfg, image)
    if kind == "file" and os.path.exists(path):
        # Back-date the version's file so a writeback's file is "untouched" exactly while
        # its mtime is older than the writeback itself (see writeback_is_fresh).
        past = time.time() - 2
        os.utime(path, (past, past))
    props = {P_COMMENT: comment, P_CREATED: now_iso()}
    if applied_from:
        props[P_APPLIED_FROM] = applied_from
    zfs.snapshot(layout.version_snapshot(cfg, image, version), props)


def converge_images(
    cfg: dict, images: Mapping[str, Any], check: bool, zfs: Zfs | None = None
) -> Result:
    zfs = zfs or Zfs()
    specs = image_specs(images)
    state = read_state(cfg, zfs, writebacks=NO_WRITEBACKS)
    result = Result()
    result.actions = plan_images(state, specs)
    result.before = _images_summary(state, specs)
    if result.actions and not check:
        apply_images(state, specs, result.actions, zfs)
        state = read_state(cfg, zfs, writebacks=NO_WRITEBACKS)
        result.after = _images_summary(state, specs)
    else:
        result.after = _images_summary(state, specs, result.actions)
    result.info["images"] = result.after
    return result


def _images_summary(state: State, specs: dict[str, ImageSpec], planned: list[Action] = ()) -> dict:
    out = {}
    for name, img in sorted(state.images.items()):
        chosen = effective_version(img, specs.get(name))
        out[name] = {
            "versions": [v.name for v in img.versions],
            "version": chosen.name if chosen else None,
        }
    for action in planned:
        if action.action == "create_image":
            name = layout.split_image(state.cfg, action.target)[0]
            first = specs[name].version or "v1"
            out[name] = {"versions": [first], "version": first}
    return out


# -- writebacks ----------------------------------------------------------------------


# The keys storage reads from a client (the ggnet_clients filter's output), and what
# each may hold: the modules declare `clients` as a plain list of dicts, so this is
# where a bad one is refused, by client and key.
CLIENT_KEYS = {
    "name": (str,),
    "image": (str,),
    "game_disk": (str, type(None)),
    "keep_writeback": (bool, type(None)),
    "target_iqn": (str, type(None)),
}


def check_client(client: object, index: int) -> None:
    if not isinstance(client, Mapping):
        raise StorageError(
            f"clients[{index}]: {client!r} is not a client (a mapping from the ggnet_clients filter)"
        )
    who = f"client {client.get('name')!r}" if client.get("name") else f"clients[{index}]"
    for key, types in CLIENT_KEYS.items():
        value = client.get(key)
        if not isinstance(value, types):
            wanted = " or ".join("null" if t is type(None) else t.__name__ for t in types)
            if key in ("name", "image") and value is None:
                raise StorageError(f"{who}: {key} is missing")
            raise StorageError(f"{who}: {key} must be {wanted}, got {value!r}")


def _wanted_disks(clients: list[Mapping[str, Any]]) -> dict[tuple[str, str], Mapping[str, Any]]:
    wanted: dict[tuple[str, str], Mapping[str, Any]] = {}
    seen = set()
    for index, client in enumerate(clients):
        check_client(client, index)
        name = client.get("name")
        if name in seen:
            raise StorageError(f"client {name!r} is listed twice")
        seen.add(name)
        try:
            layout.client_dataset({"pool": "p"}, name)
        except layout.LayoutError as exc:
            raise StorageError(f"client {name!r}: {exc}") from None
        wanted[(name, "system")] = {**client, "_disk_image": client.get("image")}
        if client.get("game_disk"):
            wanted[(name, "game")] = {**client, "_disk_image": client["game_disk"]}
    return wanted


def client_running(client: Mapping[str, Any], sessions: Mapping[str, list] | None) -> bool | None:
    """True/False from the iSCSI sessions, None when they are unknown."""
    if sessions is None:
        return None
    return bool(sessions.get(client.get("target_iqn") or ""))


def writeback_props(cfg: dict, client: str, role: str) -> dict[str, str]:
    props = {P_MANAGED: "yes", P_CLIENT: client, P_DISK: role}
    quota = quota_bytes(cfg)
    if quota:
        props["quota"] = str(quota)
    return props


def plan_writebacks(
    state: State,
    specs: dict[str, ImageSpec],
    clients: list[Mapping[str, Any]],
    sessions: Mapping[str, list] | None,
    force: bool = False,
) -> Result:
    cfg = state.cfg
    result = Result()
    wanted = _wanted_disks(clients)
    quota = quota_bytes(cfg)
    creating: list[str] = []
    refused: list[str] = []
    for (name, role), client in sorted(wanted.items()):
        where = f"{name} ({'ggnet_image' if role == 'system' else 'ggnet_game_disk'})"
        snapshot = _desired_snapshot(state, specs, client["_disk_image"], where)
        dataset = layout.writeback_dataset(cfg, name, role)
        have = state.writebacks.get((name, role))
        if have is None:
            result.actions.append(Action("create_writeback", dataset, f"clone of {snapshot}", name))
            creating.append(name)
            continue
        if have.origin != snapshot:
            keep = bool(client.get("keep_writeback")) or have.keep
            running = client_running(client, sessions)
            if keep or running is not False:
                reason = (
                    "in maintenance"
                    if keep
                    else "in session"
                    if running
                    else "session state unknown"
                )
                result.pending.append(
                    {
                        "client": name,
                        "disk": role,
                        "has": have.origin,
                        "next": snapshot,
                        "why": reason,
                    }
                )
            else:
                result.actions.append(
                    Action("replace_writeback", dataset, f"{have.origin} -> {snapshot}", name)
                )
                creating.append(name)
                continue
        if have.quota != quota:
            result.actions.append(Action("set_quota", dataset, f"{have.quota} -> {quota}", name))
    for (name, role), have in sorted(state.writebacks.items()):
        if (name, role) in wanted:
            continue
        if have.keep and not force:
            refused.append(f"{name} ({role}, in maintenance)")
            continue
        result.actions.append(
            Action("destroy_writeback", have.dataset, "not in the inventory", name)
        )
    if refused:
        raise StorageError(
            f"refusing to destroy writebacks of clients no longer in the inventory: {', '.join(refused)}; "
            + FORCE_HINT
        )
    touched = {a.client for a in result.actions}
    for name in sorted(state.unrecorded - touched):
        # Once per client of a pool from before the record: later reconciles read it.
        result.actions.append(
            Action("record_disks", layout.client_dataset(cfg, name), P_DISKS, name)
        )
    if creating:
        check_capacity(state, sorted(set(creating)))
    result.before = {f"{w.client}/{w.role}": w.origin for w in state.writebacks.values()}
    return result


def apply_writebacks(
    state: State, actions: list[Action], zfs: Zfs, closer: Closer | None = None
) -> None:
    cfg = state.cfg
    quota = quota_bytes(cfg)
    by_client: dict[str, list[Action]] = {}
    for action in actions:
        by_client.setdefault(action.client, []).append(action)
    for client, todo in by_client.items():
        with _recording(state, client, zfs) as rec:
            for action in todo:
                if action.action == "record_disks":
                    continue
                role = layout.split_writeback(cfg, action.target)[1]
                if action.action == "create_writeback":
                    snapshot = action.detail.removeprefix("clone of ")
                    _clone_writeback(cfg, client, role, snapshot, zfs)
                    rec.disks[role] = (snapshot, quota)
                elif action.action == "replace_writeback":
                    snapshot = action.detail.split(" -> ", 1)[1]
                    _recreate(cfg, client, role, snapshot, zfs, closer)
                    rec.disks[role] = (snapshot, quota)
                elif action.action == "set_quota":
                    zfs.set(action.target, {"quota": str(quota) if quota else "none"})
                    rec.disks[role] = (rec.disks.get(role, (None, 0))[0], quota)
                elif action.action == "destroy_writeback":
                    with _closed(closer, client):
                        zfs.destroy(action.target, recursive=True)
                    rec.disks.pop(role, None)
                    if not rec.disks:
                        zfs.destroy(layout.client_dataset(cfg, client), recursive=True)
                        rec.removed = True


@dataclass
class _ClientDisks:
    disks: dict[str, tuple[str | None, int]]
    removed: bool = False  # the client dataset itself was destroyed


@contextlib.contextmanager
def _recording(state: State, client: str, zfs: Zfs) -> Iterator[_ClientDisks]:
    """Keep a client's ggnet:disks true across changes to its disks.

    The record is cleared before the first change (an interrupted change must not
    leave a record claiming disks that are gone) and written from what was done once
    every change succeeded.  The caller updates the yielded {role: (origin, quota)},
    seeded from `state`, as it goes."""
    cfg = state.cfg
    dataset = layout.client_dataset(cfg, client)
    rec = _ClientDisks(
        {w.role: (w.origin, w.quota) for w in state.writebacks.values() if w.client == client}
    )
    existed = dataset in state.raw
    if existed and state.raw[dataset].get(P_DISKS) is not None:
        zfs.inherit(dataset, P_DISKS)
    yield rec
    if not rec.removed and (rec.disks or existed):
        zfs.set(dataset, {P_DISKS: format_disks(rec.disks)})


def _rollback_disk(
    zfs: Zfs, snapshot: str, backing: tuple[str, str], recursive: bool = False
) -> None:
    """Roll a disk's dataset back; a disk file's cached pages are dropped with it (not
    the machine's whole page cache), so whoever holds it open reads the old content."""
    path, kind = backing
    zfs.rollback(snapshot, recursive, files=[path] if kind == "file" else None)


def base_snapshot(dataset: str) -> str:
    return f"{dataset}@{BASE_SNAPSHOT}"


def _clone_writeback(cfg: dict, client: str, role: str, snapshot: str, zfs: Zfs) -> None:
    """Clone a version as a client's disk and take its @ggnet-base right away."""
    dataset = layout.writeback_dataset(cfg, client, role)
    zfs.clone(snapshot, dataset, writeback_props(cfg, client, role))
    zfs.snapshot(base_snapshot(dataset))


def _closed(closer: Closer | None, client: str) -> contextlib.AbstractContextManager[None]:
    return closer(client) if closer else contextlib.nullcontext()


def _recreate(
    cfg: dict, client: str, role: str, snapshot: str, zfs: Zfs, closer: Closer | None = None
) -> None:
    """A new clone of `snapshot` in place of the client's disk (a version change).

    On zfs-fuse this must not run while anything holds the disk file open (a LUN): the
    forced unmount succeeds, but the dataset then stays busy until the daemon restarts.
    `closer` closes the client's LUNs around it.  See docs/storage.md, "Reset and open
    files"."""
    dataset = layout.writeback_dataset(cfg, client, role)
    with _closed(closer, client):
        zfs.destroy(dataset, recursive=True, unmount_first=layout.disk_format(cfg) == "file")
        _clone_writeback(cfg, client, role, snapshot, zfs)


def converge_writebacks(
    cfg: dict,
    images: Mapping[str, Any],
    clients: list[Mapping[str, Any]],
    check: bool,
    sessions: Mapping[str, list] | None = None,
    force: bool = False,
    zfs: Zfs | None = None,
    closer: Closer | None = None,
) -> Result:
    zfs = zfs or Zfs()
    specs = image_specs(images)
    _wanted_disks(clients)  # a bad client fails before anything is read
    state = read_state(cfg, zfs, images=sorted(specs), writebacks=RECORDS)
    if not state.pool_exists:
        raise StorageError(f"pool {layout.pool(cfg)!r} does not exist: converge ggnet_images first")
    result = plan_writebacks(state, specs, clients, sessions, force)
    after = dict(result.before)
    for action in result.actions:
        if action.action == "record_disks":
            continue
        key = "/".join(layout.split_writeback(cfg, action.target))
        if action.action == "destroy_writeback":
            after.pop(key, None)
        elif action.action in ("create_writeback", "replace_writeback"):
            after[key] = action.detail.split(" ")[-1]
    result.after = after
    if result.actions and not check:
        apply_writebacks(state, result.actions, zfs, closer)
    result.info["writebacks"] = len(after)
    return result


# -- operations ----------------------------------------------------------------------


def _find_client(clients: list[Mapping[str, Any]], name: str) -> Mapping[str, Any]:
    # Only the one found is checked (by _wanted_disks): the boot path must not pay for
    # checking every client; the reconcile checks them all.
    for client in clients:
        if isinstance(client, Mapping) and client.get("name") == name:
            return client
    raise StorageError(
        f"unknown client {name!r}: not in ggnet_clients of the inventory "
        f"({len(clients)} clients known)"
    )


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
            return int(os.stat(path).st_mtime) < wb.creation
        except OSError:
            return False
    if wb.written is not None:
        return wb.written == 0
    try:
        return zfs.get([wb.dataset], ["written"]).get(wb.dataset, {}).get("written") == "0"
    except ZfsError:
        return False


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
) -> Result:
    """Give a client fresh writebacks of its image's booted version.

    boot=True is the boot path (GET /boot/<mac>): a client in maintenance keeps its
    writeback without error, and a live session is taken as the one being replaced
    by this very boot.  Otherwise maintenance and live sessions are refused unless
    forced.  Below the reserve, no writeback is re-created (CapacityError)."""
    zfs = zfs or Zfs()
    specs = image_specs(images)
    client = _find_client(clients, client_name)
    names = [layout.client_dataset(cfg, client_name)]
    wanted = {role: c["_disk_image"] for (n, role), c in _wanted_disks([client]).items()}
    names += [layout.image_dataset(cfg, image) for image in set(wanted.values()) if image in specs]
    state = read_state(cfg, zfs, names)
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
    # (role, version snapshot, how): how is "create", "rollback" or "recreate".
    stale: list[tuple[str, str, str]] = []
    for role, image in sorted(wanted.items()):
        snapshot = _desired_snapshot(state, specs, image, f"{client_name} ({role} disk)")
        have = state.writebacks.get((client_name, role))
        dataset = layout.writeback_dataset(cfg, client_name, role)
        if have is None:
            how, detail = "create", f"clone of {snapshot}"
            result.actions.append(Action("create_writeback", dataset, detail, client_name))
        elif keep and not force:
            continue
        elif have.origin != snapshot:
            # A version change needs a new clone (anything holding the disk file open
            # must let go first: see _recreate).
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
    if result.actions:
        check_capacity(state, [client_name])
    result.before = {
        f"{client_name}/{r}": (w.origin if w else None)
        for r in wanted
        for w in [state.writebacks.get((client_name, r))]
    }
    result.after = {**result.before, **{f"{client_name}/{r}": s for r, s, _ in stale}}
    if result.actions and not check:
        for role, _snapshot, how in stale:
            if how == "rollback":
                # Origin and quota stay: the client's ggnet:disks record stays true.
                _rollback_disk(
                    zfs,
                    base_snapshot(layout.writeback_dataset(cfg, client_name, role)),
                    layout.writeback_backing(cfg, client_name, role),
                    recursive=True,
                )
        if any(how != "rollback" for _, _, how in stale):
            # One close of the client's LUNs for all its re-clones (system and game).
            recloning = any(how == "recreate" for _, _, how in stale)
            with (
                _recording(state, client_name, zfs) as rec,
                _closed(closer if recloning else None, client_name),
            ):
                for role, snapshot, how in stale:
                    if how == "recreate":
                        _recreate(cfg, client_name, role, snapshot, zfs)
                    elif how == "create":
                        _clone_writeback(cfg, client_name, role, snapshot, zfs)
                    rec.disks[role] = (snapshot, quota_bytes(cfg))
    return result


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
    client = _find_client(clients, client_name)
    _wanted_disks([client])
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
) -> Result:
    """Make a client's writeback the new version of its image.

    Refused while the client has a live session: its OS may still have data in flight.
    The changed blocks are copied into the image's head, which is then snapshotted,
    so the new version shares every unchanged block with the previous one."""
    zfs = zfs or Zfs()
    specs = image_specs(images)
    client = _find_client(clients, client_name)
    if not comment:
        raise StorageError(f"apply {client_name}: a comment is required (-e comment='...')")
    wanted = {role: c["_disk_image"] for (n, role), c in _wanted_disks([client]).items()}
    if disk not in wanted:
        raise StorageError(f"apply {client_name}: it has no {disk} disk")
    image_name = wanted[disk]
    if image_name not in specs:
        raise StorageError(f"apply {client_name}: image {image_name!r} is not in ggnet_images")
    running = client_running(client, sessions)
    if running is None:
        raise StorageError(
            f"apply {client_name}: cannot tell whether it is running (no iSCSI session "
            "information); give iscsi_backend or sessions"
        )
    if running:
        who = ", ".join(sessions.get(client.get("target_iqn") or "") or [])
        raise StorageError(
            f"apply {client_name}: the client is running (live iSCSI session on "
            f"{client.get('target_iqn')} from {who}): shut it down first, then apply"
        )
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
        # Untouched since its clone (also right after an apply, which re-clones it from
        # the new version): there is nothing to make a version of.
        result = Result()
        result.info["version"] = layout.split_image(cfg, wb.origin or "")[1] if wb.origin else None
        result.warnings.append(f"apply {client_name}: its writeback is unchanged; nothing to apply")
        return result
    name = version or _next_version_name(image)
    if image.version(name):
        raise StorageError(
            f"apply {client_name}: version {name!r} of {image_name} already exists: choose another"
        )
    try:
        layout.version_snapshot(cfg, image_name, name)
    except layout.LayoutError as exc:
        raise StorageError(f"apply {client_name}: {exc}") from None
    result = Result(
        before={"versions": [v.name for v in image.versions], "current": image.current},
        after={"versions": [*[v.name for v in image.versions], name], "current": name},
    )
    snapshot = layout.version_snapshot(cfg, image_name, name)
    result.actions.append(Action("apply_writeback", snapshot, comment, client_name))
    result.info["version"] = name
    if specs[image_name].version:
        result.warnings.append(
            f"ggnet_images.{image_name}.version pins {specs[image_name].version}: set it to {name} "
            "in the inventory for clients to boot the new version"
        )
    if check:
        return result
    newest = image.versions[-1]
    # A half-finished earlier apply may have left the head dirty: start from the newest.
    head, head_kind = layout.image_backing(cfg, image_name)
    _rollback_disk(zfs, newest.snapshot, (head, head_kind))
    result.info["copied_bytes"] = copy_changed_blocks(path, head)
    _snapshot_version(cfg, image_name, name, comment, zfs, applied_from=client_name)
    zfs.set(image.dataset, {P_CURRENT: name})
    # Its content is now that version: re-cloning loses nothing, frees its space, and
    # makes a repeated apply a no-op.
    with _recording(state, client_name, zfs) as rec:
        _recreate(cfg, client_name, disk, snapshot, zfs, closer)
        rec.disks[disk] = (snapshot, quota_bytes(cfg))
    return result


def copy_changed_blocks(source: str, target: str, chunk: int = CHUNK) -> int:
    """Write into `target` only the chunks that differ from `source`; returns bytes written.

    Unchanged chunks are never rewritten, so ZFS keeps sharing them with older versions."""
    written = 0
    with open(source, "rb") as src, open(target, "r+b") as dst:
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


def rollback(
    cfg: dict,
    images: Mapping[str, Any],
    image_name: str,
    version: str,
    check: bool = False,
    zfs: Zfs | None = None,
) -> Result:
    """Point an image back at an earlier version; nothing is destroyed.

    Clients get it at their next reset; the newer versions stay for a roll forward."""
    zfs = zfs or Zfs()
    specs = image_specs(images)
    if image_name not in specs:
        raise StorageError(
            f"rollback: unknown image {image_name!r} (known: {', '.join(sorted(specs))})"
        )
    state = read_state(cfg, zfs, [layout.image_dataset(cfg, image_name)])
    image = state.images.get(image_name)
    if image is None:
        raise StorageError(f"rollback: image {image_name!r} does not exist on the pool yet")
    if image.version(version) is None:
        raise StorageError(
            f"rollback {image_name}: unknown version {version!r} "
            f"(existing: {', '.join(v.name for v in image.versions)})"
        )
    pinned = specs[image_name].version
    if pinned and pinned != version:
        raise StorageError(
            f"rollback {image_name}: the inventory pins ggnet_images.{image_name}.version: "
            f"{pinned}; set it to {version} there instead"
        )
    current = effective_version(image, specs[image_name])
    result = Result(
        before={"version": current.name if current else None}, after={"version": version}
    )
    if image.current != version and not pinned:
        result.actions.append(Action("rollback_image", image.dataset, f"-> {version}"))
        if not check:
            zfs.set(image.dataset, {P_CURRENT: version})
    return result


def delete_version(
    cfg: dict,
    images: Mapping[str, Any],
    image_name: str,
    version: str,
    check: bool = False,
    force: bool = False,
    zfs: Zfs | None = None,
) -> Result:
    """Destroy one version; its dependant writebacks go with it only when forced."""
    zfs = zfs or Zfs()
    specs = image_specs(images)
    state = read_state(cfg, zfs)
    image = state.images.get(image_name)
    if image_name not in specs or image is None:
        raise StorageError(f"delete: unknown image {image_name!r}")
    target = image.version(version)
    result = Result(before={"versions": [v.name for v in image.versions]})
    if target is None:
        result.after = result.before
        return result  # already gone: idempotent
    chosen = effective_version(image, specs[image_name])
    if chosen and chosen.name == version:
        raise StorageError(
            f"delete {image_name}@{version}: it is the version clients boot; roll back or "
            "pin another version first"
        )
    dependants = state.dependants(target.snapshot)
    if dependants and not force:
        raise StorageError(
            f"delete {image_name}@{version}: writebacks depend on it "
            f"({', '.join(f'{w.client}/{w.role}' for w in dependants)}); {FORCE_HINT} "
            "(their writebacks are destroyed and re-created on the next converge)"
        )
    for w in dependants:
        result.actions.append(
            Action("destroy_writeback", w.dataset, "depends on the version", w.client)
        )
    result.actions.append(Action("destroy_version", target.snapshot))
    result.after = {"versions": [v.name for v in image.versions if v.name != version]}
    if not check:
        for w in dependants:
            with _recording(state, w.client, zfs) as rec:
                zfs.destroy(w.dataset, recursive=True)
                rec.disks.pop(w.role, None)
                # the other writebacks of the client were seeded from the same state
                state.writebacks.pop((w.client, w.role), None)
        zfs.destroy(target.snapshot)
    return result


def prune(
    cfg: dict,
    images: Mapping[str, Any],
    clients: list[Mapping[str, Any]],
    keep_versions: int | None = None,
    idle: object = None,
    check: bool = False,
    sessions: Mapping[str, list] | None = None,
    now: float | None = None,
    zfs: Zfs | None = None,
    closer: Closer | None = None,
) -> Result:
    """Re-clone writebacks idle longer than `idle`, then destroy versions older than the
    newest `keep_versions` that nothing depends on (never the booted one)."""
    zfs = zfs or Zfs()
    specs = image_specs(images)
    keep_versions = int(
        keep_versions
        if keep_versions is not None
        else cfg.get("prune_keep_versions", DEFAULT_KEEP_VERSIONS)
    )
    if keep_versions < 1:
        raise StorageError(f"prune: keep_versions must be at least 1 (got {keep_versions})")
    idle_s = parse_duration(idle if idle is not None else cfg.get("prune_idle", "7d"), "prune idle")
    now = time.time() if now is None else now
    _wanted_disks(clients)
    state = read_state(cfg, zfs)
    result = Result()
    by_name = {c["name"]: c for c in clients}
    released: set[str] = set()
    replaced: dict[tuple[str, str], str] = {}
    if sessions is None and state.writebacks:
        result.warnings.append("no iSCSI session information: idle writebacks were not pruned")
    for key, wb in sorted(state.writebacks.items()):
        client = by_name.get(wb.client)
        if client is None or sessions is None or now - wb.creation < idle_s:
            continue
        if wb.keep or client.get("keep_writeback") or client_running(client, sessions):
            continue
        image = client.get("image") if wb.role == "system" else client.get("game_disk")
        try:
            snapshot = _desired_snapshot(state, specs, image, wb.client)
        except StorageError:
            continue
        if wb.origin == snapshot and writeback_is_fresh(cfg, wb, zfs):
            continue  # nothing to free: re-cloning it would only churn
        result.actions.append(
            Action("reset_writeback", wb.dataset, f"idle, clone of {snapshot}", wb.client)
        )
        replaced[key] = snapshot
        if wb.origin:
            released.add(wb.origin)
    origins = {w.origin for k, w in state.writebacks.items() if k not in replaced} | set(
        replaced.values()
    )
    doomed = []
    for name, image in sorted(state.images.items()):
        chosen = effective_version(image, specs.get(name))
        for v in image.versions[: max(0, len(image.versions) - keep_versions)]:
            if (
                (chosen and v.name == chosen.name)
                or v.name == image.current
                or v.snapshot in origins
            ):
                continue
            result.actions.append(
                Action("destroy_version", v.snapshot, "older than the kept versions")
            )
            doomed.append(v.snapshot)
    if any(a.action == "reset_writeback" for a in result.actions):
        check_capacity(state, sorted({a.client for a in result.actions if a.client}))
    result.before = {
        "versions": sorted(v.snapshot for i in state.images.values() for v in i.versions)
    }
    result.after = {"versions": sorted(set(result.before["versions"]) - set(doomed))}
    if not check:
        for (client, role), snapshot in replaced.items():
            with _recording(state, client, zfs) as rec:
                _recreate(cfg, client, role, snapshot, zfs, closer)
                rec.disks[role] = (snapshot, quota_bytes(cfg))
            state.writebacks[(client, role)].origin = snapshot
        for snapshot in doomed:
            zfs.destroy(snapshot)
    return result


# The modules' iscsi_options argument spec (documented in doc_fragments/ggnet_storage.py).
ISCSI_OPTIONS = {
    "type": "dict",
    "options": {"control_port": {"type": "int"}, "netns": {"type": "str"}},
}


def iscsi_options(value: Mapping[str, Any] | None) -> dict[str, Any]:
    """A module's iscsi_options without the suboptions Ansible filled with None."""
    return {k: v for k, v in (value or {}).items() if v is not None}


def sessions_from_backend(
    backend: str | None, options: Mapping[str, Any] | None = None
) -> dict[str, list[str]] | None:
    """Live sessions from the iSCSI side, or None when they cannot be read.

    `options` go to iscsi.active_sessions (tgt: control_port, netns)."""
    if not backend:
        return None
    try:
        from .iscsi import active_sessions

        return active_sessions(backend, **dict(options or {}))
    except Exception:  # a missing target daemon means "unknown", never "nobody runs"
        return None


__all__ = [
    "ZFS",
    "Action",
    "CapacityError",
    "Result",
    "StorageError",
    "apply_writeback",
    "converge_images",
    "converge_writebacks",
    "delete_version",
    "prune",
    "reset",
    "rollback",
    "set_keep",
]


def run_module(module: Any, operation: Callable[[], Result]) -> None:
    """Run one storage operation for an AnsibleModule and exit with its result: the
    one way every storage module reports actions, diff (only with --diff) and warnings."""
    try:
        result = operation()
    except (StorageError, layout.LayoutError, ZfsError) as exc:
        module.fail_json(msg=str(exc), changed=False)
    out = result.as_dict()
    if not module._diff:
        out.pop("diff")
    for warning in out.pop("warnings"):
        module.warn(warning)
    module.exit_json(**out)
