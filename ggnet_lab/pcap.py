"""Just enough of the pcap format and of Ethernet/IP/UDP/TCP to see a PC boot.

tcpdump writes the capture (`-U -w FILE`, packet-buffered); PcapFollower reads what has
been appended since the last poll, so the boot's stages show up while it runs and the
file stays behind for Wireshark.
"""

from __future__ import annotations

import struct
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from ggnet.net import mac_of_bytes

LINKTYPE_ETHERNET = 1
_MAGICS = {
    b"\xd4\xc3\xb2\xa1": ("<", 1e-6),
    b"\xa1\xb2\xc3\xd4": (">", 1e-6),
    b"\x4d\x3c\xb2\xa1": ("<", 1e-9),
    b"\xa1\xb2\x3c\x4d": (">", 1e-9),
}


class PcapError(ValueError):
    pass


@dataclass(frozen=True)
class Frame:
    time: float
    data: bytes


@dataclass(frozen=True)
class Packet:
    """One decoded frame: addresses, transport and payload (None where absent)."""

    time: float
    src_mac: str
    dst_mac: str
    proto: str | None = None  # "udp" | "tcp"
    src_port: int | None = None
    dst_port: int | None = None
    payload: bytes = b""


class PcapStream:
    """Incremental parser: feed() bytes in any chunks, get whole frames back."""

    def __init__(self) -> None:
        self._buffer = b""
        self._endian: str | None = None
        self._scale = 1e-6

    def feed(self, data: bytes) -> list[Frame]:
        self._buffer += data
        frames: list[Frame] = []
        if self._endian is None:
            if len(self._buffer) < 24:
                return frames
            magic = self._buffer[:4]
            if magic not in _MAGICS:
                raise PcapError(f"not a pcap file (magic {magic.hex()})")
            self._endian, self._scale = _MAGICS[magic]
            linktype = struct.unpack(self._endian + "I", self._buffer[20:24])[0]
            if linktype != LINKTYPE_ETHERNET:
                raise PcapError(f"link type {linktype} is not Ethernet")
            self._buffer = self._buffer[24:]
        while len(self._buffer) >= 16:
            sec, frac, incl, _orig = struct.unpack(self._endian + "IIII", self._buffer[:16])
            if len(self._buffer) < 16 + incl:
                break
            frames.append(Frame(sec + frac * self._scale, self._buffer[16 : 16 + incl]))
            self._buffer = self._buffer[16 + incl :]
        return frames


class PcapFollower:
    """Reads frames appended to a growing pcap file."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._offset = 0
        self._stream = PcapStream()

    def poll(self) -> list[Frame]:
        try:
            with self.path.open("rb") as capture:
                capture.seek(self._offset)
                data = capture.read()
        except FileNotFoundError:
            return []
        self._offset += len(data)
        return self._stream.feed(data)


def decode(frame: Frame) -> Packet | None:
    data = frame.data
    if len(data) < 14:
        return None
    dst, src = mac_of_bytes(data[0:6]), mac_of_bytes(data[6:12])
    ethertype = struct.unpack("!H", data[12:14])[0]
    offset = 14
    if ethertype == 0x8100 and len(data) >= 18:  # a VLAN tag
        ethertype = struct.unpack("!H", data[16:18])[0]
        offset = 18
    transport: int | None = None
    if ethertype == 0x0800 and len(data) >= offset + 20:
        ihl = (data[offset] & 0x0F) * 4
        transport = data[offset + 9]
        offset += ihl
    elif ethertype == 0x86DD and len(data) >= offset + 40:
        transport = data[offset + 6]  # extension headers are not followed
        offset += 40
    packet = Packet(frame.time, src, dst)
    if transport == 17 and len(data) >= offset + 8:
        sport, dport = struct.unpack("!HH", data[offset : offset + 4])
        return Packet(frame.time, src, dst, "udp", sport, dport, data[offset + 8 :])
    if transport == 6 and len(data) >= offset + 20:
        sport, dport = struct.unpack("!HH", data[offset : offset + 4])
        header = (data[offset + 12] >> 4) * 4
        return Packet(frame.time, src, dst, "tcp", sport, dport, data[offset + header :])
    return packet


def packets(frames: list[Frame]) -> Iterator[Packet]:
    for frame in frames:
        packet = decode(frame)
        if packet is not None:
            yield packet


def write_pcap(path: Path, frames: list[Frame]) -> None:
    """A little-endian microsecond pcap (used to make test captures)."""
    with path.open("wb") as out:
        out.write(struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 65535, LINKTYPE_ETHERNET))
        for frame in frames:
            sec = int(frame.time)
            usec = round((frame.time - sec) * 1e6)
            out.write(struct.pack("<IIII", sec, usec, len(frame.data), len(frame.data)))
            out.write(frame.data)
