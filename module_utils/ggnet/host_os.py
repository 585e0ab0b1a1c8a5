"""What the engine asks of the operating system the same way everywhere: the one
environment a tool runs in when ggnet reads its output, and the one block-device test.

A leaf: zfs, preflight, replication, iSCSI, storage, the inventory's git and the
Ansible modules import it; it imports nothing of ggnet.
"""

from __future__ import annotations

import os
import stat
import time
from collections.abc import Mapping
from types import MappingProxyType

# Every tool whose output ggnet parses runs in the C locale: numbers, dates and
# messages as the parsers expect them, whatever the server's language.  LC_ALL outranks
# every LC_* and LANG, and gettext ignores LANGUAGE under it; LANG too for the tools
# that read only LANG.  The overlay alone is what an Ansible module sets
# (run_command_environ_update) and what a remote `env` is given.
C_LOCALE: Mapping[str, str] = MappingProxyType({"LC_ALL": "C", "LANG": "C"})


def c_locale_env(extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """This process's environment as it is now, in the C locale, with EXTRA on top."""
    return {**os.environ, **C_LOCALE, **(extra or {})}


def is_block_device(where: str | int) -> bool:
    """Whether WHERE (a path, or an open file descriptor) is a block device (a zvol, a
    disk); False for anything else, a path that does not exist included."""
    try:
        return stat.S_ISBLK(os.stat(where).st_mode)
    except OSError:
        return False


# How long a new zvol's device may take to appear (udev, on a busy server).
BLOCK_DEVICE_WAIT = 30.0


def wait_block_device(path: str, timeout: float = BLOCK_DEVICE_WAIT) -> bool:
    """Whether PATH is a block device within TIMEOUT seconds.  A zvol's /dev/zvol link
    is made by udev after `zfs clone` returns (seconds later on a busy server)."""
    deadline = time.monotonic() + timeout
    while not is_block_device(path):
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.1)
    return True
