"""Images, versions and per-client writebacks on ZFS: read what exists, plan, apply.

Every operation reads the pool's state (state), plans a list of Actions, and unless in
check mode applies them; bad input raises StorageError before anything changes.
Semantics an operator can rely on:
- An image's booted version (ggnet.rollout.served_version): ggnet_images.<image>.version
  if set; else, for a PC in a canary set, the version in canary; else the promoted
  version an operation picked last (promote / rollback record it in the image's
  ggnet:current property), else the newest promoted version.  A version's state is
  its ggnet:state property; versions without one count as promoted.
- A writeback is only ever re-cloned when its client is known to be off (no iSCSI
  session) and not in maintenance; otherwise the new version waits for its next reset.
- Maintenance (ggnet_keep_writeback, or `machine.yml -e op=keep`) keeps a writeback
  across reboots; destroying or resetting it needs force.
This face only hands on the names used from outside the package.
"""

# ruff: noqa: F401 (every name imported here is for callers)
from __future__ import annotations

from .client_ops import apply_writeback, read_for_reset, reset, set_keep
from .disks import BASE_SNAPSHOT, base_snapshot
from .images import converge_images, snapshot_version
from .properties import P_DISKS, P_STATE, P_STATE_AT
from .results import Action, CapacityError, Result, StorageError
from .state import NO_WRITEBACKS, READ_PROPS, SHALLOW_PROPS, STATE_PROPS, read_state
from .versions import delete_version, prune, rollback, set_state
from .writebacks import converge_writebacks
