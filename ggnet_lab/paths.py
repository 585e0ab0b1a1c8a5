"""Where the lab keeps its files.  Every other lab module asks here, so one environment
variable moves them all (tests point GGNET_LAB_DIR at a temporary directory)."""

from __future__ import annotations

import contextlib
import fcntl
import os
from collections.abc import Iterator
from pathlib import Path

NETNS = "ggnet-lab"
NETNS_PATH = Path("/var/run/netns") / NETNS


def lab_dir() -> Path:
    return Path(os.environ.get("GGNET_LAB_DIR") or "/var/lib/ggnet-lab")


def cache_dir() -> Path:
    return Path(os.environ.get("GGNET_LAB_CACHE") or "/var/cache/ggnet-lab")


def ssh_key() -> Path:
    return lab_dir() / "ssh" / "id_ed25519"


def vm_dir() -> Path:
    return lab_dir() / "vm"


def pc_dir(name: str) -> Path:
    return lab_dir() / "pcs" / name


def repo_root() -> Path:
    """The checkout this package runs from (inventory/lab and playbooks/ live there)."""
    return Path(__file__).resolve().parent.parent


@contextlib.contextmanager
def locked() -> Iterator[None]:
    """One `lab up`/`lab down` at a time on this machine: the namespace name is fixed,
    so two at once (a test run and a molecule run) would tear each other's lab apart."""
    lab_dir().mkdir(parents=True, exist_ok=True)
    with (lab_dir() / "lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield
