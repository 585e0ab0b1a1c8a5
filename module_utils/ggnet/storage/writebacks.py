"""The reconcile of writebacks: one per client disk, for all clients in one call."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from .. import layout
from ..zfs import Zfs
from .capacity import check_capacity, quota_bytes
from .clients import client_running, wanted_disks
from .disks import Closer, clone_writeback, closed, recording, recreate, set_quota
from .images import ImageSpec, desired_snapshot, image_specs
from .own_names import writeback_parts
from .properties import P_DISKS
from .results import FORCE_HINT, Action, Result, StorageError
from .state import RECORDS, State, read_state


def plan_writebacks(
    state: State,
    specs: dict[str, ImageSpec],
    clients: list[Mapping[str, Any]],
    sessions: Mapping[str, list] | None,
    force: bool = False,
    check: bool = False,
) -> Result:
    cfg = state.cfg
    result = Result()
    wanted = wanted_disks(clients)
    quota = quota_bytes(cfg)
    creating: list[str] = []
    refused: list[str] = []
    for (name, role), client in sorted(wanted.items()):
        where = f"{name} ({'ggnet_image' if role == 'system' else 'ggnet_game_disk'})"
        # In check mode the images converge before this one created nothing: a new
        # image's clones are planned from the version it would get.
        snapshot = desired_snapshot(
            state, specs, client["_disk_image"], where, check, bool(client.get("canary"))
        )
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
        assert action.client is not None, "plan: a writeback action names its client"
        by_client.setdefault(action.client, []).append(action)
    for client, todo in by_client.items():
        with recording(state, client, zfs) as rec:
            for action in todo:
                if action.action == "record_disks":
                    continue
                role = writeback_parts(cfg, action.target)[1]
                if action.action == "create_writeback":
                    snapshot = action.detail.removeprefix("clone of ")
                    clone_writeback(cfg, client, role, snapshot, zfs)
                    rec.disks[role] = (snapshot, quota)
                elif action.action == "replace_writeback":
                    snapshot = action.detail.split(" -> ", 1)[1]
                    recreate(cfg, client, role, snapshot, zfs, closer)
                    rec.disks[role] = (snapshot, quota)
                elif action.action == "set_quota":
                    set_quota(cfg, client, role, zfs)
                    rec.disks[role] = (rec.disks.get(role, (None, 0))[0], quota)
                elif action.action == "destroy_writeback":
                    with closed(closer, client):
                        zfs.destroy(action.target, recursive=True)
                    rec.disks.pop(role, None)
                    if not rec.disks:
                        zfs.destroy(layout.client_dataset(cfg, client), recursive=True)
                        rec.removed = True


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
    wanted_disks(clients)  # a bad client fails before anything is read
    state = read_state(cfg, zfs, images=sorted(specs), writebacks=RECORDS)
    if not state.pool_exists:
        raise StorageError(f"pool {layout.pool(cfg)!r} does not exist: converge ggnet_images first")
    result = plan_writebacks(state, specs, clients, sessions, force, check)
    after = dict(result.before)
    for action in result.actions:
        if action.action == "record_disks":
            continue
        key = "/".join(writeback_parts(cfg, action.target))
        if action.action == "destroy_writeback":
            after.pop(key, None)
        elif action.action in ("create_writeback", "replace_writeback"):
            after[key] = action.detail.split(" ")[-1]
    result.after = after
    if result.actions and not check:
        apply_writebacks(state, result.actions, zfs, closer)
    result.info["writebacks"] = len(after)
    return result
