"""Headless Chromium driven over its DevTools protocol, the websocket client it needs,
and the checks on its screenshots that tell a PC's console from noVNC's own page.

The console tests (tests/integration/test_console_novnc.py, the lab's
molecule/default/tests/test_lab_console.py) open noVNC with these."""

from __future__ import annotations

import base64
import hashlib
import json
import os
import shutil
import socket
import struct
import tempfile
import time
import urllib.request
import zlib
from pathlib import Path

from .daemons import Daemons, free_port, wait_for

WS_GUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-quic",
    "--window-size=1024,768",
]


class WebSocket:
    """A minimal RFC 6455 client: enough for websockify and Chromium's DevTools."""

    def __init__(self, port: int, path: str, protocol: str | None = None, timeout: float = 30):
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
        self.buf = b""
        key = base64.b64encode(os.urandom(16)).decode()
        request = (
            f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
            "Upgrade: websocket\r\nConnection: Upgrade\r\n"
            f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n"
        )
        if protocol:
            request += f"Sec-WebSocket-Protocol: {protocol}\r\n"
        self.sock.sendall((request + "\r\n").encode())
        while b"\r\n\r\n" not in self.buf:
            if not self._fill():
                break
        head, _, self.buf = self.buf.partition(b"\r\n\r\n")
        lines = head.decode(errors="replace").split("\r\n")
        self.status = lines[0]
        headers = {
            k.strip().lower(): v.strip() for k, _, v in (x.partition(":") for x in lines[1:])
        }
        self.accepted = self.status.split(" ")[1:2] == ["101"]
        if self.accepted:
            expect = base64.b64encode(hashlib.sha1((key + WS_GUID).encode()).digest()).decode()
            assert headers.get("sec-websocket-accept") == expect, headers

    def _fill(self) -> bool:
        try:
            chunk = self.sock.recv(65536)
        except ConnectionResetError:
            chunk = b""
        self.buf += chunk
        return bool(chunk)

    def _take(self, n: int) -> bytes:
        while len(self.buf) < n:
            if not self._fill():
                raise ConnectionError("websocket closed")
        out, self.buf = self.buf[:n], self.buf[n:]
        return out

    def send(self, payload: bytes, opcode: int = 1) -> None:
        mask = os.urandom(4)
        n = len(payload)
        if n < 126:
            head = struct.pack(">BB", 0x80 | opcode, 0x80 | n)
        elif n < 65536:
            head = struct.pack(">BBH", 0x80 | opcode, 0x80 | 126, n)
        else:
            head = struct.pack(">BBQ", 0x80 | opcode, 0x80 | 127, n)
        body = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
        self.sock.sendall(head + mask + body)

    def recv(self) -> tuple[int, bytes]:
        """(opcode, payload) of the next whole message."""
        opcode, data = None, b""
        while True:
            b0, b1 = self._take(2)
            n = b1 & 0x7F
            if n == 126:
                (n,) = struct.unpack(">H", self._take(2))
            elif n == 127:
                (n,) = struct.unpack(">Q", self._take(8))
            mask = self._take(4) if b1 & 0x80 else None
            payload = self._take(n)
            if mask:
                payload = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
            opcode = opcode if opcode is not None and b0 & 0x0F == 0 else b0 & 0x0F
            data += payload
            if b0 & 0x80:
                return opcode, data

    def close(self) -> None:
        self.sock.close()


def read_png(path: Path) -> tuple[int, int, list[bytes]]:
    """(width, height, rows of RGB bytes) of an 8-bit RGB/RGBA non-interlaced PNG."""
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n", f"{path} is not a PNG"
    pos, idat, width = 8, b"", 0
    while pos < len(data):
        (length,) = struct.unpack(">I", data[pos : pos + 4])
        kind, body = data[pos + 4 : pos + 8], data[pos + 8 : pos + 8 + length]
        if kind == b"IHDR":
            width, height, depth, ctype, _, _, interlace = struct.unpack(">IIBBBBB", body)
            assert depth == 8 and ctype in (2, 6) and interlace == 0, (depth, ctype, interlace)
            bpp = 3 if ctype == 2 else 4
        elif kind == b"IDAT":
            idat += body
        pos += 12 + length
    raw = zlib.decompress(idat)
    stride = width * bpp
    rows, prev = [], bytearray(stride)
    for y in range(height):
        ftype = raw[y * (stride + 1)]
        line = bytearray(raw[y * (stride + 1) + 1 : (y + 1) * (stride + 1)])
        for i in range(stride):
            a = line[i - bpp] if i >= bpp else 0
            b = prev[i]
            c = prev[i - bpp] if i >= bpp else 0
            if ftype == 1:
                line[i] = (line[i] + a) & 0xFF
            elif ftype == 2:
                line[i] = (line[i] + b) & 0xFF
            elif ftype == 3:
                line[i] = (line[i] + (a + b) // 2) & 0xFF
            elif ftype == 4:
                p = a + b - c
                pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
                pred = a if pa <= pb and pa <= pc else b if pb <= pc else c
                line[i] = (line[i] + pred) & 0xFF
        prev = line
        rgb = bytes(line) if bpp == 3 else bytes(v for i, v in enumerate(line) if i % 4 != 3)
        rows.append(rgb)
    return width, height, rows


def console_evidence(path: Path) -> dict[str, int]:
    """How much of a screenshot is a PC's text console.

    A console row is mostly pure black (the VGA text background; noVNC's own page is
    dark grey, never #000000) and otherwise neutral grey (text, anti-aliased when
    scaled).  Text pixels are the light ones in those rows.
    """
    width, _, rows = read_png(path)
    console_rows = text_pixels = 0
    for row in rows:
        px = [row[i : i + 3] for i in range(0, len(row), 3)]
        black = sum(1 for p in px if p == b"\x00\x00\x00")
        neutral = sum(1 for p in px if max(p) - min(p) <= 12)
        if black >= width // 2 and neutral >= width * 95 // 100:
            console_rows += 1
            text_pixels += sum(1 for p in px if min(p) >= 120 and max(p) - min(p) <= 12)
    return {"console_rows": console_rows, "text_pixels": text_pixels}


def shows_console(evidence: dict[str, int]) -> bool:
    return evidence["console_rows"] >= 200 and evidence["text_pixels"] >= 500


class Chromium:
    """Headless Chromium driven over its DevTools protocol on 127.0.0.1, so a test
    waits for what noVNC says (connected, failed) instead of guessing a delay."""

    STATE_JS = (
        "JSON.stringify({cls: document.documentElement.className,"
        " status: (document.getElementById('noVNC_status') || {}).textContent || '',"
        " width: (document.querySelector('#noVNC_container canvas') || {}).width || 0})"
    )

    def __init__(self, directory: Path, daemons: Daemons):
        profile = Path(tempfile.mkdtemp(prefix="ggc-chromium-"))
        # Registered first, so it runs after chromium is stopped (last in, first out).
        daemons.callback(shutil.rmtree, profile, True)
        port = free_port()
        # Chromium's helpers are in its session: it is stopped as a group, by its id.
        self.proc = daemons.start(
            [
                "chromium",
                *CHROMIUM_FLAGS,
                f"--user-data-dir={profile}",
                "--remote-debugging-address=127.0.0.1",
                f"--remote-debugging-port={port}",
                "about:blank",
            ],
            directory / "chromium.log",
            group=True,
        )
        self.ids = iter(range(1, 1_000_000))

        def page():
            assert self.proc.poll() is None, (directory / "chromium.log").read_text()[-2000:]
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/json/list", timeout=5) as r:
                    pages = [t for t in json.load(r) if t.get("type") == "page"]
            except OSError:
                return None
            return pages[0]["webSocketDebuggerUrl"] if pages else None

        url = wait_for("chromium's DevTools endpoint", page)
        self.ws = WebSocket(port, "/" + url.split("/", 3)[3])
        daemons.callback(self.ws.close)
        assert self.ws.accepted, self.ws.status

    def call(self, method: str, **params):
        ident = next(self.ids)
        self.ws.send(json.dumps({"id": ident, "method": method, "params": params}).encode())
        while True:
            _, data = self.ws.recv()
            msg = json.loads(data)
            if msg.get("id") == ident:
                assert "error" not in msg, msg
                return msg["result"]

    def open(self, url: str) -> None:
        self.call("Page.enable")
        self.call("Page.navigate", url=url)

    def novnc_state(self) -> dict:
        result = self.call("Runtime.evaluate", expression=self.STATE_JS, returnByValue=True)
        return json.loads(result["result"].get("value") or "{}")

    def screenshot(self, out: Path) -> dict[str, int]:
        data = self.call("Page.captureScreenshot", format="png")["data"]
        out.write_bytes(base64.b64decode(data))
        return console_evidence(out)


def console_shot(browser: Chromium, url: str, out: Path) -> dict[str, int]:
    """Open URL; once noVNC is connected, the first screenshot that shows a console
    (SeaBIOS may still be drawing), or the last one when none does in time."""
    browser.open(url)
    wait_for(
        "noVNC connected with a screen",
        lambda: (st := browser.novnc_state()) and "noVNC_connected" in st["cls"] and st["width"],
    )
    deadline = time.monotonic() + 30
    while True:
        evidence = browser.screenshot(out)
        if shows_console(evidence) or time.monotonic() > deadline:
            return evidence
        time.sleep(0.5)


def refused_shot(browser: Chromium, url: str, out: Path) -> tuple[dict[str, int], dict]:
    """Open URL; once noVNC has given up (its status is an error), a screenshot."""
    browser.open(url)
    state = wait_for(
        "noVNC reporting a failure",
        lambda: (
            (st := browser.novnc_state())
            and st["status"]
            and not any(c in st["cls"] for c in ("noVNC_connecting", "noVNC_connected"))
            and st
        ),
    )
    return browser.screenshot(out), state
