"""The boot-server VM `boot1`: qemu under TCG on the lab bridge, reached over SSH
through the namespace.

Always TCG: /dev/kvm on this machine kind is nested PVM and a Debian kernel hangs on it
(see LAB.md), so it is never probed.  Each start boots a fresh qcow2 overlay of the
cached image and a fresh blank pool disk, so a run never inherits the last one's state.
"""

from __future__ import annotations

import base64
import contextlib
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from ggnet.model import parse_size

from . import netns, paths, process
from .image import Image

NAME = "boot1"
ADDRESS = "10.213.0.10"
# The lab inventory keeps the API role's default port (ggnet_api_port).
API_URL = f"http://{ADDRESS}:8080"
MAC = "52:54:00:21:30:10"
MEMORY_MIB = 2048
ARC_MAX_MIB = 256
POOL_DISK_SIZE = "4G"
# The install medium of the lab: bootprog's hybrid BIOS/UEFI disk, attached read-only.
# inventory/lab imports it as the lab-os image (source: MEDIA_DEVICE), so every lab PC
# boots that image's code and its own writeback holds what the program writes.
MEDIA_IDENTITY = "lab-os"
MEDIA_SIZE = "64M"
MEDIA_SERIAL = "ggnet-media"
MEDIA_DEVICE = f"/dev/disk/by-id/virtio-{MEDIA_SERIAL}"
SSH_TIMEOUT = 300.0


class VMError(RuntimeError):
    pass


@dataclass(frozen=True)
class VMFiles:
    directory: Path

    @property
    def overlay(self) -> Path:
        return self.directory / "root.qcow2"

    @property
    def pool_disk(self) -> Path:
        return self.directory / "pool.img"

    @property
    def media(self) -> Path:
        return self.directory / "media.img"

    @property
    def serial(self) -> Path:
        return self.directory / "serial.log"

    @property
    def pidfile(self) -> Path:
        return self.directory / "qemu.pid"

    @property
    def monitor(self) -> Path:
        return self.directory / "monitor.sock"


def files() -> VMFiles:
    return VMFiles(paths.vm_dir())


def ensure_ssh_key() -> Path:
    key = paths.ssh_key()
    if not key.exists():
        key.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        subprocess.run(
            ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "ggnet-lab", "-f", str(key)],
            check=True,
        )
    return key


def kernel_cmdline(public_key: str) -> str:
    # The key travels base64-encoded: the command line splits words on spaces.
    encoded = base64.b64encode(public_key.strip().encode()).decode()
    # OpenZFS's ARC takes half the RAM by default; the API, Prometheus and the tests
    # need it more in a 2 GiB VM.  modprobe reads `module.option=` from the command line.
    arc = f"zfs.zfs_arc_max={ARC_MAX_MIB << 20}"
    return f"root=/dev/vda rw console=ttyS0,115200 net.ifnames=0 {arc} ggnet.sshkey={encoded}"


def qemu_argv(image: Image, vm: VMFiles, tap: str, public_key: str) -> list[str]:
    return [
        "qemu-system-x86_64",
        "-name", NAME,
        "-accel", "tcg,thread=multi",
        "-smp", "2",
        "-m", str(MEMORY_MIB),
        "-nodefaults",
        "-display", "none",
        "-kernel", str(image.kernel),
        "-initrd", str(image.initrd),
        "-append", kernel_cmdline(public_key),
        "-drive", f"file={vm.overlay},if=virtio,format=qcow2,cache=unsafe",
        "-drive", f"file={vm.pool_disk},if=virtio,format=raw,cache=unsafe",
        "-drive", f"file={vm.media},if=none,id=media,format=raw,readonly=on",
        # The last PCI slot: the kernel names disks in slot order, and root=/dev/vda
        # and the pool's /dev/vdb must keep their names.
        "-device", f"virtio-blk-pci,drive=media,serial={MEDIA_SERIAL},addr=0x1f",
        "-netdev", f"tap,id=lab,ifname={tap},script=no,downscript=no",
        "-device", f"virtio-net-pci,netdev=lab,mac={MAC}",
        "-device", "virtio-rng-pci",
        "-serial", f"file:{vm.serial}",
        "-monitor", f"unix:{vm.monitor},server=on,wait=off",
        "-pidfile", str(vm.pidfile),
        "-daemonize",
    ]  # fmt: skip


def ssh_options(connect_timeout: int = 5) -> dict[str, str]:
    """How to reach the VM as Ansible does: through the namespace, with the lab's key."""
    return {
        "User": "root",
        "IdentityFile": str(paths.ssh_key()),
        "ProxyCommand": f"nsenter --net={paths.NETNS_PATH} socat - TCP:%h:%p",
        "StrictHostKeyChecking": "no",
        "UserKnownHostsFile": "/dev/null",
        "LogLevel": "ERROR",
        "BatchMode": "yes",
        "ConnectTimeout": str(connect_timeout),
    }


def ssh_argv(*command: str, connect_timeout: int = 5) -> list[str]:
    argv = ["ssh"]
    for key, value in ssh_options(connect_timeout).items():
        argv += ["-o", f"{key}={value}"]
    return [*argv, ADDRESS, *command]


def write_ssh_config() -> Path:
    """An ssh_config for tools that read no Ansible inventory templating (testinfra)."""
    path = paths.ssh_key().parent / "config"
    lines = [f"Host {NAME} {ADDRESS}", f"    HostName {ADDRESS}"]
    lines += [f"    {key} {value}" for key, value in ssh_options().items()]
    path.write_text("\n".join(lines) + "\n")
    return path


def ssh(*command: str, timeout: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run(ssh_argv(*command), capture_output=True, text=True, timeout=timeout)


def pid() -> int | None:
    return process.owned_pid(files().pidfile)


def ssh_ok() -> bool:
    try:
        return ssh("true", timeout=20).returncode == 0
    except subprocess.TimeoutExpired:
        return False


def start(image: Image, progress: Callable[[str], None] = print) -> int:
    """Boot the VM (if it does not run yet) and return its PID."""
    running = pid()
    if running is not None:
        progress(f"vm: {NAME} already runs (pid {running})")
        return running
    if shutil.which("qemu-system-x86_64") is None:
        raise VMError("qemu-system-x86_64 is not installed: run `make deps`")
    vm = files()
    vm.directory.mkdir(parents=True, exist_ok=True)
    key = ensure_ssh_key()
    for stale in (vm.overlay, vm.pool_disk, vm.media, vm.serial, vm.monitor):
        stale.unlink(missing_ok=True)
    build_media(vm.media)
    subprocess.run(
        ["qemu-img", "create", "-q", "-f", "qcow2", "-F", "raw", "-b", str(image.root),
         str(vm.overlay)],
        check=True,
    )  # fmt: skip
    # Sparse: the ZFS pool disk costs nothing until the pool writes to it.
    with vm.pool_disk.open("wb") as disk:
        disk.truncate(parse_size(POOL_DISK_SIZE))
    tap = netns.add_tap(NAME)
    argv = qemu_argv(image, vm, tap, Path(f"{key}.pub").read_text())
    proc = subprocess.run(netns.nsenter(*argv), capture_output=True, text=True)
    if proc.returncode != 0:
        raise VMError(
            f"qemu did not start {NAME}: {proc.stderr.strip()}\n"
            f"Check the image in {image.directory} (rebuild: python -m ggnet_lab.image --rebuild)"
        )
    started = pid()
    if started is None:
        raise VMError(f"qemu started but left no live PID in {vm.pidfile}; see {vm.serial}")
    progress(f"vm: {NAME} booting under TCG (pid {started}), console in {vm.serial}")
    return started


def build_media(out: Path) -> Path:
    """bootprog's disk for the lab-os image (its objects are cached, so this is quick)."""
    script = paths.repo_root() / "bootprog" / "build.py"
    proc = subprocess.run(
        [sys.executable, str(script), str(out), "--id", MEDIA_IDENTITY, "--size", MEDIA_SIZE],
        capture_output=True,
        text=True,
    )
    if proc.returncode != 0:
        raise VMError(
            f"building the lab's boot disk failed: {proc.stderr.strip()}\n"
            "Install the build tools with `make deps`, then `ggnet lab up` again"
        )
    return out


def last_console_line(vm: VMFiles | None = None) -> str:
    vm = vm or files()
    try:
        with vm.serial.open("rb") as log:
            log.seek(0, 2)
            log.seek(max(0, log.tell() - 2048))
            lines = [ln.strip() for ln in log.read().decode(errors="replace").splitlines()]
    except OSError:
        return ""
    lines = [ln for ln in lines if ln]
    return lines[-1][:100] if lines else ""


def wait_for_ssh(timeout: float = SSH_TIMEOUT, progress: Callable[[str], None] = print) -> float:
    """Seconds until SSH answered; raises VMError after TIMEOUT or if qemu died."""
    started = time.monotonic()
    last_report = started
    while True:
        if pid() is None:
            raise VMError(f"{NAME} stopped while booting; its console is in {files().serial}")
        if ssh_ok():
            waited = time.monotonic() - started
            progress(f"vm: ssh answers after {waited:.0f}s")
            return waited
        now = time.monotonic()
        if now - started > timeout:
            raise VMError(
                f"{NAME} did not answer ssh within {timeout:.0f}s; its console is in "
                f"{files().serial} (last line: {last_console_line()!r})"
            )
        if now - last_report >= 10:
            progress(f"vm: [{now - started:4.0f}s] waiting for ssh; console: {last_console_line()}")
            last_report = now
        time.sleep(2)


def verify_lio() -> None:
    """LIO must load in the VM: it is why the boot server is a VM at all."""
    proc = ssh(
        "modprobe target_core_mod && modprobe iscsi_target_mod && "
        "test -d /sys/kernel/config/target && echo lio-ok",
        timeout=120,
    )
    if proc.returncode != 0 or "lio-ok" not in proc.stdout:
        raise VMError(
            f"LIO does not load in {NAME}: {proc.stderr.strip() or proc.stdout.strip()}; "
            f"the image's kernel needs target_core_mod and iscsi_target_mod"
        )


def stop(progress: Callable[[str], None] = print, grace: float = 60.0) -> bool:
    """Power the VM off over SSH, then by PID if it does not go in GRACE seconds."""
    vm = files()
    running = pid()
    if running is None:
        vm.pidfile.unlink(missing_ok=True)
        return False
    progress(f"vm: powering {NAME} off (pid {running})")
    with contextlib.suppress(subprocess.TimeoutExpired):
        ssh("systemctl poweroff --no-block", timeout=15)
    if not process.wait_gone(running, grace):
        progress(f"vm: {NAME} still runs after {grace:.0f}s, stopping it by pid")
    process.stop(vm.pidfile)
    netns.remove_tap(NAME)
    return True
