"""Wake-on-LAN: the magic packet, and the interface and address it leaves from.

A magic packet is 6 bytes 0xFF then the target's MAC 16 times (AMD's "Magic Packet
Technology" white paper), sent here as the payload of a UDP datagram to port 9
(discard), broadcast on the boot network.  It must leave from the boot interface
(`ggnet_network.interface`), whichever NIC the kernel's routes would pick: a server
with an uplink and a room NIC routes a broadcast out of the wrong one as soon as the
subnets overlap or a default route wins.  send() binds the socket to the interface
(SO_BINDTODEVICE, which needs CAP_NET_RAW: ggnet-privd runs it) and addresses the
interface's subnet's broadcast address.

Pure parts (magic_packet, wake_route) are unit-tested; send() is tested in a network
namespace (tests/integration/test_power.py).
"""

from __future__ import annotations

import socket
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from .net import mac_bytes, mac_of_bytes, normalize_mac, parse_subnet

PORT = 9
# Sent this many times, REPEAT_GAP seconds apart: a datagram may be lost, and a NIC in
# a low-power state may miss the first one.  Several are harmless.
REPEAT = 3
REPEAT_GAP = 0.1
# Linux's IFNAMSIZ less its terminating NUL.
IFNAME_MAX = 15


class WolError(ValueError):
    """A wake that cannot be sent; the message names the key and the value."""


def magic_packet(mac: object) -> bytes:
    """6 x 0xFF then the MAC's 6 bytes 16 times (102 bytes).  A unicast MAC only:
    normalize_mac refuses broadcast and multicast ones, which are no NIC's."""
    normalize_mac(mac)
    return b"\xff" * 6 + mac_bytes(mac) * 16


def mac_of_packet(payload: bytes) -> str | None:
    """The MAC a magic packet wakes (found anywhere in `payload`), or None: what a
    listener (the lab's simulated power button, the tests) reads back."""
    at = payload.find(b"\xff" * 6)
    while at >= 0:
        body = payload[at + 6 : at + 6 + 96]
        if len(body) == 96 and body == body[:6] * 16 and body[:6] != b"\xff" * 6:
            return mac_of_bytes(body[:6])
        at = payload.find(b"\xff" * 6, at + 1)
    return None


@dataclass(frozen=True)
class Route:
    interface: str
    broadcast: str
    port: int = PORT


def wake_route(network: Mapping[str, Any]) -> Route:
    """The interface and broadcast address a wake leaves from, from ggnet_network."""
    interface = network.get("interface")
    if interface in (None, ""):
        raise WolError(
            "ggnet_network.interface: is not set: a wake leaves from the boot interface only"
        )
    if not isinstance(interface, str):
        raise WolError(f"ggnet_network.interface: {str(interface)[:40]!r} is not a name")
    if len(interface) > IFNAME_MAX or "/" in interface or interface in (".", ".."):
        raise WolError(f"ggnet_network.interface: {interface[:40]!r} is not an interface name")
    subnet = network.get("subnet")
    try:
        net = parse_subnet(subnet)
    except ValueError as exc:
        raise WolError(f"ggnet_network.subnet: {str(subnet)[:40]!r} {exc}") from None
    return Route(interface, str(net.broadcast))


def check_interface(interface: str) -> None:
    """WolError unless the interface exists in this (thread's) network namespace."""
    try:
        socket.if_nametoindex(interface)
    except OSError:
        raise WolError(
            f"ggnet_network.interface: {interface!r} is not an interface of this server"
        ) from None


def send(mac: object, route: Route, repeat: int = REPEAT, gap: float = REPEAT_GAP) -> float:
    """Send the magic packet for `mac` out of route.interface; the time of the first.

    OSError (EPERM without CAP_NET_RAW, ENODEV, ENETUNREACH) is raised as WolError."""
    packet = magic_packet(mac)
    check_interface(route.interface)
    sent = 0.0
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            sock.setsockopt(
                socket.SOL_SOCKET, socket.SO_BINDTODEVICE, route.interface.encode() + b"\0"
            )
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_BROADCAST, 1)
            for i in range(max(1, repeat)):
                if i:
                    time.sleep(gap)
                sock.sendto(packet, (route.broadcast, route.port))
                if not sent:
                    sent = time.time()
    except OSError as exc:
        raise WolError(
            f"the magic packet could not leave from {route.interface} to "
            f"{route.broadcast}:{route.port}: {exc.strerror or exc}"
        ) from None
    return sent
