"""iSCSI logins, login failures and errors per target, from LIO's configfs.

The kernel keeps them per target IQN (drivers/target/iscsi/iscsi_target_stat.c):
  <root>/<target_iqn>/fabric_statistics/
      iscsi_login_stats/  accepts, authenticate_fails, authorize_fails,
                          negotiate_fails, other_fails
      iscsi_sess_err/     digest_errors, cxn_errors, format_errors
They live as long as the target: a converge that makes a target again starts them at
0, so Totals turns them into counters that only grow for the life of the API process.
Read by the collector thread (a few small files per target), never per scrape.

tgt keeps no such counters (`tgtadm --op show` prints sessions and LUNs only), so with
the tgt backend these series are absent; docs/monitoring.md says so.
"""

from __future__ import annotations

import os
from collections.abc import Hashable
from pathlib import Path

from ggnet_api.iscsi_stats import read_counter

LOGIN_FAILURES = ("authenticate", "authorize", "negotiate", "other")
ERRORS = ("digest", "connection", "format")
# (stats directory, file, the series it feeds, its label)
_FILES = (
    ("iscsi_login_stats", "accepts", "logins", ""),
    *(("iscsi_login_stats", f"{r}_fails", "login_failures", r) for r in LOGIN_FAILURES),
    ("iscsi_sess_err", "digest_errors", "errors", "digest"),
    ("iscsi_sess_err", "cxn_errors", "errors", "connection"),
    ("iscsi_sess_err", "format_errors", "errors", "format"),
)


def read_lio_target_stats(root: str | os.PathLike[str]) -> dict[tuple[str, str, str], int]:
    """{(target_iqn, series, label): value} of every target LIO has.

    Raises FileNotFoundError when root does not exist (LIO not loaded)."""
    base = Path(root)
    out: dict[tuple[str, str, str], int] = {}
    for target in sorted(os.listdir(base)):
        stats = base / target / "fabric_statistics"
        if not target.startswith("iqn.") or not stats.is_dir():
            continue
        for directory, name, series, label in _FILES:
            value = read_counter(stats / directory / name)
            if value is not None:
                out[(target, series, label)] = value
    return out


class Totals:
    """Counters that only grow, from counters that start again at 0."""

    def __init__(self) -> None:
        self._last: dict[Hashable, int] = {}
        self.totals: dict[Hashable, int] = {}

    def update(self, current: dict) -> dict:
        for key, now in current.items():
            last = self._last.get(key, 0)
            self.totals[key] = self.totals.get(key, 0) + (now - last if now >= last else now)
            self._last[key] = now
        for gone in self._last.keys() - current.keys():
            self._last[gone] = 0  # the target went away; a new one counts from 0
        return dict(self.totals)
