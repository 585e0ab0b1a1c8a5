"""Boot test: boot an image version in a throwaway VM before any PC gets it.

run() starts qemu with the NIC's iPXE ROM (Debian's ipxe-qemu) and qemu's user-mode
network (slirp).  slirp's built-in DHCP and TFTP hand iPXE a script that logs in to
the candidate's throwaway writeback through the real iSCSI target and sanboots it,
the way a PC does.  It passes when the OS prints its marker (default: the boot
program's GGNET-BOOT line) on the serial console within the timeout.

Network isolation: the slirp network is `restrict=on`, so the guest reaches nothing
but slirp's own DHCP/TFTP and one forwarded address, ISCSI_GUEST_ADDR:ISCSI_PORT,
which qemu relays (socat, one process per connection) to the portal as seen from the
server itself.  The booted OS cannot talk to the room, the LAN or the internet.

Secrets: the CHAP secret is only in the iPXE script (mode 0600, in its own TFTP
directory, deleted when run() returns); never on a command line, in a progress line,
a reason or the serial tail (masked there should the OS echo it).

A failed run keeps a PNG of the VM's screen (QMP screendump) in the workdir.  qemu
runs in a process group of its own and never outlives run().
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from . import ipxe, iscsi, net
from .iscsi_types import mask_secret

QEMU = "qemu-system-x86_64"
IPXE_ROM = Path("/usr/lib/ipxe/qemu/efi-virtio.rom")  # BIOS and EFI iPXE in one ROM
OVMF_CODE = Path("/usr/share/OVMF/OVMF_CODE_4M.fd")
OVMF_VARS = Path("/usr/share/OVMF/OVMF_VARS_4M.fd")
FIRMWARES = ("bios", "uefi")
ACCELS = ("auto", "kvm", "tcg")
# The guest's view of the target: an address inside slirp's 10.0.2.0/24 that qemu
# forwards to the real portal.
ISCSI_GUEST_ADDR = "10.0.2.100"
ISCSI_PORT = 3260
SCRIPT_NAME = "boot.ipxe"
SYSTEM_DRIVE = 0x80
POLL_SECONDS = 0.2
PROGRESS_EVERY = 10.0
TAIL_BYTES = 2048
INSTALL_HINT = "apt install qemu-system-x86 ipxe-qemu ovmf socat"
DEFAULT_MARKER = r"GGNET-BOOT\b"
SANBOOT_FAILED = "ggnet boot test: sanboot failed: error"
# Where the unix socket path must stay below (sun_path is 108 bytes with the NUL).
_SUN_PATH_MAX = 100


class BootTestError(RuntimeError):
    """The boot test could not run at all (bad spec, missing tools): no verdict on the
    image.  A verdict, pass or fail, is a BootTestResult."""


@dataclass(frozen=True)
class BootTestSpec:
    portal: str  # "ip:port" of the iSCSI target as seen from the server itself
    target_iqn: str
    initiator_iqn: str
    chap_user: str | None
    chap_secret: str | None = field(repr=False)  # never logged, never in any result
    workdir: Path  # serial log, iPXE script, screenshot go here
    firmware: str = "bios"  # "bios" | "uefi"
    timeout: float = 300.0  # seconds from qemu start to the marker
    marker: str = DEFAULT_MARKER  # regex searched in the serial console output
    memory_mib: int = 256
    netns: str | None = None  # run qemu inside this network namespace (tests)
    # Optional additions:
    backend: str = "tgt"  # names the LUN of the system disk (ggnet.iscsi.lun_number)
    accel: str = "auto"  # "auto": kvm with a hardware KVM module loaded, else tcg


@dataclass
class BootTestResult:
    passed: bool
    reason: str  # "" on pass; otherwise what happened and what to do next
    stages: dict[str, float]  # seconds from start: "started", "login" (when seen), "marker"
    screenshot: Path | None  # PNG of the VM's screen on failure
    serial_tail: str  # last ~2 KiB of the serial console, secrets masked


# --- pure parts -----------------------------------------------------------------------


def parse_portal(portal: str) -> tuple[str, int]:
    """(address, port) of "ip:port" / "[ipv6]:port"; BootTestError names the value."""
    m = re.fullmatch(r"\[([^\]]+)\]:(\d{1,5})|([^:\[\]]+):(\d{1,5})", str(portal))
    if not m:
        raise BootTestError(f"portal {portal!r}: expected ip:port, e.g. 192.0.2.1:3260")
    v6 = m.group(1) is not None
    host, port = (m.group(1), m.group(2)) if v6 else (m.group(3), m.group(4))
    try:
        # ggnet.net's address parsers (no legacy forms, no host names).
        addr = str(net.parse_ipv6(host) if v6 else net.parse_ipv4(host))
    except ValueError as exc:
        raise BootTestError(f"portal {portal!r}: {host!r} {exc}") from None
    if "%" in addr or any(c.isspace() for c in addr):
        raise BootTestError(f"portal {portal!r}: {host!r} is not a plain address")
    if not 0 < int(port) < 65536:
        raise BootTestError(f"portal {portal!r}: port {port} is out of range")
    return addr, int(port)


def _check_word(value: object, what: str) -> str:
    # The PCs' scripts' rule (ggnet.ipxe), under the boot test's own error.
    try:
        return ipxe.check_set_value(value, what, "boot test")
    except ipxe.IpxeError as exc:
        raise BootTestError(str(exc)) from None


def check_spec(spec: BootTestSpec) -> None:
    """Refuse a spec that cannot run, naming the field (never a secret's value)."""
    parse_portal(spec.portal)
    _check_word(spec.target_iqn, "target_iqn")
    _check_word(spec.initiator_iqn, "initiator_iqn")
    if (spec.chap_user is None) != (spec.chap_secret is None):
        raise BootTestError("boot test: chap_user and chap_secret go together (both or neither)")
    if spec.chap_user is not None:
        _check_word(spec.chap_user, "chap_user")
        _check_word(spec.chap_secret, "chap_secret")
    if spec.firmware not in FIRMWARES:
        raise BootTestError(f"boot test: firmware {spec.firmware!r}: expected bios or uefi")
    if spec.accel not in ACCELS:
        raise BootTestError(f"boot test: accel {spec.accel!r}: expected auto, kvm or tcg")
    if not spec.timeout > 0:
        raise BootTestError(f"boot test: timeout {spec.timeout!r}: expected seconds > 0")
    if not 64 <= spec.memory_mib <= 65536:
        raise BootTestError(f"boot test: memory_mib {spec.memory_mib}: expected 64 to 65536")
    try:
        re.compile(spec.marker)
    except re.error as exc:
        raise BootTestError(f"boot test: marker {spec.marker!r} is not a regex: {exc}") from None
    try:
        iscsi.check_backend(spec.backend)
    except iscsi.IscsiError as exc:
        raise BootTestError(f"boot test: {exc}") from None


def render_script(spec: BootTestSpec) -> str:
    """The iPXE script slirp's TFTP hands the VM (holds the CHAP secret: file only)."""
    check_spec(spec)
    uri = iscsi.san_uri(ISCSI_GUEST_ADDR, spec.target_iqn, spec.backend, 0, ISCSI_PORT)
    lines = ["#!ipxe", f"set initiator-iqn {spec.initiator_iqn}"]
    if spec.chap_user is not None:
        lines += [f"set username {spec.chap_user}", f"set password {spec.chap_secret}"]
    else:
        lines += ["clear username ||", "clear password ||"]
    lines += [
        f"sanboot --drive 0x{SYSTEM_DRIVE:02x} {uri} || goto failed",
        ":failed",
        # Seen on the screenshot and (UEFI: iPXE's console is mirrored there) the serial
        # console; the VM then idles until the timeout.  Not GGNET-BOOT-anything: the
        # default marker would match that.
        f"echo {SANBOOT_FAILED} ${{errno}} (https://ipxe.org/err/${{errno}})",
        "shell",
        "",
    ]
    return "\n".join(lines)


def hardware_kvm() -> bool:
    """/dev/kvm opens and a hardware KVM module (kvm_intel/kvm_amd) is loaded.  Other
    KVM flavours (nested, PVM) may open /dev/kvm yet not boot anything."""
    if not any(Path("/sys/module", m).exists() for m in ("kvm_intel", "kvm_amd")):
        return False
    return os.access("/dev/kvm", os.R_OK | os.W_OK)


def qemu_argv(
    spec: BootTestSpec,
    *,
    tftp_dir: Path,
    serial: Path,
    qmp: Path,
    vars_copy: Path | None = None,
    kvm: bool | None = None,
) -> list[str]:
    """The command line (no secret in it): nsenter + qemu."""
    check_spec(spec)
    host, port = parse_portal(spec.portal)
    if kvm is None:
        kvm = spec.accel == "kvm" or (spec.accel == "auto" and hardware_kvm())
    # socat's address: TCP:<v4>:<port> or TCP6:[<v6>]:<port>; host and port are
    # validated above (the string reaches /bin/sh inside qemu's guestfwd).
    relay = f"TCP6:[{host}]:{port}" if ":" in host else f"TCP:{host}:{port}"
    netdev = (
        f"user,id=n0,restrict=on,tftp={tftp_dir},bootfile={SCRIPT_NAME},"
        f"guestfwd=tcp:{ISCSI_GUEST_ADDR}:{ISCSI_PORT}-cmd:socat STDIO {relay}"
    )
    argv = [
        QEMU,
        "-name", "ggnet-boot-test",
        "-accel", "kvm" if kvm else "tcg",
        "-m", str(spec.memory_mib),
        "-nodefaults", "-no-user-config",
        "-display", "none",
        "-vga", "std",  # the screen the screenshot shows
        "-serial", f"file:{serial}",
        "-qmp", f"unix:{qmp},server=on,wait=off",
        "-netdev", netdev,
        # qemu's default ROM for the NIC: Debian's ipxe-qemu (IPXE_ROM).  Naming it
        # with romfile= left SeaBIOS without a network boot entry (qemu 7.2).
        "-device", "virtio-net-pci,netdev=n0",
    ]  # fmt: skip
    if spec.firmware == "uefi":
        if vars_copy is None:
            raise BootTestError("boot test: uefi needs a private copy of OVMF_VARS")
        argv += [
            "-drive", f"if=pflash,format=raw,readonly=on,file={OVMF_CODE}",
            "-drive", f"if=pflash,format=raw,file={vars_copy}",
        ]  # fmt: skip
    else:
        argv += ["-boot", "n"]
    if spec.netns:
        argv = ["nsenter", f"--net=/var/run/netns/{spec.netns}", *argv]
    return argv


def missing_tools(spec: BootTestSpec) -> str | None:
    """What is missing to run the test, as an error line with the fix; None if ready."""
    missing = []
    if not shutil.which(QEMU):
        missing.append(QEMU)
    if not shutil.which("socat"):
        missing.append("socat")
    if not IPXE_ROM.exists():
        missing.append(str(IPXE_ROM))
    if spec.firmware == "uefi":
        missing += [str(p) for p in (OVMF_CODE, OVMF_VARS) if not p.exists()]
    if spec.netns and not shutil.which("nsenter"):
        missing.append("nsenter (util-linux)")
    if not missing:
        return None
    return f"boot test: {', '.join(missing)} not installed: {INSTALL_HINT}"


def marker_label(marker: str) -> str:
    return "GGNET-BOOT marker" if marker == DEFAULT_MARKER else f"marker /{marker}/"


def find_marker(marker: str, text: str) -> re.Match[str] | None:
    return re.search(marker, text)


def serial_tail(text: str, secret: str | None, size: int = TAIL_BYTES) -> str:
    # Mask before cutting, so a secret split by the cut is not left half visible.
    return mask_secret(text, secret)[-size:]


def failure_reason(
    spec: BootTestSpec,
    *,
    stages: dict[str, float],
    screenshot: Path | None,
    screenshot_error: str = "",
    exit_code: int | None = None,
    qemu_log: str = "",
    elapsed: float = 0.0,
    serial_text: str = "",
) -> str:
    """Says what happened and what to do next (never the secret)."""
    label = marker_label(spec.marker)
    if exit_code is not None:
        head = f"qemu exited with code {exit_code} after {elapsed:.0f} s, before the {label}" + (
            f": {qemu_log.strip()[-400:]}" if qemu_log.strip() else ""
        )
    else:
        head = f"no {label} on the serial console within {spec.timeout:g} s"
    sanboot = re.search(re.escape(SANBOOT_FAILED) + r" (0x[0-9a-f]+)", serial_text)
    if sanboot:
        where = (
            f"iPXE's sanboot of {spec.target_iqn} at {spec.portal} failed with "
            f"{sanboot.group(1)} (https://ipxe.org/err/{sanboot.group(1)})"
        )
    elif "login" in stages:
        where = (
            f"the VM logged in to {spec.target_iqn} at {stages['login']:.0f} s, so the disk "
            "was reached but the OS did not report booting"
        )
    elif exit_code is None:
        where = (
            f"the VM never logged in to {spec.target_iqn} at {spec.portal}: check that "
            "the target exists and its ACL and CHAP admit the initiator"
        )
    else:
        where = ""
    shot = (
        f"see the screenshot {screenshot}"
        if screenshot
        else f"no screenshot ({screenshot_error or 'not taken'})"
    )
    serial = spec.workdir / "serial.log"
    return mask_secret(
        "; ".join(p for p in (head, where, shot, f"serial log {serial}") if p), spec.chap_secret
    )


def session_probe(
    backend: str, target_iqn: str, initiator_iqn: str, **options: object
) -> Callable[[], bool]:
    """A logged_in callback for run(): True once the backend lists the initiator's
    session on the target (ggnet.iscsi.active_sessions; tgt takes control_port and
    netns, lio none)."""

    def logged_in() -> bool:
        return initiator_iqn in iscsi.active_sessions(backend, **options).get(target_iqn, [])

    return logged_in


# --- QMP ----------------------------------------------------------------------------


class _Qmp:
    """A minimal QMP client on qemu's unix socket (one command at a time)."""

    def __init__(self, path: Path, timeout: float = 10.0):
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(timeout)
        self.sock.connect(str(path))
        self.buf = b""
        self._reply()  # the greeting
        self.command("qmp_capabilities")

    def _reply(self) -> dict:
        while True:
            while b"\n" not in self.buf:
                chunk = self.sock.recv(65536)
                if not chunk:
                    raise OSError("qemu closed the QMP socket")
                self.buf += chunk
            line, self.buf = self.buf.split(b"\n", 1)
            msg = json.loads(line)
            if "event" not in msg:
                return msg

    def command(self, name: str, **args: object) -> dict:
        req: dict[str, object] = {"execute": name}
        if args:
            req["arguments"] = args
        self.sock.sendall(json.dumps(req).encode() + b"\n")
        msg = self._reply()
        if "error" in msg:
            raise OSError(f"QMP {name}: {msg['error'].get('desc', msg['error'])}")
        return msg

    def close(self) -> None:
        self.sock.close()


def _screendump(qmp_path: Path, out: Path) -> str:
    """Take a PNG of the VM's screen; '' on success, else why not."""
    with contextlib.suppress(FileNotFoundError):
        out.unlink()
    try:
        q = _Qmp(qmp_path)
        try:
            q.command("screendump", filename=str(out), format="png")
        finally:
            q.close()
    except (OSError, ValueError) as exc:
        return f"screendump failed: {exc}"
    if not out.exists() or out.read_bytes()[:8] != b"\x89PNG\r\n\x1a\n":
        return f"screendump wrote no PNG at {out}"
    return ""


def _stop(proc: subprocess.Popen, qmp_path: Path) -> None:
    """Quit qemu (QMP), then kill its process group: nothing stays behind."""
    if proc.poll() is None:
        with contextlib.suppress(OSError, ValueError):
            q = _Qmp(qmp_path, timeout=3)
            try:
                q.command("quit")
            finally:
                q.close()
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=5)
    # Also the socat relays qemu started, even after qemu itself exited.
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(timeout=10)


# --- the run ----------------------------------------------------------------------------


def run(
    spec: BootTestSpec,
    *,
    logged_in: Callable[[], bool] | None = None,
    progress: Callable[[str], None] | None = None,
    clock: Callable[[], float] = time.monotonic,
) -> BootTestResult:
    """Boot spec's target in a throwaway VM; see the module docstring.

    logged_in: polled (about every 0.2 s) until it returns True, to time the "login"
    stage; the caller knows the target backend.  progress: human lines.  Raises
    BootTestError when the test cannot run (bad spec, missing tools)."""
    check_spec(spec)
    problem = missing_tools(spec)
    if problem:
        raise BootTestError(problem)
    say = progress or (lambda _line: None)
    workdir = Path(spec.workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    serial = workdir / "serial.log"
    screenshot = workdir / "screenshot.png"
    qemu_log = workdir / "qemu.log"
    for old in (serial, screenshot):
        with contextlib.suppress(FileNotFoundError):
            old.unlink()
    # The TFTP directory holds only the script: slirp serves every file in it.
    tftp_dir = Path(tempfile.mkdtemp(prefix="tftp-", dir=workdir))
    sock_dir: Path | None = None
    qmp = workdir / "qmp.sock"
    if len(str(qmp)) > _SUN_PATH_MAX:
        sock_dir = Path(tempfile.mkdtemp(prefix="ggnet-bt-"))
        qmp = sock_dir / "qmp.sock"
    with contextlib.suppress(FileNotFoundError):
        qmp.unlink()
    vars_copy = None
    proc: subprocess.Popen | None = None
    try:
        script = tftp_dir / SCRIPT_NAME
        fd = os.open(script, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as fh:
            fh.write(render_script(spec))
        if spec.firmware == "uefi":
            vars_copy = workdir / "OVMF_VARS.fd"
            shutil.copyfile(OVMF_VARS, vars_copy)
        argv = qemu_argv(spec, tftp_dir=tftp_dir, serial=serial, qmp=qmp, vars_copy=vars_copy)
        start = clock()
        with open(qemu_log, "wb") as log:
            proc = subprocess.Popen(
                argv,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        stages = {"started": clock() - start}
        say(f"boot test: qemu started ({spec.firmware}, {argv[argv.index('-accel') + 1]})")
        text, offset = "", 0
        next_progress = PROGRESS_EVERY
        poll_login = logged_in is not None
        found = None
        while True:
            now = clock() - start
            if serial.exists():
                with open(serial, "rb") as f:
                    f.seek(offset)
                    chunk = f.read()
                offset += len(chunk)
                # A match may straddle two reads: search the new text with some overlap.
                search_from = max(0, len(text) - 512)
                text += chunk.decode("utf-8", errors="replace")
                found = find_marker(spec.marker, text[search_from:])
            if poll_login and logged_in is not None:
                try:
                    if logged_in():
                        stages["login"] = clock() - start
                        poll_login = False
                        say(f"boot test: logged in to the target after {stages['login']:.0f} s")
                except Exception as exc:  # the caller's probe: report, stop asking
                    poll_login = False
                    say(f"boot test: cannot tell the login ({type(exc).__name__}: {exc})")
            if found:
                stages["marker"] = clock() - start
                say(f"boot test: {marker_label(spec.marker)} after {stages['marker']:.0f} s")
                return BootTestResult(True, "", stages, None, serial_tail(text, spec.chap_secret))
            if proc.poll() is not None:
                log_text = qemu_log.read_text(errors="replace") if qemu_log.exists() else ""
                return BootTestResult(
                    False,
                    failure_reason(
                        spec,
                        stages=stages,
                        screenshot=None,
                        screenshot_error="qemu is gone",
                        exit_code=proc.returncode,
                        qemu_log=log_text,
                        elapsed=now,
                        serial_text=text,
                    ),
                    stages,
                    None,
                    serial_tail(text, spec.chap_secret),
                )
            if now >= spec.timeout:
                say(f"boot test: no {marker_label(spec.marker)} after {spec.timeout:g} s")
                why = _screendump(qmp, screenshot)
                shot = None if why else screenshot
                reason = failure_reason(
                    spec, stages=stages, screenshot=shot, screenshot_error=why, serial_text=text
                )
                return BootTestResult(
                    False, reason, stages, shot, serial_tail(text, spec.chap_secret)
                )
            if now >= next_progress:
                say(f"boot test: waiting for marker, {now:.0f} s of {spec.timeout:g} s")
                next_progress += PROGRESS_EVERY
            time.sleep(POLL_SECONDS)
    finally:
        if proc is not None:
            _stop(proc, qmp)
        shutil.rmtree(tftp_dir, ignore_errors=True)
        if vars_copy is not None:
            with contextlib.suppress(FileNotFoundError):
                vars_copy.unlink()
        with contextlib.suppress(FileNotFoundError):
            qmp.unlink()
        if sock_dir is not None:
            shutil.rmtree(sock_dir, ignore_errors=True)
