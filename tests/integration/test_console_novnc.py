"""The ggnet_console role for a one-machine inventory on 127.0.0.1, run for real.

A qemu PC without a disk (SeaBIOS prints its boot messages and "No bootable device")
shows its screen on a VNC display; the role renders the token file and the unit;
websockify runs exactly as the unit's ExecStart says; headless Chromium opens the
noVNC page at the URL the API links to (console.console_url) and takes a screenshot,
which must show the PC's text console.  The same screenshot with a bogus token, or
with the PC stopped, must not.  A raw websocket handshake with an unknown token is
refused, and a token added to the file later is served without a restart.

Nothing here talks to anything but 127.0.0.1 and unix sockets in the test's own
directory; every process is stopped by PID.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import shlex
import shutil
import socket
import struct
import subprocess
import sys
import tempfile
import time
import urllib.request
import zlib
from pathlib import Path

import pytest
from daemons import Daemons, daemons_fixture, free_port, wait_for  # noqa: F401  (a fixture)
from ggnet import console

pytestmark = pytest.mark.integration
REPO = Path(__file__).resolve().parents[2]
VENV_BIN = Path(sys.executable).parent
CHECK_TOKENS = REPO / "roles/ggnet_console/files/ggnet-console-check-tokens"
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

for tool in ("qemu-system-x86_64", "chromium", "websockify"):
    if shutil.which(tool) is None:
        pytestmark = [pytestmark, pytest.mark.skip(reason=f"{tool} is not installed")]


# ---------------------------------------------------------------- helpers


def rfb_banner(endpoint: str) -> bytes:
    """The first bytes a VNC server says (b'RFB 003.008\\n'), or b'' if none."""
    target = console.vnc_target(endpoint)
    try:
        if target.startswith(console.UNIX_PREFIX):
            sock = socket.socket(socket.AF_UNIX)
            sock.settimeout(5)
            sock.connect(target.removeprefix(console.UNIX_PREFIX))
        else:
            host, port = target.rsplit(":", 1)
            sock = socket.create_connection((host, int(port)), timeout=5)
        with sock:
            return sock.recv(12)
    except OSError:
        return b""


class QemuPC:
    """A disk-less qemu PC whose screen is a VNC display (TCP or unix socket)."""

    def __init__(self, directory: Path, kind: str):
        self.directory = directory
        self.daemons: Daemons | None = None
        if kind == "unix":
            self.endpoint = f"unix:{directory / 'vnc.sock'}"
            display = f"vnc=unix:{directory / 'vnc.sock'}"
        else:
            port = free_port(5950)
            self.endpoint = f"127.0.0.1:{port}"
            display = f"vnc=127.0.0.1:{port - 5900}"
        self.argv = [
            "qemu-system-x86_64", "-accel", "tcg", "-m", "128", "-nodefaults",
            "-vga", "std", "-display", display, "-net", "none",
            "-serial", "none", "-monitor", "none",
        ]  # fmt: skip
        self.proc: subprocess.Popen | None = None

    def start(self, daemons: Daemons) -> None:
        self.daemons = daemons
        self.proc = daemons.start(self.argv, self.directory / "qemu.log")
        wait_for("the PC's VNC display", lambda: rfb_banner(self.endpoint).startswith(b"RFB"))

    def stop(self) -> None:
        if self.proc is not None:
            self.daemons.stop(self.proc)


# ------------------------------------------------------------ role rendering


def render_role(tmp: Path, clients: dict[str, str]) -> dict[str, Path]:
    """Run the role (files only) for boot1 and CLIENTS {name: ggnet_console_vnc}."""
    inv = tmp / "inventory"
    inv.mkdir(exist_ok=True)
    hosts = [
        "all:",
        "  children:",
        "    ggnet_servers:",
        "      hosts:",
        "        boot1:",
        "          ansible_host: 127.0.0.1",
        "          ansible_connection: local",
        f"          ansible_python_interpreter: {sys.executable}",
        "    ggnet_clients:",
        "      hosts:",
    ]
    for i, (name, endpoint) in enumerate(sorted(clients.items()), start=1):
        hosts += [
            f"        {name}:",
            f'          ggnet_mac: "52:54:00:99:00:{i:02x}"',
            "          ggnet_image: win11",
            f'          ggnet_console_vnc: "{endpoint}"',
        ]
    (inv / "hosts.yml").write_text("\n".join(hosts) + "\n")
    out = {"tokens": tmp / "etc" / "console-tokens", "unit": tmp / "ggnet-console.service"}
    port = (tmp / "port").read_text() if (tmp / "port").exists() else str(free_port())
    (tmp / "port").write_text(port)
    (inv / "group_vars").mkdir(exist_ok=True)
    (inv / "group_vars" / "all.yml").write_text(
        "ggnet_images: {win11: {size: 1G, kind: system}}\n"
        f"ggnet_console_token_file: {out['tokens']}\n"
        f"ggnet_console_port: {port}\n"
        "ggnet_console_listen_address: 127.0.0.1\n"
        "ggnet_console_install_packages: false\n"
        "ggnet_console_manage_service: false\n"
    )
    play = tmp / "play.yml"
    play.write_text(
        "- name: Console\n  hosts: ggnet_servers\n  gather_facts: false\n"
        "  roles: [ggnet_console]\n"
        "  tasks:\n"
        "    - name: Render the unit here too (the role only installs it under systemd)\n"
        "      ansible.builtin.template:\n"
        f"        src: {REPO}/roles/ggnet_console/templates/ggnet-console.service.j2\n"
        f"        dest: {out['unit']}\n"
        '        mode: "0644"\n'
    )
    env = {
        **os.environ,
        "ANSIBLE_CONFIG": str(REPO / "ansible.cfg"),
        "ANSIBLE_ROLES_PATH": str(REPO / "roles"),
        "PATH": f"{VENV_BIN}:{os.environ['PATH']}",
    }
    proc = subprocess.run(
        [
            str(VENV_BIN / "ansible-playbook"),
            "-i",
            str(inv),
            str(play),
            # Internals (vars/) redirected for a run that installs nothing system-wide.
            "-e",
            f"_ggnet_console_check_command={CHECK_TOKENS}",
        ],
        capture_output=True,
        text=True,
        env=env,
        check=False,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-2000:]
    out["port"] = int(port)
    return out


def unit_commands(unit: Path) -> dict[str, list[str]]:
    """ExecStartPre / ExecStart of a rendered unit, as argv lists."""
    found = {}
    for line in unit.read_text().splitlines():
        key, sep, value = line.partition("=")
        if sep and key in ("ExecStartPre", "ExecStart"):
            found[key] = shlex.split(value)
    return found


def start_console(rendered: dict, directory: Path, daemons: Daemons) -> subprocess.Popen:
    cmds = unit_commands(rendered["unit"])
    check = subprocess.run(cmds["ExecStartPre"], capture_output=True, text=True, check=False)
    assert check.returncode == 0, check.stderr
    proc = daemons.start(cmds["ExecStart"], directory / "websockify.log")

    def listening():
        assert proc.poll() is None, (directory / "websockify.log").read_text()
        with socket.socket() as s:
            return s.connect_ex(("127.0.0.1", rendered["port"])) == 0

    wait_for("websockify listening", listening)
    return proc


# ------------------------------------------------------------ websocket client


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


def ws_connect(port: int, token: str) -> tuple[str, bytes]:
    """A websocket handshake to websockify with `token`: (status line, first message).

    ("", b"") when websockify closed the connection without answering.
    """
    ws = WebSocket(port, f"/websockify?token={token}", protocol="binary", timeout=15)
    try:
        if not ws.accepted:
            return ws.status, b""
        return ws.status, ws.recv()[1]
    finally:
        ws.close()


# ------------------------------------------------------------ screenshots


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


# ------------------------------------------------------------ fixtures


@pytest.fixture
def workdir():
    # Short: a unix socket path is at most 107 bytes.
    path = Path(tempfile.mkdtemp(prefix="ggc-"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def shots(request):
    """Screenshots are kept for looking at (GGNET_CONSOLE_SHOTS, else a temp dir)."""
    root = (
        Path(os.environ.get("GGNET_CONSOLE_SHOTS") or tempfile.gettempdir()) / "ggnet-console-shots"
    )
    root.mkdir(parents=True, exist_ok=True)
    return root


# ------------------------------------------------------------ tests


def test_token_file_lists_the_machine_and_passes_websockifys_parser(workdir):
    pc = QemuPC(workdir, "unix")
    rendered = render_role(workdir, {"pc-01": pc.endpoint, "pc-02": "127.0.0.1:5999"})
    lines = [x for x in rendered["tokens"].read_text().splitlines() if not x.startswith("#")]
    assert lines == [f"pc-01: unix_socket:{workdir / 'vnc.sock'}", "pc-02: 127.0.0.1:5999"]
    check = subprocess.run(
        [str(CHECK_TOKENS), str(rendered["tokens"])], capture_output=True, text=True
    )
    assert check.returncode == 0, check.stderr
    cmds = unit_commands(rendered["unit"])
    assert cmds["ExecStart"][-1] == f"127.0.0.1:{rendered['port']}"
    assert "--web=/usr/share/novnc" in cmds["ExecStart"]
    assert f"--token-source={rendered['tokens']}" in cmds["ExecStart"]
    if shutil.which("systemd-analyze"):
        # Works without systemd as PID 1: syntax, keys, and that the commands exist.
        verify = subprocess.run(
            ["systemd-analyze", "verify", str(rendered["unit"])], capture_output=True, text=True
        )
        assert verify.returncode == 0, verify.stdout + verify.stderr
        assert "Unknown" not in verify.stderr, verify.stderr


def test_the_check_refuses_a_line_websockify_would_skip(workdir):
    bad = workdir / "tokens"
    bad.write_text("pc-01: 127.0.0.1:5901\npc-02 127.0.0.1:5902\npc-01: 127.0.0.1:5903\n")
    check = subprocess.run([str(CHECK_TOKENS), str(bad)], capture_output=True, text=True)
    assert check.returncode == 1
    assert "Syntax error" in check.stderr and "pc-01" in check.stderr


@pytest.mark.parametrize("kind", ["tcp", "unix"])
def test_browser_shows_the_pcs_console_and_not_with_a_wrong_token(workdir, shots, daemons, kind):
    pc = QemuPC(workdir, kind)
    rendered = render_role(workdir, {"pc-01": pc.endpoint})
    pc.start(daemons)
    start_console(rendered, workdir, daemons)
    browser = Chromium(workdir, daemons)
    # The URL the API's machine view links to.
    url = console.console_url("127.0.0.1", rendered["port"], "pc-01")
    good = console_shot(browser, url, shots / f"console-{kind}.png")
    assert shows_console(good), (good, shots / f"console-{kind}.png")

    bogus_url = console.console_url("127.0.0.1", rendered["port"], "pc-99")
    bogus, state = refused_shot(browser, bogus_url, shots / f"console-{kind}-bogus-token.png")
    assert not shows_console(bogus), (bogus, state)
    assert "Failed to connect" in state["status"], state

    pc.stop()
    stopped, state = refused_shot(browser, url, shots / f"console-{kind}-pc-stopped.png")
    assert not shows_console(stopped), (stopped, state)


def test_unknown_token_is_refused_and_new_tokens_need_no_restart(workdir, daemons):
    pc = QemuPC(workdir, "tcp")
    rendered = render_role(workdir, {"pc-01": pc.endpoint})
    pc.start(daemons)
    ws = start_console(rendered, workdir, daemons)
    status, payload = ws_connect(rendered["port"], "pc-01")
    assert " 101 " in status + " " and payload.startswith(b"RFB "), (status, payload)

    status, payload = ws_connect(rendered["port"], "bogus")
    assert " 101 " not in status + " " and payload == b"", status
    assert "Token 'bogus' not found" in (workdir / "websockify.log").read_text()

    status, _ = ws_connect(rendered["port"], "pc-02")
    assert " 101 " not in status + " ", status
    # The inventory gains pc-02 (the same screen): the role rewrites the token
    # file and the running websockify serves it at the next connection.
    render_role(workdir, {"pc-01": pc.endpoint, "pc-02": pc.endpoint})
    status, payload = ws_connect(rendered["port"], "pc-02")
    assert " 101 " in status + " " and payload.startswith(b"RFB "), (status, payload)
    assert ws.poll() is None, "websockify was restarted or died"
