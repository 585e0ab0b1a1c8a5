"""What the server's state needs a subprocess or configfs to tell, read on an interval.

The collector thread (app.py) reads zfs (writeback sizes, pool capacity, image
versions and their guids), the iSCSI backend's sessions and LIO's per-client traffic
into a Sample and swaps it whole; /metrics and the views only read the latest Sample,
so a request never forks.  The reads need root: the thread asks for them through
ggnet_api/privileged.py (the `sample` operation, which runs Collector.collect in
ggnet-privd or in this process), and a Sample crosses the socket as JSON.
"""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass, field
from typing import Any

from ggnet import iscsi, storage
from ggnet.zfs import Zfs

from ggnet_api.iscsi_stats import TrafficTotals, read_lio_traffic
from ggnet_api.snapshot import CurrentInventory, Snapshot


@dataclass
class Sample:
    at: float = 0.0
    writeback_bytes: dict[str, int] | None = None
    pools: dict[str, tuple[int, int]] = field(default_factory=dict)
    sessions: dict[str, list[str]] | None = None
    versions: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    # client -> (bytes read, bytes written) over iSCSI since the API started (LIO only).
    traffic: dict[str, tuple[int, int]] | None = None
    errors: dict[str, str] = field(default_factory=dict)


def sample_to_json(sample: Sample) -> dict[str, Any]:
    return dataclasses.asdict(sample)


def sample_from_json(data: dict[str, Any]) -> Sample:
    """A Sample from sample_to_json's form (JSON has lists where the Sample has pairs)."""
    traffic = data.get("traffic")
    return Sample(
        at=float(data.get("at") or 0.0),
        writeback_bytes=data.get("writeback_bytes"),
        pools={k: (int(v[0]), int(v[1])) for k, v in (data.get("pools") or {}).items()},
        sessions=data.get("sessions"),
        versions=data.get("versions") or {},
        traffic=None
        if traffic is None
        else {k: (int(v[0]), int(v[1])) for k, v in traffic.items()},
        errors=data.get("errors") or {},
    )


class Collector:
    def __init__(self, config: dict[str, Any], inventory: CurrentInventory):
        self.config = config
        self.inventory = inventory
        self.sample = Sample()
        self._traffic = TrafficTotals()

    def collect(self) -> Sample:
        """Read the state once (the collector thread's body) into a new Sample."""
        snap = self.inventory.snapshot
        sample = Sample(at=time.time())
        if snap.storage:
            try:
                self._read_storage(snap, sample)
            except Exception as exc:
                sample.errors["storage"] = str(exc)
        if snap.iscsi:
            try:
                sample.sessions = iscsi.active_sessions(
                    snap.iscsi_backend, **self.config.get("iscsi_options", {})
                )
            except Exception as exc:
                sample.errors["iscsi"] = str(exc)
            if snap.iscsi_backend == "lio":
                sample.traffic = self.traffic(snap)
        self.sample = sample
        return sample

    def _read_storage(self, snap: Snapshot, sample: Sample) -> None:
        state = storage.read_state(snap.storage, Zfs())
        sizes: dict[str, int] = {}
        for (client, _role), wb in state.writebacks.items():
            used = state.raw.get(wb.dataset, {}).get("used")
            sizes[client] = sizes.get(client, 0) + int(used or 0)
        sample.writeback_bytes = sizes
        if state.pool_exists:
            sample.pools[snap.storage["pool"]] = (state.total, state.available)
        sample.versions = {
            name: [
                {
                    "name": v.name,
                    "created": v.created,
                    "comment": v.comment,
                    "applied_from": v.applied_from,
                    "guid": v.guid,
                }
                for v in img.versions
            ]
            for name, img in state.images.items()
        }

    def traffic(self, snap: Snapshot) -> dict[str, tuple[int, int]] | None:
        """client -> (bytes read, bytes written) since the API started; None without LIO."""
        try:
            by_target = read_lio_traffic(self.config["lio_stats_root"])
        except OSError:
            return None  # LIO not loaded (yet): no series rather than zeros
        by_iqn = {c["target_iqn"]: name for name, c in snap.clients.items()}
        current = {by_iqn[iqn]: rw for iqn, rw in by_target.items() if iqn in by_iqn}
        totals = self._traffic.update(current)
        return {name: totals[name] for name in snap.clients if name in totals}
