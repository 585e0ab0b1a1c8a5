"""Checks of a server's ggnet_storage (pool, sizes, vdevs, pruning) and ggnet_images."""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from .. import model
from ..settings import (
    DATASET_COMPONENT,
    DISK_FORMATS,
    IMAGE_KEYS,
    IMAGE_KINDS,
    POOL_NAME,
    POOL_RESERVED,
)
from .fields import _abs_path, _choice, _one_of, _unknown_subkeys
from .problems import _Collector
from .values import UNRESOLVED


def _check_storage(out: _Collector, host: str, storage: dict[str, Any]) -> None:
    key = "ggnet_storage"
    pool = storage.get("pool")
    if pool is not UNRESOLVED:
        if not isinstance(pool, str) or not POOL_NAME.match(pool):
            out.add(
                host,
                f"{key}.pool",
                pool,
                "is not a valid ZFS pool name (a letter, then letters, digits, _ - . :)",
            )
        elif pool.startswith(POOL_RESERVED) or re.match(r"^c[0-9]", pool):
            out.add(host, f"{key}.pool", pool, "is a name ZFS reserves; choose another")
    _choice(out, host, f"{key}.disk_format", storage.get("disk_format"), DISK_FORMATS)
    reserve = storage.get("reserve")
    if reserve is not UNRESOLVED:
        try:
            model.parse_size_or_percent(reserve)
        except ValueError as exc:
            out.add(host, f"{key}.reserve", reserve, str(exc))
    quota = storage.get("writeback_quota")
    if quota is not UNRESOLVED and quota != "none":
        try:
            model.parse_size(quota)
        except ValueError as exc:
            out.add(host, f"{key}.writeback_quota", quota, f"{exc} (or none)")
    mountpoint = storage.get("mountpoint")
    if mountpoint not in (None, UNRESOLVED) and not _abs_path(mountpoint):
        out.add(host, f"{key}.mountpoint", mountpoint, "must be an absolute path such as /ggpool")
    vdevs = storage.get("vdevs")
    if vdevs not in (None, UNRESOLVED):
        if not isinstance(vdevs, list) or not vdevs:
            out.add(
                host,
                f"{key}.vdevs",
                vdevs,
                "must be a non-empty list of devices or files, e.g. [/dev/vdb]",
            )
        else:
            for i, vdev in enumerate(vdevs):
                if vdev is not UNRESOLVED and not _abs_path(vdev):
                    out.add(
                        host,
                        f"{key}.vdevs[{i}]",
                        vdev,
                        "must be the absolute path of a device or file, e.g. /dev/vdb",
                    )
    keep = storage.get("prune_keep_versions")
    if keep not in (None, UNRESOLVED) and (
        not isinstance(keep, int) or isinstance(keep, bool) or keep < 1
    ):
        out.add(host, f"{key}.prune_keep_versions", keep, "must be a whole number, at least 1")
    idle = storage.get("prune_idle")
    if idle not in (None, UNRESOLVED):
        try:
            model.parse_duration(idle)
        except ValueError as exc:
            out.add(host, f"{key}.prune_idle", idle, str(exc))


def _check_images(out: _Collector, host: str, images: dict[str, Any]) -> dict[str, str]:
    kinds: dict[str, str] = {}
    for name, spec in images.items():
        key = f"ggnet_images.{name}"
        if not isinstance(name, str) or not DATASET_COMPONENT.match(name):
            out.add(
                host,
                key,
                name,
                "is not a valid image name (letters, digits, _ - . :, no '/' or '@')",
            )
            continue
        if not isinstance(spec, Mapping):
            out.add(host, key, spec, "must be a mapping such as {size: 64G, kind: system}")
            continue
        _unknown_subkeys(out, host, key, spec, IMAGE_KEYS)
        source = spec.get("source")
        if source not in (None, UNRESOLVED) and not _abs_path(source):
            out.add(
                host,
                f"{key}.source",
                source,
                "must be the absolute path of a raw or qcow2 file on the server",
            )
        if "size" not in spec:
            if source is None:
                out.add(host, f"{key}.size", None, "is required (e.g. 64G) unless source is set")
        elif spec["size"] is not UNRESOLVED:
            try:
                model.parse_size(spec["size"])
            except ValueError as exc:
                out.add(host, f"{key}.size", spec["size"], str(exc))
        kind = spec.get("kind")
        if kind is None:
            out.add(host, f"{key}.kind", None, f"is required: {_one_of(IMAGE_KINDS)}")
        elif _choice(out, host, f"{key}.kind", kind, IMAGE_KINDS):
            kinds[name] = kind
        version = spec.get("version")
        if version not in (None, UNRESOLVED) and (
            not isinstance(version, (str, int))
            or isinstance(version, bool)
            or not DATASET_COMPONENT.match(str(version))
        ):
            out.add(host, f"{key}.version", version, "is not a valid snapshot name")
    return kinds
