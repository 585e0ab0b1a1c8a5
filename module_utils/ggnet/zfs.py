"""Running zfs and zpool, and reading their state in one call.

Works with OpenZFS and zfs-fuse alike: state is read with `zfs get -Hp` (zfs-fuse has
no `list -p`, no JSON, no `written` or `clones`), always under LC_ALL=C so numbers and
messages parse the same everywhere.  The runner is injectable so that command lines for
what cannot run here (zvols need OpenZFS) are still testable.
"""

from __future__ import annotations

import os
import subprocess
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from .host_os import c_locale_env

ZFS = os.environ.get("GGNET_ZFS", "zfs")
ZPOOL = os.environ.get("GGNET_ZPOOL", "zpool")
UNSHARE = os.environ.get("GGNET_UNSHARE", "unshare")
# zfs-fuse answers "dataset is busy" for a moment after a mount; so does OpenZFS while
# udev still holds a new zvol.  A handful of short retries outlasts both.
BUSY_RETRIES = 20
BUSY_PAUSE = 0.005

# zfs-fuse's `zfs rollback` ends with `echo 3 > /proc/sys/vm/drop_caches`: the kernel
# keeps pages of files on a FUSE mount and the daemon cannot invalidate them, so the
# tool empties the page cache (and the dentry and inode caches) of the whole machine.
# Measured here: 10-300 ms on its own depending on what is cached, and every program
# started next (the next `zfs`) reads its binary and libraries from disk again.  A
# rollback that names the files whose pages matter runs instead in a private mount
# namespace where that write goes to /dev/null, then drops only those files' pages
# (drop_pages).  Exit 125: the namespace could not be set up, nothing was run.
DROP_CACHES = "/proc/sys/vm/drop_caches"
_NO_DROP = f'mount --bind /dev/null {DROP_CACHES} 2>/dev/null || exit 125; exec "$@"'
_NO_NAMESPACE_RCS = (125, 126, 127)
# Cleared for the rest of the process once the namespace cannot be made (no
# CAP_SYS_ADMIN, no unshare): rollbacks then drop the whole cache as zfs-fuse does.
_namespace_works = [True]


def is_zfs_fuse() -> bool:
    """zfs-fuse's tools talk to its daemon's socket; OpenZFS (kernel) has /dev/zfs."""
    return not os.path.exists("/dev/zfs")


def drop_pages(paths: Iterable[str]) -> None:
    """Drop the kernel's cached pages of these files (what drop_caches does to every file).

    posix_fadvise(DONTNEED) invalidates the file's clean, unmapped pages; a FUSE file
    has no dirty ones (writes go through to the daemon).  A descriptor opened before
    (tgtd's LUN) and every later open then read from the daemon.  If a file cannot be
    opened, the whole cache is dropped instead, as zfs-fuse itself would have."""
    try:
        for path in paths:
            fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
            try:
                os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
            finally:
                os.close(fd)
    except OSError:
        with open(DROP_CACHES, "w") as f:
            f.write("3")


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
    rollback` that does not drop the whole machine's caches (Zfs.rollback with files:
    drop_pages drops their pages, not their attributes) leaves them: os.stat then shows
    the mtime of a write the rollback discarded.  statx(AT_STATX_FORCE_SYNC) asks the
    file system (and refreshes what is cached).  Where libc has no statx, os.stat.
    OSError as os.stat raises it."""
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


class ZfsError(RuntimeError):
    def __init__(self, argv: Sequence[str], rc: int, stderr: str):
        self.argv = list(argv)
        self.rc = rc
        self.stderr = stderr.strip()
        super().__init__(f"`{' '.join(self.argv)}` failed (rc={rc}): {self.stderr}")

    @property
    def busy(self) -> bool:
        return "busy" in self.stderr


Runner = Callable[[Sequence[str], str | None], tuple[int, str, str]]


def subprocess_runner(argv: Sequence[str], stdin: str | None = None) -> tuple[int, str, str]:
    try:
        proc = subprocess.run(
            list(argv), input=stdin, capture_output=True, text=True, env=c_locale_env(), check=False
        )
    except FileNotFoundError:
        return 127, "", f"{argv[0]}: command not found (is ZFS installed?)"
    return proc.returncode, proc.stdout, proc.stderr


class _NoNamespace(Exception):
    """The mount namespace of a no-drop rollback could not be made."""


@dataclass
class Zfs:
    """zfs/zpool commands; `runner` does the running (recorded in tests)."""

    runner: Runner = subprocess_runner
    log: list[list[str]] = field(default_factory=list)
    # None: zfs-fuse if there is no /dev/zfs (see is_zfs_fuse); tests set it.
    fuse: bool | None = None

    def is_fuse(self) -> bool:
        if self.fuse is None:
            self.fuse = is_zfs_fuse()
        return self.fuse

    def run(
        self,
        argv: Sequence[str],
        stdin: str | None = None,
        busy_retry: bool = False,
        wrap: Sequence[str] = (),
    ) -> str:
        """Run argv (behind `wrap`, the no-drop namespace: _NoNamespace when it cannot
        be made); busy_retry retries while zfs-fuse says the dataset is busy."""
        attempts = BUSY_RETRIES if busy_retry else 1
        for attempt in range(attempts):
            rc, out, err = self.runner([*wrap, *argv], stdin)
            if wrap and (rc in _NO_NAMESPACE_RCS or (rc != 0 and err.startswith("unshare:"))):
                raise _NoNamespace()
            self.log.append(list(argv))
            if rc == 0:
                return out
            error = ZfsError(argv, rc, err)
            if not (error.busy and attempt + 1 < attempts):
                raise error
            time.sleep(BUSY_PAUSE)
        raise AssertionError("unreachable")

    def zfs(self, *args: str, busy_retry: bool = False) -> str:
        return self.run([ZFS, *args], busy_retry=busy_retry)

    # -- reading -------------------------------------------------------------------

    def get(
        self,
        names: Iterable[str],
        props: Iterable[str],
        recursive: bool = False,
        types: str | None = None,
        depth: int | None = None,
    ) -> dict[str, dict[str, str | None]]:
        """{dataset: {property: value}}; '-' (unset/not applicable) becomes None.

        `depth` limits the recursion (`-d N`; a snapshot is one level below its
        dataset).  `types` (`-t`) is OpenZFS only: zfs-fuse's `get` has no `-t`.
        Datasets that do not exist are left out rather than failing the whole call."""
        names = list(names)
        if not names:
            return {}
        argv = [ZFS, "get", "-Hp", "-o", "name,property,value"]
        if depth is not None:
            argv += ["-d", str(depth)]
        elif recursive:
            argv.append("-r")
        if types:
            argv += ["-t", types]
        argv += [",".join(props), *names]
        self.log.append(argv)
        rc, out, err = self.runner(argv, None)
        if rc != 0 and "does not exist" not in err:
            raise ZfsError(argv, rc, err)
        return parse_get(out)

    def exists(self, name: str) -> bool:
        return bool(self.get([name], ["type"]))

    # -- changing ------------------------------------------------------------------

    def create(
        self,
        name: str,
        props: Mapping[str, str] | None = None,
        volsize: int | None = None,
        parents: bool = False,
    ) -> None:
        argv = ["create"]
        if parents:
            argv.append("-p")
        if volsize is not None:
            # Sparse: a golden image is mostly never written; refreservation would
            # reserve every image's full size up front.
            argv += ["-s", "-V", str(volsize)]
        argv += [*_opts(props), name]
        self.zfs(*argv)

    def snapshot(self, name: str, props: Mapping[str, str] | None = None) -> None:
        self.zfs("snapshot", *_opts(props), name)

    def clone(self, snapshot: str, name: str, props: Mapping[str, str] | None = None) -> None:
        self.zfs("clone", "-p", *_opts(props), snapshot, name, busy_retry=True)

    def set(self, name: str, props: Mapping[str, str]) -> None:
        # Some zfs versions take one property per `set`; one call each is portable.
        for key, value in props.items():
            self.zfs("set", f"{key}={value}", name)

    def inherit(self, name: str, prop: str) -> None:
        self.zfs("inherit", prop, name)

    def destroy(self, name: str, recursive: bool = False, unmount_first: bool = False) -> None:
        if unmount_first:
            # An explicit unmount is cheaper than zfs-fuse's first "busy" refusal.
            self.runner([ZFS, "umount", "-f", name], None)
        argv = ["destroy", "-f"]
        if recursive:
            argv.append("-r")
        self.zfs(*argv, name, busy_retry=True)

    def rollback(
        self, snapshot: str, recursive: bool = False, files: Sequence[str] | None = None
    ) -> None:
        """Roll a dataset back to `snapshot`.

        -r (`recursive`): also destroy snapshots newer than `snapshot` (plain rollback
        refuses).  `files`: on zfs-fuse, the paths of the files on the dataset whose
        cached pages must go (a writeback's disk file): only theirs are dropped instead
        of the whole machine's page cache (see _NO_DROP).  Without them, or where the
        mount namespace cannot be made, zfs-fuse's own machine-wide drop runs."""
        argv = ["rollback", "-r", snapshot] if recursive else ["rollback", snapshot]
        if files is not None and self.is_fuse() and _namespace_works[0]:
            if self._without_drop([ZFS, *argv]):
                drop_pages(files)
                return
            _namespace_works[0] = False
        self.zfs(*argv, busy_retry=True)

    def _without_drop(self, argv: list[str]) -> bool:
        """Run `argv` with /proc/sys/vm/drop_caches bound to /dev/null; False (nothing
        run) when the namespace cannot be made.  Busy retries as in run()."""
        wrapped = [UNSHARE, "--mount", "--propagation", "private", "sh", "-c", _NO_DROP, "sh"]
        try:
            self.run(argv, busy_retry=True, wrap=wrapped)
        except _NoNamespace:
            return False
        return True

    def zpool_create(self, pool: str, vdevs: Sequence[str], mountpoint: str | None) -> None:
        argv = [ZPOOL, "create"]
        if mountpoint:
            argv += ["-m", mountpoint]
        self.run([*argv, pool, *vdevs])

    def pool_exists(self, pool: str) -> bool:
        rc, _, _ = self.runner([ZPOOL, "list", "-H", "-o", "name", pool], None)
        return rc == 0

    def pool_health(self, pool: str) -> str:
        """ONLINE, DEGRADED, SUSPENDED, UNAVAIL, ... of an imported pool."""
        return self.run([ZPOOL, "list", "-H", "-o", "health", pool]).strip()

    def importable(self, pool: str, vdevs: Sequence[str]) -> bool:
        """`pool` is not imported but `zpool import` finds it on `vdevs` (the devices of
        an exported pool, or of one whose import failed at boot)."""
        argv = [ZPOOL, "import"]
        # Files are searched only where -d points; devices in zpool's own search path.
        dirs = sorted({os.path.dirname(v) for v in vdevs if os.path.isfile(v)})
        if dirs:
            for directory in [*dirs, "/dev"]:
                argv += ["-d", directory]
        _, out, _ = self.runner(argv, None)  # rc 1 also means "none to import"
        return any(line.split() == ["pool:", pool] for line in out.splitlines())


def _opts(props: Mapping[str, str] | None) -> list[str]:
    out: list[str] = []
    for key, value in (props or {}).items():
        out += ["-o", f"{key}={value}"]
    return out


def parse_get(text: str) -> dict[str, dict[str, str | None]]:
    state: dict[str, dict[str, str | None]] = {}
    for line in text.splitlines():
        if not line:
            continue
        parts = line.split("\t")
        if len(parts) != 3:
            continue
        name, prop, value = parts
        state.setdefault(name, {})[prop] = None if value == "-" else value
    return state
