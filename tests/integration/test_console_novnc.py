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

import os
import shlex
import shutil
import socket
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
from ggnet import console
from ggnet_testing.browser import Chromium, WebSocket, console_shot, refused_shot, shows_console
from ggnet_testing.daemons import Daemons, daemons_fixture, free_port, wait_for  # noqa: F401  (a fixture)

pytestmark = pytest.mark.integration
REPO = Path(__file__).resolve().parents[2]
VENV_BIN = Path(sys.executable).parent
CHECK_TOKENS = REPO / "roles/ggnet_console/files/ggnet-console-check-tokens"

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
