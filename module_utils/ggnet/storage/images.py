"""Images: the wanted ones (ggnet_images), the version each boots, and the pool, its
top datasets and the missing images created, empty or imported, with a first version."""

from __future__ import annotations

import os
import subprocess
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from .. import layout, rollout
from ..host_os import c_locale_env, is_block_device
from ..model import parse_size
from ..notation import now_iso
from ..settings import IMAGE_KINDS
from ..zfs import Zfs
from . import disks
from .own_names import image_parts, version_parts
from .properties import (
    P_APPLIED_FROM,
    P_COMMENT,
    P_CREATED,
    P_KIND,
    P_MANAGED,
    P_SOURCE,
    P_STATE,
    P_STATE_AT,
)
from .results import Action, Result, StorageError
from .state import NO_WRITEBACKS, Image, State, Version, read_state


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


def effective_version(image: Image, spec: ImageSpec | None, canary: bool = False) -> Version | None:
    """The version a client of `image` boots (ggnet.rollout.served_version, the one
    decision); None if there is none.  canary: the client is in a canary set."""
    chosen = rollout.served_version(
        [rollout.VersionInfo(v.name, v.state_raw) for v in image.versions],
        image.current,
        spec.version if spec is not None else None,
        canary,
    )
    return image.version(chosen) if chosen else None


def desired_snapshot(
    state: State,
    specs: dict[str, ImageSpec],
    image: str,
    where: str,
    assume_created: bool = False,
    canary: bool = False,
) -> str:
    """The snapshot a disk of IMAGE is cloned from (for a canary client: canary).
    assume_created (check mode): an image the images converge would create counts as
    created at its first version."""
    if image not in specs:
        raise StorageError(
            f"{where}: image {image!r} is not in ggnet_images (known: {', '.join(sorted(specs)) or 'none'})"
        )
    found = state.images.get(image)
    if found is None and assume_created:
        return layout.version_snapshot(state.cfg, image, specs[image].version or "v1")
    if found is None or not found.versions:
        raise StorageError(
            f"{where}: image {image!r} does not exist on pool {layout.pool(state.cfg)} yet: "
            "converge the storage role (ggnet_images) first"
        )
    chosen = effective_version(found, specs[image], canary)
    pinned = specs[image].version
    if chosen is None and pinned:
        raise StorageError(_pin_problem(image, pinned, found))
    if chosen is None:
        raise StorageError(
            f"{where}: image {image!r} has no promoted version to boot "
            f"({', '.join(f'{v.name} {v.state}' for v in found.versions)}): "
            "promote or roll back to one"
        )
    return chosen.snapshot


def _pin_problem(name: str, pinned: str, image: Image) -> str:
    """Why ggnet_images.<name>.version cannot be booted: unknown, or rejected."""
    found = image.version(pinned)
    if found is not None and found.state == rollout.REJECTED:
        return (
            f"ggnet_images.{name}.version: {pinned} is rejected and is never served again; "
            "pin another version or remove the pin"
        )
    return (
        f"ggnet_images.{name}.version: unknown version {pinned!r} "
        f"(existing: {', '.join(v.name for v in image.versions)})"
    )


# A pool whose device is gone still answers reads from memory, but its first write
# blocks (failmode=wait): a converge would hang there instead of saying why.
_UNUSABLE_HEALTH = ("UNAVAIL", "SUSPENDED", "FAULTED", "OFFLINE", "REMOVED")


def check_pool_usable(state: State, zfs: Zfs) -> None:
    """Refuse, before anything changes, a pool that cannot take writes and a pool that
    would have to be created over devices that are missing or already hold one."""
    cfg = state.cfg
    pool = layout.pool(cfg)
    if state.pool_exists:
        health = zfs.pool_health(pool)
        if health in _UNUSABLE_HEALTH:
            raise StorageError(
                f"ggnet_storage.pool: pool {pool!r} is {health}: a device under it is "
                f"missing or failed, and nothing was changed. See `zpool status -x {pool}`; "
                f"bring the device back (or replace it), run `zpool clear {pool}`, then "
                "converge again"
            )
        return
    vdevs = list(cfg.get("vdevs") or [])
    missing = [v for v in vdevs if not os.path.exists(v)]
    if missing:
        raise StorageError(
            f"ggnet_storage.vdevs: {', '.join(missing)} not found on this server, so pool "
            f"{pool!r} was not created and nothing was changed: attach the device or "
            "correct the list"
        )
    if vdevs and zfs.importable(pool, vdevs):
        raise StorageError(
            f"ggnet_storage.pool: pool {pool!r} is not imported, but its devices hold it; "
            f"ggnet never creates a pool over one, and nothing was changed. Check it with "
            f"`zpool import`, import it with `zpool import {pool}`, then converge again"
        )


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
            if spec.source and not (os.path.isfile(spec.source) or is_block_device(spec.source)):
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
        elif spec.version and effective_version(image, spec) is None:
            raise StorageError(_pin_problem(name, spec.version, image))
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
            name = image_parts(cfg, action.target)[0]
            _create_image(cfg, specs[name], zfs)
        elif action.action == "snapshot_version":
            name, version = version_parts(cfg, action.target)
            snapshot_version(cfg, name, version, "first version", zfs)


def _source_size(source: str) -> int:
    proc = subprocess.run(
        ["qemu-img", "info", "--output=json", source],
        capture_output=True,
        text=True,
        check=False,
        env=c_locale_env(),
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
        disks.wait_for_device(path, f"image {spec.name}")
    else:
        zfs.create(dataset, props)
        with open(path, "wb") as disk:
            disk.truncate(size)
    if spec.source:
        _qemu_img_convert(spec.source, path)
    comment = f"imported from {spec.source}" if spec.source else "empty disk"
    snapshot_version(cfg, spec.name, spec.version or "v1", comment, zfs)


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


def snapshot_version(
    cfg: dict,
    image: str,
    version: str,
    comment: str,
    zfs: Zfs,
    applied_from: str | None = None,
    state: str = rollout.PROMOTED,
) -> None:
    """Snapshot the image's head as `version` in `state` (an image's first version is
    promoted: there is nothing to roll it out against; apply makes candidates)."""
    path, kind = layout.image_backing(cfg, image)
    if kind == "file" and os.path.exists(path):
        # Back-date the version's file so a writeback's file is "untouched" exactly while
        # its mtime is older than the writeback itself (see writeback_is_fresh).
        past = time.time() - 2
        os.utime(path, (past, past))
    now = now_iso()
    props = {P_COMMENT: comment, P_CREATED: now, P_STATE: state, P_STATE_AT: now}
    if applied_from:
        props[P_APPLIED_FROM] = applied_from
    zfs.snapshot(layout.version_snapshot(cfg, image, version), props)


def converge_images(
    cfg: dict, images: Mapping[str, Any], check: bool, zfs: Zfs | None = None
) -> Result:
    zfs = zfs or Zfs()
    specs = image_specs(images)
    state = read_state(cfg, zfs, writebacks=NO_WRITEBACKS)
    check_pool_usable(state, zfs)
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
    # An image the inventory no longer lists is kept: a golden image may have taken
    # hours to build, and dropping a line of YAML must not destroy it.
    result.info["unlisted"] = sorted(set(state.images) - set(specs))
    return result


def _images_summary(
    state: State, specs: dict[str, ImageSpec], planned: Sequence[Action] = ()
) -> dict:
    out = {}
    for name, img in sorted(state.images.items()):
        chosen = effective_version(img, specs.get(name))
        canary = effective_version(img, specs.get(name), canary=True)
        out[name] = {
            "versions": [v.name for v in img.versions],
            "version": chosen.name if chosen else None,
            "states": {v.name: v.state for v in img.versions},
        }
        if canary and chosen and canary.name != chosen.name:
            out[name]["canary"] = canary.name
    for action in planned:
        if action.action == "create_image":
            name = image_parts(state.cfg, action.target)[0]
            first = specs[name].version or "v1"
            out[name] = {"versions": [first], "version": first, "states": {first: rollout.PROMOTED}}
    return out
