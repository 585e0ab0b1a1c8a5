"""ggnet-privd's socket: who may ask, and how much.

A Unix stream socket (mode 0660, group of the API's user).  Each connection carries one
request.  Before anything is read, the peer's uid is taken from the kernel
(SO_PEERCRED): only root and the API's user are answered, anyone else gets a refusal
and nothing runs.  A request line longer than max_request is refused, a connection
that sends no full line within idle_timeout is dropped, and at most max_connections
are served at once (a job's connection lasts as long as the job).
"""

from __future__ import annotations

import contextlib
import logging
import os
import pwd
import socket
import stat
import struct
import threading
import time
from typing import Any

from ggnet_privd import protocol
from ggnet_privd.ops import Ops
from ggnet_privd.protocol import OpError

log = logging.getLogger(__name__)

_UCRED = struct.Struct("3i")  # struct ucred: pid, uid, gid


def api_user(config: dict[str, Any]) -> pwd.struct_passwd:
    name = config["privd_api_user"]
    try:
        return pwd.getpwnam(name)
    except KeyError:
        raise ValueError(f"privd_api_user: {name!r} is not a user of this system") from None


def allowed_uids(config: dict[str, Any]) -> frozenset[int]:
    """Root and the API's user: the only peers privd answers."""
    return frozenset({0, api_user(config).pw_uid})


def peer_uid(conn: socket.socket) -> tuple[int, int]:
    """(pid, uid) of the process at the other end, as the kernel saw it connect."""
    pid, uid, _gid = _UCRED.unpack(
        conn.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, _UCRED.size)
    )
    return pid, uid


class Server:
    def __init__(
        self,
        ops: Ops,
        path: str,
        allowed: frozenset[int],
        group: int | None = None,
        max_connections: int = 32,
        idle_timeout: float = 10.0,
        send_timeout: float = 60.0,
        max_request: int = protocol.MAX_REQUEST,
    ):
        self.ops = ops
        self.path = path
        self.allowed = allowed
        self.group = group
        self.idle_timeout = idle_timeout
        self.send_timeout = send_timeout
        self.max_request = max_request
        self._slots = threading.BoundedSemaphore(max_connections)
        self._stop = threading.Event()
        self._sock: socket.socket | None = None

    def bind(self) -> None:
        with contextlib.suppress(FileNotFoundError):
            if stat.S_ISSOCK(os.lstat(self.path).st_mode):
                os.unlink(self.path)  # left by a privd that did not stop cleanly
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.bind(self.path)
        # Owner and group before listen(): until then nobody can connect.
        os.chmod(self.path, 0o660)
        if self.group is not None:
            os.chown(self.path, -1, self.group)
        sock.listen(64)
        sock.settimeout(0.5)
        self._sock = sock

    def serve_forever(self) -> None:
        assert self._sock is not None, "bind() first"
        while not self._stop.is_set():
            try:
                conn, _ = self._sock.accept()
            except TimeoutError:
                continue
            except OSError:
                if self._stop.is_set():
                    break
                raise
            if not self._slots.acquire(blocking=False):
                self._refuse(conn, OpError("ggnet-privd is busy: too many connections", 503))
                continue
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def stop(self) -> None:
        self._stop.set()
        if self._sock is not None:
            self._sock.close()
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self.path)

    def _refuse(self, conn: socket.socket, exc: OpError) -> None:
        with contextlib.suppress(OSError):
            conn.settimeout(1.0)
            conn.sendall(protocol.error(exc))
            # A socket closed with unread bytes resets the peer, which would then lose
            # the reply: take what it sent already, without waiting for more.
            conn.setblocking(False)
            conn.recv(self.max_request + 1)
        conn.close()

    def _serve(self, conn: socket.socket) -> None:
        try:
            pid, uid = peer_uid(conn)
            if uid not in self.allowed:
                log.warning("refused a connection from uid %d (pid %d): not allowed", uid, pid)
                self._refuse(conn, OpError(f"peer uid {uid} may not use ggnet-privd", 403))
                return
            self._answer(conn, uid)
        finally:
            conn.close()
            self._slots.release()

    def _answer(self, conn: socket.socket, uid: int) -> None:
        op = "?"
        try:
            op, args = protocol.parse_request(self._read_line(conn))
            conn.settimeout(self.send_timeout)

            def emit(event: dict[str, Any]) -> None:
                conn.sendall(protocol.event(event))

            result = self.ops.call(op, args, emit)
            reply = protocol.ok(result)
            log.info("uid %d: %s done", uid, str(op)[:40])
        except OpError as exc:
            log.info("uid %d: %s refused (%d): %s", uid, str(op)[:40], exc.status, exc)
            reply = protocol.error(exc)
        except Exception:
            # The message may quote a path or a value: logged, never answered.
            log.exception("uid %d: %s failed", uid, str(op)[:40])
            reply = protocol.error(OpError("internal error of ggnet-privd; see its log", 500))
        with contextlib.suppress(OSError):
            conn.sendall(reply)

    def _read_line(self, conn: socket.socket) -> bytes:
        # One deadline for the whole line: a byte now and then does not keep it open.
        deadline = time.monotonic() + self.idle_timeout
        buf = b""
        while b"\n" not in buf:
            try:
                conn.settimeout(max(0.001, deadline - time.monotonic()))
                chunk = conn.recv(4096)
            except TimeoutError:
                raise OpError(
                    f"request: no full line within {self.idle_timeout:g} s", 408
                ) from None
            if not chunk:
                raise OpError("request: the connection closed before a full line", 400)
            buf += chunk
            line = buf.partition(b"\n")[0]
            if len(line) > self.max_request:
                raise OpError(f"request: longer than {self.max_request} bytes", 413)
        return line
