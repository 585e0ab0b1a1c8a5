"""The lab's power button: a lab PC can be "off", and a magic packet turns it on.

A room's PC that is switched off still listens with its NIC; the lab has no such NIC,
so it simulates one.  A lab PC is off in one of two ways:

- `stopped`: its qemu is not running.  Powering on starts it (client.start).
- `paused`: its qemu was started with `-S` (the CPU does not run) and an HMP monitor
  on a unix socket (paused_argv).  Powering on sends the monitor `cont`: the firmware
  starts from its reset vector, as at power-on.  This is quicker, and keeps the PC's
  tap and VNC screen from the start.

Waker follows the frames captured on the lab bridge (ggnet_lab.pcap: tcpdump's pcap
file, as a boot's capture) and powers on each off PC whose MAC a magic packet names,
once: a UDP datagram to any port, or an EtherType 0x0842 frame, anywhere in the frame
(ggnet.wol.mac_of_packet).  A magic packet for a PC that is on, or for a MAC of no lab
PC, does nothing, as on real hardware.
"""

from __future__ import annotations

import socket
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

from ggnet.net import normalize_mac
from ggnet.wol import mac_of_packet

from .pcap import Frame

OFF_WAYS = ("stopped", "paused")


def paused_argv(argv: list[str], monitor: Path) -> list[str]:
    """A qemu command line started off: CPU stopped (-S), HMP on `monitor`."""
    return [*argv, "-S", "-monitor", f"unix:{monitor},server,nowait"]


def resume(monitor: Path, timeout: float = 5.0) -> None:
    """Power a paused lab PC on: HMP `cont` on its monitor socket."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(timeout)
        sock.connect(str(monitor))
        sock.sendall(b"cont\n")
        # HMP echoes the command once it has read it; the socket may then close.
        buf = b""
        while b"cont" not in buf:
            chunk = sock.recv(4096)
            if not chunk:
                break
            buf += chunk


@dataclass
class Waker:
    """Off lab PCs by MAC, and what powers each on (name -> None)."""

    power_on: Callable[[str], None]
    off: dict[str, str] = field(default_factory=dict)  # MAC -> PC name
    woken: list[tuple[float, str]] = field(default_factory=list)

    def switch_off(self, name: str, mac: str) -> None:
        self.off[normalize_mac(mac)] = name

    def feed(self, frames: Iterable[Frame]) -> list[str]:
        """Power on the off PCs the frames' magic packets name; their names."""
        out = []
        for frame in frames:
            mac = mac_of_packet(frame.data)
            name = self.off.pop(mac, None) if mac is not None else None
            if name is None:
                continue
            self.power_on(name)
            self.woken.append((frame.time, name))
            out.append(name)
        return out
