"""Ethernet frames as the lab bridge's capture shows them, built by hand for tests.

The boot-stage clock (ggnet_lab.stages) and the server-time reader
(ggnet_lab.server_time) read these; their unit tests build boots from them.
"""

from __future__ import annotations

import struct

from ggnet.net import mac_bytes, parse_ipv4

from ggnet_lab import pcap

PC = "52:54:00:21:30:01"
SERVER = "52:54:00:21:30:10"
BROADCAST = "ff:ff:ff:ff:ff:ff"


def mac(text):
    return mac_bytes(text)


def ipv4(proto, payload_and_ports, src="0.0.0.0", dst="255.255.255.255"):
    total = 20 + len(payload_and_ports)
    header = struct.pack(
        "!BBHHHBBH4s4s", 0x45, 0, total, 0, 0, 64, proto, 0,
        parse_ipv4(src).packed, parse_ipv4(dst).packed,
    )  # fmt: skip
    return header + payload_and_ports


def ether(src, dst, ip_packet):
    return mac(dst) + mac(src) + b"\x08\x00" + ip_packet


def udp(sport, dport, payload):
    return struct.pack("!HHHH", sport, dport, 8 + len(payload), 0) + payload


def tcp(sport, dport, payload):
    return struct.pack("!HHIIBBHHH", sport, dport, 1, 0, 5 << 4, 0x18, 512, 0, 0) + payload


def dhcp(message_type, client_mac, op=1):
    body = bytearray(236)
    body[0], body[1], body[2] = op, 1, 6
    body[28:34] = mac(client_mac)
    return bytes(body) + b"\x63\x82\x53\x63" + bytes([53, 1, message_type, 255])


def frame(t, src, dst, ip_packet):
    return pcap.Frame(t, ether(src, dst, ip_packet))
