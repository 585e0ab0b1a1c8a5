"""The boot test runner for real: qemu (TCG) with the NIC's iPXE ROM boots bootprog
disks through a real tgtd in a private netns (its loopback is the portal), over
slirp's restricted network.  A good disk passes with its stages in order; a disk
that hangs fails at the timeout with a PNG screenshot and a reason naming the wait."""

from __future__ import annotations

import shutil
import time
from pathlib import Path

import pytest
from ggnet import boot_test as bt
from ggnet_bootprog import build as bp
from ggnet_testing.tgt_netns import tgt_in_netns

pytestmark = pytest.mark.integration

SECRET = "Bt-secret-0042"  # 14 characters: inside the Windows initiator's limits
INITIATOR = "iqn.2016-04.test.ggnet:boot-test"
DISKS = {"good": (), "hang-all": ("bios", "uefi"), "hang-uefi": ("uefi",)}
PNG = b"\x89PNG\r\n\x1a\n"
# A good boot takes ~6 s (BIOS) and ~11 s (UEFI) here under TCG; a hang waits this long.
HANG_TIMEOUT = {"bios": 20.0, "uefi": 30.0}


def _need(*tools: str) -> None:
    for tool in tools:
        if not shutil.which(tool):
            pytest.skip(f"{tool} not installed")


@pytest.fixture(scope="module")
def target(tmp_path_factory):
    _need("tgtd", "qemu-system-x86_64", "socat", "nasm", "sgdisk")
    work = tmp_path_factory.mktemp("bt")
    golden = bp.build_disk(work / "golden.img", "golden")
    with tgt_in_netns(work) as tgt:
        tids = {}
        for tid, (name, hang) in enumerate(DISKS.items(), start=1):
            disk = work / f"{name}.img"
            shutil.copyfile(golden, disk)
            bp.write_state(disk, name, hang=hang)
            iqn = f"iqn.2016-04.test.ggnet:{name}"
            tgt.tgtadm("--op", "new", "--mode", "target", "--tid", str(tid), "-T", iqn)
            tgt.tgtadm("--op", "new", "--mode", "logicalunit", "--tid", str(tid), "--lun", "1",
                       "-b", str(disk))  # fmt: skip
            tgt.tgtadm("--op", "bind", "--mode", "target", "--tid", str(tid),
                       "--initiator-name", INITIATOR)  # fmt: skip
            tids[name] = (tid, iqn)
        tgt.tgtadm("--op", "new", "--mode", "account", "--user", "bt-user", "--password", SECRET)
        for tid, _ in tids.values():
            tgt.tgtadm("--op", "bind", "--mode", "account", "--tid", str(tid), "--user", "bt-user")
        tgt.tids = tids
        yield tgt


def boot(
    tgt,
    tmp_path: Path,
    name: str,
    firmware: str,
    timeout: float,
    lines: list[str],
    secret: str = SECRET,
):
    _, iqn = tgt.tids[name]

    # The backend's own session listing (tgtadm --op show), as the boot job uses it.
    logged_in = bt.session_probe(
        "tgt", iqn, INITIATOR, control_port=tgt.control_port, netns=tgt.netns
    )
    spec = bt.BootTestSpec(
        portal=f"{tgt.portal}:3260",
        target_iqn=iqn,
        initiator_iqn=INITIATOR,
        chap_user="bt-user",
        chap_secret=secret,
        workdir=tmp_path / f"{name}-{firmware}",
        firmware=firmware,
        timeout=timeout,
        netns=tgt.netns,
        accel="tcg",  # this host's /dev/kvm (PVM) opens but boots nothing
    )
    t0 = time.monotonic()
    result = bt.run(spec, logged_in=logged_in, progress=lines.append)
    print(f"{name}/{firmware}: {'pass' if result.passed else 'fail'} in "
          f"{time.monotonic() - t0:.1f} s, stages {result.stages}")  # fmt: skip
    return spec, result


def qemus_of(workdir: Path) -> list[int]:
    """PIDs whose command line names this run's workdir (its qemu or socat relays)."""
    pids = []
    for proc in Path("/proc").glob("[0-9]*"):
        try:
            cmdline = (proc / "cmdline").read_bytes()
        except OSError:
            continue
        if str(workdir).encode() in cmdline:
            pids.append(int(proc.name))
    return pids


def nothing_left(spec: bt.BootTestSpec, result: bt.BootTestResult, lines: list[str]) -> None:
    assert qemus_of(spec.workdir) == []
    assert SECRET not in repr(spec) and SECRET not in repr(result) and SECRET not in "".join(lines)
    for path in spec.workdir.rglob("*"):
        if path.is_file():
            assert SECRET.encode() not in path.read_bytes(), path
    # The script's TFTP directory, the QMP socket and the VARS copy are gone.
    assert not list(spec.workdir.glob("tftp-*")) and not (spec.workdir / "qmp.sock").exists()


@pytest.mark.parametrize("firmware", ["bios", "uefi"])
def test_good_disk_passes_with_stages_in_order(target, tmp_path, firmware):
    lines: list[str] = []
    spec, result = boot(target, tmp_path, "good", firmware, 120.0, lines)
    assert result.passed, result.reason
    assert result.reason == "" and result.screenshot is None
    st = result.stages
    assert list(st) == ["started", "login", "marker"], st
    assert 0 <= st["started"] <= st["login"] <= st["marker"] < 120, st
    assert f"GGNET-BOOT fw={firmware} id=good" in result.serial_tail, result.serial_tail
    assert any("logged in" in ln for ln in lines) and any("marker" in ln for ln in lines), lines
    nothing_left(spec, result, lines)


@pytest.mark.parametrize(
    ("name", "firmware"),
    [("hang-all", "bios"), ("hang-uefi", "uefi")],
    ids=["hangs-on-bios", "hangs-under-uefi-only"],
)
def test_hanging_disk_fails_with_a_screenshot(target, tmp_path, name, firmware):
    lines: list[str] = []
    timeout = HANG_TIMEOUT[firmware]
    t0 = time.monotonic()
    spec, result = boot(target, tmp_path, name, firmware, timeout, lines)
    took = time.monotonic() - t0
    assert not result.passed
    assert timeout <= took < timeout + 20, took
    assert f"no GGNET-BOOT marker on the serial console within {timeout:g} s" in result.reason
    assert "logged in to" in result.reason and "did not report booting" in result.reason
    assert result.screenshot is not None and result.screenshot.read_bytes()[:8] == PNG
    assert f"see the screenshot {result.screenshot}" in result.reason
    assert "marker" not in result.stages and "login" in result.stages, result.stages
    assert f"GGNET-HANG fw={firmware}" in result.serial_tail, result.serial_tail
    assert any("waiting for marker" in ln for ln in lines), lines
    nothing_left(spec, result, lines)


def test_uefi_only_hang_still_boots_on_bios(target, tmp_path):
    lines: list[str] = []
    _, result = boot(target, tmp_path, "hang-uefi", "bios", 120.0, lines)
    assert result.passed, result.reason
    assert "GGNET-BOOT fw=bios id=hang-uefi" in result.serial_tail


def test_wrong_chap_secret_never_logs_in(target, tmp_path):
    lines: list[str] = []
    spec, result = boot(target, tmp_path, "good", "bios", 15.0, lines, secret="Wrong-secret-9")
    assert not result.passed
    assert "the VM never logged in to iqn.2016-04.test.ggnet:good at 127.0.0.1:3260" in (
        result.reason
    ), result.reason
    assert "ACL and CHAP" in result.reason and "login" not in result.stages
    assert result.screenshot is not None and result.screenshot.read_bytes()[:8] == PNG
    assert "Wrong-secret-9" not in result.reason + result.serial_tail
    assert qemus_of(spec.workdir) == []


def test_the_vm_reaches_the_target_only_through_the_forward(target, tmp_path, monkeypatch):
    """slirp's host alias 10.0.2.2 is the netns loopback, where tgtd listens: a script
    that sanboots it directly must not get through (restrict=on)."""
    render = bt.render_script
    monkeypatch.setattr(
        bt, "render_script", lambda s: render(s).replace(bt.ISCSI_GUEST_ADDR, "10.0.2.2")
    )
    _, result = boot(target, tmp_path, "good", "bios", 15.0, [])
    assert not result.passed and "login" not in result.stages, result.stages
    assert "never logged in" in result.reason
