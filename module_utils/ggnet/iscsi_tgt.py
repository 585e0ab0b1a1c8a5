"""tgt (userspace target) driver: read the live state with tgtadm, apply Actions,
persist the desired state where tgt's service restores it at start.

tgtadm talks to tgtd over an abstract socket, which exists per network namespace and
per control port (tgtd -C N), so both are part of every call.  tgtadm never shows a
CHAP password: the secrets of the previous converge are read back from the persisted
configuration (mode 0600, root only) so an unchanged secret is not reset each run.
A target's login keys (iscsi.SESSION_PARAMS) show only per target (`--tid N`): they
are read by asking tgtd's management socket directly, the request tgtadm itself sends
(one connection per target, no process each), and where that socket cannot be used, by
one shell running tgtadm for every target.
"""

from __future__ import annotations

import os
import re
import shlex
import socket
import stat
import struct
import subprocess
import tempfile
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

from .iscsi_types import LUN_BASE, MASK, UNKNOWN_SECRET, Action, IscsiError, Lun, Target

TGTADM = "tgtadm"
DEFAULT_CONF = "/etc/tgt/conf.d/ggnet.conf"
PARAMS_CHUNK = 32  # targets per shell that reads login keys
# tgtd's management socket (tgt's TGT_IPC_NAMESPACE and the control port, 0 unless
# tgtd -C N) and the request tgtadm writes to it: struct tgtadm_req of tgt 1.0.x
# (mode, op, lld[64], len, tid, sid, lun, cid, host_no, device_type, ac_dir, pack,
# force), answered by struct tgtadm_rsp (err, len) and then len - 8 bytes of text.
# It is a path, not an abstract name, so it is reached from any network namespace.
IPC_PATH = "/var/run/tgtd/socket.{port}"
_IPC_REQ = struct.Struct("=ii64sIiQQIIIIII")
_IPC_RSP = struct.Struct("=II")
_MODE_TARGET, _OP_SHOW = 1, 2
_NO_LUN = (1 << 64) - 1
_TGTADM_NO_TARGET = 4
IPC_WINDOW = 16  # requests in flight (tgtd listens with a backlog of 32)
IPC_TIMEOUT = 10.0
# Every iSCSI target shows these; an answer without them is not what tgtadm would print.
_IPC_SANITY_KEYS = ("MaxRecvDataSegmentLength", "MaxBurstLength", "InitialR2T")


class _IpcUnusable(Exception):
    """The management socket cannot answer as tgtadm would: use tgtadm."""


# tgt-admin binds the address rule "ALL" to a target whose configuration has no
# initiator-address, and "ALL" admits every initiator whatever the name rule says.
# The limited broadcast address is never a TCP peer's, so this rule admits no one.
NO_ADDRESS = "255.255.255.255/32"
CONF_HEADER = (
    "# Written by ggnet (modules/ggnet_targets.py); changes here are overwritten.\n"
    "# tgt's service reads it at start through the include in /etc/tgt/targets.conf.\n"
)


@dataclass
class Tgtadm:
    """How to reach one tgtd: its control port and the netns it listens in."""

    control_port: int | None = None
    netns: str | None = None
    binary: str = TGTADM

    def argv(self, *args: str) -> list[str]:
        cmd = [self.binary]
        if self.control_port is not None:
            cmd += ["-C", str(self.control_port)]
        cmd += ["--lld", "iscsi", *args]
        if self.netns:
            # Only the network namespace: a mount namespace of its own would hide
            # mounts (zfs-fuse datasets) that appear after tgtd started.
            cmd = ["nsenter", f"--net=/var/run/netns/{self.netns}", *cmd]
        return cmd

    def run(self, *args: str, secret: str | None = None) -> str:
        return self._call(self.argv(*args), secret=secret)

    def show_params(self, tids: Sequence[int]) -> dict[int, dict[str, str]]:
        """{tid: {key: value}}: these targets' login keys.

        tgt shows them only one target per request.  Asked over tgtd's management
        socket that is one connection per target (about 0.07 ms here); when the socket
        cannot be used (another tgtadm binary, no such socket, not root, an answer
        that is not tgtadm's), one shell loop of tgtadm per core does it (about 1 ms a
        target).
        """
        if not tids:
            return {}
        if self.binary == TGTADM:
            try:
                return self._ipc_params(tids)
            except _IpcUnusable:
                pass
        return self._shell_params(tids)

    def _ipc_params(self, tids: Sequence[int]) -> dict[int, dict[str, str]]:
        # A window of requests in flight: tgtd answers them in its event loop while
        # this process sends the next ones, instead of one round trip after another.
        path = IPC_PATH.format(port=self.control_port or 0)
        out: dict[int, dict[str, str]] = {}
        for at in range(0, len(tids), IPC_WINDOW):
            window = tids[at : at + IPC_WINDOW]
            socks: list[socket.socket] = []
            try:
                for tid in window:
                    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
                    socks.append(sock)
                    sock.settimeout(IPC_TIMEOUT)
                    sock.connect(path)
                    sock.sendall(_ipc_request(tid))
                for tid, sock in zip(window, socks, strict=True):
                    out[tid] = _ipc_keys(tid, _ipc_answer(tid, sock))
            except OSError as exc:
                raise _IpcUnusable(str(exc)) from None
            finally:
                for sock in socks:
                    sock.close()
        return out

    def _shell_params(self, tids: Sequence[int]) -> dict[int, dict[str, str]]:
        # A shell loop spares a Python subprocess per target, and a few loops side by
        # side use the other cores.
        size = max(PARAMS_CHUNK, -(-len(tids) // (os.cpu_count() or 1)))
        chunks = [tids[i : i + size] for i in range(0, len(tids), size)]
        procs = [self._popen(self._params_argv(chunk)) for chunk in chunks]
        out: dict[int, dict[str, str]] = {}
        try:
            for argv, proc in procs:
                out.update(parse_params(self._finish(argv, proc)))
        finally:
            for _, proc in procs:
                if proc.poll() is None:
                    proc.kill()
                    proc.wait()
        return out

    def _params_argv(self, tids: Sequence[int]) -> list[str]:
        # The base command without nsenter: the loop runs inside the netns as a whole.
        show = shlex.join(Tgtadm(self.control_port, None, self.binary).argv("--op", "show"))
        script = (
            f'for tid do echo "Target $tid:"; {show} --mode target --tid "$tid" || exit $?; done'
        )
        argv = ["sh", "-c", script, "sh", *(str(t) for t in tids)]
        if self.netns:
            argv = ["nsenter", f"--net=/var/run/netns/{self.netns}", *argv]
        return argv

    def _call(self, argv: list[str], secret: str | None = None) -> str:
        return self._finish(*self._popen(argv), secret=secret)

    def _popen(self, argv: list[str]) -> tuple[list[str], subprocess.Popen]:
        env = {**os.environ, "LC_ALL": "C", "LANG": "C"}
        try:
            proc = subprocess.Popen(
                argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env
            )
        except FileNotFoundError as exc:
            raise IscsiError(
                f"{exc.filename} is not installed: install the tgt package (apt-get install tgt)"
            ) from None
        return argv, proc

    def _finish(self, argv: list[str], proc: subprocess.Popen, secret: str | None = None) -> str:
        stdout, stderr = proc.communicate()
        if proc.returncode != 0:
            shown = " ".join(MASK if secret and a == secret else a for a in argv)
            err = (stderr or stdout).strip()
            if secret:
                err = err.replace(secret, MASK)
            hint = ""
            if "can't send the request" in err or "connect" in err.lower():
                hint = (
                    " (is tgtd running"
                    + (f" with -C {self.control_port}" if self.control_port is not None else "")
                    + (f" in netns {self.netns}" if self.netns else "")
                    + "?)"
                )
            raise IscsiError(f"tgtadm failed: {shown}: {err}{hint}")
        return stdout


def _ipc_request(tid: int) -> bytes:
    return _IPC_REQ.pack(
        _MODE_TARGET, _OP_SHOW, b"iscsi", _IPC_REQ.size, tid, 0, _NO_LUN, 0, 0, 0, 0, 0, 0
    )


def _ipc_answer(tid: int, sock: socket.socket) -> str:
    err, length = _IPC_RSP.unpack(_recv_exact(sock, _IPC_RSP.size))
    if err == _TGTADM_NO_TARGET:
        raise IscsiError(
            f"tgtadm failed: target {tid} vanished from tgtd while its login keys were "
            "read (can't find the target); run the converge again"
        )
    if err or not _IPC_RSP.size <= length <= 1 << 20:
        raise _IpcUnusable(f"target {tid}: error {err}")
    try:
        return _recv_exact(sock, length - _IPC_RSP.size).decode()
    except UnicodeDecodeError:
        raise _IpcUnusable(f"target {tid}: not text") from None


def _ipc_keys(tid: int, text: str) -> dict[str, str]:
    keys = {}
    for line in text.splitlines():
        key, eq, value = line.partition("=")
        if eq:
            keys[key.strip()] = value.strip()
    if not all(k in keys for k in _IPC_SANITY_KEYS):
        raise _IpcUnusable(f"target {tid}: not the answer tgtadm prints")
    return keys


def _recv_exact(sock: socket.socket, size: int) -> bytes:
    parts, got = [], 0
    while got < size:
        chunk = sock.recv(size - got)
        if not chunk:
            raise _IpcUnusable("tgtd closed the socket mid-answer")
        parts.append(chunk)
        got += len(chunk)
    return b"".join(parts)


@dataclass
class TgtTarget:
    tid: int
    iqn: str
    sessions: list[str] = field(default_factory=list)
    luns: dict[int, str] = field(default_factory=dict)  # disks only, not the controller
    accounts: list[str] = field(default_factory=list)
    acls: list[str] = field(default_factory=list)
    params: dict[str, str] = field(default_factory=dict)


_TARGET_RE = re.compile(r"^Target (\d+): (\S+)$")
_PARAMS_RE = re.compile(r"^Target (\d+):$")


def parse_params(text: str) -> dict[int, dict[str, str]]:
    """Parse `Target N:` lines, each followed by `tgtadm --op show --mode target --tid N`."""
    out: dict[int, dict[str, str]] = {}
    cur: dict[str, str] | None = None
    for line in text.splitlines():
        m = _PARAMS_RE.match(line)
        if m:
            cur = out.setdefault(int(m.group(1)), {})
        elif cur is not None and "=" in line:
            key, value = line.split("=", 1)
            cur[key.strip()] = value.strip()
    return out


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
            if not line.endswith("(outgoing)"):
                cur.accounts.append(line)
        elif section == "ACL information":
            cur.acls.append(line)
    return targets


def show(tgtadm: Tgtadm) -> list[TgtTarget]:
    return parse_show(tgtadm.run("--op", "show", "--mode", "target"))


def sessions(control_port: int | None = None, netns: str | None = None) -> dict[str, list[str]]:
    return {t.iqn: list(t.sessions) for t in show(Tgtadm(control_port, netns)) if t.sessions}


def _kind(path: str) -> str:
    try:
        return "block" if stat.S_ISBLK(os.stat(path).st_mode) else "file"
    except OSError:
        return "file"


def read_conf_secrets(path: str) -> dict[str, tuple[str, str]]:
    """{target_iqn: (user, secret)} from a configuration this driver wrote."""
    out: dict[str, tuple[str, str]] = {}
    try:
        with open(path, encoding="utf-8") as fh:
            text = fh.read()
    except FileNotFoundError:
        return out
    iqn = None
    for line in text.splitlines():
        words = line.split()
        if words[:1] == ["<target"] and len(words) == 2:
            iqn = words[1].rstrip(">")
        elif words[:1] == ["</target>"]:
            iqn = None
        elif iqn and words[:1] == ["incominguser"] and len(words) == 3:
            out[iqn] = (words[1], words[2])
    return out


def to_model(found: Sequence[TgtTarget], conf_path: str | None) -> dict[str, Target]:
    secrets = read_conf_secrets(conf_path) if conf_path else {}
    out: dict[str, Target] = {}
    for t in found:
        # tgt's ACL section mixes initiator names and address rules, and admits an
        # initiator that either one matches: an address rule (tgt-admin's default
        # "ALL") would open the target to everyone, so any but ours is removed.
        names = [a for a in t.acls if a.startswith(("iqn.", "eui.", "naa."))]
        addresses = [a for a in t.acls if a not in names and a != NO_ADDRESS]
        user = t.accounts[0] if t.accounts else None
        secret = None
        if user:
            known = secrets.get(t.iqn)
            secret = known[1] if known and known[0] == user else UNKNOWN_SECRET
        out[t.iqn] = Target.from_live(
            t.iqn,
            luns={n: Lun(path, _kind(path)) for n, path in t.luns.items()},
            first_lun=LUN_BASE["tgt"],
            initiators=names + addresses,
            chap_user=user,
            chap_secret=secret,
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
        if have and have.chap_user:
            self._drop_account(have.chap_user)

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
        by_name = a.initiator.startswith(("iqn.", "eui.", "naa."))
        flag = "--initiator-name" if by_name else "--initiator-address"
        self.tgtadm.run("--op", "unbind", "--mode", "target", "--tid", tid, flag, a.initiator)

    def _set_chap(
        self, a: Action, tid: str, wanted: Mapping[str, Target], found: Mapping[str, Target]
    ) -> None:
        run = self.tgtadm.run
        have, want = found.get(a.iqn), wanted[a.iqn]
        # A wanted target with CHAP on has both (target_from_spec).
        assert want.chap_user is not None and want.chap_secret is not None
        if have and have.chap_user and have.chap_user != want.chap_user:
            self._drop_account(have.chap_user)
        self._drop_account(want.chap_user)
        run(
            "--op",
            "new",
            "--mode",
            "account",
            "--user",
            want.chap_user,
            "--password",
            want.chap_secret,
            secret=want.chap_secret,
        )
        run("--op", "bind", "--mode", "account", "--tid", tid, "--user", want.chap_user)

    def _clear_chap(self, a: Action, found: Mapping[str, Target]) -> None:
        have = found.get(a.iqn)
        if have and have.chap_user:
            self._drop_account(have.chap_user)

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


def render_conf(wanted: Mapping[str, Target]) -> str:
    parts = [CONF_HEADER]
    for iqn in sorted(wanted):
        t = wanted[iqn]
        parts.append(f"\n<target {iqn}>\n")
        if t.name:
            parts.append(f"    # client {t.name}\n")
        for i, lun in enumerate(t.luns):
            # An explicit lun keeps the numbering the boot path uses (first disk = 1).
            parts.append(
                f"    <backing-store {lun.path}>\n        lun {1 + i}\n        bs-type rdwr\n    </backing-store>\n"
            )
        parts.append(f"    initiator-address {NO_ADDRESS}\n    initiator-name {t.initiator}\n")
        # tgt-admin passes these to `tgtadm --op update --mode target` at start.
        parts.extend(f"    {key} {value}\n" for key, value in t.params.items())
        if t.chap:
            parts.append(f"    incominguser {t.chap_user} {t.chap_secret}\n")
        parts.append("</target>\n")
    return "".join(parts)


def write_conf(path: str, text: str, check_mode: bool = False) -> bool:
    try:
        with open(path, encoding="utf-8") as fh:
            old = fh.read()
        mode = stat.S_IMODE(os.stat(path).st_mode)
    except FileNotFoundError:
        old, mode = None, None
    if old == text and mode == 0o600:
        return False
    if check_mode:
        return True
    directory = os.path.dirname(path) or "."
    os.makedirs(directory, exist_ok=True)
    # Created 0600 before the secrets go in, then renamed over the old file, so no
    # reader ever sees a half-written or world-readable configuration.
    fd, tmp = tempfile.mkstemp(prefix=".ggnet-", dir=directory)
    try:
        os.fchmod(fd, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return True
