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
