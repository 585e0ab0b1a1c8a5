"""LIO (kernel target) driver through rtslib-fb: read configfs, apply Actions, save.

The configuration is changed in place, object by object, never by a restore: rtslib's
restore_from_file() and `targetctl restore` clear everything first by default, which
drops every live session.  After a change the whole configfs state is saved where
Debian's rtslib-fb-targetctl.service reads it at boot.  That service's ExecStop is
`targetctl clear`, so the role enables it but must never restart it.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from .iscsi_types import LUN_BASE, SESSION_PARAMS, Action, IscsiError, Lun, Target

# Debian patches rtslib-fb's default save file to this path (upstream:
# /etc/target/saveconfig.json); `targetctl restore` at boot reads it.
DEFAULT_SAVEFILE = "/etc/rtslib-fb-target/saveconfig.json"
RESTORE_SERVICE = "rtslib-fb-targetctl.service"
TPG_TAG = 1


def _rtslib():
    try:
        import rtslib_fb
    except ImportError:
        raise IscsiError(
            "rtslib-fb is not importable by this Python: install python3-rtslib-fb "
            "(the LIO backend runs with the system python3)"
        ) from None
    return rtslib_fb


def _root():
    rts = _rtslib()
    try:
        return rts.RTSRoot()
    except rts.RTSLibError as exc:
        raise IscsiError(
            f"LIO is not available here ({exc}): the kernel needs configfs mounted on "
            "/sys/kernel/config and the target_core_mod and iscsi_target_mod modules; "
            "where LIO cannot run (a container), use ggnet_iscsi.backend: tgt"
        ) from None


def _iscsi_targets(root) -> list:
    return [t for t in root.targets if t.fabric_module.name == "iscsi"]


def _tpg(target):
    for tpg in target.tpgs:
        if tpg.tag == TPG_TAG:
            return tpg
    return None


def sessions() -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for target in _iscsi_targets(_root()):
        for tpg in target.tpgs:
            for acl in tpg.node_acls:
                session = acl.session
                if session and session.get("state", "LOGGED_IN") == "LOGGED_IN":
                    out.setdefault(target.wwn, []).append(acl.node_wwn)
    return out


def _kind(so) -> str:
    return "block" if so.plugin == "block" else "file"


def read_state(root) -> dict[str, Target]:
    out: dict[str, Target] = {}
    base = LUN_BASE["lio"]
    for target in _iscsi_targets(root):
        tpg = _tpg(target)
        if tpg is None:
            out[target.wwn] = Target.from_live(
                target.wwn, luns={base: Lun("\x00no-tpg")}, first_lun=base
            )
            continue
        luns = {
            lun.lun: Lun(lun.storage_object.udev_path, _kind(lun.storage_object))
            for lun in tpg.luns
        }
        acls = sorted(tpg.node_acls, key=lambda a: a.node_wwn)
        initiators = [a.node_wwn for a in acls]
        user = secret = mutual_user = mutual_secret = None
        if acls and tpg.get_attribute("authentication") == "1" and acls[0].chap_userid:
            user, secret = acls[0].chap_userid, acls[0].chap_password
            if acls[0].chap_mutual_userid:
                mutual_user, mutual_secret = (
                    acls[0].chap_mutual_userid,
                    acls[0].chap_mutual_password,
                )
        if tpg.get_attribute("generate_node_acls") == "1":
            initiators.append("ALL")
        out[target.wwn] = Target.from_live(
            target.wwn,
            luns=luns,
            first_lun=base,
            initiators=initiators,
            chap_user=user,
            chap_secret=secret,
            mutual_user=mutual_user,
            mutual_secret=mutual_secret,
            params={key: tpg.get_parameter(key) for key in SESSION_PARAMS},
        )
    return out


def _essence(config: Any) -> list:
    sos = {
        so.get("name"): (so.get("plugin"), so.get("dev"))
        for so in config.get("storage_objects", [])
    }
    out = []
    for t in config.get("targets", []):
        for tpg in t.get("tpgs", []):
            luns = sorted(
                (lun.get("index"), sos.get(lun.get("storage_object", "").rsplit("/", 1)[-1]))
                for lun in tpg.get("luns", [])
            )
            acls = sorted(
                (
                    a.get("node_wwn"),
                    a.get("chap_userid"),
                    a.get("chap_password"),
                    a.get("chap_mutual_userid") or None,
                    a.get("chap_mutual_password") or None,
                )
                for a in tpg.get("node_acls", [])
            )
            params = tpg.get("parameters", {})
            out.append(
                (
                    t.get("wwn"),
                    tpg.get("tag"),
                    luns,
                    acls,
                    tpg.get("attributes", {}).get("authentication"),
                    # Only the keys ggnet sets: the rest are the kernel's defaults.
                    sorted((key, params.get(key)) for key in SESSION_PARAMS),
                )
            )
    return sorted(out, key=repr)


def _so_name(target: Target, disk: int) -> str:
    base = target.name or target.iqn.rsplit(":", 1)[-1]
    return re.sub(r"[^A-Za-z0-9_.-]", "_", f"ggnet-{base}")[:56] + f"-{disk}"


class Driver:
    def __init__(
        self, savefile: str | None = DEFAULT_SAVEFILE, portal: str = "0.0.0.0", port: int = 3260
    ):
        self.savefile = savefile
        self.portal, self.port = portal, port
        # rtslib_fb's RTSRoot, once read() has looked at configfs.
        self.root: Any | None = None

    def read(
        self, iqns: Iterable[str] | None = None
    ) -> tuple[dict[str, Target], dict[str, list[str]]]:
        """(targets by IQN, live initiators by target IQN); with iqns only those.

        configfs is read whole either way (it is cheap); iqns keeps the signature of
        the tgt driver's read, where choosing saves one request per target."""
        self.root = _root()
        found, live = read_state(self.root), sessions()
        if iqns is None:
            return found, live
        chosen = set(iqns)
        return (
            {k: v for k, v in found.items() if k in chosen},
            {k: v for k, v in live.items() if k in chosen},
        )

    def _target(self, iqn: str):
        for t in _iscsi_targets(self.root):
            if t.wwn == iqn:
                return t
        raise IscsiError(f"LIO target {iqn} vanished while being changed; run the converge again")

    def apply(
        self,
        actions: Sequence[Action],
        wanted: Mapping[str, Target],
        found: Mapping[str, Target],
        force: bool = False,
    ) -> None:
        rts = _rtslib()
        try:
            for a in actions:
                self._apply(rts, a, wanted, found)
        except rts.RTSLibError as exc:
            raise IscsiError(f"LIO refused {a.op} on {a.iqn}: {exc}") from None

    def _apply(
        self, rts, a: Action, wanted: Mapping[str, Target], found: Mapping[str, Target]
    ) -> None:
        if a.op == "create_target":
            fabric = rts.FabricModule("iscsi")
            target = rts.Target(fabric, a.iqn, mode="create")
            tpg = rts.TPG(target, TPG_TAG, mode="create")
            rts.NetworkPortal(tpg, self.portal, self.port, mode="create")
            # Only the ACL's initiator may log in; no demo mode.
            tpg.set_attribute("generate_node_acls", "0")
            tpg.set_attribute("authentication", "0")
            tpg.enable = True
            return
        target = self._target(a.iqn)
        tpg = _tpg(target)
        if a.op == "delete_target":
            sos = [lun.storage_object for lun in tpg.luns] if tpg else []
            target.delete()
            for so in sos:
                if not list(so.attached_luns):
                    so.delete()
        elif a.op == "add_lun":
            want = wanted[a.iqn]
            disk = a.lun
            assert disk is not None and a.backing is not None, "plan: add_lun without its LUN"
            name = _so_name(want, disk)
            so = self._storage_object(rts, name, a.backing)
            lun = rts.LUN(tpg, a.lun, so)
            for acl in tpg.node_acls:
                rts.MappedLUN(acl, a.lun, lun)
        elif a.op == "remove_lun":
            for lun in tpg.luns:
                if lun.lun == a.lun:
                    so = lun.storage_object
                    lun.delete()
                    if not list(so.attached_luns):
                        so.delete()
        elif a.op == "add_acl":
            acl = rts.NodeACL(tpg, a.initiator, mode="create")
            for lun in tpg.luns:
                rts.MappedLUN(acl, lun.lun, lun)
        elif a.op == "remove_acl":
            if a.initiator == "ALL":
                tpg.set_attribute("generate_node_acls", "0")
            for acl in tpg.node_acls:
                if acl.node_wwn == a.initiator:
                    acl.delete()
        elif a.op == "set_chap":
            want = wanted[a.iqn]
            for acl in tpg.node_acls:
                if acl.node_wwn == want.initiator:
                    acl.chap_userid = want.chap_user
                    acl.chap_password = want.chap_secret
                    # Empty turns the target's side off again (mutual CHAP dropped).
                    acl.chap_mutual_userid = want.mutual_user or ""
                    acl.chap_mutual_password = want.mutual_secret or ""
            tpg.set_attribute("authentication", "1")
        elif a.op == "clear_chap":
            tpg.set_attribute("authentication", "0")
            for acl in tpg.node_acls:
                acl.chap_userid = ""
                acl.chap_password = ""
                acl.chap_mutual_userid = ""
                acl.chap_mutual_password = ""
        elif a.op == "set_params":
            for key, value in wanted[a.iqn].params.items():
                if tpg.get_parameter(key) != value:
                    tpg.set_parameter(key, value)
        else:
            raise IscsiError(f"LIO driver: unknown action {a.op}")

    def _storage_object(self, rts, name: str, lun: Lun):
        assert self.root is not None, "apply() runs after read()"
        for so in self.root.storage_objects:
            if so.udev_path == lun.path and _kind(so) == lun.kind:
                return so  # the same disk already exported, e.g. after a LUN renumbering
        if lun.kind == "block":
            return rts.BlockStorageObject(name, dev=lun.path)
        try:
            size = os.path.getsize(lun.path)
        except OSError as exc:
            raise IscsiError(
                f"backing file {lun.path} cannot be read ({exc.strerror}); is its writeback created?"
            ) from None
        # rtslib's default is write-through: the file opened O_DSYNC, every write of
        # the PC synchronous.  A writeback is thrown away at the next boot, so it gets
        # a write cache, as tgt's rdwr gives its LUNs; the PC's flushes still fsync.
        return rts.FileIOStorageObject(name, dev=lun.path, size=size, write_back=True)

    def persist(self, wanted: Mapping[str, Target], check_mode: bool = False) -> bool:
        """Save configfs where the restore service reads it; True when the file changed."""
        if not self.savefile:
            return False
        root = self.root or _root()
        current: Any = root.dump()
        try:
            with open(self.savefile, encoding="utf-8") as fh:
                saved = json.load(fh)
        except (FileNotFoundError, ValueError):
            saved = None
        # A restore at boot re-creates objects with attributes of the running kernel
        # (defaults, generated serials), so the raw dumps differ; what must survive a
        # reboot is the targets, LUNs, ACLs and CHAP users, so that is what is compared.
        if saved is not None and _essence(saved) == _essence(current):
            return False
        if not check_mode:
            os.makedirs(os.path.dirname(self.savefile) or ".", mode=0o700, exist_ok=True)
            root.save_to_file(self.savefile)
            os.chmod(self.savefile, 0o600)
        return True
