"""Build the test boot disk: one raw image that boots on BIOS and on UEFI PCs.

    python bootprog/build.py OUT.img --id NAME [--count N] [--size 4M] [--hang bios,uefi]

Layout (512-byte sectors):
  LBA 0          bios.asm's code (440 bytes), then the GPT protective MBR entry
  LBA 1-33       GPT header and entries (sgdisk)
  LBA STATE_LBA  the state sector: b"GGNETST1", identity (32 bytes, NUL padded),
                 boot counter (u32 little-endian), flags (u32 little-endian: bit 0
                 hang on BIOS, bit 1 hang on UEFI; older disks have 0 there, so
                 they boot as before).  Outside every partition, so
                 both programs find it at the same place and no filesystem owns it.
  LBA 2048-...   the ESP (FAT, built by mkfs.fat + mtools in a file, no loop mount)
                 holding \\EFI\\BOOT\\BOOTX64.EFI (uefi.c, gnu-efi)

Both programs print "GGNET-BOOT fw=<bios|uefi> id=<identity> count=<n>" on the serial
port, store n+1 and print "GGNET-WROTE fw=... count=<n+1>".  parse_serial() reads that
back for tests.

A misbehaving disk for the failure scenarios (the boot test, the lab): with a firmware's
hang flag set, that firmware's program prints "GGNET-HANG fw=<fw>" instead, never the
GGNET-BOOT marker, writes nothing and idles forever.  build_disk(..., hang=("bios",
"uefi")) hangs on every firmware; hang=("uefi",) fails under UEFI only.

Built objects are cached in bootprog/build/ keyed by their sources' content.
"""

from __future__ import annotations

import argparse
import hashlib
import re
import shutil
import struct
import subprocess
import sys
import tempfile
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from ggnet.model import parse_size

HERE = Path(__file__).resolve().parent
BUILD = HERE / "build"
SECTOR = 512
STATE_LBA = 48
ESP_FIRST_LBA = 2048
MAGIC = b"GGNETST1"
ID_LEN = 32
CODE_LEN = 440
# The state's flags (u32 after the counter): which firmwares' programs hang.
FLAG_HANG = {"bios": 1, "uefi": 2}
DEFAULT_SIZE = 4 << 20
# The tools build_disk needs and the Debian package that has each.
TOOLS = {
    "nasm": "nasm",
    "gcc": "gcc",
    "ld": "binutils",
    "objcopy": "binutils",
    "sgdisk": "gdisk",
    "mkfs.fat": "dosfstools",
    "mmd": "mtools",
    "mcopy": "mtools",
}
GNU_EFI = {
    "crt0": Path("/usr/lib/crt0-efi-x86_64.o"),
    "lds": Path("/usr/lib/elf_x86_64_efi.lds"),
    "include": Path("/usr/include/efi"),
}
_LINE_RE = re.compile(
    r"GGNET-(?P<kind>BOOT|WROTE|ERROR|HANG) fw=(?P<fw>\w+)"
    r"(?: id=(?P<id>\S*))?(?: count=(?P<count>\d+))?(?: what=(?P<what>\S+))?"
)


class BuildError(RuntimeError):
    pass


def _run(cmd: list[str], **kw) -> None:
    proc = subprocess.run(cmd, capture_output=True, text=True, **kw)
    if proc.returncode != 0:
        raise BuildError(f"{' '.join(cmd)} failed ({proc.returncode}): {proc.stderr.strip()}")


def check_tools() -> None:
    missing = sorted({pkg for tool, pkg in TOOLS.items() if not shutil.which(tool)})
    missing += sorted({"gnu-efi"} if not all(p.exists() for p in GNU_EFI.values()) else set())
    if missing:
        raise BuildError(f"missing build tools: apt-get install {' '.join(missing)}")


def _cached(name: str, sources: list[Path], extra: str, make) -> bytes:
    digest = hashlib.sha256(extra.encode())
    for src in sources:
        digest.update(src.read_bytes())
    out = BUILD / f"{name}-{digest.hexdigest()[:16]}"
    if not out.exists():
        BUILD.mkdir(exist_ok=True)
        with tempfile.TemporaryDirectory(dir=BUILD) as tmp:
            produced = make(Path(tmp))
            produced.replace(out)
    return out.read_bytes()


def bios_code() -> bytes:
    """The 440 bytes of boot code for LBA 0."""

    def make(tmp: Path) -> Path:
        out = tmp / "bios.bin"
        _run(
            [
                "nasm",
                "-f",
                "bin",
                f"-DSTATE_LBA={STATE_LBA}",
                "-o",
                str(out),
                str(HERE / "bios.asm"),
            ]
        )
        return out

    code = _cached("bios", [HERE / "bios.asm"], f"lba={STATE_LBA}", make)
    if len(code) != CODE_LEN:
        raise BuildError(f"bios.asm built {len(code)} bytes; LBA 0 has room for exactly {CODE_LEN}")
    return code


def efi_app() -> bytes:
    """BOOTX64.EFI, a PE32+ EFI application."""

    def make(tmp: Path) -> Path:
        inc = GNU_EFI["include"]
        obj, so, efi = tmp / "uefi.o", tmp / "uefi.so", tmp / "BOOTX64.EFI"
        _run(
            ["gcc", f"-I{inc}", f"-I{inc}/x86_64", "-DEFI_FUNCTION_WRAPPER", f"-DSTATE_LBA={STATE_LBA}",
             "-fno-stack-protector", "-fpic", "-fshort-wchar", "-mno-red-zone", "-O2", "-Wall",
             "-c", str(HERE / "uefi.c"), "-o", str(obj)]
        )  # fmt: skip
        _run(
            ["ld", "-shared", "-Bsymbolic", "-nostdlib", "-T", str(GNU_EFI["lds"]), str(GNU_EFI["crt0"]),
             str(obj), "-o", str(so), "-L/usr/lib", "-lefi", "-lgnuefi"]
        )  # fmt: skip
        sections = [".text", ".sdata", ".data", ".dynamic", ".dynsym", ".rel", ".rela", ".reloc"]
        _run(
            [
                "objcopy",
                *[a for s in sections for a in ("-j", s)],
                "--target",
                "efi-app-x86_64",
                str(so),
                str(efi),
            ]
        )
        return efi

    return _cached("uefi", [HERE / "uefi.c"], f"lba={STATE_LBA}", make)


def hang_flags(hang: Iterable[str]) -> int:
    """The flags word for the firmwares whose program should hang ("bios", "uefi")."""
    flags = 0
    for fw in hang:
        if fw not in FLAG_HANG:
            raise BuildError(f"hang {fw!r}: expected one of {', '.join(FLAG_HANG)}")
        flags |= FLAG_HANG[fw]
    return flags


def state_sector(identity: str, count: int = 0, hang: Iterable[str] = ()) -> bytes:
    raw = identity.encode("ascii", "strict") if identity.isascii() else b""
    if not raw or len(raw) > ID_LEN or any(c <= 0x20 or c >= 0x7F for c in raw):
        raise BuildError(
            f"identity {identity!r}: use 1 to {ID_LEN} printable ASCII characters without spaces"
        )
    if not 0 <= count < 1 << 32:
        raise BuildError(f"count {count} does not fit in 32 bits")
    head = MAGIC + raw.ljust(ID_LEN, b"\0") + struct.pack("<II", count, hang_flags(hang))
    return head.ljust(SECTOR, b"\0")


def _state_data(image: Path) -> bytes:
    with open(image, "rb") as f:
        f.seek(STATE_LBA * SECTOR)
        data = f.read(SECTOR)
    if data[:8] != MAGIC:
        raise BuildError(f"{image}: no ggnet state sector at LBA {STATE_LBA}")
    return data


def read_state(image: Path) -> tuple[str, int]:
    """(identity, count) as stored in a disk image."""
    data = _state_data(image)
    identity = data[8 : 8 + ID_LEN].rstrip(b"\0").decode("ascii")
    return identity, struct.unpack("<I", data[40:44])[0]


def read_hang(image: Path) -> tuple[str, ...]:
    """The firmwares whose program hangs on this disk ("bios", "uefi"); () boots everywhere."""
    flags = struct.unpack("<I", _state_data(image)[44:48])[0]
    return tuple(fw for fw, bit in FLAG_HANG.items() if flags & bit)


def write_state(
    image: Path, identity: str, count: int = 0, hang: Iterable[str] | None = None
) -> None:
    """Stamp a (new) identity and counter into an existing disk image; hang=None keeps
    the disk's hang flags, a sequence replaces them."""
    sector = state_sector(identity, count, read_hang(image) if hang is None else hang)
    with open(image, "r+b") as f:
        f.seek(STATE_LBA * SECTOR)
        f.write(sector)


def build_disk(
    out: Path,
    identity: str,
    count: int = 0,
    size: int = DEFAULT_SIZE,
    hang: Iterable[str] = (),
) -> Path:
    """Write the hybrid BIOS+UEFI disk image `out` (sparse) and return its path.

    hang: the firmwares ("bios", "uefi") whose program hangs instead of booting."""
    check_tools()
    if size < 2 << 20 or size % SECTOR:
        raise BuildError(f"size {size}: needs at least 2 MiB, a multiple of {SECTOR} bytes")
    sector = state_sector(identity, count, hang)
    code, app = bios_code(), efi_app()
    out = Path(out)
    with tempfile.TemporaryDirectory() as tmp:
        disk = Path(tmp) / "disk.img"
        with open(disk, "wb") as f:
            f.truncate(size)
        _run(["sgdisk", "-n", f"1:{ESP_FIRST_LBA}:0", "-t", "1:ef00", "-c", "1:ESP", str(disk)])
        last = _esp_last_lba(disk)
        esp = Path(tmp) / "esp.img"
        esp_sectors = last - ESP_FIRST_LBA + 1
        _run(
            [
                "mkfs.fat",
                "-C",
                "-n",
                "GGNETESP",
                "-S",
                str(SECTOR),
                str(esp),
                str(esp_sectors * SECTOR // 1024),
            ]
        )
        env = {"MTOOLS_SKIP_CHECK": "1", "PATH": "/usr/bin:/bin"}
        _run(["mmd", "-i", str(esp), "::/EFI", "::/EFI/BOOT"], env=env)
        efi = Path(tmp) / "BOOTX64.EFI"
        efi.write_bytes(app)
        _run(["mcopy", "-i", str(esp), str(efi), "::/EFI/BOOT/BOOTX64.EFI"], env=env)
        with open(disk, "r+b") as f:
            f.seek(0)
            f.write(code)  # 440 bytes: the signature and partition table stay
            f.seek(STATE_LBA * SECTOR)
            f.write(sector)
            f.seek(ESP_FIRST_LBA * SECTOR)
            f.write(esp.read_bytes())
        out.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(disk, out)
    return out


def _esp_last_lba(disk: Path) -> int:
    proc = subprocess.run(
        ["sgdisk", "-i", "1", str(disk)], capture_output=True, text=True, check=True
    )
    match = re.search(r"Last sector: (\d+)", proc.stdout)
    if not match:
        raise BuildError(f"sgdisk -i 1 {disk}: no last sector in its output")
    return int(match.group(1))


@dataclass(frozen=True)
class SerialLine:
    kind: str  # BOOT, WROTE, ERROR or HANG
    fw: str
    identity: str | None
    count: int | None
    what: str | None


def parse_serial(text: str) -> list[SerialLine]:
    """The GGNET-* lines a boot program printed, in order (firmware noise ignored)."""
    lines = []
    for m in _LINE_RE.finditer(text):
        count = m.group("count")
        lines.append(
            SerialLine(
                m.group("kind"),
                m.group("fw"),
                m.group("id"),
                int(count) if count else None,
                m.group("what"),
            )
        )
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Build ggnet's BIOS+UEFI test boot disk image.")
    parser.add_argument("out", type=Path, help="the raw disk image to write")
    parser.add_argument(
        "--id", required=True, help="identity the boot programs print (<=32 ASCII chars)"
    )
    parser.add_argument("--count", type=int, default=0, help="initial boot counter (default 0)")
    parser.add_argument(
        "--size", type=parse_size, default=DEFAULT_SIZE, help="image size, e.g. 4M or 64M"
    )
    parser.add_argument(
        "--hang",
        default="",
        help="firmwares whose program hangs instead of booting: bios, uefi or bios,uefi",
    )
    args = parser.parse_args(argv)
    hang = [fw.strip() for fw in args.hang.split(",") if fw.strip()]
    try:
        build_disk(args.out, args.id, args.count, args.size, hang)
    except BuildError as exc:
        print(f"bootprog: {exc}", file=sys.stderr)
        return 1
    print(args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
