"""Who is using the lab right now.

The lab is one per machine, and several pytest sessions (or a session and a molecule
run) may share its VM.  Each user holds a lease, a file named after its PID; the last
one out takes the lab down, and `ggnet lab down` refuses while others hold leases.
"""

from __future__ import annotations

import os
from pathlib import Path

from . import paths, process


def _dir() -> Path:
    return paths.lab_dir() / "leases"


def take(pid: int | None = None) -> Path:
    lease = _dir() / str(pid or os.getpid())
    lease.parent.mkdir(parents=True, exist_ok=True)
    lease.write_text(" ".join(process.cmdline(int(lease.name)))[:300] + "\n")
    return lease


def release(pid: int | None = None) -> None:
    (_dir() / str(pid or os.getpid())).unlink(missing_ok=True)


def holders(exclude_self: bool = True) -> dict[int, str]:
    """Live lease holders (PID -> command line); leases of dead processes are dropped."""
    found: dict[int, str] = {}
    if not _dir().is_dir():
        return found
    for lease in _dir().iterdir():
        if not lease.name.isdigit():
            continue
        pid = int(lease.name)
        if exclude_self and pid == os.getpid():
            continue
        if process.is_zombie(pid):  # also true for a PID that no longer exists
            lease.unlink(missing_ok=True)
            continue
        found[pid] = lease.read_text().strip()
    return found
