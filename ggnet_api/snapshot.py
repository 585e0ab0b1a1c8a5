"""The inventory as the API sees it: an immutable Snapshot, swapped whole.

The inventory is loaded with ggnet.inventory (Ansible's own loader) into a Snapshot
that CurrentInventory replaces in one assignment, so a request never sees half a
reload.  The watcher thread (app.py) reloads it when a file under the inventory
changes; an inventory that no longer loads, for whatever reason (a YAML typo, a
value of the wrong type that the model trips over), keeps the last good snapshot and
reports why on /health and /api/status: a room keeps booting from what worked.
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

from ggnet import boot_entries, model, redfish, rollout
from ggnet.inventory import InventoryError, load_inventory
from ggnet.inventory_repo import commit_of
from ggnet.settings import default, is_secret_key

from ggnet_api import converged

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Snapshot:
    loaded_at: float = 0.0
    clients: dict[str, dict[str, Any]] = field(default_factory=dict)
    by_mac: dict[str, str] = field(default_factory=dict)
    images: dict[str, dict[str, Any]] = field(default_factory=dict)
    machine_groups: tuple[str, ...] = ()
    hosts: frozenset[str] = frozenset()
    # Every group of the inventory, machine groups or not (names an approval must avoid).
    groups: frozenset[str] = frozenset()
    server: str | None = None
    # Every boot server of the inventory (server is the one this API serves).
    servers: tuple[str, ...] = ()
    storage: dict[str, Any] = field(default_factory=dict)
    iscsi: dict[str, Any] = field(default_factory=dict)
    network: dict[str, Any] = field(default_factory=dict)
    chap: dict[str, dict[str, str]] = field(default_factory=dict, repr=False)
    # Clients whose CHAP credentials the inventory did not give this process, with why
    # (a problem until the targets file gives them).
    chap_unresolved: dict[str, str] = field(default_factory=dict)
    secrets: tuple[str, ...] = field(default=(), repr=False)
    # Each PC's ggnet_bmc as the inventory gives it (ggnet.redfish parses it where the
    # power is switched, in ggnet-privd); its password never leaves the snapshot.
    bmcs: dict[str, Any] = field(default_factory=dict, repr=False)
    problems: tuple[str, ...] = ()
    # The inventory repository's commit the snapshot was loaded at (None: not in git).
    commit: str | None = None
    # The server's ggnet_rollout as the inventory gives it (ggnet.rollout parses it).
    rollout: Any = None

    @property
    def iscsi_backend(self) -> str:
        """The backend the PCs' targets are on: the converged one when the API knows it."""
        return self.iscsi.get("backend", default("ggnet_iscsi", "backend"))


def _secret_values(value: Any, key: str, out: set[str]) -> None:
    if isinstance(value, dict):
        for k, v in value.items():
            _secret_values(v, str(k), out)
    elif isinstance(value, list):
        for v in value:
            _secret_values(v, key, out)
    elif isinstance(value, str) and is_secret_key(key) and value:
        out.add(value)


def _chap_secrets(creds: dict[str, str]) -> set[str]:
    """The secrets of one client's credentials, both ways (mutual CHAP), to mask."""
    return {creds[k] for k in ("secret", "mutual_secret") if creds.get(k)}


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
    unresolved: dict[str, str] = {}
    shv = hostvars.get(server, {}) if server else {}
    try:
        canary_set = model.canaries(groups, shv.get(rollout.ROLLOUT_KEY))
    except (model.ModelError, ValueError) as exc:
        problems.append(str(exc))
        canary_set = frozenset()
    for name in model.clients_of(groups):
        try:
            c = model.client(name, hostvars[name], groups, canary_set)
        except (model.ModelError, ValueError) as exc:
            problems.append(str(exc))
            continue
        if server is not None and c["server"] != server:
            continue
        try:
            creds = model.chap_credentials(name, hostvars[name])
        except (model.ModelError, ValueError) as exc:
            # The API, without root on the server, often cannot resolve the server
            # secret (a vault, a controller-side password lookup); the targets file holds
            # what the converge gave the PC's target, so the PC still boots from it.
            unresolved[name] = str(exc)
            creds = None
        clients[name] = c
        if c["mac"] in by_mac:
            problems.append(f"{name}: ggnet_mac {c['mac']} is also {by_mac[c['mac']]}'s")
        by_mac[c["mac"]] = name
        if creds:
            chap[name] = creds
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
        secrets.update(_chap_secrets(creds))
    return Snapshot(
        loaded_at=time.time(),
        clients=clients,
        by_mac=by_mac,
        images=images,
        machine_groups=tuple(mgroups),
        hosts=frozenset(hostvars),
        groups=frozenset(groups),
        server=server,
        servers=tuple(servers),
        storage=model.settings(shv, "ggnet_storage") if server else {},
        iscsi=model.settings(shv, "ggnet_iscsi") if server else {},
        network=dict(shv.get("ggnet_network") or {}),
        rollout=shv.get(rollout.ROLLOUT_KEY),
        chap=chap,
        chap_unresolved=unresolved,
        secrets=tuple(sorted(secrets)),
        bmcs={n: hostvars[n][redfish.KEY] for n in clients if hostvars[n].get(redfish.KEY)},
        problems=tuple(problems) + tuple(unresolved[n] for n in sorted(unresolved)),
    )


def with_converged_targets(snap: Snapshot, targets_file: str | None) -> Snapshot:
    """The snapshot with the backend and CHAP the last converge gave the targets."""
    if not targets_file:
        return snap
    targets = converged.load(targets_file)
    chap = {name: targets["chap"][name] for name in snap.clients if name in targets["chap"]}
    secrets = set(snap.secrets).union(*(_chap_secrets(c) for c in chap.values()))
    iscsi_settings = {**snap.iscsi, "backend": targets["backend"]} if snap.iscsi else {}
    resolved = {snap.chap_unresolved[n] for n in chap if n in snap.chap_unresolved}
    return dataclasses.replace(
        snap,
        chap=chap,
        chap_unresolved={n: why for n, why in snap.chap_unresolved.items() if n not in chap},
        secrets=tuple(sorted(secrets)),
        iscsi=iscsi_settings,
        problems=tuple(p for p in snap.problems if p not in resolved),
    )


def _signature(root: Path) -> tuple[str | None, tuple]:
    """(commit, files): changes whenever a file under the inventory is added, removed or
    written, or the repository moves to another commit (which may leave every file as
    it was)."""
    sig: list[tuple] = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = [d for d in dirnames if not d.startswith(".")]
        for f in filenames:
            try:
                st = os.stat(os.path.join(dirpath, f))
            except OSError:
                continue
            sig.append((dirpath, f, st.st_mtime_ns, st.st_size))
    return commit_of(root), tuple(sorted(sig))


class CurrentInventory:
    """The latest Snapshot that loaded, and why the last load failed if it did."""

    def __init__(self, config: dict[str, Any]):
        self.config = config
        self.snapshot = Snapshot()
        self.load_error: str | None = None
        self._sig: tuple[str | None, tuple] | None = None
        self._lock = threading.Lock()

    def reload(self, force: bool = True) -> bool:
        """Load the inventory again (unless force is off and no file changed); False
        (and load_error set) when it does not load."""
        root = Path(self.config["inventory"])
        with self._lock:
            sig = _signature(root) if root.is_dir() else None
            if not force and sig is not None and sig == self._sig:
                return True
            try:
                inv = load_inventory(root)
                snap = build_snapshot(inv.groups, inv.hostvars, self.config.get("server"))
                snap = with_converged_targets(snap, self.config.get("targets_file"))
                snap = dataclasses.replace(snap, commit=sig[0] if sig else None)
            except (InventoryError, model.ModelError, ValueError, OSError) as exc:
                return self._failed(sig, str(exc))
            except Exception as exc:
                # A value of a type the model does not expect (ggnet_images: 5) raises
                # whatever the code reading it raises; it is still the inventory's fault.
                log.exception("inventory not loaded")
                return self._failed(sig, f"{type(exc).__name__}: {exc}")
            self.snapshot = snap
            self.load_error = None
            self._sig = sig
            self._write_served(snap)
            return True

    def _failed(self, sig: tuple[str | None, tuple] | None, error: str) -> bool:
        self.load_error = error
        self._sig = sig
        log.warning("inventory not loaded, still serving the last good one: %s", error)
        return False

    def _write_served(self, snap: Snapshot) -> None:
        # What a converge waits for (the commit served) and compares with the
        # controller's inventory (the entries); a failure to write it must not stop
        # the boot path.
        path = self.config.get("served_file")
        if not path:
            return
        try:
            served = boot_entries.entries(snap.clients.values())
            boot_entries.write_served(path, snap.commit, served)
        except OSError as exc:
            log.warning("could not write %s: %s", path, exc)

    def trouble(self) -> str | None:
        """Why the inventory served is not the one on disk (None: it is)."""
        if self.load_error is not None:
            return self.load_error
        if not self.snapshot.loaded_at:
            return "no inventory loaded yet"
        return None

    def reload_if_changed(self) -> None:
        self.reload(force=False)

    def set(self, snap: Snapshot) -> None:
        self.snapshot = snap

    def secrets(self) -> tuple[str, ...]:
        return self.snapshot.secrets
