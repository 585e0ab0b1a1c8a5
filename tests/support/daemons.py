"""Daemons the integration tests start on 127.0.0.1 (prometheus, node_exporter,
dnsmasq, websockify, qemu, chromium): each writes to its own log file and is stopped by
its PID when the test ends, failed or not, in the reverse order of their starts.

A daemon that forks helpers of its own (chromium) is started as the leader of a new
session and stopped as a process group, by the leader's PID; nothing is ever looked up
or killed by name.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import pytest


def free_port(start: int = 0) -> int:
    """A free TCP port on 127.0.0.1 (the first from `start` on, or any)."""
    for port in range(start, start + 100) if start else [0]:
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
            return s.getsockname()[1]
    raise RuntimeError(f"no free port from {start}")


def wait_for(what: str, probe: Callable, timeout: float = 90.0, interval: float = 0.2):
    """probe()'s first true value; the test fails when none comes within `timeout`."""
    deadline = time.monotonic() + timeout
    while True:
        value = probe()
        if value:
            return value
        if time.monotonic() > deadline:
            pytest.fail(f"{what}: not seen within {timeout:.0f} s")
        time.sleep(interval)


def stop(proc: subprocess.Popen, group: bool = False, timeout: float = 10.0) -> None:
    """SIGTERM, then SIGKILL if it is still there after `timeout`; a no-op once gone."""
    if proc.poll() is not None:
        return

    def send(sig: int) -> None:
        with contextlib.suppress(ProcessLookupError):
            if group:
                os.killpg(proc.pid, sig)
            else:
                proc.send_signal(sig)

    send(signal.SIGTERM)
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        send(signal.SIGKILL)
        proc.wait()


class Daemons:
    """The daemons (and other clean-ups) of one test."""

    def __init__(self) -> None:
        self._stack = contextlib.ExitStack()
        self._groups: dict[int, bool] = {}

    def start(self, argv: list[str], log: Path, group: bool = False) -> subprocess.Popen:
        with log.open("w") as out:
            proc = subprocess.Popen(
                argv, stdout=out, stderr=subprocess.STDOUT, start_new_session=group
            )
        self._groups[proc.pid] = group
        self._stack.callback(stop, proc, group)
        return proc

    def stop(self, proc: subprocess.Popen) -> None:
        """Stop one daemon now (a test's fault); stopping it again later is a no-op."""
        stop(proc, self._groups.get(proc.pid, False))

    def callback(self, fn: Callable, *args) -> None:
        """fn(*args) at the end, in order with the stops."""
        self._stack.callback(fn, *args)

    def stop_all(self) -> None:
        self._stack.close()


@pytest.fixture(name="daemons")
def daemons_fixture():
    d = Daemons()
    try:
        yield d
    finally:
        d.stop_all()
