"""DHCP and TFTP counters from dnsmasq's log file, and its active leases.

The netboot role's dnsmasq logs a line per DHCP message and per TFTP transfer (no
`quiet-dhcp`/`quiet-tftp`); with `log-facility=<file>` they land in a file this
module follows.  The collector thread (never a scrape) calls DnsmasqLog.poll():

- LogTail reads what was appended since the last poll, remembering the file's inode
  and offset.  A new inode (logrotate moved the file) or a file shorter than the
  offset (truncated) is read from its start; a poll reads at most `max_bytes`, the
  rest waits for the next, and a partial last line is kept (at most MAX_LINE bytes).
  The first poll starts at the end: the counters count from the API's start, as
  Prometheus counters may, and a long log is never read whole.
- Lines are matched on dnsmasq's own words, never on the timestamp (whose month name
  follows the locale): the DHCP message names are not translated; the TFTP messages
  are, so the netboot role runs dnsmasq with LC_ALL=C.  Bytes are decoded
  as UTF-8 with replacement, whatever the API's locale.
- Every label set is bounded: the DHCP message types and error kinds below, the
  known boot files (anything else is "other"), the TFTP error kinds.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from dataclasses import dataclass, field

from ggnet.net import is_valid_mac, normalize_mac

from ggnet_api.boot_origin import parse_leases

MAX_LINE = 4096
MAX_READ = 4 << 20
MAX_SEEN = 4096

DHCP_TYPES = ("discover", "offer", "request", "ack", "nak", "decline", "release", "inform")
# What dnsmasq appends to a DHCP line when it does not (or cannot) answer as asked
# (rfc2131.c), by the kind label it counts under.
DHCP_ERRORS = {
    "no address available": "no_address",
    "no address range available": "no_range",
    "no unique-id": "no_unique_id",
    "address in use": "address_in_use",
    "address not available": "address_not_available",
    "wrong address": "wrong_address",
    "wrong network": "wrong_network",
    "wrong server-ID": "wrong_server_id",
    "lease not found": "lease_not_found",
    "ignored": "ignored",
    "disabled": "disabled",
}
DHCP_ERROR_KINDS = (*sorted(set(DHCP_ERRORS.values())), "other")
# The iPXE binaries the netboot role puts in the TFTP root (roles/ggnet_netboot/vars).
BOOT_FILES = ("undionly.kpxe", "snponly.efi", "ipxe.efi")
OTHER = "other"
TFTP_ERROR_KINDS = ("failed", "not_found", "denied", "client_abort", "unsupported")


class LogTail:
    """The complete lines appended to a file since the last read."""

    def __init__(self, path: str, max_bytes: int = MAX_READ) -> None:
        self.path = path
        self.max_bytes = max_bytes
        self.inode: int | None = None
        self.offset = 0
        self._partial = b""

    def read(self) -> list[str]:
        try:
            st = os.stat(self.path)
        except OSError:
            return []  # not written yet, or between logrotate's move and dnsmasq's reopen
        if self.inode is None:
            self.inode, self.offset = st.st_ino, st.st_size
            return []
        if st.st_ino != self.inode or st.st_size < self.offset:
            self.inode, self.offset, self._partial = st.st_ino, 0, b""
        if st.st_size == self.offset:
            return []
        try:
            with open(self.path, "rb") as fh:
                if os.fstat(fh.fileno()).st_ino != self.inode:
                    return []  # rotated between stat and open: the next poll starts it
                fh.seek(self.offset)
                data = fh.read(self.max_bytes)
        except OSError:
            return []
        self.offset += len(data)
        chunks = (self._partial + data).split(b"\n")
        self._partial = chunks.pop()
        if len(self._partial) > MAX_LINE:
            self._partial = b""  # not a dnsmasq line; dropping it bounds the memory
        return [c.decode("utf-8", "replace") for c in chunks if len(c) <= MAX_LINE]


@dataclass
class DnsmasqCounters:
    dhcp: dict[str, int] = field(default_factory=lambda: dict.fromkeys(DHCP_TYPES, 0))
    dhcp_errors: dict[str, int] = field(default_factory=lambda: dict.fromkeys(DHCP_ERROR_KINDS, 0))
    tftp_requests: dict[str, int] = field(default_factory=dict)
    tftp_errors: dict[tuple[str, str], int] = field(default_factory=dict)
    tftp_bytes: dict[str, int] = field(default_factory=dict)

    def rows(self) -> dict[str, list[list]]:
        """The counters as JSON-able rows (label values..., value), sorted."""
        return {
            "dhcp": [[k, v] for k, v in self.dhcp.items()],
            "dhcp_errors": [[k, v] for k, v in self.dhcp_errors.items()],
            "tftp_requests": [[k, v] for k, v in sorted(self.tftp_requests.items())],
            "tftp_errors": [[f, k, v] for (f, k), v in sorted(self.tftp_errors.items())],
            "tftp_bytes": [[k, v] for k, v in sorted(self.tftp_bytes.items())],
        }


def _message(line: str) -> tuple[str, str] | None:
    """('dhcp' or 'tftp', the message) of a dnsmasq-dhcp/-tftp line of a log file."""
    for tag in ("dhcp", "tftp"):
        at = line.find(f"dnsmasq-{tag}[")
        if at >= 0:
            end = line.find("]: ", at)
            if end >= 0:
                return tag, line[end + 3 :]
    return None


def _tftp_error(msg: str) -> tuple[str, str] | None:
    """(file, kind) of a TFTP error line, None for any other line."""
    for prefix, sep, kind in (
        ("failed sending ", " to ", "failed"),
        ("file ", " not found", "not_found"),
        ("cannot access ", ": ", "denied"),
    ):
        if msg.startswith(prefix) and sep in msg:
            return boot_file(msg[len(prefix) :].rsplit(sep, 1)[0]), kind
    if msg.startswith("error ") and " received from " in msg:
        # A PXE ROM asks for the size, then aborts to fetch the file: expected.
        return OTHER, "client_abort"
    if msg.startswith("unsupported request from "):
        return OTHER, "unsupported"
    return None


def boot_file(path: str) -> str:
    name = path.rsplit("/", 1)[-1]
    return name if name in BOOT_FILES else OTHER


class DnsmasqLog:
    """Counters kept from a LogTail of dnsmasq's log file."""

    def __init__(self, path: str, tftp_root: str | None = None, max_bytes: int = MAX_READ):
        self.tail = LogTail(path, max_bytes)
        self.tftp_root = tftp_root
        self.counters = DnsmasqCounters()
        # The MACs whose DISCOVER or REQUEST the last poll read (a woken PC's first
        # sign, ggnet_api/wakes.py), at most MAX_SEEN of them.
        self.seen: set[str] = set()

    def poll(self) -> DnsmasqCounters:
        self.seen = set()
        self.feed(self.tail.read())
        return self.counters

    def feed(self, lines: Iterable[str]) -> None:
        for line in lines:
            found = _message(line.rstrip("\r\n"))
            if found is None:
                continue
            tag, msg = found
            if tag == "dhcp":
                self._dhcp(msg)
            else:
                self._tftp(msg)

    def _dhcp(self, msg: str) -> None:
        words = msg.split(" ", 1)
        if words[0].isdigit() and len(words) == 2:  # log-dhcp's transaction id
            msg = words[1]
        if msg.startswith("no address range available"):
            self.counters.dhcp_errors["no_range"] += 1
            return
        if not msg.startswith("DHCP"):
            return
        head, _, rest = msg.partition(" ")
        kind = head[4:].partition("(")[0].lower()
        if kind not in self.counters.dhcp:
            return  # DHCPv6's SOLICIT etc., or a line of log-dhcp's detail
        self.counters.dhcp[kind] += 1
        if kind in ("discover", "request") and len(self.seen) < MAX_SEEN:
            for word in rest.split(" ")[:2]:  # [address] MAC
                if is_valid_mac(word):
                    self.seen.add(normalize_mac(word))
                    break
        if kind in ("offer", "ack"):
            return  # what follows the MAC is the PC's hostname, never a reason
        # rest: [address] MAC [reason]; a reason is one of dnsmasq's phrases.
        for phrase, label in DHCP_ERRORS.items():
            if rest.endswith(" " + phrase):
                self.counters.dhcp_errors[label] += 1
                return
        if kind == "nak":
            self.counters.dhcp_errors["other"] += 1

    def _tftp(self, msg: str) -> None:
        c = self.counters
        if msg.startswith("sent "):
            path = msg[5:].rsplit(" to ", 1)[0]
            name = boot_file(path)
            c.tftp_requests[name] = c.tftp_requests.get(name, 0) + 1
            c.tftp_bytes[name] = c.tftp_bytes.get(name, 0) + self._size(name)
            return
        found = _tftp_error(msg)
        if found is None:
            return
        name, kind = found
        if kind in ("failed", "not_found", "denied"):  # a request that ended badly
            c.tftp_requests[name] = c.tftp_requests.get(name, 0) + 1
        c.tftp_errors[(name, kind)] = c.tftp_errors.get((name, kind), 0) + 1

    def _size(self, name: str) -> int:
        """Bytes of a sent boot file: dnsmasq logs a whole transfer, not its bytes (read
        each time: a package upgrade replaces the file)."""
        if name == OTHER or self.tftp_root is None:
            return 0
        try:
            return os.stat(os.path.join(self.tftp_root, name)).st_size
        except OSError:
            return 0


def active_leases(path: str | None, now: float) -> int | None:
    """Unexpired IPv4 leases in dnsmasq's lease file; None without one (proxy mode)."""
    if not path:
        return None
    try:
        with open(path, encoding="utf-8", errors="replace") as fh:
            leases = parse_leases(fh.read())
    except OSError:
        return None
    return sum(1 for rows in leases.values() for _ip, exp in rows if exp == 0 or exp > now)
