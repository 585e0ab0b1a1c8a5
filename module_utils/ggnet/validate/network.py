"""Checks of a server's ggnet_network: interface, addresses, subnet, DHCP range."""

from __future__ import annotations

import re
from typing import Any

from ..net import parse_subnet
from ..settings import DHCP_MODES, default
from .fields import _choice, _inside, _ip_field
from .problems import _Collector
from .values import UNRESOLVED

_IFACE_RE = re.compile(r"^[A-Za-z0-9_.:@-]{1,15}$")


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
