"""Writing a file that something may read at any moment."""

from __future__ import annotations

import os
import tempfile
from typing import Any


def write_atomic(path: str, text: str, mode: int = 0o644) -> None:
    """Replace PATH with TEXT: a reader sees the old file or the new one, never half of
    one.  The file has MODE before any of TEXT is in it (secrets: 0o600)."""
    directory = os.path.dirname(path) or "."
    os.makedirs(directory, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".ggnet-", dir=directory)
    try:
        os.fchmod(fd, mode)
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


# statx(2): AT_FDCWD, AT_STATX_FORCE_SYNC, STATX_MTIME.
_AT_FDCWD = -100
_FORCE_SYNC = 0x2000
_STATX_MTIME = 0x40
_statx: Any = None


def _statx_call() -> Any:
    """libc's statx and the struct it fills, or False where there is none."""
    global _statx
    if _statx is None:
        try:
            import ctypes

            class Timestamp(ctypes.Structure):
                _fields_ = [
                    ("sec", ctypes.c_int64),
                    ("nsec", ctypes.c_uint32),
                    ("_r", ctypes.c_int32),
                ]

            class Statx(ctypes.Structure):
                # struct statx up to stx_mtime, then room for the rest (256 bytes in all).
                _fields_ = [
                    ("mask", ctypes.c_uint32), ("blksize", ctypes.c_uint32),
                    ("attributes", ctypes.c_uint64), ("nlink", ctypes.c_uint32),
                    ("uid", ctypes.c_uint32), ("gid", ctypes.c_uint32),
                    ("mode", ctypes.c_uint16), ("_spare0", ctypes.c_uint16),
                    ("ino", ctypes.c_uint64), ("size", ctypes.c_uint64),
                    ("blocks", ctypes.c_uint64), ("attributes_mask", ctypes.c_uint64),
                    ("atime", Timestamp), ("btime", Timestamp), ("ctime", Timestamp),
                    ("mtime", Timestamp), ("_rest", ctypes.c_uint64 * 32),
                ]  # fmt: skip

            libc = ctypes.CDLL(None, use_errno=True)
            _statx = (libc.statx, Statx, ctypes)
        except (OSError, AttributeError):
            _statx = False
    return _statx


def mtime_now(path: str) -> int:
    """PATH's mtime in whole seconds as its file system has it now, not as the kernel
    cached it.

    The kernel keeps a FUSE file's attributes for the daemon's attribute timeout
    (zfs-fuse: fuse-attr-timeout, 3600 s in Debian's /etc/zfs/zfsrc), and a `zfs
    rollback` that does not drop the whole machine's caches (Zfs.rollback with files)
    leaves them: os.stat then shows the mtime of a write the rollback discarded.
    statx(AT_STATX_FORCE_SYNC) asks the file system (and refreshes what is cached).
    Where libc has no statx, os.stat.  OSError as os.stat raises it."""
    found = _statx_call()
    if not found:
        return int(os.stat(path).st_mtime)
    statx, struct, ctypes = found
    buf = struct()
    if statx(_AT_FDCWD, os.fsencode(path), _FORCE_SYNC, _STATX_MTIME, ctypes.byref(buf)) != 0:
        err = ctypes.get_errno()
        if err == 38:  # ENOSYS: a kernel without statx
            return int(os.stat(path).st_mtime)
        raise OSError(err, os.strerror(err), path)
    return int(buf.mtime.sec)
