"""Per-client iSCSI traffic, read by the collector thread (never per scrape).

LIO keeps byte counters per session under configfs:
  <root>/<target_iqn>/tpgt_N/acls/<initiator_iqn>/fabric_statistics/iscsi_sess_stats/
      txdata_octs   bytes sent to the initiator (the PC's reads)
      rxdata_octs   bytes received from it (the PC's writes)
They start again at 0 with every new session (each reboot of the PC), so
TrafficTotals turns them into counters that only grow for the life of the API process:
a value lower than the last one seen is a new session and counts from 0.

tgt has no such counters (`tgtadm --op show --mode target` prints none), so with the
tgt backend the traffic series are absent.
"""

from __future__ import annotations

import os
from pathlib import Path

LIO_ROOT = "/sys/kernel/config/target/iscsi"
_STATS = ("fabric_statistics", "iscsi_sess_stats")


def read_counter(path: Path) -> int | None:
    """A configfs counter file's value, or None when unreadable or empty."""
    try:
        text = path.read_text().strip()
    except OSError:
        return None
    # Without a session the kernel shows an empty file.
    return int(text) if text.isdigit() else None


def read_lio_traffic(root: str | os.PathLike[str] = LIO_ROOT) -> dict[str, tuple[int, int]]:
    """{target_iqn: (bytes read by initiators, bytes written)} of the current sessions.

    Raises FileNotFoundError when root does not exist (LIO not loaded)."""
    base = Path(root)
    out: dict[str, tuple[int, int]] = {}
    for target in sorted(os.listdir(base)):
        tdir = base / target
        if not target.startswith("iqn.") or not tdir.is_dir():
            continue
        read = write = 0
        for tpg in tdir.glob("tpgt_*"):
            acls = tpg / "acls"
            if not acls.is_dir():
                continue
            for acl in acls.iterdir():
                stats = acl.joinpath(*_STATS)
                tx = read_counter(stats / "txdata_octs")
                rx = read_counter(stats / "rxdata_octs")
                read += tx or 0
                write += rx or 0
        out[target] = (read, write)
    return out


class TrafficTotals:
    """Monotonic per-client byte counters from per-session ones that reset."""

    def __init__(self) -> None:
        self._last: dict[str, tuple[int, int]] = {}
        self.totals: dict[str, tuple[int, int]] = {}

    def update(self, current: dict[str, tuple[int, int]]) -> dict[str, tuple[int, int]]:
        for client, now in current.items():
            last = self._last.get(client, (0, 0))
            total = self.totals.get(client, (0, 0))
            added = tuple(n - p if n >= p else n for n, p in zip(now, last, strict=True))
            self.totals[client] = (total[0] + added[0], total[1] + added[1])
            self._last[client] = now
        for gone in set(self._last) - set(current):
            # The target went away (client removed or renamed); a new one counts from 0.
            self._last[gone] = (0, 0)
        return dict(self.totals)
