"""What the server's state needs a subprocess or configfs to tell, read on an interval.

The collector thread (app.py) reads zfs (writeback sizes, pool capacity, image
versions and their guids, snapshot counts), the iSCSI backend's sessions, LIO's
per-client traffic and per-target login counters, and what dnsmasq logged since the
last run (ggnet_api/dnsmasq_log.py) and its active leases into a Sample and swaps it whole; /metrics and the views only read the latest Sample,
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

from ggnet_api.dnsmasq_log import DnsmasqLog, active_leases
from ggnet_api.iscsi_stats import TrafficTotals, read_lio_traffic
from ggnet_api.lio_target_stats import Totals, read_lio_target_stats
from ggnet_api.snapshot import CurrentInventory, Snapshot


@dataclass
class Sample:
    at: float = 0.0
    writeback_bytes: dict[str, int] | None = None
    pools: dict[str, tuple[int, int]] = field(default_factory=dict)
    sessions: dict[str, list[str]] | None = None
    versions: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    # image -> its ggnet:current (the version promote or rollback chose last), or None.
    image_current: dict[str, str | None] = field(default_factory=dict)
    # client -> (bytes read, bytes written) over iSCSI since the API started (LIO only).
    traffic: dict[str, tuple[int, int]] | None = None
    errors: dict[str, str] = field(default_factory=dict)
    # images, versions and snapshots (those the zfs read lists) by that name.
    storage_counts: dict[str, int] | None = None
    # Targets the inventory gives clients, and those with a logged-in initiator.
    targets_total: int | None = None
    targets_active: int | None = None
    # [client, series, label, value]: LIO's per-target logins, and the failures and
    # errors that happened (lio_target_stats.py's counters, labels its names).
    target_stats: list[list] | None = None
    # DnsmasqCounters.rows() since the API started; None without a dnsmasq log file.
    dnsmasq: dict[str, list[list]] | None = None
    leases: int | None = None
    # The MACs whose DHCP DISCOVER or REQUEST dnsmasq logged since the last collection.
    dhcp_macs: list[str] = field(default_factory=list)


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
        image_current=data.get("image_current") or {},
        traffic=None
        if traffic is None
        else {k: (int(v[0]), int(v[1])) for k, v in traffic.items()},
        errors=data.get("errors") or {},
        storage_counts=data.get("storage_counts"),
        targets_total=data.get("targets_total"),
        targets_active=data.get("targets_active"),
        target_stats=data.get("target_stats"),
        dnsmasq=data.get("dnsmasq"),
        leases=data.get("leases"),
        dhcp_macs=list(data.get("dhcp_macs") or []),
    )


class Collector:
    def __init__(self, config: dict[str, Any], inventory: CurrentInventory):
        self.config = config
        self.inventory = inventory
        self.sample = Sample()
        self._traffic = TrafficTotals()
        self._target_totals = Totals()
        log = config.get("dnsmasq_log")
        self._dnsmasq = DnsmasqLog(str(log), config.get("tftp_root")) if log else None

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
            else:
                targets = {c["target_iqn"] for c in snap.clients.values()}
                sample.targets_total = len(targets)
                sample.targets_active = sum(
                    1
                    for iqn, initiators in sample.sessions.items()
                    if initiators and iqn in targets
                )
            if snap.iscsi_backend == "lio":
                sample.traffic = self.traffic(snap)
                sample.target_stats = self.target_stats(snap)
        if self._dnsmasq is not None:
            sample.dnsmasq = self._dnsmasq.poll().rows()
            sample.dhcp_macs = sorted(self._dnsmasq.seen)
        sample.leases = active_leases(self.config.get("lease_file"), sample.at)
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
        sample.storage_counts = {
            "images": len(state.images),
            "versions": sum(len(img.versions) for img in state.images.values()),
            "snapshots": sum(1 for name in state.raw if "@" in name),
        }
        sample.versions = {
            name: [
                {
                    "name": v.name,
                    "created": v.created,
                    "comment": v.comment,
                    "applied_from": v.applied_from,
                    "guid": v.guid,
                    "state": v.state,
                    "state_at": v.state_at,
                    "boot_test": v.boot_test,
                }
                for v in img.versions
            ]
            for name, img in state.images.items()
        }
        sample.image_current = {name: img.current for name, img in state.images.items()}

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

    def target_stats(self, snap: Snapshot) -> list[list] | None:
        """[client, series, label, value] of LIO's per-target counters; None without LIO."""
        try:
            current = read_lio_target_stats(self.config["lio_stats_root"])
        except OSError:
            return None
        by_iqn = {c["target_iqn"]: name for name, c in snap.clients.items()}
        totals = self._target_totals.update(
            {(by_iqn[t], s, lb): v for (t, s, lb), v in current.items() if t in by_iqn}
        )
        # Failures and errors only once they happened: zeros of 7 series per target
        # would be most of a room's exposition.
        return [
            [c, s, lb, v]
            for (c, s, lb), v in sorted(totals.items())
            if c in snap.clients and (v or s == "logins")
        ]
