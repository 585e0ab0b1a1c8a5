"""Versions and their retention: roll an image back, delete a version, prune old
versions and idle writebacks."""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any

from .. import layout, rollout
from ..notation import now_iso
from ..settings import default
from ..zfs import Zfs
from .capacity import check_capacity, quota_bytes
from .clients import client_running, wanted_disks
from .disks import Closer, recording, recreate, writeback_is_fresh
from .images import ImageSpec, desired_snapshot, effective_version, image_specs
from .properties import P_CURRENT, P_STATE, P_STATE_AT
from .results import FORCE_HINT, Action, Result, StorageError, parse_duration
from .state import Image, State, read_state


def rollback(
    cfg: dict,
    images: Mapping[str, Any],
    image_name: str,
    version: str,
    check: bool = False,
    zfs: Zfs | None = None,
) -> Result:
    """Point an image at any retained version (older or newer); nothing is destroyed.

    Clients get it at their next reset; the other versions stay for a roll forward.  A
    rejected version is refused; any other becomes promoted (the operator's word)."""
    zfs = zfs or Zfs()
    specs = image_specs(images)
    image, target = _image_version(cfg, zfs, specs, image_name, version, "rollback")
    if target.state == rollout.REJECTED:
        raise StorageError(
            f"rollback {image_name}: version {version} is rejected and is never served "
            f"again; choose another ({_states(image)})"
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
    if target.state != rollout.PROMOTED:
        result.actions.append(
            Action("set_state", target.snapshot, f"{target.state} -> {rollout.PROMOTED}")
        )
        if not check:
            zfs.set(target.snapshot, {P_STATE: rollout.PROMOTED, P_STATE_AT: now_iso()})
    if image.current != version and not pinned:
        result.actions.append(Action("rollback_image", image.dataset, f"-> {version}"))
        if not check:
            zfs.set(image.dataset, {P_CURRENT: version})
    return result


def _image_version(
    cfg: dict, zfs: Zfs, specs: Mapping[str, Any], image_name: str, version: str, what: str
) -> tuple[Image, Any]:
    """The image on the pool and its VERSION; StorageError naming WHAT was asked for
    when the inventory, the pool or the image does not have them."""
    if image_name not in specs:
        raise StorageError(
            f"{what}: unknown image {image_name!r} (known: {', '.join(sorted(specs))})"
        )
    state = read_state(cfg, zfs, [layout.image_dataset(cfg, image_name)])
    image = state.images.get(image_name)
    if image is None:
        raise StorageError(f"{what}: image {image_name!r} does not exist on the pool yet")
    target = image.version(version)
    if target is None:
        raise StorageError(f"{what}: unknown version {version!r} (existing: {_states(image)})")
    return image, target


def _states(image: Image) -> str:
    return ", ".join(f"{v.name} {v.state}" for v in image.versions)


def set_state(
    cfg: dict,
    images: Mapping[str, Any],
    image_name: str,
    version: str,
    state: str,
    check: bool = False,
    zfs: Zfs | None = None,
    force: bool = False,
) -> Result:
    """Move one version to another state (ggnet.rollout.TRANSITIONS).

    - canary from candidate: only with `force` (ggnet.rollout.FORCED): the boot test
      (storage.boot_test_job) makes a candidate tested first;
    - promoted: also makes it the image's current version (what PCs boot);
    - canary: refused while another version of the image is in canary (one rollout
      of an image at a time) and while the inventory pins a version (a pin wins over
      any rollout);
    - rejected: refused for the version non-canary PCs boot (roll back first); a
      rejected canary sends the canary PCs back to the promoted version at their
      next boot.
    Idempotent: the state it already has changes nothing."""
    zfs = zfs or Zfs()
    specs = image_specs(images)
    where = f"{image_name}@{version}"
    image, target = _image_version(cfg, zfs, specs, image_name, version, f"state {where}")
    try:
        rollout.check_transition(f"{image_name}@{version}", target.state, state, force)
    except rollout.RolloutError as exc:
        raise StorageError(f"state {exc}") from None
    spec = specs[image_name]
    served = effective_version(image, spec)
    if state == rollout.CANARY and target.state != rollout.CANARY:
        if spec.version:
            raise StorageError(
                f"state {where}: the inventory pins ggnet_images.{image_name}.version: "
                f"{spec.version}, and a pin wins over any rollout; remove the pin first"
            )
        other = [v.name for v in image.versions if v.state == rollout.CANARY]
        if other:
            raise StorageError(
                f"state {where}: {image_name}@{other[0]} is already in canary: one rollout "
                f"of an image at a time; promote or reject {other[0]} first"
            )
    if state == rollout.REJECTED and served is not None and served.name == version:
        raise StorageError(
            f"state {where}: it is the version PCs boot; roll back to another version "
            "first, then reject it"
        )
    result = Result(before={"state": target.state}, after={"state": state})
    if target.state != state:
        result.actions.append(Action("set_state", target.snapshot, f"{target.state} -> {state}"))
        if not check:
            zfs.set(target.snapshot, {P_STATE: state, P_STATE_AT: now_iso()})
    if state == rollout.PROMOTED and image.current != version and not spec.version:
        result.actions.append(Action("rollback_image", image.dataset, f"-> {version}"))
        if not check:
            zfs.set(image.dataset, {P_CURRENT: version})
    if state == rollout.PROMOTED and spec.version and spec.version != version:
        result.warnings.append(
            f"ggnet_images.{image_name}.version pins {spec.version}: set it to {version} "
            "in the inventory for PCs to boot it"
        )
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
    if target.state == rollout.CANARY:
        raise StorageError(
            f"delete {image_name}@{version}: it is in canary (the canary PCs boot it); "
            "reject or promote it first"
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
            with recording(state, w.client, zfs) as rec:
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
        else cfg.get("prune_keep_versions", default("ggnet_storage", "prune_keep_versions"))
    )
    if keep_versions < 1:
        raise StorageError(f"prune: keep_versions must be at least 1 (got {keep_versions})")
    idle_s = parse_duration(
        idle if idle is not None else cfg.get("prune_idle", default("ggnet_storage", "prune_idle")),
        "prune idle",
    )
    now = time.time() if now is None else now
    wanted_disks(clients)
    state = read_state(cfg, zfs)
    result = Result()
    if sessions is None and state.writebacks:
        result.warnings.append("no iSCSI session information: idle writebacks were not pruned")
    replaced = (
        {}
        if sessions is None
        else _idle_writebacks(state, specs, clients, sessions, now, idle_s, zfs, result)
    )
    origins = {w.origin for k, w in state.writebacks.items() if k not in replaced} | set(
        replaced.values()
    )
    doomed = _old_versions(state, specs, keep_versions, origins, result)
    if any(a.action == "reset_writeback" for a in result.actions):
        check_capacity(state, sorted({a.client for a in result.actions if a.client}))
    result.before = {
        "versions": sorted(v.snapshot for i in state.images.values() for v in i.versions)
    }
    result.after = {"versions": sorted(set(result.before["versions"]) - set(doomed))}
    if not check:
        for (client, role), snapshot in replaced.items():
            with recording(state, client, zfs) as rec:
                recreate(cfg, client, role, snapshot, zfs, closer)
                rec.disks[role] = (snapshot, quota_bytes(cfg))
            state.writebacks[(client, role)].origin = snapshot
        for snapshot in doomed:
            zfs.destroy(snapshot)
    return result


def _idle_writebacks(
    state: State,
    specs: dict[str, ImageSpec],
    clients: list[Mapping[str, Any]],
    sessions: Mapping[str, list],
    now: float,
    idle_s: int,
    zfs: Zfs,
    result: Result,
) -> dict[tuple[str, str], str]:
    """The writebacks to re-clone, {(client, role): version snapshot}: older than
    `idle_s`, client off and not in maintenance, written to or of an older version."""
    by_name = {c["name"]: c for c in clients}
    replaced: dict[tuple[str, str], str] = {}
    for key, wb in sorted(state.writebacks.items()):
        client = by_name.get(wb.client)
        if client is None:
            continue
        assert wb.creation is not None, "prune reads every disk (DISKS), creation included"
        if now - wb.creation < idle_s:
            continue
        if wb.keep or client.get("keep_writeback") or client_running(client, sessions):
            continue
        image = client.get("image") if wb.role == "system" else client.get("game_disk")
        if image is None:  # a game disk the client no longer has: not in ggnet_images
            continue
        try:
            snapshot = desired_snapshot(
                state, specs, image, wb.client, canary=bool(client.get("canary"))
            )
        except StorageError:
            continue
        if wb.origin == snapshot and writeback_is_fresh(state.cfg, wb, zfs):
            continue  # nothing to free: re-cloning it would only churn
        result.actions.append(
            Action("reset_writeback", wb.dataset, f"idle, clone of {snapshot}", wb.client)
        )
        replaced[key] = snapshot
    return replaced


def _old_versions(
    state: State,
    specs: dict[str, ImageSpec],
    keep_versions: int,
    origins: set[str | None],
    result: Result,
) -> list[str]:
    """The versions older than the newest `keep_versions` of each image that no
    writeback (`origins`) depends on and that are not booted."""
    doomed = []
    for name, image in sorted(state.images.items()):
        chosen = effective_version(image, specs.get(name))
        for v in image.versions[: max(0, len(image.versions) - keep_versions)]:
            if (
                (chosen and v.name == chosen.name)
                or v.name == image.current
                or v.state == rollout.CANARY
                or v.snapshot in origins
            ):
                continue
            result.actions.append(
                Action("destroy_version", v.snapshot, "older than the kept versions")
            )
            doomed.append(v.snapshot)
    return doomed
