"""What the pool holds, read with as few `zfs get` calls as each caller can afford
(the reconcile: one): images with their versions, and the clients' writebacks."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

from .. import layout, rollout
from ..notation import iso_time
from ..zfs import Zfs
from .pool_size import PoolRead, pool_space, pool_total_stale
from .properties import (
    P_APPLIED_FROM,
    P_BOOT_TEST,
    P_CLIENT,
    P_COMMENT,
    P_CREATED,
    P_CURRENT,
    P_DISK,
    P_DISKS,
    P_KEEP,
    P_KIND,
    P_MANAGED,
    P_SOURCE,
    P_STATE,
    P_STATE_AT,
    parse_boot_test,
    parse_disks,
)

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
    P_STATE,
    P_STATE_AT,
    P_BOOT_TEST,
)
# What the whole-pool read asks for: only what State and its users read.  zfs-fuse's
# cost is per dataset (~0.3-0.9 ms each), far more than per property, but fewer
# properties still mean fewer lines to print and parse.
# The ggnet properties every read needs: an image's versions and pointer, a client's
# maintenance flag and disks record.
_GGNET_READ = (
    P_KIND,
    P_CURRENT,
    P_COMMENT,
    P_CREATED,
    P_APPLIED_FROM,
    P_KEEP,
    P_DISKS,
    P_STATE,
    P_STATE_AT,
    P_BOOT_TEST,
)
# `guid` names a version's snapshot across servers (a replica is the same version only
# when its guid matches): one more line per dataset listed, no more datasets.
READ_PROPS = ("origin", "creation", "used", "quota", "guid", *_GGNET_READ)
# The reconcile's one read (`zfs get -d 1`): the pool's space, the images it needs with
# their versions, and one line set per client dataset (keep, the disks record).
SHALLOW_PROPS = ("available", "used", "creation", *_GGNET_READ)
# A client dataset without a record: its disks are read instead (pools made before
# ggnet:disks existed, or a change that was interrupted).
DISK_PROPS = ("origin", "creation", "quota", P_KEEP, P_DISKS)
# How read_state reads writebacks: every disk dataset (the truth, for operations that
# need creation times or exact origins), the client datasets' records, or not at all.
DISKS, RECORDS, NO_WRITEBACKS = "disks", "records", "none"


@dataclass
class Version:
    name: str
    snapshot: str
    created: str
    comment: str | None
    applied_from: str | None
    guid: str | None = None  # read by the whole-pool read only (READ_PROPS)
    # ggnet:state as stored (None: a version from before states, promoted); see
    # ggnet.rollout.state_of for what it means.
    state_raw: str | None = None
    state_at: str | None = None  # when it got that state (ISO 8601 UTC)
    boot_test_raw: str | None = None  # ggnet:boot_test as stored (JSON), None: never tested

    @property
    def boot_test(self) -> dict | None:
        """The last boot test's result (storage.boot_test_job), None when there was
        none or it cannot be read."""
        return parse_boot_test(self.boot_test_raw)

    @property
    def state(self) -> str:
        return rollout.state_of(self.state_raw)


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
      path, plus the pool's space (cached, see pool_space).
    - `images` given (image names): one `zfs get -d 1` on the pool, those images and,
      with writebacks=RECORDS, the writebacks root: the client datasets and their
      ggnet:disks records, never the disks themselves.  Clients without a record get a
      second read of their disks.  This is the reconcile's read: zfs-fuse's cost is one
      socket round trip per dataset listed, so it lists one dataset per client, not three.
    - otherwise: `zfs get` of the pool's space, then `zfs get -d 2` of `<pool>/images`
      (versions) and, with writebacks=DISKS, `<pool>/writebacks` (client datasets and
      their disks but not the disks' @ggnet-base snapshots at depth 3)."""
    if names is not None:
        raw, pool_props, pool_exists = _read_names(cfg, zfs, names)
    elif images is not None:
        raw, pool_props, pool_exists = _read_shallow(cfg, zfs, images, writebacks)
    else:
        raw, pool_props, pool_exists = _read_roots(cfg, zfs, writebacks)
    records: dict[str, dict[str, tuple[str | None, int]]] = {}
    unrecorded: set[str] = set()
    if images is not None and writebacks == RECORDS:
        records, unrecorded = _read_records(cfg, zfs, raw)
    found = _writebacks_from_records(cfg, raw, records)
    images_found = _images_and_disks(cfg, raw, records, found)
    available = int(pool_props.get("available") or 0)
    total = available + int(pool_props.get("used") or 0)
    return State(cfg, pool_exists, raw, images_found, found, available, total, unrecorded)


# The three reads of read_state: each returns (rows by dataset, the pool's own row,
# whether the pool exists).
_Read = tuple[dict[str, dict[str, str | None]], dict[str, str | None], bool]


def _read_names(cfg: dict, zfs: Zfs, names: Iterable[str]) -> _Read:
    pool = layout.pool(cfg)
    props: tuple[str, ...] = STATE_PROPS
    if layout.disk_format(cfg) == "zvol":
        # OpenZFS only (zfs-fuse has no zvols and no `written`): freshness comes in
        # the same read instead of a second one.
        props = (*props, "written")
    # Never `-r` on the pool here: the boot path must not enumerate every client.
    # The pool's own read, when its cached size is stale, runs beside it.
    pool_read = PoolRead(zfs, pool) if pool_total_stale(pool) else None
    raw = zfs.get(names, props, recursive=True)
    pool_props = pool_space(zfs, pool, raw, names, pool_read)
    return raw, pool_props, bool(pool_props)


def _read_shallow(cfg: dict, zfs: Zfs, images: Iterable[str], writebacks: str) -> _Read:
    pool = layout.pool(cfg)
    targets = [pool]
    if writebacks != NO_WRITEBACKS:
        targets.append(layout.writebacks_root(cfg))
    targets += [layout.image_dataset(cfg, image) for image in images]
    raw = zfs.get(targets, SHALLOW_PROPS, depth=1)
    return raw, raw.get(pool, {}), pool in raw


def _read_roots(cfg: dict, zfs: Zfs, writebacks: str) -> _Read:
    pool = layout.pool(cfg)
    roots = [layout.images_root(cfg)]
    if writebacks == NO_WRITEBACKS:
        # One level below the pool still shows whether the writebacks root exists.
        top = zfs.get([pool], ["available", "used"], depth=1)
    else:
        top = zfs.get([pool], ["available", "used"])
        roots.append(layout.writebacks_root(cfg))
    pool_props = top.get(pool, {})
    pool_exists = bool(pool_props)
    raw = {**top, **zfs.get(roots, READ_PROPS, depth=2)} if pool_exists else {}
    return raw, pool_props, pool_exists


def _read_records(
    cfg: dict, zfs: Zfs, raw: dict[str, dict[str, str | None]]
) -> tuple[dict[str, dict[str, tuple[str | None, int]]], set[str]]:
    """The clients' ggnet:disks records, and the clients without one, whose disks are
    read into `raw` instead."""
    records: dict[str, dict[str, tuple[str | None, int]]] = {}
    unrecorded: set[str] = set()
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
    return records, unrecorded


def _writebacks_from_records(
    cfg: dict,
    raw: dict[str, dict[str, str | None]],
    records: dict[str, dict[str, tuple[str | None, int]]],
) -> dict[tuple[str, str], Writeback]:
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
    return found


def _images_and_disks(
    cfg: dict,
    raw: dict[str, dict[str, str | None]],
    records: dict[str, dict[str, tuple[str | None, int]]],
    found: dict[tuple[str, str], Writeback],
) -> dict[str, Image]:
    """The images with their versions from `raw`; the disks read one by one (of
    clients without a record) are added to `found`."""
    images_found: dict[str, Image] = {}
    snapshots: list[tuple[str, str, dict]] = []
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
                # A zvol has no quota ("-"): its client's dataset carries it.
                quota=int(props.get("quota") or 0) if props.get("quota") != "-" else 0,
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
                    created=props.get(P_CREATED)
                    or iso_time(int(props.get("creation") or 0) * 10**9),
                    comment=props.get(P_COMMENT),
                    applied_from=props.get(P_APPLIED_FROM),
                    guid=props.get("guid"),
                    state_raw=props.get(P_STATE),
                    state_at=props.get(P_STATE_AT),
                    boot_test_raw=props.get(P_BOOT_TEST),
                )
            )
    for found_image in images_found.values():
        found_image.versions.sort(key=lambda v: (v.created, v.name))
    return images_found
