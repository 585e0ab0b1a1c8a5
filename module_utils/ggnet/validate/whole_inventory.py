"""validate(): every check over a whole inventory, servers first, then their clients."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from .. import model
from ..settings import (
    BOOT_TEST_KEY,
    CLIENT_KEYS,
    EXTENSION_PREFIXES,
    ISCSI_KEYS,
    NETWORK_KEYS,
    NODE_GROUPS_KEY,
    SETTINGS_KEYS,
    STORAGE_KEYS,
    merged,
)
from .clients import _check_client, _placement
from .fields import _dict_setting, _suggest, _unknown_subkeys
from .iscsi import _check_iscsi
from .network import _check_network
from .node_groups import _check_node_groups
from .problems import Problem, _Collector, _group_of, _merge_shared
from .rollout import _check_boot_test, _check_rollout
from .storage import _check_images, _check_storage


def role_knobs(roles_dir: str | Path) -> set[str]:
    """ggnet_* variable names that roles declare in defaults/ (users may set them)."""
    import yaml

    knobs: set[str] = set()
    for path in sorted(Path(roles_dir).glob("*/defaults/main.y*ml")):
        try:
            data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
        except (OSError, yaml.YAMLError):
            continue
        if isinstance(data, dict):
            knobs.update(k for k in data if isinstance(k, str) and k.startswith("ggnet_"))
    return knobs


def _field(data: Any, name: str) -> Any:
    if isinstance(data, Mapping):
        return data.get(name)
    return getattr(data, name, None)


def validate(inventory: Any, extra_keys: Iterable[str] = ()) -> list[Problem]:
    """Every problem in the inventory; [] when it is valid.

    `inventory` has (as keys or attributes) `groups` {group: [hosts]}, `hostvars`
    {host: {var: value}}, optionally `origins` {host: {dotted key: "file:line"}} and
    `problems` (found while loading, e.g. values that could not be templated).
    """
    groups: Mapping[str, list[str]] = _field(inventory, "groups") or {}
    hostvars: Mapping[str, Mapping[str, Any]] = _field(inventory, "hostvars") or {}
    origins = _field(inventory, "origins") or {}
    out = _Collector(origins)
    out.problems.extend(_field(inventory, "problems") or [])
    # ggnet_boot_test is read by the servers only: not one of SETTINGS_KEYS, which the
    # PCs must share with their server.
    known = (
        set(CLIENT_KEYS) | set(SETTINGS_KEYS) | {NODE_GROUPS_KEY, BOOT_TEST_KEY} | set(extra_keys)
    )

    servers = model.servers_of(groups)
    clients = model.clients_of(groups)
    if model.SERVERS_GROUP not in groups:
        out.add(
            "inventory",
            model.SERVERS_GROUP,
            None,
            "no ggnet_servers group: add the boot server(s) under all.children.ggnet_servers",
        )
    elif not servers:
        out.add("inventory", model.SERVERS_GROUP, None, "the group has no hosts")

    for host in sorted(hostvars):
        _check_unknown_keys(out, host, hostvars[host], known)
        if host in servers and host in clients:
            out.add(host, "groups", None, "is in both ggnet_servers and ggnet_clients")
        elif host not in clients and host not in servers and "ggnet_mac" in hostvars[host]:
            origin = out.origin(host, "ggnet_mac") or ""
            if _group_of(origin) is None:
                out.add(
                    host,
                    "ggnet_mac",
                    None,
                    "this host has a MAC but is not in ggnet_clients: add it there",
                )

    parsed = {s: _check_server(out, s, hostvars.get(s, {})) for s in servers}
    members = model.group_members(groups)
    for server in servers:
        _check_rollout(out, server, hostvars.get(server, {}), members)
        _check_boot_test(out, server, hostvars.get(server, {}))
    fleet = _check_node_groups(out, servers, hostvars)
    macs: dict[str, str] = {}
    ips: dict[str, str] = {}
    for name in clients:
        if name in servers:
            continue
        hv = hostvars.get(name, {})
        targets = _placement(out, name, hv, servers, fleet)
        _check_client(out, name, hv, targets, parsed, hostvars, macs, ips)
    return _merge_shared(out.problems)


def _check_unknown_keys(out: _Collector, host: str, hv: Mapping[str, Any], known: set[str]) -> None:
    for key in hv:
        if not key.startswith("ggnet_") or key in known or key.startswith(EXTENSION_PREFIXES):
            continue
        out.add(host, key, None, "unknown ggnet key" + _suggest(key, known))


def _check_server(out: _Collector, host: str, hv: Mapping[str, Any]) -> dict[str, Any]:
    """Check one server's settings; return what later client checks need (parsed)."""
    parsed: dict[str, Any] = {"images": {}}
    network = _dict_setting(out, host, hv, "ggnet_network")
    if network is not None:
        _unknown_subkeys(out, host, "ggnet_network", network, NETWORK_KEYS)
        parsed.update(_check_network(out, host, network))
    storage = _dict_setting(out, host, hv, "ggnet_storage")
    if storage is not None:
        _unknown_subkeys(out, host, "ggnet_storage", storage, STORAGE_KEYS)
        _check_storage(out, host, merged("ggnet_storage", storage))
    iscsi = _dict_setting(out, host, hv, "ggnet_iscsi")
    if iscsi is not None:
        _unknown_subkeys(out, host, "ggnet_iscsi", iscsi, ISCSI_KEYS)
        parsed["iqn_prefix"] = _check_iscsi(out, host, merged("ggnet_iscsi", iscsi))
    images = _dict_setting(out, host, hv, "ggnet_images")
    if images is not None:
        parsed["images"] = _check_images(out, host, images)
    return parsed
