"""The test boot programs' disk image: hybrid layout, state sector, serial parsing."""

from __future__ import annotations

import shutil
import subprocess

import pytest
from ggnet_bootprog import build as bp

pytestmark = pytest.mark.unit


@pytest.fixture(scope="module")
def disk(tmp_path_factory):
    if not shutil.which("nasm") or not shutil.which("sgdisk"):
        pytest.skip(
            "nasm/gdisk not installed: apt-get install nasm gdisk gnu-efi mtools dosfstools"
        )
    return bp.build_disk(tmp_path_factory.mktemp("bp") / "disk.img", "golden-1", count=7)


def test_mbr_has_boot_code_signature_and_gpt_protective_entry(disk):
    data = disk.read_bytes()
    assert data[: bp.CODE_LEN] == bp.bios_code()
    assert data[510:512] == b"\x55\xaa"
    assert data[446 + 4] == 0xEE  # protective MBR entry: GPT follows
    assert data[512:520] == b"EFI PART"


def test_esp_holds_the_uefi_app(disk):
    out = subprocess.run(
        ["sgdisk", "-i", "1", str(disk)], capture_output=True, text=True, check=True
    ).stdout
    assert "C12A7328-F81F-11D2-BA4B-00A0C93EC93B" in out  # EFI System Partition
    esp = disk.read_bytes()[bp.ESP_FIRST_LBA * bp.SECTOR :]
    assert b"GGNETESP" in esp[:512]
    app = bp.efi_app()
    assert app[:2] == b"MZ" and app in esp


def test_state_sector_round_trip(disk, tmp_path):
    assert bp.read_state(disk) == ("golden-1", 7)
    copy = tmp_path / "pc.img"
    shutil.copyfile(disk, copy)
    bp.write_state(copy, "pc-07", 3)
    assert bp.read_state(copy) == ("pc-07", 3)


@pytest.mark.parametrize("identity", ["", "has space", "x" * 33, "caf\u00e9"])
def test_bad_identity_is_refused(identity):
    with pytest.raises(bp.BuildError, match="identity"):
        bp.state_sector(identity)


def test_parse_serial_ignores_firmware_noise():
    text = "SeaBIOS...\r\nGGNET-BOOT fw=bios id=pc-a count=2\r\nGGNET-WROTE fw=bios count=3\r\nGGNET-ERROR fw=uefi what=read\r\n"
    lines = bp.parse_serial(text)
    assert [(ln.kind, ln.fw, ln.identity, ln.count, ln.what) for ln in lines] == [
        ("BOOT", "bios", "pc-a", 2, None),
        ("WROTE", "bios", None, 3, None),
        ("ERROR", "uefi", None, None, "read"),
    ]


def test_hang_flags_round_trip_and_old_disks_boot(disk, tmp_path):
    assert bp.read_hang(disk) == ()  # built without hang: flags 0
    copy = tmp_path / "hang.img"
    shutil.copyfile(disk, copy)
    bp.write_state(copy, "pc-h", 0, hang=["uefi"])
    assert bp.read_hang(copy) == ("uefi",)
    bp.write_state(copy, "pc-h2")  # hang=None keeps the flags
    assert bp.read_state(copy) == ("pc-h2", 0) and bp.read_hang(copy) == ("uefi",)
    bp.write_state(copy, "pc-h2", hang=("bios", "uefi"))
    assert bp.read_hang(copy) == ("bios", "uefi")
    # A disk from before the flags field: the bytes after the counter were zero padding.
    old = (bp.MAGIC + b"old".ljust(bp.ID_LEN, b"\0") + (5).to_bytes(4, "little")).ljust(
        bp.SECTOR, b"\0"
    )
    assert old == bp.state_sector("old", 5)
    bp.write_state(copy, "x", hang=())
    assert bp.read_hang(copy) == ()


def test_bad_hang_is_refused():
    with pytest.raises(bp.BuildError, match="hang 'dos': expected one of bios, uefi"):
        bp.state_sector("pc", hang=["dos"])


def test_cli_builds_a_hanging_disk(disk, tmp_path, capsys):
    out = tmp_path / "cli.img"
    assert bp.main([str(out), "--id", "bad-1", "--hang", "bios,uefi", "--size", "2M"]) == 0
    assert bp.read_state(out) == ("bad-1", 0) and bp.read_hang(out) == ("bios", "uefi")
    assert bp.main([str(out), "--id", "bad-1", "--hang", "efi"]) == 1
    assert "hang 'efi'" in capsys.readouterr().err


def test_parse_serial_reads_a_hang():
    lines = bp.parse_serial("iPXE...\r\nGGNET-HANG fw=uefi\r\n")
    assert [(ln.kind, ln.fw) for ln in lines] == [("HANG", "uefi")]
