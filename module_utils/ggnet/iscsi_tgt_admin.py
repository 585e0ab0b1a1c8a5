"""Talking to one tgtd: tgtadm, and tgtd's management socket for login keys.

tgtadm talks to tgtd over an abstract socket, which exists per network namespace and
per control port (tgtd -C N), so both are part of every call.
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
import struct
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass

from .host_os import c_locale_env
from .iscsi_types import IscsiError, mask_secret

TGTADM = "tgtadm"
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
        try:
            proc = subprocess.Popen(
                argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=c_locale_env()
            )
        except FileNotFoundError as exc:
            raise IscsiError(
                f"{exc.filename} is not installed: install the tgt package (apt-get install tgt)"
            ) from None
        return argv, proc

    def _finish(self, argv: list[str], proc: subprocess.Popen, secret: str | None = None) -> str:
        stdout, stderr = proc.communicate()
        if proc.returncode != 0:
            shown = mask_secret(" ".join(argv), secret)
            err = mask_secret((stderr or stdout).strip(), secret)
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


# The `Target N:` lines are the ones _params_argv's loop echoes before each tgtadm.
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
