"""Lab PCs: a qemu machine per inventory client, booted from its network card and
watched until it reaches a boot stage.

The firmware kinds are the three a room really has: a legacy BIOS whose NIC ROM is
iPXE, UEFI whose NIC ROM is iPXE, and UEFI with only its own PXE (which must be handed
snponly.efi over TFTP).  Every qemu NIC ROM shipped by ipxe-qemu is iPXE already, so
the third kind empties the ROM to make OVMF's own PXE driver do the work.
"""

from __future__ import annotations

import shutil
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from ggnet.console import UNIX_PREFIX, vnc_target
from ggnet.net import normalize_mac

from . import netns, paths, process, server_time, stages
from .pcap import PcapFollower, packets
from .stages import SerialLine, StageClock

FIRMWARES = ("bios", "uefi-ipxe", "uefi-pxe")
OVMF_CODE = Path("/usr/share/OVMF/OVMF_CODE_4M.fd")
OVMF_VARS = Path("/usr/share/OVMF/OVMF_VARS_4M.fd")
MEMORY_MIB = 512
# SSH to the boot server is the only chatter on the bridge that never says anything
# about a PC's boot; everything else is kept for the capture file.
CAPTURE_FILTER = "not (tcp port 22)"
# Firmware retries DHCP for minutes; without any answer there is nothing more to see.
NO_OFFER_GIVE_UP = 30.0
# After the last stage: stop the capture once it has been quiet this long, or at most
# after DRAIN_MAX seconds (the PC may keep talking).
DRAIN_QUIET = 1.0
DRAIN_MAX = 4.0


class ClientError(RuntimeError):
    pass


@dataclass(frozen=True)
class LabPC:
    name: str
    # Any notation the inventory accepts; held in the colon form that qemu's NIC, the
    # capture's frames and the API's /boot/<mac> all use.
    mac: str
    firmware: str
    # ggnet_console_vnc "HOST:PORT": the screen listens there, inside the lab network,
    # where the boot server's console (websockify) reaches it.  None: a unix socket
    # on this machine only.
    vnc: str | None = None
    # ggnet_ip, the PC's fixed address, when the inventory gives one.
    ip: str | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "mac", normalize_mac(self.mac))

    def vnc_display(self, pcf: PCFiles) -> str:
        if self.vnc is None:
            return f"vnc=unix:{pcf.vnc}"
        host, port = self.vnc.rsplit(":", 1)
        return f"vnc={host}:{int(port) - 5900}"

    def vnc_where(self, pcf: PCFiles) -> str:
        return self.vnc or f"unix:{pcf.vnc}"


@dataclass(frozen=True)
class PCFiles:
    directory: Path

    @property
    def serial(self) -> Path:
        return self.directory / "serial.log"

    @property
    def pidfile(self) -> Path:
        return self.directory / "qemu.pid"

    @property
    def vars(self) -> Path:
        return self.directory / "OVMF_VARS_4M.fd"

    @property
    def vnc(self) -> Path:
        return self.directory / "vnc.sock"

    @property
    def capture(self) -> Path:
        return self.directory / "capture.pcap"

    @property
    def capture_pidfile(self) -> Path:
        return self.directory / "tcpdump.pid"

    @property
    def qemu_log(self) -> Path:
        return self.directory / "qemu.log"


def files(name: str) -> PCFiles:
    return PCFiles(paths.pc_dir(name))


def pc_from_vars(name: str, hostvars: dict) -> LabPC:
    """A LabPC from an inventory client's variables, or a ClientError naming the fix."""
    try:
        mac = normalize_mac(hostvars.get("ggnet_mac"))
    except ValueError as exc:
        raise ClientError(f"{name}: ggnet_mac {hostvars.get('ggnet_mac')!r} {exc}") from None
    firmware = hostvars.get("ggnet_lab_firmware")
    if firmware is None:
        # A client without a lab firmware boots like its ggnet_boot says.
        firmware = "uefi-ipxe" if hostvars.get("ggnet_boot") == "uefi" else "bios"
    if firmware not in FIRMWARES:
        raise ClientError(
            f"{name}: ggnet_lab_firmware {firmware!r} is not one of {', '.join(FIRMWARES)}"
        )
    vnc = hostvars.get("ggnet_console_vnc")
    if vnc is not None:
        _check_lab_vnc(name, vnc)
    ip = hostvars.get("ggnet_ip")
    return LabPC(
        name, mac, firmware, str(vnc) if vnc is not None else None, str(ip) if ip else None
    )


def _check_lab_vnc(name: str, vnc: object) -> None:
    """The console's own rules, then the lab's: qemu serves HOST:PORT, not a socket
    path, and counts its VNC displays from port 5900."""
    try:
        target = vnc_target(vnc)
    except ValueError as exc:
        raise ClientError(f"{name}: ggnet_console_vnc {vnc!r}: {exc}") from None
    port = target.rpartition(":")[2]
    if target.startswith(UNIX_PREFIX) or not port.isdigit() or int(port) < 5900:
        raise ClientError(
            f"{name}: ggnet_console_vnc {vnc!r}: a lab PC's screen is HOST:PORT with a "
            "port from 5900 (qemu counts VNC displays from there)"
        )


def find(pcs: dict[str, LabPC], which: str) -> LabPC | None:
    """The lab PC named WHICH, or whose MAC WHICH is in any notation the inventory takes."""
    if which in pcs:
        return pcs[which]
    try:
        mac = normalize_mac(which)
    except ValueError:
        return None
    return next((pc for pc in pcs.values() if pc.mac == mac), None)


def lab_pcs(inventory: Path | None = None) -> dict[str, LabPC]:
    from ggnet.inventory import load_inventory

    inv = load_inventory(inventory or paths.repo_root() / "inventory" / "lab")
    return {name: pc_from_vars(name, hv) for name, hv in sorted(inv.clients.items())}


def qemu_argv(pc: LabPC, pcf: PCFiles, tap: str) -> list[str]:
    nic = f"virtio-net-pci,netdev=lab,mac={pc.mac},bootindex=1"
    argv = [
        "qemu-system-x86_64",
        "-name", pc.name,
        "-accel", "tcg",
        "-m", str(MEMORY_MIB),
        "-nodefaults",
        "-vga", "std",
        # The inventory's ggnet_console_vnc (inside the lab network), else a unix socket.
        "-display", pc.vnc_display(pcf),
        "-netdev", f"tap,id=lab,ifname={tap},script=no,downscript=no",
        "-serial", f"file:{pcf.serial}",
        "-pidfile", str(pcf.pidfile),
        "-daemonize",
    ]  # fmt: skip
    if pc.firmware == "bios":
        argv += ["-device", nic, "-boot", "order=n"]
    else:
        argv += [
            "-drive", f"if=pflash,format=raw,unit=0,readonly=on,file={OVMF_CODE}",
            "-drive", f"if=pflash,format=raw,unit=1,file={pcf.vars}",
        ]  # fmt: skip
        # An empty romfile leaves the NIC to OVMF's own PXE driver.
        argv += ["-device", nic + (",romfile=" if pc.firmware == "uefi-pxe" else "")]
    return argv


def pid(name: str) -> int | None:
    return process.owned_pid(files(name).pidfile)


def running() -> dict[str, int]:
    """Every lab PC whose qemu still runs, by name."""
    root = paths.lab_dir() / "pcs"
    found = {}
    if root.is_dir():
        for directory in sorted(root.iterdir()):
            live = pid(directory.name)
            if live is not None:
                found[directory.name] = live
    return found


def _start_capture(pcf: PCFiles) -> subprocess.Popen:
    pcf.capture.unlink(missing_ok=True)
    argv = netns.nsenter(
        "tcpdump", "-i", netns.BRIDGE, "-n", "-U", "-s", "2048", "-Z", "root",
        "-w", str(pcf.capture), CAPTURE_FILTER,
    )  # fmt: skip
    proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    pcf.capture_pidfile.write_text(f"{proc.pid}\n")
    # tcpdump says "listening on" once the capture runs: before that, a PC's first
    # DHCPDISCOVER could be missed.
    assert proc.stderr is not None
    line = proc.stderr.readline()
    if "listening on" not in line:
        proc.wait(timeout=5)
        raise ClientError(f"tcpdump did not start on {netns.BRIDGE}: {line.strip()}")
    return proc


def _stop_capture(pcf: PCFiles, proc: subprocess.Popen | None = None) -> None:
    process.stop(pcf.capture_pidfile, marker=str(pcf.capture), grace=3)
    if proc is not None:
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


class SerialFollower:
    """New complete lines of a growing serial log."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._offset = 0
        self._partial = b""

    def poll(self) -> list[SerialLine]:
        try:
            with self.path.open("rb") as log:
                log.seek(self._offset)
                data = log.read()
        except FileNotFoundError:
            return []
        now = time.time()
        self._offset += len(data)
        chunks = (self._partial + data).replace(b"\r", b"\n").split(b"\n")
        self._partial = chunks.pop()
        return [SerialLine(now, c.decode(errors="replace")) for c in chunks if c.strip()]


def start(pc: LabPC) -> tuple[int, float]:
    """Start PC's qemu in the lab namespace; returns (pid, wall-clock start time)."""
    if pid(pc.name) is not None:
        raise ClientError(f"{pc.name} already runs (pid {pid(pc.name)}): `ggnet lab down` first")
    if pc.firmware != "bios" and not OVMF_CODE.is_file():
        raise ClientError(f"{OVMF_CODE} is missing: install the 'ovmf' package (make deps)")
    pcf = files(pc.name)
    pcf.directory.mkdir(parents=True, exist_ok=True)
    for stale in (pcf.serial, pcf.vnc, pcf.qemu_log):
        stale.unlink(missing_ok=True)
    if pc.firmware != "bios":
        # Each PC writes its own UEFI variables (boot order, PXE entries).
        shutil.copyfile(OVMF_VARS, pcf.vars)
    tap = netns.add_tap(pc.name)
    started = time.time()
    proc = subprocess.run(netns.nsenter(*qemu_argv(pc, pcf, tap)), capture_output=True, text=True)
    pcf.qemu_log.write_text(proc.stdout + proc.stderr)
    live = pid(pc.name)
    if proc.returncode != 0 or live is None:
        raise ClientError(
            f"qemu did not start {pc.name}: {proc.stderr.strip()} (see {pcf.qemu_log})"
        )
    return live, started


def stop(name: str) -> bool:
    pcf = files(name)
    _stop_capture(pcf)
    stopped = process.stop(pcf.pidfile, grace=3)
    pcf.vnc.unlink(missing_ok=True)
    netns.remove_tap(name)
    return stopped


@dataclass
class BootResult:
    pc: LabPC
    clock: StageClock
    until: str
    reached: bool
    files: PCFiles
    pid: int | None = None
    notes: list[str] = field(default_factory=list)


def boot(
    pc: LabPC,
    until: str = "marker",
    timeout: float = 120.0,
    keep: bool = False,
    progress: Callable[[str], None] = print,
) -> BootResult:
    """Boot PC and report each stage as it is seen, until UNTIL or TIMEOUT seconds."""
    if until not in stages.names():
        raise ClientError(f"no boot stage {until!r}; the stages are {', '.join(stages.names())}")
    if not netns.exists():
        raise ClientError("the lab network is not up: run `ggnet lab up` first")
    pcf = files(pc.name)
    pcf.directory.mkdir(parents=True, exist_ok=True)
    capture = _start_capture(pcf)
    live = None
    try:
        live, started = start(pc)
        progress(
            f"{pc.name}: {pc.firmware} PC started (pid {live}, MAC {pc.mac}); "
            f"serial {pcf.serial}, VNC {pc.vnc_where(pcf)}"
        )
        clock = StageClock(pc.mac, started)
        net, serial = PcapFollower(pcf.capture), SerialFollower(pcf.serial)
        last_report = time.monotonic()
        notes: list[str] = []
        while True:
            observed: list[stages.Observation] = [*packets(net.poll()), *serial.poll()]
            for obs in observed:
                for stage, elapsed, detail in clock.observe(obs):
                    progress(f"{pc.name}: {elapsed:6.1f}s  {stage.name:<11} {detail}")
            if clock.reached(until):
                break
            elapsed = time.time() - started
            if elapsed > timeout:
                break
            stalled = _no_dhcp_server(clock, until)
            if stalled:
                notes.append(stalled)
                break
            if pid(pc.name) is None:
                progress(f"{pc.name}: qemu exited after {elapsed:.0f}s (see {pcf.qemu_log})")
                break
            if time.monotonic() - last_report >= 15:
                progress(f"{pc.name}: [{elapsed:4.0f}s] waiting for '{until}'")
                last_report = time.monotonic()
            time.sleep(0.2)
        _drain(net, clock, progress, pc.name)
        result = BootResult(pc, clock, until, clock.reached(until), pcf, live, notes)
        if not result.reached and not notes:
            result.notes.append(
                f"'{until}' not seen within {timeout:.0f}s: look at {pcf.serial} and "
                f"{pcf.capture} (tcpdump -r / Wireshark)"
            )
        return result
    finally:
        _stop_capture(pcf, capture)
        if not keep:
            stop(pc.name)


def _drain(
    net: PcapFollower, clock: StageClock, progress: Callable[[str], None], name: str
) -> None:
    """Let tcpdump write what it has already seen before it is stopped.

    Under load (two TCG machines on two cores) tcpdump reads the kernel's ring a second
    or more behind the PC, and what it has not read when it stops is lost: a boot that
    ends at its serial marker would lose the frames of its last second, its iSCSI login
    among them."""
    end = time.monotonic() + DRAIN_MAX
    quiet_until = time.monotonic() + DRAIN_QUIET
    while time.monotonic() < end:
        frames = net.poll()
        for obs in packets(frames):
            for stage, elapsed, detail in clock.observe(obs):
                progress(f"{name}: {elapsed:6.1f}s  {stage.name:<11} {detail}")
        if frames:
            quiet_until = time.monotonic() + DRAIN_QUIET
        elif time.monotonic() >= quiet_until:
            return
        time.sleep(0.1)


def _no_dhcp_server(clock: StageClock, until: str) -> str | None:
    order = stages.names()
    if until == "bridge" or order.index(until) <= order.index("bridge"):
        return None
    if not clock.reached("bridge") or clock.reached("dhcp-offer"):
        return None
    waited = time.time() - clock.started - clock.seen["bridge"][0]
    if waited < NO_OFFER_GIVE_UP:
        return None
    return (
        f"no DHCPOFFER {waited:.0f}s after the PC's DHCPDISCOVER: nothing serves DHCP on "
        f"the lab bridge yet; converge the boot server (ansible-playbook -i inventory/lab "
        f"playbooks/site.yml) and boot again"
    )


def format_summary(result: BootResult) -> str:
    lines = [f"{result.pc.name} ({result.pc.firmware}, {result.pc.mac}):"]
    for name, elapsed, detail in result.clock.summary():
        when = f"{elapsed:6.1f}s" if elapsed is not None else "     - "
        lines.append(f"  {name:<11} {when}  {detail}")
    measured = server_time.from_capture(result.files.capture, result.pc.mac)
    if measured is not None:
        lines.append(
            f"  server      {measured.server_ms:6.1f}ms script {measured.script_ms:.1f} ms "
            f"(reset included) + login {measured.login_ms:.1f} ms; "
            f"script to login {measured.script_to_login_ms:.1f} ms with the PC's part"
        )
    lines.extend(f"  note: {note}" for note in result.notes)
    lines.append(f"  files: {result.files.directory}")
    return "\n".join(lines)
