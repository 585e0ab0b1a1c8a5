"""Let go of a client's disk files while its writeback is re-cloned.

A LUN keeps its backing file open.  A same-version reset is a `zfs rollback`, which an
open file survives (docs/storage.md, "Reset and open files"), but a re-clone destroys
the dataset, and on zfs-fuse a dataset destroyed under an open file stays busy until
the daemon restarts.  So the storage operations that re-clone (reset after a version
change, apply, prune, the reconcile's replace) run inside `luns_closed` (through the
Closer that `closer()` builds): the client's LUNs are removed from its target, the
clone is replaced, and the same LUNs are put back at the same numbers.  The target, its
ACL and CHAP stay as they are, and the saved configuration needs no rewrite because the
result is what it was.
"""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import Callable, Iterator, Mapping
from typing import Any

from .iscsi import make_driver
from .iscsi_types import LUN_BASE, Action, IscsiError


@contextlib.contextmanager
def luns_closed(
    backend: str, target_iqn: str, name: str = "", options: Mapping[str, Any] | None = None
) -> Iterator[None]:
    # Where tgtd listens (control_port, netns); LIO's driver takes none of these.
    drv = make_driver(backend, **(options or {}))
    # Only this client's target: the others' login keys are not needed here.
    found, _ = drv.read(iqns=[target_iqn])
    have = found.get(target_iqn)
    if have is None or not have.luns:
        yield  # nothing exported: nothing holds the files
        return
    have = dataclasses.replace(have, name=name or have.name)
    base = LUN_BASE[backend]
    numbered = list(enumerate(have.luns))
    drv.apply(
        [Action("remove_lun", target_iqn, lun=base + i, backing=lun) for i, lun in numbered],
        {target_iqn: have},
        found,
    )
    try:
        yield
    finally:
        # Put back what was there even when the re-clone failed: the target must not
        # be left without its disks.
        found, _ = drv.read(iqns=[target_iqn])
        try:
            drv.apply(
                [Action("add_lun", target_iqn, lun=base + i, backing=lun) for i, lun in numbered],
                {target_iqn: have},
                found,
            )
        except IscsiError as exc:
            raise IscsiError(
                f"{target_iqn}: its LUNs were closed for a re-clone and could not be put "
                f"back ({exc}); converge the iscsi role (--tags iscsi) to restore them"
            ) from None


def closer(
    backend: str | None,
    clients: list[Mapping[str, Any]],
    options: Mapping[str, Any] | None = None,
) -> Callable[[str], contextlib.AbstractContextManager[None]] | None:
    """A Closer (what storage's operations take as `closer`) for these clients on this
    backend, or None when there is no backend."""
    if not backend:
        return None
    iqns = {c["name"]: c.get("target_iqn") for c in clients}

    def close(client: str) -> contextlib.AbstractContextManager[None]:
        iqn = iqns.get(client)
        if not iqn:
            return contextlib.nullcontext()
        return luns_closed(backend, iqn, client, options)

    return close
