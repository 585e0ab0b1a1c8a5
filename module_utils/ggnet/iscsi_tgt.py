"""tgt (userspace target) driver: read the live state with tgtadm, apply Actions,
persist the desired state where tgt's service restores it at start.

Reaching tgtd is iscsi_tgt_admin's, the persisted configuration iscsi_tgt_conf's.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

from .host_os import is_block_device
from .iscsi_tgt_admin import Tgtadm
from .iscsi_tgt_conf import DEFAULT_CONF, NO_ADDRESS, read_conf_secrets, render_conf, write_conf
from .iscsi_types import LUN_BASE, UNKNOWN_SECRET, Action, IscsiError, Lun, Target
from .net import is_iscsi_name


@dataclass
class TgtTarget:
    tid: int
    iqn: str
    sessions: list[str] = field(default_factory=list)
    luns: dict[int, str] = field(default_factory=dict)  # disks only, not the controller
    accounts: list[str] = field(default_factory=list)
    outgoing: list[str] = field(default_factory=list)  # the target's own (mutual CHAP)
    acls: list[str] = field(default_factory=list)
    params: dict[str, str] = field(default_factory=dict)


_TARGET_RE = re.compile(r"^Target (\d+): (\S+)$")


def parse_show(text: str) -> list[TgtTarget]:
    """Parse `tgtadm --op show --mode target` (run with LC_ALL=C).

    The output is indented sections; only what a reconcile needs is kept.
    """
    targets: list[TgtTarget] = []
    cur: TgtTarget | None = None
    section = ""
    lun: int | None = None
    lun_is_disk = False
    for raw in text.splitlines():
        line = raw.strip()
        m = _TARGET_RE.match(raw)
        if m:
            cur = TgtTarget(int(m.group(1)), m.group(2))
            targets.append(cur)
            section, lun = "", None
            continue
        if cur is None or not line:
            continue
        indent = len(raw) - len(raw.lstrip())
        if indent == 4:
            section = line.rstrip(":")
            continue
        if section == "I_T nexus information" and line.startswith("Initiator:"):
            initiator = line.split()[1]
            if initiator not in cur.sessions:
                cur.sessions.append(initiator)
        elif section == "LUN information":
            if line.startswith("LUN:"):
                lun, lun_is_disk = int(line.split()[1]), False
            elif line.startswith("Type:"):
                lun_is_disk = line.split(":", 1)[1].strip() != "controller"
            elif line.startswith("Backing store path:") and lun is not None and lun_is_disk:
                cur.luns[lun] = line.split(":", 1)[1].strip()
        elif section == "Account information":
            if line.endswith("(outgoing)"):
                cur.outgoing.append(line.rsplit(None, 1)[0])
            else:
                cur.accounts.append(line)
        elif section == "ACL information":
            cur.acls.append(line)
    return targets


def show(tgtadm: Tgtadm) -> list[TgtTarget]:
    return parse_show(tgtadm.run("--op", "show", "--mode", "target"))


def sessions(control_port: int | None = None, netns: str | None = None) -> dict[str, list[str]]:
    return {t.iqn: list(t.sessions) for t in show(Tgtadm(control_port, netns)) if t.sessions}


def bs_flags(kind: str) -> list[str]:
    """tgtadm's options for a LUN of this kind.  A block device (a zvol) is opened
    O_DIRECT: tgt's rdwr otherwise reads and writes it through the kernel's page cache,
    which a reset's `zfs rollback` swaps the blocks beneath (seen in the lab: a PC
    rebooted on tgt read back what it wrote before the reset), and whose dirty pages
    could land on the rolled-back zvol afterwards.  A file on a filesystem keeps one
    cache with ZFS, so it stays cached."""
    return ["--bsoflags", "direct"] if kind == "block" else []


def _kind(path: str) -> str:
    return "block" if is_block_device(path) else "file"


def to_model(found: Sequence[TgtTarget], conf_path: str | None) -> dict[str, Target]:
    secrets = read_conf_secrets(conf_path) if conf_path else {}
    out: dict[str, Target] = {}
    for t in found:
        # tgt's ACL section mixes initiator names and address rules, and admits an
        # initiator that either one matches: an address rule (tgt-admin's default
        # "ALL") would open the target to everyone, so any but ours is removed.
        names = [a for a in t.acls if is_iscsi_name(a)]
        addresses = [a for a in t.acls if a not in names and a != NO_ADDRESS]
        known = secrets.get(t.iqn, {})
        user = t.accounts[0] if t.accounts else None
        mutual_user = t.outgoing[0] if t.outgoing else None
        secret = mutual_secret = None
        if user:
            mine = known.get("incominguser")
            secret = mine[1] if mine and mine[0] == user else UNKNOWN_SECRET
        if mutual_user:
            mine = known.get("outgoinguser")
            mutual_secret = mine[1] if mine and mine[0] == mutual_user else UNKNOWN_SECRET
        out[t.iqn] = Target.from_live(
            t.iqn,
            luns={n: Lun(path, _kind(path)) for n, path in t.luns.items()},
            first_lun=LUN_BASE["tgt"],
            initiators=names + addresses,
            chap_user=user,
            chap_secret=secret,
            mutual_user=mutual_user,
            mutual_secret=mutual_secret,
            params=t.params,
        )
    return out


class Driver:
    """Apply a plan to one tgtd."""

    def __init__(
        self,
        control_port: int | None = None,
        netns: str | None = None,
        conf_path: str | None = DEFAULT_CONF,
    ):
        self.tgtadm = Tgtadm(control_port, netns)
        self.conf_path = conf_path
        self._raw: list[TgtTarget] = []

    def read(
        self, iqns: Iterable[str] | None = None
    ) -> tuple[dict[str, Target], dict[str, list[str]]]:
        """(targets by IQN, live initiators by target IQN), as tgtd has them now.

        With iqns, only those targets (the ones tgtd has) and their sessions are
        returned, and only their login keys are read; apply() still knows every
        target, so a target it creates gets a free tid.
        """
        self._raw = show(self.tgtadm)
        if iqns is None:
            chosen = self._raw
        else:
            wanted = set(iqns)
            chosen = [t for t in self._raw if t.iqn in wanted]
        params = self.tgtadm.show_params([t.tid for t in chosen])
        for t in chosen:
            t.params = params.get(t.tid, {})
        return to_model(chosen, self.conf_path), {
            t.iqn: list(t.sessions) for t in chosen if t.sessions
        }

    def _tid(self, iqn: str) -> int:
        for t in self._raw:
            if t.iqn == iqn:
                return t.tid
        raise IscsiError(
            f"target {iqn} vanished from tgtd while being changed; run the converge again"
        )

    def _accounts(self) -> list[str]:
        out = self.tgtadm.run("--op", "show", "--mode", "account")
        return [line.strip() for line in out.splitlines()[1:] if line.strip()]

    def apply(
        self,
        actions: Sequence[Action],
        wanted: Mapping[str, Target],
        found: Mapping[str, Target],
        force: bool = False,
    ) -> None:
        for a in actions:
            if a.op == "create_target":
                self._create_target(a)
                continue
            tid = str(self._tid(a.iqn))
            if a.op == "delete_target":
                self._delete_target(a, tid, found, force)
            elif a.op == "add_lun":
                self._add_lun(a, tid)
            elif a.op == "remove_lun":
                self._remove_lun(a, tid)
            elif a.op == "add_acl":
                self._add_acl(a, tid)
            elif a.op == "remove_acl":
                self._remove_acl(a, tid)
            elif a.op == "set_chap":
                self._set_chap(a, tid, wanted, found)
            elif a.op == "clear_chap":
                self._clear_chap(a, found)
            elif a.op == "set_params":
                self._set_params(a, tid, wanted, found)
            else:
                raise IscsiError(f"tgt driver: unknown action {a.op}")

    def _create_target(self, a: Action) -> None:
        new_tid = 1 + max((t.tid for t in self._raw), default=0)
        self.tgtadm.run(
            "--op", "new", "--mode", "target", "--tid", str(new_tid), "--targetname", a.iqn
        )
        self._raw.append(TgtTarget(new_tid, a.iqn))

    def _delete_target(self, a: Action, tid: str, found: Mapping[str, Target], force: bool) -> None:
        have = found.get(a.iqn)
        self.tgtadm.run(
            "--op",
            "delete",
            "--mode",
            "target",
            "--tid",
            tid,
            *(["--force"] if force else []),
        )
        self._raw = [t for t in self._raw if t.iqn != a.iqn]
        for user in (have.chap_user, have.mutual_user) if have else ():
            if user:
                self._drop_account(user)

    def _add_lun(self, a: Action, tid: str) -> None:
        assert a.backing is not None, "plan: add_lun without its LUN"
        self.tgtadm.run(
            "--op",
            "new",
            "--mode",
            "logicalunit",
            "--tid",
            tid,
            "--lun",
            str(a.lun),
            "--backing-store",
            a.backing.path,
            "--bstype",
            "rdwr",
            *bs_flags(a.backing.kind),
        )

    def _remove_lun(self, a: Action, tid: str) -> None:
        self.tgtadm.run(
            "--op", "delete", "--mode", "logicalunit", "--tid", tid, "--lun", str(a.lun)
        )

    def _add_acl(self, a: Action, tid: str) -> None:
        assert a.initiator is not None, "plan: add_acl without its initiator"
        self.tgtadm.run(
            "--op",
            "bind",
            "--mode",
            "target",
            "--tid",
            tid,
            "--initiator-name",
            a.initiator,
        )

    def _remove_acl(self, a: Action, tid: str) -> None:
        assert a.initiator is not None, "plan: remove_acl without its initiator"
        by_name = is_iscsi_name(a.initiator)
        flag = "--initiator-name" if by_name else "--initiator-address"
        self.tgtadm.run("--op", "unbind", "--mode", "target", "--tid", tid, flag, a.initiator)

    def _set_chap(
        self, a: Action, tid: str, wanted: Mapping[str, Target], found: Mapping[str, Target]
    ) -> None:
        have, want = found.get(a.iqn), wanted[a.iqn]
        # A wanted target with CHAP on has both (target_from_spec).
        assert want.chap_user is not None and want.chap_secret is not None
        # tgt's accounts are global and a password is only set at creation: every
        # account this target had or gets is dropped and made anew.
        for user in {have.chap_user, have.mutual_user} if have else ():
            if user and user not in (want.chap_user, want.mutual_user):
                self._drop_account(user)
        self._account(tid, want.chap_user, want.chap_secret)
        if want.mutual_user is not None:
            assert want.mutual_secret is not None  # target_from_spec checks both
            self._account(tid, want.mutual_user, want.mutual_secret, outgoing=True)

    def _account(self, tid: str, user: str, secret: str, outgoing: bool = False) -> None:
        """Bind account `user` to target `tid`: incoming (the PC's) or outgoing (the target's)."""
        self._drop_account(user)
        run = self.tgtadm.run
        run("--op", "new", "--mode", "account", "--user", user, "--password", secret, secret=secret)
        bind = ["--op", "bind", "--mode", "account", "--tid", tid, "--user", user]
        run(*bind, *(["--outgoing"] if outgoing else []))

    def _clear_chap(self, a: Action, found: Mapping[str, Target]) -> None:
        have = found.get(a.iqn)
        for user in (have.chap_user, have.mutual_user) if have else ():
            if user:
                self._drop_account(user)

    def _set_params(
        self, a: Action, tid: str, wanted: Mapping[str, Target], found: Mapping[str, Target]
    ) -> None:
        have = found.get(a.iqn)
        for key, value in wanted[a.iqn].params.items():
            if have is None or have.params.get(key) != value:
                self.tgtadm.run(
                    "--op",
                    "update",
                    "--mode",
                    "target",
                    "--tid",
                    tid,
                    "--name",
                    key,
                    "--value",
                    value,
                )

    def _drop_account(self, user: str) -> None:
        # Deleting an account also unbinds it from every target.
        if user in self._accounts():
            self.tgtadm.run("--op", "delete", "--mode", "account", "--user", user)

    def persist(self, wanted: Mapping[str, Target], check_mode: bool = False) -> bool:
        """Write the configuration tgt restores at start; True when it changed."""
        if not self.conf_path:
            return False
        return write_conf(self.conf_path, render_conf(wanted), check_mode)
