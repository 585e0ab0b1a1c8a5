"""The normalised desired state every role works from.

clients() turns an inventory (Ansible's `groups` and `hostvars`, or the loader's
equivalent) into one dict per PC with every default applied and every derived value
(normalised MAC, IQNs, placement) computed once.  It assumes a validated inventory and
raises ModelError on the first thing it cannot make sense of.

Secrets stay out of clients(); chap_credentials() is the one place that returns them.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from . import chap, rollout
from .net import initiator_iqn, normalize_mac, target_iqn

# The notations, re-exported: their callers know them as ggnet.model's.
from .notation import (  # noqa: F401
    DURATION_UNITS,
    parse_duration,
    parse_percent,
    parse_size,
    parse_size_or_percent,
)
from .settings import CLIENT_DEFAULTS, CLIENTS_GROUP, SERVERS_GROUP, merged


class ModelError(ValueError):
    pass


def settings(hostvars: Mapping[str, Any], key: str) -> dict[str, Any]:
    """One settings dict (ggnet_network, ggnet_storage, ggnet_iscsi) with defaults applied."""
    try:
        return merged(key, hostvars.get(key))
    except TypeError as exc:
        raise ModelError(str(exc)) from None


def servers_of(groups: Mapping[str, Any]) -> list[str]:
    return sorted(groups.get(SERVERS_GROUP) or [])


def clients_of(groups: Mapping[str, Any]) -> list[str]:
    return sorted(groups.get(CLIENTS_GROUP) or [])


def server_of(name: str, hostvars: Mapping[str, Any], servers: list[str]) -> str | None:
    """Where a client is placed: ggnet_server, or the only server there is.  None for a
    PC of a node group that placement has not placed yet: no server serves it."""
    chosen = hostvars.get("ggnet_server")
    if chosen:
        if chosen not in servers:
            raise ModelError(f"{name}: ggnet_server {chosen!r} is not in {SERVERS_GROUP}")
        return chosen
    if len(servers) == 1:
        return servers[0]
    if hostvars.get("ggnet_node_group"):
        return None
    raise ModelError(f"{name}: ggnet_server is required when there are {len(servers)} servers")


def machine_groups(name: str, groups: Mapping[str, Any]) -> list[str]:
    """Groups below ggnet_clients the client belongs to (its machine groups)."""
    skip = {"all", "ungrouped", CLIENTS_GROUP, SERVERS_GROUP}
    return sorted(g for g, members in groups.items() if g not in skip and name in (members or []))


def group_members(groups: Mapping[str, Any]) -> dict[str, list[str]]:
    """{machine group: its PCs}: the groups of ggnet_clients' hosts other than the
    inventory's own (all, ungrouped, ggnet_clients, ggnet_servers)."""
    skip = {"all", "ungrouped", CLIENTS_GROUP, SERVERS_GROUP}
    pcs = set(clients_of(groups))
    return {
        g: sorted(m for m in (members or []) if m in pcs)
        for g, members in groups.items()
        if g not in skip and any(m in pcs for m in (members or []))
    }


def canaries(groups: Mapping[str, Any], rollout_value: object) -> frozenset[str]:
    """The PCs in a canary set of ggnet_rollout (ggnet.rollout.canary_members).  Assumes
    a validated inventory: a canary set with a problem names no PC."""
    members = group_members(groups)
    parsed, _problems = rollout.parse_rollout(rollout_value, members)
    return rollout.canary_members(parsed, members)


def client(
    name: str,
    hostvars: Mapping[str, Any],
    groups: Mapping[str, Any],
    canary_set: frozenset[str] | None = None,
) -> dict[str, Any]:
    """One PC; canary_set: the PCs in a canary set (computed from the PC's own
    ggnet_rollout when not given: callers of many PCs compute it once)."""
    if canary_set is None:
        canary_set = canaries(groups, hostvars.get(rollout.ROLLOUT_KEY))
    hv = {**CLIENT_DEFAULTS, **{k: v for k, v in hostvars.items() if v is not None}}
    iscsi = settings(hostvars, "ggnet_iscsi")
    images = hostvars.get("ggnet_images") or {}
    image = hv.get("ggnet_image")
    if not image:
        raise ModelError(f"{name}: ggnet_image is not set")
    try:
        mac = normalize_mac(hv.get("ggnet_mac"))
        target = target_iqn(name, iscsi.get("iqn_prefix"))
        initiator = initiator_iqn(name, iscsi.get("iqn_prefix"))
    except ValueError as exc:
        raise ModelError(f"{name}: {exc}") from exc
    image_spec = images.get(image) or {}
    return {
        "name": name,
        "mac": mac,
        "ip": hv["ggnet_ip"],
        "image": image,
        "image_version": image_spec.get("version"),
        "game_disk": hv["ggnet_game_disk"],
        "boot": hv["ggnet_boot"],
        "keep_writeback": bool(hv["ggnet_keep_writeback"]),
        "server": server_of(name, hostvars, servers_of(groups)),
        "target_iqn": target,
        "initiator_iqn": initiator,
        "chap": bool(iscsi.get("chap")),
        "groups": machine_groups(name, groups),
        "canary": name in canary_set,
        "lab_firmware": hostvars.get("ggnet_lab_firmware"),
    }


def clients(
    groups: Mapping[str, Any],
    hostvars: Mapping[str, Mapping[str, Any]],
    server: str | None = None,
) -> list[dict[str, Any]]:
    """Every client (or only those placed on `server`), sorted by name."""
    sets: dict[str, frozenset[str]] = {}
    result = []
    for name in clients_of(groups):
        value = hostvars[name].get(rollout.ROLLOUT_KEY)
        key = repr(value)
        if key not in sets:
            sets[key] = canaries(groups, value)
        result.append(client(name, hostvars[name], groups, sets[key]))
    if server is not None:
        result = [c for c in result if c["server"] == server]
    return result


def chap_credentials(name: str, hostvars: Mapping[str, Any]) -> dict[str, str] | None:
    """The CHAP credentials of client `name` (chap.credentials), or None when CHAP is off.

    Kept apart from clients() so that secrets only travel where asked for (mark the
    task no_log).  The secret is the PC's own, derived from ggnet_iscsi.chap_secret,
    unless the host var ggnet_chap_secret pins it.
    """
    try:
        return chap.credentials(
            name, settings(hostvars, "ggnet_iscsi"), hostvars.get("ggnet_chap_secret")
        )
    except chap.ChapError as exc:
        raise ModelError(str(exc)) from None
