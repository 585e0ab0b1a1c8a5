"""The console in the lab: a lab PC's screen in headless Chromium through the boot
server's noVNC and websockify, as the ggnet_console role set them up from inventory/lab.

The PC (qemu, in the lab namespace) shows its screen on the lab bridge at its
ggnet_console_vnc; websockify in the VM reaches it there by the token file the role
wrote.  websockify listens on the VM's loopback (the role's default: it has no
authentication), so Chromium on this machine reaches it through an SSH tunnel whose
connection enters the lab namespace; nothing is sent to any address outside the lab.  The page, the screenshot and the checks on it are the ones
of tests/integration/test_console_novnc.py (ggnet_testing.browser).
"""

from __future__ import annotations

import socket

import pytest
from ggnet import console
from ggnet_testing.browser import Chromium, console_shot, refused_shot, shows_console
from ggnet_testing.daemons import Daemons, free_port, wait_for

from ggnet_lab import client, paths, vm

testinfra_hosts = [f"ssh://{vm.NAME}?ssh_config={vm.write_ssh_config()}"]
PC = "pc-bios"
CONSOLE_PORT = 6080  # ggnet_console_port's default: the lab does not change it


@pytest.fixture
def daemons():
    d = Daemons()
    yield d
    d.stop_all()


@pytest.fixture
def forwarder(daemons, tmp_path):
    """127.0.0.1:PORT here -> the console on the VM's loopback, through an SSH tunnel:
    how docs/console.md says an operator reaches a console kept on loopback."""
    port = free_port()
    daemons.start(
        ["ssh", "-F", str(vm.write_ssh_config()), "-N", "-o", "ExitOnForwardFailure=yes",
         "-L", f"127.0.0.1:{port}:127.0.0.1:{CONSOLE_PORT}", vm.NAME],
        tmp_path / "ssh-tunnel.log",
    )  # fmt: skip
    wait_for("the SSH tunnel listening", lambda: _listening(port))
    return port


def _listening(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) == 0


@pytest.fixture
def running_pc():
    pc = client.lab_pcs()[PC]
    assert pc.vnc, f"{PC} has no ggnet_console_vnc in inventory/lab"
    result = client.boot(pc, until="marker", timeout=240, keep=True, progress=print)
    try:
        assert result.reached, client.format_summary(result)
        yield pc
    finally:
        client.stop(PC)


def test_the_console_token_file_points_at_each_lab_pcs_screen(host):
    tokens = host.file("/etc/ggnet/console-tokens").content_string
    for name, pc in client.lab_pcs().items():
        assert f"{name}: {pc.vnc}" in tokens.splitlines(), tokens


def test_a_lab_pcs_screen_opens_by_its_name_and_an_unknown_token_is_refused(
    host, running_pc, forwarder, daemons, tmp_path
):
    shots = paths.lab_dir() / "console-shots"
    shots.mkdir(parents=True, exist_ok=True)
    browser = Chromium(tmp_path, daemons)
    url = console.console_url("127.0.0.1", forwarder, PC)
    good = console_shot(browser, url, shots / f"{PC}.png")
    assert shows_console(good), (good, shots / f"{PC}.png")

    bogus_url = console.console_url("127.0.0.1", forwarder, "pc-nobody")
    bogus, state = refused_shot(browser, bogus_url, shots / "unknown-token.png")
    assert not shows_console(bogus), (bogus, state)
