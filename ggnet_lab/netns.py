"""The lab's network: one namespace holding a bridge and a tap per machine.

Nothing is routed between the namespace and the host, so whatever a lab machine sends
stays on the bridge.  Every function is idempotent: `lab up` after a crash repairs.
"""

from __future__ import annotations

import hashlib
import re
import subprocess

from .paths import NETNS, NETNS_PATH

BRIDGE = "ggbr0"
BRIDGE_ADDRESS = "10.213.0.1/24"
# A ULA of our own: iPXE waits ~13 s for an IPv6 router unless the bridge has one.
BRIDGE_ADDRESS6 = "fd00:213::1/64"
IFNAMSIZ = 15


class NetnsError(RuntimeError):
    pass


def tap_name(machine: str) -> str:
    """A tap name for MACHINE that fits the kernel's 15 characters and stays unique."""
    clean = re.sub(r"[^A-Za-z0-9-]", "", machine)
    name = f"gt-{clean}"
    if len(name) <= IFNAMSIZ and clean == machine:
        return name
    # Long or unusual names: keep a readable prefix and make it unique with a hash.
    digest = hashlib.sha256(machine.encode()).hexdigest()[:4]
    return f"gt-{clean[: IFNAMSIZ - 8]}-{digest}"


def _run(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    proc = subprocess.run(args, capture_output=True, text=True)
    if check and proc.returncode != 0:
        raise NetnsError(f"`{' '.join(args)}` failed: {proc.stderr.strip() or proc.stdout.strip()}")
    return proc


def _ns(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    return _run("ip", "-n", NETNS, *args, check=check)


def exists() -> bool:
    return NETNS_PATH.exists()


def link_exists(name: str) -> bool:
    return exists() and _ns("link", "show", "dev", name, check=False).returncode == 0


def create() -> None:
    """The namespace with loopback up and the bridge with its addresses."""
    if not exists():
        _run("ip", "netns", "add", NETNS)
    _ns("link", "set", "lo", "up")
    if not link_exists(BRIDGE):
        # No STP and no forwarding delay: a PC's first DHCPDISCOVER must not be eaten
        # by a port still "learning".
        _ns("link", "add", BRIDGE, "type", "bridge", "stp_state", "0", "forward_delay", "0")
    addresses = _ns("-o", "addr", "show", "dev", BRIDGE).stdout
    if f" {BRIDGE_ADDRESS} " not in addresses:
        _ns("addr", "add", BRIDGE_ADDRESS, "dev", BRIDGE)
    if f" {BRIDGE_ADDRESS6} " not in addresses:
        # nodad: the address is usable at once instead of after duplicate detection.
        _ns("addr", "add", BRIDGE_ADDRESS6, "dev", BRIDGE, "nodad")
    _ns("link", "set", BRIDGE, "up")


def add_tap(machine: str) -> str:
    """A persistent tap for MACHINE on the bridge; qemu attaches with script=no."""
    create()
    name = tap_name(machine)
    if not link_exists(name):
        _ns("tuntap", "add", "dev", name, "mode", "tap")
    _ns("link", "set", name, "master", BRIDGE)
    _ns("link", "set", name, "up")
    return name


def remove_tap(machine: str) -> None:
    name = tap_name(machine)
    if link_exists(name):
        _ns("link", "del", name)


def taps() -> list[str]:
    if not exists():
        return []
    out = _ns("-o", "link", "show", "type", "tun", check=False).stdout
    return [line.split(":")[1].strip().split("@")[0] for line in out.splitlines() if ":" in line]


def delete() -> None:
    """Every tap, the bridge and the namespace; nothing of the lab's network is left."""
    if not exists():
        return
    for name in taps():
        _ns("link", "del", name, check=False)
    _ns("link", "del", BRIDGE, check=False)
    _run("ip", "netns", "del", NETNS)


def nsenter(*command: str) -> list[str]:
    """COMMAND run in the lab's network only (not `ip netns exec`, which also gives a
    private mount namespace that hides FUSE mounts made later)."""
    return ["nsenter", f"--net={NETNS_PATH}", *command]
