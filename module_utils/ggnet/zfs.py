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

ZFS = os.environ.get("GGNET_ZFS", "zfs")
ZPOOL = os.environ.get("GGNET_ZPOOL", "zpool")
_ENV = {**os.environ, "LC_ALL": "C", "LANG": "C"}
# zfs-fuse answers "dataset is busy" for a moment after a mount; so does OpenZFS while
# udev still holds a new zvol.  A handful of short retries outlasts both.
BUSY_RETRIES = 20
BUSY_PAUSE = 0.005


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
            list(argv), input=stdin, capture_output=True, text=True, env=_ENV, check=False
        )
    except FileNotFoundError:
        return 127, "", f"{argv[0]}: command not found (is ZFS installed?)"
    return proc.returncode, proc.stdout, proc.stderr


@dataclass
class Zfs:
    """zfs/zpool commands; `runner` does the running (recorded in tests)."""

    runner: Runner = subprocess_runner
    log: list[list[str]] = field(default_factory=list)

    def run(self, argv: Sequence[str], stdin: str | None = None, busy_retry: bool = False) -> str:
        attempts = BUSY_RETRIES if busy_retry else 1
        for attempt in range(attempts):
            self.log.append(list(argv))
            rc, out, err = self.runner(argv, stdin)
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

    def rollback(self, snapshot: str, recursive: bool = False) -> None:
        # -r: also destroy snapshots newer than `snapshot` (plain rollback refuses).
        argv = ["rollback", "-r", snapshot] if recursive else ["rollback", snapshot]
        self.zfs(*argv, busy_retry=True)

    def zpool_create(self, pool: str, vdevs: Sequence[str], mountpoint: str | None) -> None:
        argv = [ZPOOL, "create"]
        if mountpoint:
            argv += ["-m", mountpoint]
        self.run([*argv, pool, *vdevs])

    def pool_exists(self, pool: str) -> bool:
        rc, _, _ = self.runner([ZPOOL, "list", "-H", "-o", "name", pool], None)
        return rc == 0


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
