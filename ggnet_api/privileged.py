"""What the API asks of root: one interface, two ways.

The API that faces the PCs runs without root; the named operations of ggnet_privd
(reset, run_job, cancel_job, sample, approve, wake, power) do what needs it.  `privileged(config,
...)` gives the way the settings ask for:

- no `privd_socket`: InProcess, which calls ggnet_privd's Ops in this process
  (development, unit tests, `ggnet serve` standalone as root);
- `privd_socket` set: SocketClient, which sends the same requests to ggnet-privd.

Both go through Ops.call, which checks every argument: nothing is checked or done in
two ways.  A refusal or failure is an OpError whose status is the HTTP status to pass on.
"""

from __future__ import annotations

import contextlib
import socket
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from ggnet_api.collector import Collector, Sample, sample_from_json
from ggnet_api.snapshot import CurrentInventory
from ggnet_privd import protocol
from ggnet_privd.ops import Ops
from ggnet_privd.protocol import OpError

if TYPE_CHECKING:
    from ggnet_api.tracing_otel import Tracing

OnEvent = Callable[[dict[str, Any]], None]


class Privileged:
    """The operations; a way provides _call."""

    # With tracing on (app.py sets it), a call made inside a request's or a job's span
    # gets a CLIENT span `privd <op>`.
    tracing: Tracing | None = None

    def reset(self, client: str) -> str | None:
        """Reset the client's writebacks; the version its system disk boots now."""
        answer = self._op("reset", {"client": client})
        versions = answer.get("versions") if isinstance(answer, dict) else None
        version = versions.get("system") if isinstance(versions, dict) else None
        return version if isinstance(version, str) else None

    def reset_idle(self, client: str) -> None:
        """The reset of a PC whose session ended; privd refuses it while it is logged in."""
        self._op("reset_idle", {"client": client})

    def run_job(
        self, job_id: str, kind: str, extravars: dict[str, Any], on_event: OnEvent
    ) -> dict[str, Any]:
        """{"status": runner's status, "rc": ...}; each event goes to on_event first."""
        args = {"job_id": job_id, "kind": kind, "extravars": extravars}
        return self._op("run_job", args, on_event)

    def cancel_job(self, job_id: str) -> bool:
        """Whether a run of job_id was going on to be cancelled."""
        return bool(self._op("cancel_job", {"job_id": job_id})["running"])

    def sample(self) -> Sample:
        return sample_from_json(self._op("sample", {}))

    def approve(self, mac: str, name: str, image: str, groups: list[str], principal: str) -> str:
        """The commit id of the approval."""
        args = {"mac": mac, "name": name, "image": image, "groups": groups, "principal": principal}
        return str(self._op("approve", args)["commit"])

    def wake(self, mac: str) -> dict[str, Any]:
        """{client, mac, interface, broadcast, sent}: the magic packet went out."""
        return dict(self._op("wake", {"mac": mac}))

    def power(self, client: str, action: str) -> dict[str, Any]:
        """{client, action, state, steps}: the state the BMC reported back."""
        return dict(self._op("power", {"client": client, "action": action}))

    def _op(self, op: str, args: dict[str, Any], on_event: OnEvent | None = None) -> Any:
        if self.tracing is None:
            return self._call(op, args, on_event)
        from opentelemetry.trace import SpanKind

        attrs = {"ggnet.privd.op": op, "ggnet.privd.way": type(self).__name__}
        with self.tracing.child_span(f"privd {op}", attrs, SpanKind.CLIENT):
            return self._call(op, args, on_event)

    def _call(self, op: str, args: dict[str, Any], on_event: OnEvent | None = None) -> Any:
        raise NotImplementedError


class InProcess(Privileged):
    def __init__(self, ops: Ops):
        self.ops = ops

    def _call(self, op: str, args: dict[str, Any], on_event: OnEvent | None = None) -> Any:
        return self.ops.call(op, args, on_event)


class SocketClient(Privileged):
    # A job's connection waits for as long as the job runs; every other operation is
    # over well within this.
    TIMEOUT = 120.0

    def __init__(self, path: str, timeout: float = TIMEOUT):
        self.path = path
        self.timeout = timeout

    def _call(self, op: str, args: dict[str, Any], on_event: OnEvent | None = None) -> Any:
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
                sock.settimeout(self.timeout)
                sock.connect(self.path)
                # privd may refuse (the peer, its load) before it reads: its reply says why.
                with contextlib.suppress(BrokenPipeError, ConnectionResetError):
                    sock.sendall(protocol.request(op, args))
                if op == "run_job":
                    sock.settimeout(None)
                with sock.makefile("rb") as replies:
                    return self._read(replies, on_event)
        except OSError as exc:
            raise OpError(f"ggnet-privd at {self.path} did not answer {op}: {exc}", 503) from exc

    @staticmethod
    def _read(replies: Any, on_event: OnEvent | None) -> Any:
        while True:
            line = replies.readline(protocol.MAX_REPLY + 1)
            if not line.endswith(b"\n"):
                raise OpError("ggnet-privd: the reply ended early or is too long", 502)
            message = protocol.parse_reply(line)
            if "event" in message:
                if on_event is not None:
                    on_event(message["event"])
                continue
            if message.get("ok") is True:
                return message.get("result")
            raise OpError(
                str(message.get("error") or "ggnet-privd refused"),
                int(message.get("status") or 502),
                list(message.get("problems") or []),
            )


def privileged(
    config: dict[str, Any], inventory: CurrentInventory, collector: Collector
) -> Privileged:
    """The way the settings ask for (see the module's docstring)."""
    if config.get("privd_socket"):
        return SocketClient(str(config["privd_socket"]))
    return InProcess(Ops(config, inventory, collector))
