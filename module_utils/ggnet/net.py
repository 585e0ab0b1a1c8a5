"""MAC addresses, iSCSI qualified names and IP address checks.

The one home of these notations: validation, the modules, the API, the CLI, the lab,
the test support and the benches all parse them here (tests/unit/test_one_parser.py
keeps it so).  Every function raises ValueError with a message fit to show an
operator; callers add where the value came from.
"""

from __future__ import annotations

import ipaddress
import re
from functools import cache

from .settings import DEFAULT_IQN_PREFIX


@cache
def _netaddr():
    # Imported on first use: modules that only need MACs, IQNs or model.py's size
    # parsing then run on a target without python3-netaddr.
    import netaddr

    return netaddr


# RFC 3720 3.2.6.1: an iSCSI name is at most 223 bytes.
IQN_MAX_LEN = 223

_HEX = "[0-9a-fA-F]"
# The notations operators actually paste: Linux/ip (colons), Windows (dashes), Cisco
# (dotted quads of hex) and bare hex as printed on stickers and in BIOS setup.
_MAC_FORMS = (
    re.compile(rf"^{_HEX}{{2}}(:{_HEX}{{2}}){{5}}$"),
    re.compile(rf"^{_HEX}{{2}}(-{_HEX}{{2}}){{5}}$"),
    re.compile(rf"^{_HEX}{{4}}\.{_HEX}{{4}}\.{_HEX}{{4}}$"),
    re.compile(rf"^{_HEX}{{12}}$"),
)

# iqn.YYYY-MM.reversed.domain
_LABEL = r"[a-z0-9]([a-z0-9-]*[a-z0-9])?"
_IQN_PREFIX_RE = re.compile(
    rf"^iqn\.\d{{4}}-(0[1-9]|1[0-2])\.{_LABEL}(\.{_LABEL})*(:[a-z0-9.:-]+)?$"
)
# What may follow the prefix: RFC 3720 names after stringprep are lower-case
# letters, digits, '-', '.' and ':'.  We do not case-fold: a host named PC-01 would
# silently share an IQN with pc-01.
_IQN_SUFFIX_RE = re.compile(r"^[a-z0-9]([a-z0-9.:-]*[a-z0-9])?$")
# RFC 3720 3.2.6.3: the three types of iSCSI name.
_ISCSI_NAME_TYPES = ("iqn.", "eui.", "naa.")


def mac_bytes(value: object) -> bytes:
    """The six bytes of a MAC in any accepted notation, broadcast and multicast
    included (a frame's destination, not only a NIC's): normalize_mac checks the kind."""
    if isinstance(value, bool) or not isinstance(value, str):
        if isinstance(value, int):
            # YAML 1.1 reads 52:54:00:12:34:56 as a base-60 number and 525400123456
            # as a decimal one.
            raise ValueError("was read as a number by YAML: put the MAC address in quotes")
        raise ValueError("must be a MAC address string such as 52:54:00:12:34:56")
    text = value.strip()
    if not any(form.match(text) for form in _MAC_FORMS):
        raise ValueError(
            "is not a MAC address (accepted: aa:bb:cc:dd:ee:ff, AA-BB-CC-DD-EE-FF, "
            "aabb.ccdd.eeff, aabbccddeeff)"
        )
    return bytes.fromhex(re.sub(r"[^0-9a-fA-F]", "", text))


def normalize_mac(value: object) -> str:
    """Return the MAC as lower-case aa:bb:cc:dd:ee:ff; reject non-unicast addresses."""
    raw = mac_bytes(value)
    if not any(raw):
        raise ValueError("is the all-zero MAC address, which no NIC has")
    if raw[0] & 0x01:
        kind = "the broadcast address" if raw == b"\xff" * 6 else "a multicast address"
        raise ValueError(f"is {kind}, not a NIC's address")
    return raw.hex(":")


def mac_of_bytes(raw: bytes) -> str:
    """The normalised text of a MAC as it travels in a frame or a DHCP chaddr.

    No unicast check: frames carry broadcast and multicast destinations too."""
    if len(raw) != 6:
        raise ValueError(f"is {len(raw)} bytes, not the 6 of a MAC address")
    return raw.hex(":")


def is_valid_mac(value: object) -> bool:
    try:
        normalize_mac(value)
    except ValueError:
        return False
    return True


def check_iqn_prefix(prefix: object) -> str:
    if not isinstance(prefix, str) or not _IQN_PREFIX_RE.match(prefix):
        raise ValueError(
            "is not an IQN prefix of the form iqn.YYYY-MM.reversed.domain "
            f"(lower case), e.g. {DEFAULT_IQN_PREFIX}"
        )
    return prefix


def check_iqn_name(name: object) -> str:
    """The part of an IQN derived from a client name (the inventory host name)."""
    if not isinstance(name, str) or not _IQN_SUFFIX_RE.match(name):
        raise ValueError(
            "cannot form an iSCSI name: use lower-case letters, digits, '-' and '.' "
            "only, starting and ending with a letter or digit"
        )
    return name


def is_iscsi_name(value: object) -> bool:
    """Whether value names an initiator or target by one of RFC 3720's three name
    formats (iqn., eui., naa.) rather than by an address."""
    return isinstance(value, str) and value.startswith(_ISCSI_NAME_TYPES)


def _iqn(prefix: str | None, name: str, role: str) -> str:
    prefix = check_iqn_prefix(prefix or DEFAULT_IQN_PREFIX)
    check_iqn_name(name)
    iqn = f"{prefix}:{role}.{name}" if ":" not in prefix else f"{prefix}.{role}.{name}"
    if len(iqn.encode()) > IQN_MAX_LEN:
        raise ValueError(f"gives an iSCSI name longer than {IQN_MAX_LEN} bytes: {iqn}")
    return iqn


def target_iqn(name: str, prefix: str | None = None) -> str:
    """The IQN of the target that serves client `name`'s disks."""
    return _iqn(prefix, name, "target")


def initiator_iqn(name: str, prefix: str | None = None) -> str:
    """The IQN iPXE presents for client `name`; the target's ACL admits only it."""
    return _iqn(prefix, name, "initiator")


def parse_ipv4(value: object):
    netaddr = _netaddr()
    if isinstance(value, bool) or not isinstance(value, str):
        raise ValueError("must be an IPv4 address string such as 10.0.0.5")
    try:
        # INET_PTON: no legacy forms such as "10.1" or octal "010.0.0.1".
        return netaddr.IPAddress(value.strip(), 4, flags=netaddr.INET_PTON)
    except (netaddr.AddrFormatError, ValueError) as exc:
        raise ValueError("is not an IPv4 address") from exc


def parse_ipv6(value: object) -> ipaddress.IPv6Address:
    """An IPv6 address (without brackets), as a host:port endpoint may carry one."""
    if isinstance(value, bool) or not isinstance(value, str):
        raise ValueError("must be an IPv6 address string such as fd00::5")
    try:
        # The standard library's, not netaddr's: it keeps a link-local address's
        # scope (fe80::1%eth0), which getaddrinfo needs.
        return ipaddress.IPv6Address(value.strip())
    except ValueError as exc:
        raise ValueError("is not an IPv6 address") from exc


def is_ipv6(value: object) -> bool:
    try:
        parse_ipv6(value)
    except ValueError:
        return False
    return True


def parse_subnet(value: object):
    netaddr = _netaddr()
    if not isinstance(value, str) or "/" not in value:
        raise ValueError("must be an IPv4 network in CIDR form such as 10.0.0.0/24")
    try:
        net = netaddr.IPNetwork(value.strip(), version=4)
    except (netaddr.AddrFormatError, ValueError) as exc:
        raise ValueError("is not an IPv4 network in CIDR form such as 10.0.0.0/24") from exc
    if net.ip != net.network:
        raise ValueError(f"has host bits set: did you mean {net.cidr}?")
    if net.prefixlen > 30:
        raise ValueError("is too small to hold a server and clients (at most /30)")
    return net


def ip_in_subnet(ip: object, subnet: object) -> bool:
    """True when ip is a usable host address of subnet (not its network or broadcast)."""
    addr = parse_ipv4(ip)
    net = parse_subnet(subnet)
    return addr in net and addr not in (net.network, net.broadcast)


def ip_in_range(ip: object, start: object, end: object) -> bool:
    return parse_ipv4(start) <= parse_ipv4(ip) <= parse_ipv4(end)
