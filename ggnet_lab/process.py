"""Processes the lab started, found again by their PID files.

A PID file can outlive its process and the PID can be reused by something else, so a
PID only counts as ours while its command line still names the PID file it wrote.
"""

from __future__ import annotations

import contextlib
import os
import signal
import time
from pathlib import Path


def read_pid(pidfile: Path) -> int | None:
    try:
        return int(pidfile.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None


def cmdline(pid: int) -> list[str]:
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return []
    return [part.decode(errors="replace") for part in raw.split(b"\0") if part]


def is_zombie(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return True
    return stat.rpartition(")")[2].split()[0] == "Z"


def owned_pid(pidfile: Path, marker: str | None = None) -> int | None:
    """The live PID recorded in PIDFILE if its command line contains MARKER (default:
    the PID file's own path), else None."""
    pid = read_pid(pidfile)
    if pid is None or is_zombie(pid):
        return None
    argv = cmdline(pid)
    wanted = marker or str(pidfile)
    if not any(wanted in arg for arg in argv):
        return None
    return pid


def wait_gone(pid: int, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if is_zombie(pid):
            _reap(pid)
            return True
        time.sleep(0.2)
    return is_zombie(pid)


def _reap(pid: int) -> None:
    with contextlib.suppress(ChildProcessError):
        os.waitpid(pid, os.WNOHANG)


def stop(pidfile: Path, marker: str | None = None, grace: float = 5.0) -> bool:
    """Stop the process of PIDFILE (SIGTERM, then SIGKILL after GRACE seconds) and
    remove the PID file.  True if a process was stopped."""
    pid = owned_pid(pidfile, marker)
    stopped = False
    if pid is not None:
        for sig, wait in ((signal.SIGTERM, grace), (signal.SIGKILL, 5.0)):
            try:
                os.kill(pid, sig)
            except ProcessLookupError:
                break
            if wait_gone(pid, wait):
                break
        stopped = True
    pidfile.unlink(missing_ok=True)
    return stopped
