"""The pool's size, cached: the boot path learns the pool's space without a second
`zfs get` (see pool_space)."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterable
from typing import Any

from ..zfs import Zfs

_POOL_TOTAL: dict[str, tuple[float, int]] = {}
POOL_TOTAL_TTL = 60.0


def pool_total_stale(pool: str) -> bool:
    cached = _POOL_TOTAL.get(pool)
    return cached is None or time.monotonic() - cached[0] > POOL_TOTAL_TTL


class PoolRead:
    """`zfs get available,used <pool>` in a thread, started before the boot path's own
    read and joined after it: the two are independent reads, and zfs-fuse's cost is
    mostly the process start and the socket round trips, not the daemon's CPU."""

    def __init__(self, zfs: Zfs, pool: str):
        self._out: list[Any] = []
        self._thread = threading.Thread(target=self._run, args=(zfs, pool), daemon=True)
        self._thread.start()

    def _run(self, zfs: Zfs, pool: str) -> None:
        try:
            self._out.append(zfs.get([pool], ["available", "used"]).get(pool, {}))
        except BaseException as e:  # re-raised in the caller's thread
            self._out.append(e)

    def result(self) -> dict[str, str | None]:
        self._thread.join()
        if isinstance(self._out[0], BaseException):
            raise self._out[0]
        return self._out[0]


def pool_space(
    zfs: Zfs, pool: str, raw: dict, names: Iterable[str], pool_read: PoolRead | None = None
) -> dict[str, str | None]:
    """The pool's used/available without a second `zfs get` on the hot path.

    The writebacks root has no quota, so its `available` is the pool's; the pool's size
    (for a percentage reserve) changes rarely and is cached for a minute.  When it is
    stale, `pool_read` (started beside the caller's read) or a read now refreshes it."""
    root = next((n for n in names if n.startswith(f"{pool}/") and n in raw), None)
    cached = _POOL_TOTAL.get(pool)
    if root is None or pool_read is not None or pool_total_stale(pool):
        props = pool_read.result() if pool_read is not None else None
        if props is None:
            props = zfs.get([pool], ["available", "used"]).get(pool, {})
        if props:
            total = int(props.get("available") or 0) + int(props.get("used") or 0)
            _POOL_TOTAL[pool] = (time.monotonic(), total)
        return props
    assert cached is not None
    available = int(raw[root].get("available") or 0)
    return {"available": str(available), "used": str(cached[1] - available)}
