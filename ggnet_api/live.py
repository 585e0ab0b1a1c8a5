"""What the API knows of the appliance: the inventory, and the live state of the server.

The inventory is loaded with ggnet_api.inventory (Ansible's own loader) into an
immutable Snapshot that is swapped whole, so a request never sees half a reload.  A
watcher thread reloads it when a file under the inventory changes; an inventory that
no longer loads keeps the last good snapshot and reports why on /api/status.

Live state that needs a subprocess (zfs for writeback sizes, pool capacity and image
versions; tgtadm or LIO for iSCSI sessions) is read by the collector thread on an
interval into a Sample; /metrics and the views only read the latest Sample.

The calls into module_utils for the boot path (storage.reset, iscsi.san_uri,
ipxe.boot_script) are in boot_client() and friends below, the one place that knows
their signatures.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ggnet import ipxe, iscsi, lun_release, model, storage
from ggnet.zfs import Zfs

from ggnet_api import converged
from ggnet_api.db import Database
from ggnet_api.iscsi_stats import TrafficTotals, read_lio_traffic

log = logging.getLogger(__name__)

SECRET_MARKERS = ("secret", "password", "token", "passphrase")


@dataclass(frozen=True)
class Snapshot:
    loaded_at: float = 0.0
    clients: dict[str, dict[str, Any]] = field(default_factory=dict)
    by_mac: dict[str, str] = field(default_factory=dict)
    images: dict[str, dict[str, Any]] = field(default_factory=dict)
    machine_groups: tuple[str, ...] = ()
    hosts: frozenset[str] = frozenset()
    server: str | None = None
    storage: dict[str, Any] = field(default_factory=dict)
    iscsi: dict[str, Any] = field(default_factory=dict)
    network: dict[str, Any] = field(default_factory=dict)
    chap: dict[str, dict[str, str]] = field(default_factory=dict, repr=False)
    secrets: tuple[str, ...] = field(default=(), repr=False)
    problems: tuple[str, ...] = ()


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


def _secret_values(value: Any, key: str, out: set[str]) -> None:
    if isinstance(value, dict):
        for k, v in value.items():
            _secret_values(v, str(k), out)
    elif isinstance(value, list):
        for v in value:
            _secret_values(v, key, out)
    elif isinstance(value, str) and any(m in key.lower() for m in SECRET_MARKERS) and value:
        out.add(value)


def build_snapshot(
    groups: dict[str, list[str]], hostvars: dict[str, dict[str, Any]], server: str | None = None
) -> Snapshot:
    """A Snapshot from Ansible's groups and hostvars (what load_inventory returns)."""
    servers = model.servers_of(groups)
    if server is None and len(servers) == 1:
        server = servers[0]
    problems: list[str] = []
    clients: dict[str, dict[str, Any]] = {}
    by_mac: dict[str, str] = {}
    chap: dict[str, dict[str, str]] = {}
    for name in model.clients_of(groups):
        try:
            c = model.client(name, hostvars[name], groups)
            creds = model.chap_credentials(name, hostvars[name])
        except (model.ModelError, ValueError) as exc:
            problems.append(str(exc))
            continue
        if server is not None and c["server"] != server:
            continue
        clients[name] = c
        if c["mac"] in by_mac:
            problems.append(f"{name}: ggnet_mac {c['mac']} is also {by_mac[c['mac']]}'s")
        by_mac[c["mac"]] = name
        if creds:
            chap[name] = creds
    shv = hostvars.get(server, {}) if server else {}
    images = dict(shv.get("ggnet_images") or {})
    skip = {"all", "ungrouped", model.CLIENTS_GROUP, model.SERVERS_GROUP}
    groups_under_clients = set(groups.get(model.CLIENTS_GROUP) or [])
    mgroups = sorted(
        g
        for g, members in groups.items()
        if g not in skip and set(members or []) <= groups_under_clients
    )
    secrets: set[str] = set()
    for hv in hostvars.values():
        _secret_values(hv, "", secrets)
    for creds in chap.values():
        secrets.add(creds["secret"])
    return Snapshot(
        loaded_at=time.time(),
        clients=clients,
        by_mac=by_mac,
        images=images,
        machine_groups=tuple(mgroups),
        hosts=frozenset(hostvars),
        server=server,
        storage=model.settings(shv, "ggnet_storage") if server else {},
        iscsi=model.settings(shv, "ggnet_iscsi") if server else {},
        network=dict(shv.get("ggnet_network") or {}),
        chap=chap,
        secrets=tuple(sorted(secrets)),
        problems=tuple(problems),
    )


def _signature(root: Path) -> tuple:
    """Changes whenever a file under the inventory is added, removed or written."""
    sig = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = [d for d in dirnames if not d.startswith(".")]
        for f in filenames:
            try:
                st = os.stat(os.path.join(dirpath, f))
            except OSError:
                continue
            sig.append((dirpath, f, st.st_mtime_ns, st.st_size))
    return tuple(sorted(sig))


class BootRefused(Exception):
    """The boot server will not boot this PC now; the message is shown on its screen."""


class Live:
    def __init__(self, config: dict[str, Any], db: Database):
        self.config = config
        self.db = db
        self.snapshot = Snapshot()
        self.sample = Sample()
        self.load_error: str | None = None
        self._sig: tuple | None = None
        self._reload_lock = threading.Lock()
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._traffic = TrafficTotals()

    # -- inventory ------------------------------------------------------------------

    def reload(self, force: bool = True) -> bool:
        """Load the inventory again; False (and load_error set) when it does not load."""
        from ggnet_api.inventory import InventoryError, load_inventory

        root = Path(self.config["inventory"])
        with self._reload_lock:
            sig = _signature(root) if root.is_dir() else None
            if not force and sig is not None and sig == self._sig:
                return True
            try:
                inv = load_inventory(root)
                snap = build_snapshot(inv.groups, inv.hostvars, self.config.get("server"))
                snap = self._with_converged_targets(snap)
            except (InventoryError, model.ModelError, ValueError, OSError) as exc:
                self.load_error = str(exc)
                self._sig = sig
                log.warning("inventory not loaded: %s", exc)
                return False
            self.snapshot = snap
            self.load_error = None
            self._sig = sig
            return True

    def _with_converged_targets(self, snap: Snapshot) -> Snapshot:
        """The snapshot with the backend and CHAP the last converge gave the targets."""
        path = self.config.get("targets_file")
        if not path:
            return snap
        targets = converged.load(path)
        chap = {name: targets["chap"][name] for name in snap.clients if name in targets["chap"]}
        secrets = set(snap.secrets) | {c["secret"] for c in chap.values()}
        iscsi_settings = {**snap.iscsi, "backend": targets["backend"]} if snap.iscsi else {}
        return dataclasses.replace(
            snap, chap=chap, secrets=tuple(sorted(secrets)), iscsi=iscsi_settings
        )

    def set_snapshot(self, snap: Snapshot) -> None:
        self.snapshot = snap

    def secrets(self) -> tuple[str, ...]:
        return self.snapshot.secrets

    # -- the boot path ----------------------------------------------------------------

    def boot_script(self, name: str, api_url: str) -> tuple[str, str]:
        """(script, kind) for a known client: reset its writeback first unless kept.

        kind is `normal` or `maintenance`.  Raises BootRefused when the boot would fail
        (the pool is below its reserve, the image has no version)."""
        snap = self.snapshot
        client = snap.clients[name]
        kind = "maintenance" if client["keep_writeback"] else "normal"
        backend = snap.iscsi.get("backend", "lio")
        if kind == "normal" and self.config["reset_on_boot"]:
            try:
                # The LUNs to close are on the backend the script points the PC at.
                closer = lun_release.closer(
                    backend if snap.iscsi else None, [client], self.config.get("iscsi_options")
                )
                storage.reset(snap.storage, snap.images, [client], name, boot=True, closer=closer)
            except (storage.StorageError, iscsi.IscsiError) as exc:
                raise BootRefused(str(exc)) from exc
        server_ip = snap.network.get("server_ip")
        if not server_ip:
            raise BootRefused("ggnet_network.server_ip is not set in the inventory")
        disks = 2 if client.get("game_disk") else 1
        uris = [iscsi.san_uri(server_ip, client["target_iqn"], backend, i) for i in range(disks)]
        return ipxe.boot_script(client, uris, api_url, snap.chap.get(name)), kind

    @staticmethod
    def discovery_script(api_url: str) -> str:
        return ipxe.discovery_script(api_url)

    @staticmethod
    def refusal_script(message: str, api_url: str, mac: str) -> str:
        return ipxe.error_script(message, api_url, mac)

    STAGES = ipxe.STAGES

    # -- live state -----------------------------------------------------------------

    def collect(self) -> Sample:
        """Read the subprocess-based state once (the collector thread's body)."""
        snap = self.snapshot
        sample = Sample(at=time.time())
        if snap.storage:
            try:
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
                        }
                        for v in img.versions
                    ]
                    for name, img in state.images.items()
                }
            except Exception as exc:
                sample.errors["storage"] = str(exc)
        if snap.iscsi:
            try:
                sample.sessions = iscsi.active_sessions(
                    snap.iscsi.get("backend", "lio"), **self.config.get("iscsi_options", {})
                )
            except Exception as exc:
                sample.errors["iscsi"] = str(exc)
            if snap.iscsi.get("backend", "lio") == "lio":
                sample.traffic = self._collect_traffic(snap)
        self.sample = sample
        return sample

    def _collect_traffic(self, snap: Snapshot) -> dict[str, tuple[int, int]] | None:
        try:
            by_target = read_lio_traffic(self.config["lio_stats_root"])
        except OSError:
            return None  # LIO not loaded (yet): no series rather than zeros
        by_iqn = {c["target_iqn"]: name for name, c in snap.clients.items()}
        current = {by_iqn[iqn]: rw for iqn, rw in by_target.items() if iqn in by_iqn}
        totals = self._traffic.update(current)
        return {name: totals[name] for name in snap.clients if name in totals}

    def expire_boots(self) -> None:
        cutoff = time.time() - float(self.config["boot_timeout"])
        self.db.execute(
            "UPDATE boots SET result = 'timeout' WHERE result = 'pending' AND kind != 'discovery' AND stage_at < ?",
            (cutoff,),
        )

    def client_states(self) -> dict[str, int]:
        counts: dict[str, int] = {}
        last = self.db.last_results()
        for c in self.snapshot.clients.values():
            result = last.get(c["mac"])
            state = client_state(c, None if result is None else {"result": result})
            counts[state] = counts.get(state, 0) + 1
        return counts

    # -- threads ----------------------------------------------------------------------

    def start(self) -> None:
        self._threads = [
            threading.Thread(
                target=self._loop,
                args=(self._watch, "inventory_poll"),
                name="ggnet-inventory",
                daemon=True,
            ),
            threading.Thread(
                target=self._loop,
                args=(self._collect, "collect_interval"),
                name="ggnet-collector",
                daemon=True,
            ),
        ]
        for t in self._threads:
            t.start()

    def stop(self) -> None:
        self._stop.set()
        for t in self._threads:
            t.join(5)

    def _loop(self, body, interval_key: str) -> None:
        while not self._stop.is_set():
            try:
                body()
            except Exception:
                log.exception("%s failed", body.__name__)
            self._stop.wait(float(self.config[interval_key]))

    def _watch(self) -> None:
        self.reload(force=False)

    def _collect(self) -> None:
        self.collect()
        self.expire_boots()


def client_state(client: dict[str, Any], last_boot: dict[str, Any] | None) -> str:
    """maintenance, or what the last boot came to: never_booted, booting, booted, ..."""
    if client.get("keep_writeback"):
        return "maintenance"
    if last_boot is None:
        return "never_booted"
    return {"pending": "booting", "ok": "booted"}.get(last_boot["result"], last_boot["result"])
