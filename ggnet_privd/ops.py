"""The named operations of ggnet-privd, and the checks of their arguments.

Each operation takes names and short values only, and checks them itself against
privd's own view of the inventory and its own copy of the allow-list: a client must be
a client of this server's inventory, a job kind must be in `playbooks` (whose entry,
not the caller, names the playbook file), extra-vars must pass config's validator, and
no value may carry a Jinja marker.  No operation takes a path or a command.

`Ops.call` is the one entry: ggnet-privd's server calls it for each request, and the
API's in-process way (ggnet_api/privileged.py, no privd socket) calls the same, so a
refusal reads the same whichever way the API is set up.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from ggnet import iscsi, lun_release, redfish, storage, wol
from ggnet.net import normalize_mac
from ggnet.zfs import Zfs

from ggnet_api import approval
from ggnet_api.collector import Collector, sample_to_json
from ggnet_api.config import ExtraVarsError, check_extravars, job_spec
from ggnet_api.snapshot import CurrentInventory
from ggnet_privd.batches import Batches, Done
from ggnet_privd.playbooks import Emit, PlaybookRuns
from ggnet_privd.protocol import OpError, check_no_template

# op -> its arguments, every one required and nothing else accepted.
SIGNATURES: dict[str, tuple[str, ...]] = {
    "reset": ("client",),
    "reset_idle": ("client",),
    "run_job": ("job_id", "kind", "extravars"),
    "cancel_job": ("job_id",),
    "sample": (),
    "approve": ("mac", "name", "image", "groups", "principal"),
    "wake": ("mac",),
    "power": ("client", "action"),
}
_JOB_ID = re.compile(r"[0-9a-f]{32}")
# Who approved goes into a commit message and a YAML comment: one printable line.
_PRINCIPAL = re.compile(r"[^\x00-\x1f\x7f]{1,100}")


class Ops:
    def __init__(
        self,
        config: dict[str, Any],
        inventory: CurrentInventory,
        collector: Collector | None = None,
        jobs_dir: Path | None = None,
    ):
        self.config = config
        self.inventory = inventory
        self.collector = collector or Collector(config, inventory)
        self.runs = PlaybookRuns(
            config, jobs_dir or Path(config["state_dir"]) / "jobs", inventory.secrets
        )
        # The boot path's resets, in batches (ggnet_privd/batches.py); their rollbacks
        # side by side, at most reset_workers at once.
        self.resets = Batches(self._reset_batch, "reset")
        self._rollbacks = ThreadPoolExecutor(
            int(config.get("reset_workers", 16)), thread_name_prefix="reset"
        )

    def call(self, op: Any, args: Any, emit: Emit | None = None) -> Any:
        """Check the request's shape, then run op; OpError when it is refused."""
        if not isinstance(op, str) or op not in SIGNATURES:
            raise OpError(
                f"op: {str(op)[:60]!r} is not an operation (known: {', '.join(SIGNATURES)})"
            )
        if not isinstance(args, dict):
            raise OpError(f"args: {op} takes an object of arguments")
        wanted = SIGNATURES[op]
        extra = sorted(str(k)[:60] for k in set(args) - set(wanted))
        if extra:
            raise OpError(
                f"args: {op} does not take {', '.join(extra)} (takes: {', '.join(wanted) or 'nothing'})"
            )
        missing = [k for k in wanted if k not in args]
        if missing:
            raise OpError(f"args: {op} needs {', '.join(missing)}")
        for key, value in args.items():
            check_no_template(value, f"args.{key}")
        handler: Callable[..., Any] = getattr(self, f"op_{op}")
        if op == "run_job":
            return handler(emit=emit or (lambda _event: None), **args)
        return handler(**args)

    # -- the operations -------------------------------------------------------------------

    def op_reset(self, client: Any) -> dict[str, Any]:
        """The boot path's writeback reset of one client (storage keeps a client in
        maintenance as it is), its LUNs closed around a re-clone.  Served in a batch
        with the other resets asked meanwhile (ggnet_privd/batches.py)."""
        name = self._client(client)
        versions = self.resets.call(name)
        # The version each disk boots now: the boot's record (and a rollout) keeps it.
        return {"client": name, "versions": versions or {}}

    def _reset_batch(self, names: list[str], done: Done) -> None:
        """Reset NAMES: one zfs read for all of them, then each one's reset (a rollback
        or re-clone when it needs one, else nothing) in the pool; done(name, error) or
        done(name, None, the version each of its disks boots now)."""
        snap = self.inventory.snapshot
        clients: list[Mapping[str, Any]] = []
        for name in names:
            if name in snap.clients:  # the inventory may have changed since the request
                clients.append(snap.clients[name])
            else:
                done(name, OpError(f"args.client: {name!r} is no longer in the inventory"))
        if not clients:
            return
        try:
            # The LUNs to close are on the backend the PC's script points it at.
            closer = lun_release.closer(
                snap.iscsi_backend if snap.iscsi else None,
                clients,
                self.config.get("iscsi_options"),
            )
            state = storage.read_for_reset(snap.storage, snap.images, clients, Zfs())
        except (storage.StorageError, iscsi.IscsiError) as exc:
            for c in clients:
                done(c["name"], OpError(str(exc), 409))
            return

        def one(name: str) -> None:
            try:
                result = storage.reset(
                    snap.storage, snap.images, clients, name, boot=True, zfs=Zfs(),
                    closer=closer, state=state,
                )  # fmt: skip
            except (storage.StorageError, iscsi.IscsiError) as exc:
                done(name, OpError(str(exc), 409))
            except Exception as exc:
                # This client's alone, as before batches: privd logs it, answers 500.
                done(name, exc)
            else:
                done(name, None, result.info.get("versions"))

        for c in clients:
            self._rollbacks.submit(one, c["name"])

    def op_reset_idle(self, client: Any) -> dict[str, Any]:
        """The reset of a client whose session has ended (the API's boot_sessions), so
        that its next boot only checks it.  Refused (409) while any initiator is logged
        in to its target, as privd reads the backend now (not as the caller says), and
        for a client in maintenance."""
        snap = self.inventory.snapshot
        name = self._client(client)
        if not snap.iscsi:
            raise OpError(f"{name}: no iSCSI backend to tell whether it is logged in", 409)
        options = self.config.get("iscsi_options") or {}
        try:
            live = iscsi.active_sessions(snap.iscsi_backend, **options)
            closer = lun_release.closer(snap.iscsi_backend, [snap.clients[name]], options)
            # Not the boot path: a live session or maintenance is refused, not replaced.
            storage.reset(
                snap.storage, snap.images, [snap.clients[name]], name, sessions=live,
                closer=closer,
            )  # fmt: skip
        except (storage.StorageError, iscsi.IscsiError) as exc:
            raise OpError(str(exc), 409) from exc
        return {"client": name}

    def op_run_job(self, job_id: Any, kind: Any, extravars: Any, emit: Emit) -> dict[str, Any]:
        """Run a job of an allow-listed kind; its events go to emit as they come."""
        job_id = self._job_id(job_id)
        try:
            spec = job_spec(self.config["playbooks"], kind)
            checked = check_extravars(kind, spec, extravars)
        except ExtraVarsError as exc:
            raise OpError(str(exc)) from None
        if "privd" in spec:
            raise OpError(f"kind: {kind!r} runs no playbook (the API calls its operation)")
        if "client" in checked:
            self._client(checked["client"], "extravars.client")
        return self.runs.run(job_id, spec["playbook"], checked, emit)

    def op_cancel_job(self, job_id: Any) -> dict[str, Any]:
        return {"running": self.runs.cancel(self._job_id(job_id))}

    def op_sample(self) -> dict[str, Any]:
        """The collector's zfs, iSCSI and LIO reads."""
        return sample_to_json(self.collector.collect())

    def op_approve(
        self, mac: Any, name: Any, image: Any, groups: Any, principal: Any
    ) -> dict[str, Any]:
        """Write the approved machine into the inventory and commit it."""
        try:
            normal = normalize_mac(mac)
        except ValueError as exc:
            raise OpError(f"args.mac: {str(mac)[:40]!r} {exc}") from None
        if not isinstance(principal, str) or not _PRINCIPAL.fullmatch(principal):
            raise OpError(f"args.principal: {str(principal)[:60]!r} is not a printable name")
        body = {"name": name, "image": image, "groups": groups}
        try:
            name, image, groups = approval.check_request(body, self.inventory.snapshot, normal)
            commit = approval.approve(
                self.config["inventory"],
                normal,
                name,
                image,
                groups,
                principal,
                self.config["git_author"],
                # The roles of the code the jobs run: their knobs are inventory keys too.
                roles_dir=Path(self.config["project_dir"]) / "roles",
            )
        except approval.ApprovalError as exc:
            raise OpError(str(exc), exc.status, exc.problems) from None
        return {"commit": commit}

    def op_wake(self, mac: Any) -> dict[str, Any]:
        """Send the magic packet for an inventory PC's MAC out of the boot interface
        (ggnet.wol).  Only the MAC of a client of this server's inventory: nobody can
        make the server wake, or flood, an arbitrary address."""
        try:
            normal = normalize_mac(mac)
        except ValueError as exc:
            raise OpError(f"args.mac: {str(mac)[:40]!r} {exc}") from None
        snap = self.inventory.snapshot
        name = snap.by_mac.get(normal)
        if name is None or name not in snap.clients:
            raise OpError(
                f"args.mac: {normal} is not the MAC of a client of this server's inventory", 404
            )
        try:
            route = wol.wake_route(snap.network)
            sent = wol.send(normal, route)
        except wol.WolError as exc:
            raise OpError(f"wake {name}: {exc}", 409) from None
        return {
            "client": name,
            "mac": normal,
            "interface": route.interface,
            "broadcast": f"{route.broadcast}:{route.port}",
            "sent": sent,
        }

    def op_power(self, client: Any, action: Any) -> dict[str, Any]:
        """Power a PC on, off or cycle it through the BMC its inventory names, each
        state read back (ggnet.redfish).  The BMC's password stays here."""
        name = self._client(client)
        if action not in redfish.ACTIONS:
            raise OpError(
                f"args.action: {str(action)[:40]!r} is not one of {', '.join(redfish.ACTIONS)}"
            )
        value = self.inventory.snapshot.bmcs.get(name)
        if value is None:
            raise OpError(f"{name}: the inventory names no BMC for it ({redfish.KEY})", 409)
        steps: list[str] = []
        try:
            bmc = redfish.Bmc(redfish.parse_bmc(value))
            state = bmc.power(
                action,
                float(self.config.get("power_timeout", redfish.TIMEOUT)),
                float(self.config.get("power_poll", redfish.POLL)),
                steps.append,
            )
        except redfish.BmcError as exc:
            raise OpError(f"{name}: power {action}: {exc}", 502) from None
        return {"client": name, "action": action, "state": state, "steps": steps}

    # -- checks ---------------------------------------------------------------------------

    def _client(self, value: Any, where: str = "args.client") -> str:
        snap = self.inventory.snapshot
        if not isinstance(value, str) or value not in snap.clients:
            raise OpError(
                f"{where}: {str(value)[:60]!r} is not a client of this server's inventory", 404
            )
        return value

    @staticmethod
    def _job_id(value: Any) -> str:
        if not isinstance(value, str) or not _JOB_ID.fullmatch(value):
            raise OpError(f"args.job_id: {str(value)[:60]!r} is not a job id (32 hex digits)")
        return value
