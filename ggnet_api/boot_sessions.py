"""When a booted machine's session ends, for ggnet_boot_session_duration_seconds.

A session is an ok boot's: from the boot's request (boots.started) to whichever comes
first of
- the machine's next boot (any result): a trigger of the boots table sets the previous
  boot's session_end to the new boot's start (db/stats.py), whoever inserts it;
- its iSCSI target seen without a logged-in initiator by two collections in a row:
  the session ends at the first of them (boots.session_gone_at, kept in the database
  so an API restart between the two neither loses nor moves it).  A target back
  with an initiator in between clears it.  Collections within HANDOVER seconds of the
  boot's last stage are not counted: iPXE's login gives way to the OS's own, and a
  collection can fall between the two.
session_end is set once (only while it is NULL) and the stats triggers count it as it
is set, so every finished session is in the histogram once, across restarts.  A
session that ends while the API is down ends at the first collection after the API
is back (its target then gone), or at the next boot if that comes first.
"""

from __future__ import annotations

import logging
from typing import Any

log = logging.getLogger(__name__)

# Seconds after a boot's last stage (sanboot, os) before a target without an initiator
# counts: the firmware's iSCSI session is replaced by the OS's.
HANDOVER = 60.0


def observe(db: Any, snap: Any, sample: Any) -> list[str]:
    """Follow the open sessions with one collector sample; returns the clients whose
    sessions it ended (their targets gone without an initiator)."""
    if sample.sessions is None or not sample.at:
        return []  # the backend's sessions could not be read: nothing is known
    active = {iqn for iqn, initiators in sample.sessions.items() if initiators}
    gone: list[tuple[float, int]] = []
    back: list[int] = []
    ended: list[int] = []
    names: list[str] = []
    for row in db.open_sessions():
        name = snap.by_mac.get(row["mac"])
        client = snap.clients.get(name) if name is not None else None
        if client is None:
            continue  # not an inventory machine (any more): its next boot ends it
        if client.get("target_iqn") in active:
            if row["session_gone_at"] is not None:
                back.append(row["id"])
        elif sample.at < (row["stage_at"] or 0.0) + HANDOVER:
            continue
        elif row["session_gone_at"] is None:
            gone.append((sample.at, row["id"]))
        elif sample.at > row["session_gone_at"]:
            ended.append(row["id"])
            names.append(name)
    if gone or back or ended:
        db.update_sessions(gone, back, ended)
    return names
