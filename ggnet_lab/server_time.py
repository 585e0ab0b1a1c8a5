"""How long the boot server took in a lab boot, from the PC's own capture.

Between the PC's script request and its iSCSI login the time is shared: the server
answers the script (resetting the writeback first), then iPXE on the PC (TCG, slow)
parses it and connects, then the target answers the login.  The capture on the lab
bridge sees all four edges, so the server's own part is

    script_ms = first byte of the HTTP answer - the GET /boot/<mac>
    login_ms  = the target's Login Response  - the PC's Login Request

and script_to_login_ms is the whole span, the PC's work included.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from ggnet.net import normalize_mac

from .pcap import Packet, PcapStream, packets

ISCSI_PORT = 3260
LOGIN_REQUEST, LOGIN_RESPONSE = 0x03, 0x23


@dataclass(frozen=True)
class ServerTime:
    script_ms: float
    login_ms: float
    script_to_login_ms: float

    @property
    def server_ms(self) -> float:
        return self.script_ms + self.login_ms

    def as_dict(self) -> dict[str, float]:
        return {
            "script_ms": round(self.script_ms, 1),
            "login_ms": round(self.login_ms, 1),
            "server_ms": round(self.server_ms, 1),
            "script_to_login_ms": round(self.script_to_login_ms, 1),
        }


def _opcode(packet: Packet) -> int | None:
    # A basic header segment starts a TCP payload of at least 48 bytes; iPXE and the
    # targets send a login PDU in its own segment.
    return packet.payload[0] & 0x3F if len(packet.payload) >= 48 else None


def measure(observed: list[Packet], mac: str) -> ServerTime | None:
    """The split of the PC's last script request and the login after it, or None."""
    mac = normalize_mac(mac)
    gets = [
        p for p in observed
        if p.proto == "tcp" and p.src_mac == mac and p.payload.startswith(b"GET /boot/")
        and b"/stage" not in p.payload.split(b"\r\n", 1)[0]
        and b"/discover" not in p.payload.split(b"\r\n", 1)[0]
    ]  # fmt: skip
    for get in reversed(gets):
        after = [p for p in observed if p.time >= get.time and p.proto == "tcp"]
        answer = next(
            (p for p in after if p.dst_mac == mac and p.src_port == get.dst_port
             and p.dst_port == get.src_port and p.payload.startswith(b"HTTP/")),
            None,
        )  # fmt: skip
        if answer is None:
            continue
        request = next(
            (p for p in after if p.time >= answer.time and p.src_mac == mac
             and p.dst_port == ISCSI_PORT and _opcode(p) == LOGIN_REQUEST),
            None,
        )  # fmt: skip
        if request is None:
            return None
        response = next(
            (p for p in after if p.time >= request.time and p.dst_mac == mac
             and p.src_port == ISCSI_PORT and p.dst_port == request.src_port
             and _opcode(p) == LOGIN_RESPONSE),
            None,
        )  # fmt: skip
        if response is None:
            return None
        return ServerTime(
            script_ms=(answer.time - get.time) * 1000,
            login_ms=(response.time - request.time) * 1000,
            script_to_login_ms=(response.time - get.time) * 1000,
        )
    return None


def from_capture(path: Path, mac: str) -> ServerTime | None:
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return None
    return measure(list(packets(PcapStream().feed(data))), mac)
