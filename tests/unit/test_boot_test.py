"""The boot test runner's pure parts: the iPXE script, qemu's command line, the
marker, the reasons and the masking (the real boot: tests/integration/test_boot_test_runner.py)."""

from __future__ import annotations

import re
from dataclasses import replace
from pathlib import Path

import pytest
from ggnet import boot_test as bt

pytestmark = pytest.mark.unit

SECRET = "Unit-secret-77"


def spec(**kw) -> bt.BootTestSpec:
    base = {
        "portal": "192.0.2.1:3260",
        "target_iqn": "iqn.2016-04.test.ggnet:pc-01",
        "initiator_iqn": "iqn.2016-04.test.ggnet:boot-test",
        "chap_user": "iqn.2016-04.test.ggnet:boot-test",
        "chap_secret": SECRET,
        "workdir": Path("/var/lib/ggnet/boot-test/pc-01"),
    }
    return bt.BootTestSpec(**{**base, **kw})


def argv(s: bt.BootTestSpec, **kw) -> list[str]:
    paths = {"tftp_dir": Path("/w/tftp-x"), "serial": Path("/w/serial.log"),
             "qmp": Path("/w/qmp.sock")}  # fmt: skip
    return bt.qemu_argv(s, **{**paths, "kvm": False, **kw})


def test_script_logs_in_with_chap_and_sanboots_the_forwarded_portal():
    text = bt.render_script(spec())
    lines = text.splitlines()
    assert lines[0] == "#!ipxe"
    assert "set initiator-iqn iqn.2016-04.test.ggnet:boot-test" in lines
    assert "set username iqn.2016-04.test.ggnet:boot-test" in lines
    assert f"set password {SECRET}" in lines
    # tgt: the system disk is LUN 1; the guest reaches the portal at slirp's forward.
    assert (
        "sanboot --drive 0x80 iscsi:10.0.2.100::3260:1:iqn.2016-04.test.ggnet:pc-01 || goto failed"
        in lines
    )
    assert ":10.0.2.100::3260:0:" in bt.render_script(spec(backend="lio"))


def test_script_without_chap_clears_credentials():
    text = bt.render_script(spec(chap_user=None, chap_secret=None))
    assert "set password" not in text and "set username" not in text
    assert "clear username ||" in text and "clear password ||" in text


def test_script_failure_line_does_not_look_like_the_marker():
    text = bt.render_script(spec())
    assert bt.SANBOOT_FAILED in text
    assert bt.find_marker(bt.DEFAULT_MARKER, text) is None


def test_bios_argv_is_isolated_and_carries_no_secret():
    a = argv(spec())
    assert a[0] == bt.QEMU and SECRET not in " ".join(a)
    assert a[a.index("-accel") + 1] == "tcg"
    netdev = a[a.index("-netdev") + 1]
    assert netdev.startswith("user,id=n0,restrict=on,tftp=/w/tftp-x,bootfile=boot.ipxe,")
    assert netdev.endswith("guestfwd=tcp:10.0.2.100:3260-cmd:socat STDIO TCP:192.0.2.1:3260")
    assert a[-2:] == ["-boot", "n"] and "if=pflash" not in " ".join(a)
    assert "file:/w/serial.log" in a and "unix:/w/qmp.sock,server=on,wait=off" in a
    assert a[a.index("-display") + 1] == "none" and a[a.index("-vga") + 1] == "std"
    assert argv(spec(), kvm=True)[argv(spec(), kvm=True).index("-accel") + 1] == "kvm"
    assert argv(spec(accel="kvm"), kvm=None)[4] == "kvm"


def test_uefi_argv_uses_ovmf_with_a_private_vars_copy():
    a = argv(spec(firmware="uefi"), vars_copy=Path("/w/OVMF_VARS.fd"))
    joined = " ".join(a)
    assert f"if=pflash,format=raw,readonly=on,file={bt.OVMF_CODE}" in joined
    assert "if=pflash,format=raw,file=/w/OVMF_VARS.fd" in joined
    assert "-boot" not in a
    with pytest.raises(bt.BootTestError, match="private copy of OVMF_VARS"):
        argv(spec(firmware="uefi"))


def test_netns_and_ipv6_portal():
    a = argv(spec(netns="ggnet-t-1", portal="[fd00::1]:3261"))
    assert a[:3] == ["nsenter", "--net=/var/run/netns/ggnet-t-1", bt.QEMU]
    assert a[a.index("-netdev") + 1].endswith("socat STDIO TCP6:[fd00::1]:3261")


@pytest.mark.parametrize(
    "portal",
    ["boot-server:3260", "192.0.2.1", "192.0.2.1:0", "192.0.2.1:70000", "192.0.2.1:3260;id", ""],
)
def test_bad_portal_is_refused_by_name(portal):
    with pytest.raises(bt.BootTestError, match=re.escape(f"portal {portal!r}")):
        bt.render_script(spec(portal=portal))


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"firmware": "efi"}, "firmware 'efi': expected bios or uefi"),
        ({"accel": "hvf"}, "accel 'hvf'"),
        ({"timeout": 0}, "timeout 0"),
        ({"memory_mib": 16}, "memory_mib 16"),
        ({"marker": "GGNET-(BOOT"}, "is not a regex"),
        ({"backend": "iet"}, "iet"),
        ({"chap_secret": None}, "chap_user and chap_secret go together"),
        ({"target_iqn": "iqn.x with space"}, "target_iqn"),
        ({"chap_secret": "has space $x secret"}, "chap_secret"),
    ],
)
def test_bad_spec_is_refused_naming_the_field_not_the_secret(change, message):
    with pytest.raises(bt.BootTestError, match=re.escape(message)) as info:
        bt.check_spec(spec(**change))
    assert "has space" not in str(info.value) and SECRET not in str(info.value)


def test_spec_repr_hides_the_secret():
    assert SECRET not in repr(spec())


@pytest.mark.parametrize(
    ("text", "hit"),
    [
        ("\r\nGGNET-BOOT fw=bios id=pc count=0\r\n", True),
        ("GGNET-BOOT fw=uefi", True),
        ("GGNET-HANG fw=bios\r\n", False),
        ("GGNET-BOOTED", False),
        ("ggnet-boot fw=bios", False),
    ],
)
def test_default_marker(text, hit):
    assert (bt.find_marker(bt.DEFAULT_MARKER, text) is not None) is hit


def test_custom_marker_and_its_label():
    assert bt.find_marker(r"Windows ready \d+", "...Windows ready 7\r\n")
    assert bt.marker_label(bt.DEFAULT_MARKER) == "GGNET-BOOT marker"
    assert bt.marker_label(r"ready\b") == r"marker /ready\b/"


def test_serial_tail_masks_the_secret_even_at_the_cut():
    text = "x" * 5000 + SECRET + "y" * (bt.TAIL_BYTES - 4)
    tail = bt.serial_tail(text, SECRET)
    assert SECRET not in tail and SECRET[-4:] not in tail[:20]
    assert tail.endswith("y" * 10) and len(tail) == bt.TAIL_BYTES
    assert bt.serial_tail("abc", None) == "abc"


def test_timeout_reason_with_login_names_the_screenshot():
    s = spec(timeout=40)
    shot = s.workdir / "screenshot.png"
    reason = bt.failure_reason(s, stages={"started": 0.0, "login": 6.2}, screenshot=shot)
    assert reason.startswith("no GGNET-BOOT marker on the serial console within 40 s; ")
    assert "logged in to iqn.2016-04.test.ggnet:pc-01 at 6 s" in reason
    assert "did not report booting" in reason
    assert f"see the screenshot {shot}" in reason and f"serial log {s.workdir}/serial.log" in reason


def test_timeout_reason_without_login_points_at_the_target():
    reason = bt.failure_reason(
        spec(), stages={"started": 0.0}, screenshot=None, screenshot_error="screendump failed: x"
    )
    assert "never logged in to iqn.2016-04.test.ggnet:pc-01 at 192.0.2.1:3260" in reason
    assert "ACL and CHAP" in reason and "no screenshot (screendump failed: x)" in reason


def test_sanboot_error_from_the_console_is_named():
    serial = f"...\r\n{bt.SANBOOT_FAILED} 0x0216e13c (https://ipxe.org/err/0x0216e13c)\r\n"
    reason = bt.failure_reason(spec(), stages={}, screenshot=None, serial_text=serial)
    assert (
        "sanboot of iqn.2016-04.test.ggnet:pc-01 at 192.0.2.1:3260 failed with 0x0216e13c" in reason
    )


def test_qemu_exit_reason_masks_the_secret():
    reason = bt.failure_reason(
        spec(),
        stages={"started": 0.0},
        screenshot=None,
        screenshot_error="qemu is gone",
        exit_code=1,
        qemu_log=f"qemu: something {SECRET} failed\n",
        elapsed=2.4,
    )
    assert reason.startswith("qemu exited with code 1 after 2 s, before the GGNET-BOOT marker: ")
    assert SECRET not in reason and "********" in reason


def test_missing_tools_stop_before_anything_is_written(monkeypatch, tmp_path):
    monkeypatch.setattr(bt, "QEMU", "qemu-system-ggnet-missing")
    monkeypatch.setattr(bt, "OVMF_VARS", tmp_path / "no-vars.fd")
    s = spec(workdir=tmp_path / "work", firmware="uefi")
    with pytest.raises(bt.BootTestError) as info:
        bt.run(s)
    message = str(info.value)
    assert "qemu-system-ggnet-missing" in message and str(tmp_path / "no-vars.fd") in message
    assert message.endswith(f"not installed: {bt.INSTALL_HINT}")
    assert not s.workdir.exists()


def test_bad_spec_stops_run_before_anything_is_written(tmp_path):
    s = replace(spec(workdir=tmp_path / "work"), portal="nowhere")
    with pytest.raises(bt.BootTestError, match="portal 'nowhere'"):
        bt.run(s)
    assert not s.workdir.exists()
