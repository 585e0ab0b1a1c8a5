"""The boot server's share of a lab boot, read from the PC's capture."""

from __future__ import annotations

import pytest
from ggnet_testing.lab_frames import PC, SERVER, frame, ipv4, tcp

from ggnet_lab import pcap, server_time

pytestmark = pytest.mark.unit

OTHER = "52:54:00:21:30:03"


def _pdu(opcode):
    return bytes([opcode]) + bytes(47)


def _http(t, src, dst, sport, dport, payload):
    return frame(t, src, dst, ipv4(6, tcp(sport, dport, payload)))


def _frames(script_answer_at=10.080, login_answer_at=10.930):
    get = b"GET /boot/52:54:00:21:30:01 HTTP/1.0\r\nHost: x\r\n\r\n"
    return [
        _http(9.0, PC, SERVER, 4001, 8080, get),  # an earlier boot's request: not the last
        _http(9.5, SERVER, PC, 8080, 4001, b"HTTP/1.0 200 OK\r\n"),
        _http(10.000, PC, SERVER, 4002, 8080, get),
        _http(10.010, OTHER, SERVER, 4100, 3260, _pdu(0x03)),  # another PC's login
        _http(10.020, SERVER, OTHER, 3260, 4100, _pdu(0x23)),
        _http(script_answer_at, SERVER, PC, 8080, 4002, b"HTTP/1.0 200 OK\r\n"),
        _http(10.500, PC, SERVER, 4003, 8080, b"GET /boot/52:54:00:21:30:01/stage?n=x HTTP/1.0"),
        _http(10.900, PC, SERVER, 4004, 3260, _pdu(0x43)),  # immediate bit set
        _http(login_answer_at, SERVER, PC, 3260, 4004, _pdu(0x23)),
    ]


def test_the_server_share_of_the_last_script_and_its_login(tmp_path):
    capture = tmp_path / "boot.pcap"
    pcap.write_pcap(capture, _frames())
    found = server_time.from_capture(capture, PC.upper())
    assert found is not None
    assert found.as_dict() == {
        "script_ms": 80.0,
        "login_ms": 30.0,
        "server_ms": 110.0,
        "script_to_login_ms": 930.0,
    }


def test_no_login_after_the_script_is_no_measure(tmp_path):
    frames = [f for f in _frames() if f.time < 10.9]
    capture = tmp_path / "boot.pcap"
    pcap.write_pcap(capture, frames)
    assert server_time.from_capture(capture, PC) is None
    assert server_time.from_capture(tmp_path / "missing.pcap", PC) is None
