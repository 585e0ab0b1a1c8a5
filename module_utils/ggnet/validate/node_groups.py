"""Checks of a fleet's node groups (ggnet_node_groups, read from the servers)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ..settings import DATASET_COMPONENT, NODE_GROUP_KEYS, NODE_GROUPS_KEY
from .fields import _a_server, _dict_setting, _unknown_subkeys
from .problems import _Collector
from .values import UNRESOLVED


def _check_node_groups(
    out: _Collector, servers: list[str], hostvars: Mapping[str, Mapping[str, Any]]
) -> dict[str, list[str]] | None:
    """{node group: its servers}; {} without node groups, None when they cannot be read
    (the problem is reported; checks that need them are then skipped)."""
    declared = {s: hostvars.get(s, {}).get(NODE_GROUPS_KEY) for s in servers}
    holders = [s for s, value in declared.items() if value is not None]
    if not holders:
        return {}
    source = holders[0]
    value = declared[source]
    if value is UNRESOLVED:
        return None
    for server in servers:
        if declared[server] is not UNRESOLVED and declared[server] != value:
            out.add(
                server,
                NODE_GROUPS_KEY,
                None,
                f"differs from server {source}'s: node groups are one mapping for the whole "
                "fleet, set them once in group_vars/ggnet_servers.yml",
            )
    fleet = _dict_setting(out, source, hostvars[source], NODE_GROUPS_KEY)
    if fleet is None:
        return None
    found: dict[str, list[str]] = {}
    owner: dict[str, str] = {}
    for name, spec in fleet.items():
        key = f"{NODE_GROUPS_KEY}.{name}"
        if not isinstance(name, str) or not DATASET_COMPONENT.match(name):
            out.add(source, key, None, "is not a node group name (letters, digits, _ - . :)")
            continue
        if not isinstance(spec, Mapping):
            out.add(source, key, None, "must be a mapping: {region, priority, servers}")
            continue
        _unknown_subkeys(out, source, key, spec, NODE_GROUP_KEYS)
        _check_spec(out, source, key, spec)
        found[name] = _members(out, source, key, spec.get("servers"), servers, owner, name)
    return found


def _check_spec(out: _Collector, source: str, key: str, spec: Mapping[str, Any]) -> None:
    region = spec.get("region")
    if region is None:
        out.add(source, f"{key}.region", None, "is required: where the group's servers are")
    elif region is not UNRESOLVED and (not isinstance(region, str) or not region.strip()):
        out.add(source, f"{key}.region", region, "must be a non-empty string")
    for sub, least in (("priority", None), ("capacity", 1)):
        given = spec.get(sub)
        if given is None or given is UNRESOLVED:
            continue
        if not isinstance(given, int) or isinstance(given, bool):
            out.add(source, f"{key}.{sub}", given, "must be a whole number")
        elif least is not None and given < least:
            out.add(source, f"{key}.{sub}", given, f"must be at least {least}")


def _members(
    out: _Collector,
    source: str,
    key: str,
    given: Any,
    servers: list[str],
    owner: dict[str, str],
    name: str,
) -> list[str]:
    if given is UNRESOLVED:
        return []
    if not isinstance(given, list) or not given:
        out.add(source, f"{key}.servers", None, "must be a non-empty list of ggnet_servers hosts")
        return []
    members = []
    for server in given:
        if not _a_server(out, source, f"{key}.servers", server, servers):
            continue
        if server in owner:
            out.add(
                source,
                f"{key}.servers",
                server,
                f"is already in node group {owner[server]}: a server belongs to one node group",
            )
        else:
            owner[server] = name
            members.append(server)
    return members
