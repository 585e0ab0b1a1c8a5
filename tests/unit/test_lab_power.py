"""The lab's power button (issue 19): an off lab PC powers on at a magic packet for its
MAC seen on the lab bridge, once; a paused qemu is resumed over its HMP monitor."""

from __future__ import annotations

import socket
import struct
import threading

import pytest
from ggnet import wol

from ggnet_lab.pcap import Frame, PcapStream
from ggnet_lab.power import Waker, paused_argv, resume

pytestmark = pytest.mark.unit

PC = "52:54:00:21:30:01"


def udp_frame(payload: bytes, port: int = 9) -> bytes:
    """Ethernet broadcast / IPv4 / UDP, checksums left zero as a capture may show."""
    udp = struct.pack("!HHHH", 40000, port, 8 + len(payload), 0) + payload
    ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(udp), 0, 0, 64, 17, 0,
                     socket.inet_aton("10.213.0.10"), socket.inet_aton("10.213.0.255"))  # fmt: skip
    return b"\xff" * 6 + bytes.fromhex("525400aa0010") + b"\x08\x00" + ip + udp


def pcap(frames: list[bytes]) -> bytes:
    head = struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 65535, 1)
    body = b"".join(
        struct.pack("<IIII", 100 + i, 0, len(f), len(f)) + f for i, f in enumerate(frames)
    )
    return head + body


def test_a_magic_packet_on_the_bridge_powers_its_pc_on_once():
    on: list[str] = []
    waker = Waker(on.append)
    waker.switch_off("pc-bios", PC.upper())
    waker.switch_off("pc-uefi", "52:54:00:21:30:02")
    raw_0842 = b"\xff" * 6 + bytes.fromhex("525400aa0010") + b"\x08\x42" + wol.magic_packet(PC)
    frames = PcapStream().feed(
        pcap([
            udp_frame(b"not a wake"),
            udp_frame(wol.magic_packet("52:54:00:99:99:99")),  # no lab PC's
            udp_frame(wol.magic_packet(PC)),
            udp_frame(wol.magic_packet(PC), port=7),  # the 2nd of the repeats: on already
            raw_0842,
        ])
    )  # fmt: skip
    assert waker.feed(frames) == ["pc-bios"]
    assert on == ["pc-bios"] and waker.woken == [(102.0, "pc-bios")]
    assert list(waker.off.values()) == ["pc-uefi"]
    # EtherType 0x0842 wakes too.
    assert waker.feed(
        [
            Frame(
                200.0,
                raw_0842.replace(bytes.fromhex("525400213001"), bytes.fromhex("525400213002")),
            )
        ]
    ) == ["pc-uefi"]


def test_a_paused_pc_starts_with_its_cpu_stopped_and_resumes_on_cont(tmp_path):
    monitor = tmp_path / "mon.sock"
    argv = paused_argv(["qemu-system-x86_64", "-name", "pc-bios"], monitor)
    assert argv[-3:] == ["-S", "-monitor", f"unix:{monitor},server,nowait"]
    # A stand-in for qemu's HMP: it echoes what it reads, as the monitor does.
    got: list[bytes] = []
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    server.bind(str(monitor))
    server.listen(1)

    def serve() -> None:
        conn, _ = server.accept()
        with conn:
            conn.sendall(b"QEMU 7.2.0 monitor - type 'help' for more information\r\n(qemu) ")
            data = conn.recv(64)
            got.append(data)
            conn.sendall(data)

    t = threading.Thread(target=serve)
    t.start()
    resume(monitor)
    t.join(5)
    server.close()
    assert got == [b"cont\n"]
