"""Whether a boot-path request comes from the PC whose MAC is in its URL.

A known PC's script resets its writeback and carries its CHAP secret, so it goes only
to the PC itself.  A request from `source` is the PC's own when one of these holds:

1. `source` is the PC's fixed address (ggnet_ip, the model's `ip`);
2. dnsmasq's lease file (config `lease_file`, the netboot role's
   ggnet_netboot_lease_file) holds an unexpired lease of `source` for that MAC (full
   DHCP mode);
3. the kernel's IPv4 neighbour table (config `neighbour_file`, /proc/net/arp) maps
   `source` to that MAC: proxy-DHCP mode, and any PC on the server's own L2 segment.
   A TCP connection from the segment cannot be answered before the kernel has
   resolved the peer, so the entry exists by the time the request is read.

What this does not stop: a person who sets their own NIC to another PC's MAC and
address is, on the wire, that PC.  Per-PC CHAP secrets limit what such a person gets
to that one PC's disk.  Behind a reverse proxy every request would come from the
proxy: the boot path must be reached directly.  IPv4 only (iPXE boots over IPv4 here);
an IPv4-mapped IPv6 source counts as its IPv4 address.

The lease file is parsed again only when its (inode, mtime, size) changes; the
neighbour table is read only when the first two rules did not already answer.
"""

from __future__ import annotations

import logging
import os
import time
from typing import Any

from ggnet.net import normalize_mac, parse_ipv4, parse_ipv6

log = logging.getLogger(__name__)

FIXED_IP = "fixed-ip"
LEASE = "lease"
NEIGHBOUR = "neighbour"
# /proc/net/arp's flag of a complete entry (ATF_COM): an incomplete one has no MAC yet.
_ATF_COM = 0x2


def ipv4_of(source: str | None) -> str | None:
    """The IPv4 address a request came from, in dotted form; None for anything else."""
    if not source:
        return None
    try:
        return str(parse_ipv4(source))
    except ValueError:
        pass
    try:
        mapped = parse_ipv6(source).ipv4_mapped
    except ValueError:
        return None
    return str(mapped) if mapped is not None else None


def _mac_or_none(text: str) -> str | None:
    try:
        return normalize_mac(text)
    except ValueError:
        return None


def parse_leases(text: str) -> dict[str, list[tuple[str, int]]]:
    """MAC -> [(IPv4 address, expiry)] from dnsmasq's lease file (expiry 0: never).

    IPv4 lines are `<expiry> <mac> <ip> <hostname> <client-id>`; the DHCPv6 part (after
    a `duid` line) names IAIDs, not MACs, and is skipped with anything else unreadable.
    """
    out: dict[str, list[tuple[str, int]]] = {}
    for line in text.splitlines():
        fields = line.split()
        if len(fields) < 3 or not fields[0].isdigit():
            continue
        mac = _mac_or_none(fields[1])
        ip = ipv4_of(fields[2])
        if mac is None or ip is None or ":" in fields[2]:
            continue
        out.setdefault(mac, []).append((ip, int(fields[0])))
    return out


def neighbour_mac(text: str, ip: str) -> str | None:
    """The MAC /proc/net/arp's text gives `ip` in a complete entry, else None.

    Only the lines of that address are parsed: the table of a room has a line per PC,
    and this runs on a boot request."""
    prefix = ip + " "
    for line in text.splitlines()[1:]:
        if not line.startswith(prefix):
            continue
        fields = line.split()
        if len(fields) < 4:
            continue
        try:
            complete = int(fields[2], 16) & _ATF_COM
        except ValueError:
            continue
        mac = _mac_or_none(fields[3])
        if complete and mac is not None:
            return mac
    return None


class BootOrigin:
    """Decides whether a request is a PC's own; reads its files' paths from `config`
    at each call, so a changed setting takes effect at once."""

    def __init__(self, config: dict[str, Any]):
        self.config = config
        # ((path, inode, mtime_ns, size), leases) of the lease file last parsed.
        self._leases: tuple[tuple[Any, ...], dict[str, list[tuple[str, int]]]] | None = None

    def of(self, client: dict[str, Any], mac: str, source: str | None) -> str | None:
        """How a request from `source` is the PC's own (FIXED_IP, LEASE, NEIGHBOUR), or
        None when it is someone else's."""
        ip = ipv4_of(source)
        if ip is None:
            return None
        fixed = client.get("ip")
        if fixed and ipv4_of(str(fixed)) == ip:
            return FIXED_IP
        now = time.time()
        if any(a == ip and (exp == 0 or exp > now) for a, exp in self.leases().get(mac, ())):
            return LEASE
        if self.neighbour(ip) == mac:
            return NEIGHBOUR
        return None

    def leases(self) -> dict[str, list[tuple[str, int]]]:
        path = self.config.get("lease_file")
        if not path:
            return {}
        try:
            st = os.stat(path)
        except OSError:
            return {}  # no lease file: proxy mode, or dnsmasq has not written one yet
        key = (path, st.st_ino, st.st_mtime_ns, st.st_size)
        cached = self._leases
        if cached is not None and cached[0] == key:
            return cached[1]
        try:
            with open(path, encoding="utf-8", errors="replace") as fh:
                leases = parse_leases(fh.read())
        except OSError as exc:
            log.warning("lease file %s not readable: %s", path, exc)
            return {}
        self._leases = (key, leases)  # one assignment: a concurrent reader sees old or new
        return leases

    def neighbour(self, ip: str) -> str | None:
        """The MAC the kernel's neighbour table gives `ip` now (never cached: it
        changes as PCs come and go)."""
        path = self.config.get("neighbour_file")
        if not path:
            return None
        try:
            with open(path, encoding="utf-8", errors="replace") as fh:
                return neighbour_mac(fh.read(), ip)
        except OSError:
            return None
