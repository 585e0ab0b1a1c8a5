"""Validation of a whole ggnet inventory before anything changes.

validate() takes plain data (Ansible's `groups` and `hostvars`, plus where each value
was declared when known) and returns every Problem it finds; an empty list means the
inventory is valid.  No Ansible imports: the CLI, the validate action plugin and the
API share this one function.

Settings (ggnet_network, ggnet_storage, ggnet_iscsi, ggnet_images) are read from each
server: they describe what that server serves.  A problem whose value comes from a
group variable is reported once, naming the group and file, not once per host.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from . import console, model
from .net import (
    check_iqn_name,
    check_iqn_prefix,
    initiator_iqn,
    normalize_mac,
    parse_ipv4,
    parse_subnet,
    target_iqn,
)
from .settings import (
    BACKENDS,
    BOOT_MODES,
    CHAP_MAX,
    CHAP_MIN,
    CLIENT_DEFAULTS,
    CLIENT_KEYS,
    DATASET_COMPONENT,
    DHCP_MODES,
    DISK_FORMATS,
    EXTENSION_PREFIXES,
    IMAGE_KEYS,
    IMAGE_KINDS,
    ISCSI_KEYS,
    LAB_FIRMWARES,
    NETWORK_KEYS,
    POOL_NAME,
    POOL_RESERVED,
    SETTINGS_KEYS,
    STORAGE_KEYS,
    default,
    merged,
)


class _Unresolved:
    """A value the loader could not template; it was reported already, checks skip it."""

    _instance = None

    def __new__(cls):
        if cls._instance is None:
            cls._instance = super().__new__(cls)
        return cls._instance

    def __repr__(self) -> str:
        return "UNRESOLVED"

    def __bool__(self) -> bool:
        return False


UNRESOLVED = _Unresolved()


@dataclass
class Problem:
    where: str
    key: str
    value: object
    message: str
    origin: str | None = None

    def __str__(self) -> str:
        text = f"{self.where}: {self.key}: {self.message}"
        if self.value is not None:
            text += f" (value: {self.value})"
        return text

    def as_dict(self) -> dict[str, Any]:
        return {
            "where": self.where,
            "key": self.key,
            "value": None if self.value is None else str(self.value),
            "message": self.message,
            "origin": self.origin,
        }


_IFACE_RE = re.compile(r"^[A-Za-z0-9_.:@-]{1,15}$")


def _type_name(value: object) -> str:
    return {bool: "a boolean", int: "a number", float: "a number", list: "a list"}.get(
        type(value), "a " + type(value).__name__
    )


def _suggest(word: str, choices: Iterable[str]) -> str:
    match = difflib.get_close_matches(word, sorted(choices), n=1, cutoff=0.6)
    return f"; did you mean {match[0]}?" if match else ""


def _one_of(choices: Iterable[str]) -> str:
    return " | ".join(choices)


class _Collector:
    def __init__(self, origins: Mapping[str, Mapping[str, str]]):
        self.origins = origins
        self.problems: list[Problem] = []

    def origin(self, host: str, key: str) -> str | None:
        known = self.origins.get(host) or {}
        while key:
            if key in known:
                return known[key]
            key = key.rpartition(".")[0]
        return None

    def add(self, host: str, key: str, value: object, message: str) -> None:
        self.problems.append(
            Problem(host, key, _show(value), message, origin=self.origin(host, key))
        )

    def add_secret(self, host: str, key: str, value: object, message: str) -> None:
        shown = f"(hidden, {len(value)} characters)" if isinstance(value, str) else "(hidden)"
        self.problems.append(Problem(host, key, shown, message, self.origin(host, key)))


def _show(value: object) -> object:
    if value is None:
        return None
    if isinstance(value, bool):
        return "true" if value else "false"
    return value


def _group_of(origin: str) -> str | None:
    parts = Path(origin.split(":", 1)[0]).parts
    if "group_vars" in parts:
        index = parts.index("group_vars")
        if index + 1 < len(parts):
            return Path(parts[index + 1]).stem if index + 2 == len(parts) else parts[index + 1]
    return None


def _merge_shared(problems: list[Problem]) -> list[Problem]:
    """One line for a problem that many hosts inherit from the same declaration."""
    buckets: dict[tuple, list[Problem]] = {}
    order: list[tuple] = []
    for problem in problems:
        if problem.origin is None:
            bucket_key: tuple = (id(problem),)
        else:
            bucket_key = (problem.origin, problem.key, problem.message, str(problem.value))
        if bucket_key not in buckets:
            buckets[bucket_key] = []
            order.append(bucket_key)
        buckets[bucket_key].append(problem)
    merged = []
    for bucket_key in order:
        group = buckets[bucket_key]
        first = group[0]
        hosts = [p.where for p in group]
        if first.origin is None:
            merged.append(first)
            continue
        group_name = _group_of(first.origin)
        if group_name:
            where = f"group {group_name} ({first.origin})"
        elif len(hosts) == 1:
            where = f"{hosts[0]} ({first.origin})"
        else:
            shown = ", ".join(hosts[:5]) + (f" and {len(hosts) - 5} more" if len(hosts) > 5 else "")
            where = f"{first.origin} (hosts {shown})"
        merged.append(Problem(where, first.key, first.value, first.message, first.origin))
    return merged


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
    known = set(CLIENT_KEYS) | set(SETTINGS_KEYS) | set(extra_keys)

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
    macs: dict[str, str] = {}
    ips: dict[str, str] = {}
    for name in clients:
        if name in servers:
            continue
        _check_client(out, name, hostvars.get(name, {}), servers, parsed, hostvars, macs, ips)
    return _merge_shared(out.problems)


def _check_unknown_keys(out: _Collector, host: str, hv: Mapping[str, Any], known: set[str]) -> None:
    for key in hv:
        if not key.startswith("ggnet_") or key in known or key.startswith(EXTENSION_PREFIXES):
            continue
        out.add(host, key, None, "unknown ggnet key" + _suggest(key, known))


def _dict_setting(out: _Collector, host: str, hv: Mapping[str, Any], key: str) -> dict | None:
    value = hv.get(key)
    if value is None or value is UNRESOLVED:
        return {} if value is None else None
    if not isinstance(value, Mapping):
        out.add(host, key, value, f"must be a mapping, not {_type_name(value)}")
        return None
    return dict(value)


def _unknown_subkeys(out: _Collector, host: str, key: str, value: Mapping, allowed) -> None:
    for sub in value:
        if sub not in allowed:
            out.add(host, f"{key}.{sub}", None, "unknown key" + _suggest(str(sub), allowed))


def _choice(out: _Collector, host: str, key: str, value: Any, choices: tuple) -> bool:
    if value is UNRESOLVED:
        return False
    if value not in choices:
        hint = _suggest(str(value), choices) if isinstance(value, str) else ""
        out.add(host, key, value, f"must be one of {_one_of(choices)}{hint}")
        return False
    return True


def _bool(out: _Collector, host: str, key: str, value: Any) -> None:
    if value is not UNRESOLVED and not isinstance(value, bool):
        out.add(host, key, value, "must be true or false (a YAML boolean, unquoted)")


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


def _check_network(out: _Collector, host: str, net: dict[str, Any]) -> dict[str, Any]:
    found: dict[str, Any] = {}
    key = "ggnet_network"
    for required in ("interface", "server_ip", "subnet"):
        if required not in net:
            out.add(host, f"{key}.{required}", None, "is required")
    iface = net.get("interface")
    if iface not in (None, UNRESOLVED) and (
        not isinstance(iface, str) or not _IFACE_RE.match(iface) or iface in (".", "..")
    ):
        out.add(host, f"{key}.interface", iface, "is not a network interface name")
    mode = net.get("dhcp_mode", default("ggnet_network", "dhcp_mode"))
    if _choice(out, host, f"{key}.dhcp_mode", mode, DHCP_MODES):
        found["dhcp_mode"] = mode
    subnet = None
    if net.get("subnet") not in (None, UNRESOLVED):
        try:
            subnet = parse_subnet(net["subnet"])
            found["subnet"] = subnet
        except ValueError as exc:
            out.add(host, f"{key}.subnet", net["subnet"], str(exc))
    server_ip = _ip_field(out, host, f"{key}.server_ip", net.get("server_ip"))
    if server_ip is not None:
        found["server_ip"] = server_ip
        if subnet is not None:
            _inside(out, host, f"{key}.server_ip", server_ip, subnet)
    gateway = _ip_field(out, host, f"{key}.gateway", net.get("gateway"))
    if gateway is not None and subnet is not None:
        _inside(out, host, f"{key}.gateway", gateway, subnet)
    dns = net.get("dns_servers")
    if dns not in (None, UNRESOLVED):
        if not isinstance(dns, list):
            out.add(host, f"{key}.dns_servers", dns, "must be a list of IPv4 addresses")
        else:
            for i, item in enumerate(dns):
                _ip_field(out, host, f"{key}.dns_servers[{i}]", item)
    rng = net.get("dhcp_range")
    if mode == "proxy":
        if rng is not None:
            out.add(
                host,
                f"{key}.dhcp_range",
                rng,
                "is not used in proxy mode (the router's DHCP assigns addresses): remove it",
            )
    elif rng is None:
        out.add(host, f"{key}.dhcp_range", None, "is required when dhcp_mode is full")
    elif rng is not UNRESOLVED:
        found["dhcp_range"] = _check_range(out, host, rng, subnet, server_ip)
    return found


def _ip_field(out: _Collector, host: str, key: str, value: Any):
    if value in (None, UNRESOLVED):
        return None
    try:
        return parse_ipv4(value)
    except ValueError as exc:
        out.add(host, key, value, str(exc))
        return None


def _inside(out: _Collector, host: str, key: str, ip, subnet) -> bool:
    if ip not in subnet:
        out.add(host, key, ip, f"is outside the subnet {subnet}")
        return False
    if ip in (subnet.network, subnet.broadcast):
        which = "network" if ip == subnet.network else "broadcast"
        out.add(host, key, ip, f"is the {which} address of {subnet}, not a host address")
        return False
    return True


def _check_range(out: _Collector, host: str, rng: Any, subnet, server_ip):
    key = "ggnet_network.dhcp_range"
    if not isinstance(rng, list) or len(rng) != 2:
        out.add(host, key, rng, "must be a list of two addresses: [first, last]")
        return None
    start = _ip_field(out, host, f"{key}[0]", rng[0])
    end = _ip_field(out, host, f"{key}[1]", rng[1])
    if start is None or end is None:
        return None
    if start > end:
        out.add(host, key, f"{start} - {end}", "is reversed: the first address is after the last")
        return None
    if subnet is not None:
        ok = _inside(out, host, f"{key}[0]", start, subnet)
        ok = _inside(out, host, f"{key}[1]", end, subnet) and ok
        if not ok:
            return None
    if server_ip is not None and start <= server_ip <= end:
        out.add(
            host,
            "ggnet_network.server_ip",
            server_ip,
            f"is inside the dhcp_range {start} - {end}: move it out of the range",
        )
    return (start, end)


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


def _abs_path(value: object) -> bool:
    return isinstance(value, str) and value.startswith("/") and "\n" not in value


def _check_iscsi(out: _Collector, host: str, iscsi: dict[str, Any]) -> str | None:
    key = "ggnet_iscsi"
    _choice(out, host, f"{key}.backend", iscsi.get("backend"), BACKENDS)
    chap = iscsi.get("chap")
    _bool(out, host, f"{key}.chap", chap)
    secret = iscsi.get("chap_secret")
    if chap is True and secret is not UNRESOLVED:
        if secret in (None, ""):
            out.add(
                host,
                f"{key}.chap_secret",
                None,
                "CHAP is on but no secret is set: set chap_secret from an Ansible Vault "
                "variable, or set chap: false",
            )
        elif not isinstance(secret, str):
            out.add_secret(host, f"{key}.chap_secret", secret, "must be a string")
        elif not CHAP_MIN <= len(secret) <= CHAP_MAX:
            out.add_secret(
                host,
                f"{key}.chap_secret",
                secret,
                f"must be {CHAP_MIN} to {CHAP_MAX} characters (the Windows initiator's limit)",
            )
        elif not secret.isascii() or not secret.isprintable() or " " in secret:
            out.add_secret(
                host,
                f"{key}.chap_secret",
                secret,
                "must be printable ASCII without spaces (iPXE and Windows disagree on others)",
            )
    prefix = iscsi.get("iqn_prefix")
    if prefix is UNRESOLVED:
        return None
    try:
        return check_iqn_prefix(prefix)
    except ValueError as exc:
        out.add(host, f"{key}.iqn_prefix", prefix, str(exc))
        return None


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


def _check_client(
    out: _Collector,
    name: str,
    hv: Mapping[str, Any],
    servers: list[str],
    parsed: Mapping[str, dict[str, Any]],
    hostvars: Mapping[str, Mapping[str, Any]],
    macs: dict[str, str],
    ips: dict[str, str],
) -> None:
    server = _placement(out, name, hv, servers)
    info = parsed.get(server, {}) if server else {}
    if server:
        for key in SETTINGS_KEYS:
            mine, theirs = hv.get(key), hostvars.get(server, {}).get(key)
            if mine is not UNRESOLVED and theirs is not UNRESOLVED and mine != theirs:
                out.add(
                    name,
                    key,
                    None,
                    f"differs from its server {server}'s: {key} is a server setting, "
                    "set it for the server (group_vars/all.yml or ggnet_servers)",
                )

    try:
        check_iqn_name(name)
        prefix = info.get("iqn_prefix")
        target_iqn(name, prefix)
        initiator_iqn(name, prefix)
    except ValueError as exc:
        out.add(name, "name", name, str(exc))

    vnc = hv.get("ggnet_console_vnc")
    if vnc not in (None, "", UNRESOLVED):
        wrong = console.check_vnc_endpoint(vnc)
        if wrong:
            out.add(name, "ggnet_console_vnc", vnc, wrong)

    mac = hv.get("ggnet_mac")
    if mac is None:
        out.add(name, "ggnet_mac", None, "is required: the PC's boot NIC address")
    elif mac is not UNRESOLVED:
        try:
            normal = normalize_mac(mac)
        except ValueError as exc:
            out.add(name, "ggnet_mac", mac, str(exc))
        else:
            if normal in macs:
                out.add(name, "ggnet_mac", mac, f"duplicate: {macs[normal]} has the same MAC")
            else:
                macs[normal] = name

    _check_client_images(out, name, hv, info.get("images", {}), server)
    _choice(
        out, name, "ggnet_boot", hv.get("ggnet_boot", CLIENT_DEFAULTS["ggnet_boot"]), BOOT_MODES
    )
    if "ggnet_keep_writeback" in hv:
        _bool(out, name, "ggnet_keep_writeback", hv["ggnet_keep_writeback"])
    if "ggnet_lab_firmware" in hv:
        _choice(out, name, "ggnet_lab_firmware", hv["ggnet_lab_firmware"], LAB_FIRMWARES)
    _check_client_ip(out, name, hv.get("ggnet_ip"), info, ips)


def _placement(out: _Collector, name: str, hv: Mapping[str, Any], servers: list[str]):
    chosen = hv.get("ggnet_server")
    if chosen is UNRESOLVED:
        return None
    if chosen is not None:
        if chosen not in servers:
            hint = _suggest(str(chosen), servers) if servers else ""
            out.add(name, "ggnet_server", chosen, "is not a host of ggnet_servers" + hint)
            return None
        return chosen
    if len(servers) == 1:
        return servers[0]
    if len(servers) > 1:
        out.add(
            name,
            "ggnet_server",
            None,
            f"is required with {len(servers)} servers ({', '.join(servers)}): "
            "say which one serves this PC",
        )
    return None


def _check_client_images(
    out: _Collector, name: str, hv: Mapping[str, Any], kinds: dict[str, str], server
) -> None:
    image = hv.get("ggnet_image")
    disk = hv.get("ggnet_game_disk")
    where = f" on server {server}" if server else ""
    known = ", ".join(sorted(kinds)) or "none"
    if image is None:
        out.add(name, "ggnet_image", None, "is required: the system image this PC boots")
    elif image is not UNRESOLVED and server:
        if image not in kinds:
            out.add(
                name,
                "ggnet_image",
                image,
                f"unknown image{where} (known: {known})" + _suggest(str(image), kinds),
            )
        elif kinds[image] != "system":
            out.add(
                name,
                "ggnet_image",
                image,
                "is a data image (a game disk), not a system image: use it as ggnet_game_disk",
            )
    if disk not in (None, UNRESOLVED) and server:
        if disk not in kinds:
            out.add(
                name,
                "ggnet_game_disk",
                disk,
                f"unknown game disk{where} (known: {known})" + _suggest(str(disk), kinds),
            )
        elif kinds[disk] != "data":
            out.add(
                name,
                "ggnet_game_disk",
                disk,
                "is a system image, not a data image: use a kind: data image as game disk",
            )


def _check_client_ip(
    out: _Collector, name: str, value: Any, info: Mapping[str, Any], ips: dict[str, str]
) -> None:
    if value is None or value is UNRESOLVED:
        return
    if info.get("dhcp_mode") == "proxy":
        out.add(
            name,
            "ggnet_ip",
            value,
            "is not used in proxy mode (the router's DHCP assigns addresses): remove it, "
            "or reserve the address on the router",
        )
        return
    ip = _ip_field(out, name, "ggnet_ip", value)
    if ip is None:
        return
    if str(ip) in ips:
        out.add(name, "ggnet_ip", ip, f"duplicate: {ips[str(ip)]} has the same address")
    else:
        ips[str(ip)] = name
    subnet = info.get("subnet")
    if subnet is not None and not _inside(out, name, "ggnet_ip", ip, subnet):
        return
    if info.get("server_ip") == ip:
        out.add(name, "ggnet_ip", ip, "is the server's own address")
    rng = info.get("dhcp_range")
    if rng and rng[0] <= ip <= rng[1]:
        out.add(
            name,
            "ggnet_ip",
            ip,
            f"is inside the dynamic range {rng[0]} - {rng[1]}: a fixed address must be outside it",
        )


def plain(value: Any) -> Any:
    """Strip Ansible's tagged types (2.19 data tagging) down to builtin ones."""
    if isinstance(value, bool) or value is None:
        return value
    if isinstance(value, str):
        return str(value)
    if isinstance(value, int):
        return int(value)
    if isinstance(value, float):
        return float(value)
    if isinstance(value, dict):
        return {str(k): plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [plain(v) for v in value]
    return value
