"""The stages of a lab PC's boot, each recognised from evidence really seen: a frame on
the lab bridge or a line on the PC's serial console.

STAGES is an ordered table; a later issue adds a stage with register() (say, "the OS
reached its login prompt" from a serial line) and `ggnet lab boot --until NAME` can wait
for it at once.  A matcher gets one observation and the PC's MAC and returns a short
detail text when the observation proves the stage, else None.
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from dataclasses import dataclass, field

from ggnet.net import mac_of_bytes, normalize_mac

from .pcap import Packet

MARKER = "GGNET-BOOT"

DHCP_TYPES = {1: "DISCOVER", 2: "OFFER", 3: "REQUEST", 5: "ACK", 6: "NAK"}
_DHCP_MAGIC = b"\x63\x82\x53\x63"


@dataclass(frozen=True)
class SerialLine:
    time: float
    text: str


Observation = Packet | SerialLine
Matcher = Callable[[Observation, str], "str | None"]


@dataclass(frozen=True)
class Stage:
    name: str
    description: str
    match: Matcher


def dhcp_message(packet: Packet) -> tuple[str, str] | None:
    """(message type, client MAC) of a DHCPv4 packet, else None."""
    if packet.proto != "udp" or {packet.src_port, packet.dst_port} - {67, 68}:
        return None
    body = packet.payload
    if len(body) < 240 or body[236:240] != _DHCP_MAGIC:
        return None
    chaddr = mac_of_bytes(body[28:34])
    i = 240
    while i < len(body):
        code = body[i]
        if code == 0:  # pad
            i += 1
            continue
        if code == 255 or i + 1 >= len(body):
            break
        length = body[i + 1]
        if code == 53 and length >= 1 and i + 2 < len(body):
            return DHCP_TYPES.get(body[i + 2], str(body[i + 2])), chaddr
        i += 2 + length
    return None


def _dhcp(kind: str, from_pc: bool) -> Matcher:
    def match(obs: Observation, mac: str) -> str | None:
        if not isinstance(obs, Packet):
            return None
        message = dhcp_message(obs)
        if message is None or message != (kind, mac):
            return None
        if from_pc and obs.src_mac != mac:
            return None
        return f"DHCP{kind}"

    return match


def _tftp_request(obs: Observation, mac: str) -> str | None:
    if not isinstance(obs, Packet) or obs.proto != "udp" or obs.dst_port != 69:
        return None
    if obs.src_mac != mac or len(obs.payload) < 4:
        return None
    opcode = struct.unpack("!H", obs.payload[:2])[0]
    if opcode != 1:  # RRQ
        return None
    filename = obs.payload[2:].split(b"\0", 1)[0].decode(errors="replace")
    return f"TFTP read {filename}"


def _http_get(obs: Observation, mac: str) -> str | None:
    if not isinstance(obs, Packet) or obs.proto != "tcp" or obs.src_mac != mac:
        return None
    if not obs.payload.startswith(b"GET "):
        return None
    target = obs.payload[4:].split(b" ", 1)[0].decode(errors="replace")
    return f"HTTP GET {target}"


def _iscsi_login(obs: Observation, mac: str) -> str | None:
    if not isinstance(obs, Packet) or obs.proto != "tcp" or obs.src_mac != mac:
        return None
    if obs.dst_port != 3260 or len(obs.payload) < 48:
        return None
    # Basic header segment: opcode 0x03 is a Login Request (0x40 = immediate bit).
    if obs.payload[0] & 0x3F != 0x03:
        return None
    return "iSCSI login request"


def serial_contains(text: str) -> Matcher:
    def match(obs: Observation, mac: str) -> str | None:
        if isinstance(obs, SerialLine) and text in obs.text:
            return obs.text.strip()[:80]
        return None

    return match


STAGES: list[Stage] = [
    Stage("bridge", "first DHCPDISCOVER from the PC's MAC on the lab bridge",
          _dhcp("DISCOVER", from_pc=True)),
    Stage("dhcp-offer", "a DHCPOFFER for the PC", _dhcp("OFFER", from_pc=False)),
    Stage("dhcp-ack", "a DHCPACK for the PC", _dhcp("ACK", from_pc=False)),
    Stage("tftp", "the PC asks TFTP for a boot file", _tftp_request),
    Stage("http", "the PC's first HTTP GET (iPXE script)", _http_get),
    Stage("iscsi", "the PC logs into an iSCSI target", _iscsi_login),
    Stage("marker", f"the boot program printed {MARKER} on the serial console",
          serial_contains(MARKER)),
]  # fmt: skip


def register(stage: Stage, after: str | None = None) -> None:
    """Add STAGE to the table (after the stage named AFTER, else at the end)."""
    if any(s.name == stage.name for s in STAGES):
        raise ValueError(f"a boot stage named {stage.name!r} exists already")
    if after is None:
        STAGES.append(stage)
        return
    names = [s.name for s in STAGES]
    if after not in names:
        raise ValueError(f"no boot stage {after!r} to put {stage.name!r} after; have {names}")
    STAGES.insert(names.index(after) + 1, stage)


def names() -> list[str]:
    return [s.name for s in STAGES]


@dataclass
class StageClock:
    """First time each stage was seen, in seconds since the PC was started."""

    mac: str
    started: float
    seen: dict[str, tuple[float, str]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        # Frames carry the colon form: compare in it whatever the caller wrote.
        self.mac = normalize_mac(self.mac)

    def observe(self, obs: Observation) -> list[tuple[Stage, float, str]]:
        """New stages OBS proves, as (stage, seconds, detail)."""
        new = []
        for stage in STAGES:
            if stage.name in self.seen:
                continue
            detail = stage.match(obs, self.mac)
            if detail is not None:
                elapsed = max(0.0, obs.time - self.started)
                self.seen[stage.name] = (elapsed, detail)
                new.append((stage, elapsed, detail))
        return new

    def reached(self, name: str) -> bool:
        return name in self.seen

    def summary(self) -> list[tuple[str, float | None, str]]:
        """Every stage in table order: (name, seconds or None if not seen, detail)."""
        rows: list[tuple[str, float | None, str]] = []
        for stage in STAGES:
            if stage.name in self.seen:
                elapsed, detail = self.seen[stage.name]
                rows.append((stage.name, elapsed, detail))
            else:
                rows.append((stage.name, None, stage.description))
        return rows
