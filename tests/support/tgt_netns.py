"""A private tgtd in a network namespace of its own, and initiators that talk to it.

Everything stays inside the namespace: the portal is the namespace's loopback, so no
packet leaves it.  Teardown deletes the targets (tgtd ignores SIGTERM while any exist),
asks tgtd to exit, kills its process group only if it did not, and removes the netns.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import signal
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from ggnet.settings import DEFAULT_IQN_PREFIX

PREFIX = DEFAULT_IQN_PREFIX
ENV_C = {**os.environ, "LC_ALL": "C"}


def nsexec(netns: str, *argv: str) -> list[str]:
    # Network only: tgtd must see files and mounts made after it started.
    return ["nsenter", f"--net=/var/run/netns/{netns}", *argv]


@dataclass
class Tgt:
    netns: str
    control_port: int
    workdir: Path
    proc: subprocess.Popen | None = None
    portal: str = "127.0.0.1"
    # Extra environment for tgtd (the benchmark compares malloc tunables).
    env: dict[str, str] = field(default_factory=dict)

    def tgtadm(self, *args: str, check: bool = True) -> subprocess.CompletedProcess:
        return subprocess.run(
            nsexec(self.netns, "tgtadm", "-C", str(self.control_port), "--lld", "iscsi", *args),
            capture_output=True,
            text=True,
            env=ENV_C,
            check=check,
        )

    def show(self) -> str:
        return self.tgtadm("--op", "show", "--mode", "target").stdout

    def start(self) -> None:
        self.proc = subprocess.Popen(
            nsexec(self.netns, "tgtd", "-f", "-C", str(self.control_port)),
            env={**os.environ, **self.env},
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        for _ in range(100):
            if self.tgtadm("--op", "show", "--mode", "sys", check=False).returncode == 0:
                return
            if self.proc.poll() is not None:
                raise RuntimeError(
                    f"tgtd -C {self.control_port} exited with {self.proc.returncode}"
                )
            time.sleep(0.1)
        raise RuntimeError("tgtd did not answer within 10 s")

    def stop(self) -> None:
        if self.proc is None:
            return
        if self.proc.poll() is None:
            for line in (
                self.show().splitlines()
                if self.tgtadm("--op", "show", "--mode", "sys", check=False).returncode == 0
                else []
            ):
                if line.startswith("Target "):
                    tid = line.split()[1].rstrip(":")
                    self.tgtadm(
                        "--op", "delete", "--mode", "target", "--tid", tid, "--force", check=False
                    )
            self.tgtadm("--op", "delete", "--mode", "system", check=False)
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(timeout=10)
        self.proc = None

    # --- initiators -------------------------------------------------------------

    def url(self, iqn: str, lun: int, user: str | None = None, secret: str | None = None) -> str:
        cred = f"{user}%{secret}@" if user else ""
        return f"iscsi://{cred}{self.portal}/{iqn}/{lun}"

    def inq(
        self, initiator: str, iqn: str, lun: int, user=None, secret=None
    ) -> subprocess.CompletedProcess:
        """One login and an INQUIRY with libiscsi; returncode 0 means logged in."""
        return subprocess.run(
            nsexec(self.netns, "iscsi-inq", "-i", initiator, self.url(iqn, lun, user, secret)),
            capture_output=True,
            text=True,
            env=ENV_C,
            timeout=60,
            check=False,
        )

    def qemu_io_argv(self, initiator: str, iqn: str, lun: int, user=None, secret=None) -> list[str]:
        opts = f"driver=iscsi,transport=tcp,portal={self.portal}:3260,target={iqn},lun={lun},initiator-name={initiator}"
        argv = ["qemu-io"]
        if user:
            # The secret goes through a 0600 file, not the command line.
            fd, path = tempfile.mkstemp(dir=self.workdir, prefix="pw-")
            with os.fdopen(fd, "w") as fh:
                fh.write(secret)
            argv += ["--object", f"secret,id=chap,file={path}"]
            opts += f",user={user},password-secret=chap"
        return nsexec(self.netns, *argv, "--image-opts", opts)

    def qemu_io(self, commands: list[str], *target_args, **kw) -> subprocess.CompletedProcess:
        argv = self.qemu_io_argv(*target_args, **kw)
        for c in commands:
            argv += ["-c", c]
        return subprocess.run(
            argv, capture_output=True, text=True, env=ENV_C, timeout=120, check=False
        )

    @contextlib.contextmanager
    def session(self, *target_args, **kw):
        """A logged-in initiator held open (qemu-io at its prompt) for the with-block."""
        proc = subprocess.Popen(
            self.qemu_io_argv(*target_args, **kw),
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            env=ENV_C,
        )
        holder = Session(proc)
        try:
            # qemu-io logs in before its first prompt; wait until tgtd lists the nexus.
            initiator = target_args[0]
            for _ in range(100):
                if f"Initiator: {initiator} " in self.show():
                    break
                if proc.poll() is not None:
                    raise RuntimeError(f"qemu-io exited: {proc.stdout.read()}")
                time.sleep(0.1)
            else:
                raise RuntimeError(f"no session from {initiator} after 10 s")
            yield holder
        finally:
            if proc.poll() is None:
                with contextlib.suppress(BrokenPipeError):
                    proc.stdin.write("quit\n")
                    proc.stdin.close()
                try:
                    proc.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()


@dataclass
class Session:
    proc: subprocess.Popen
    out: list[str] = field(default_factory=list)

    def alive(self) -> bool:
        return self.proc.poll() is None


_instances = itertools.count()


@contextlib.contextmanager
def tgt_in_netns(tmp_path: Path, control_port: int | None = None, env=None):
    # A fresh name and control port per tgtd: the control port's lock file is on the
    # file system, not in the netns, and a stopping tgtd's child may still hold it.
    n = next(_instances)
    netns = f"ggnet-t-iscsi-{os.getpid()}-{n}"
    # tgtd rejects control ports above 32767.
    port = control_port or 20000 + (os.getpid() * 7 + n) % 10000
    subprocess.run(["ip", "netns", "add", netns], check=True)
    tgt = Tgt(netns, port, tmp_path, env=dict(env or {}))
    try:
        subprocess.run(["ip", "-n", netns, "link", "set", "lo", "up"], check=True)
        tgt.start()
        yield tgt
    finally:
        try:
            tgt.stop()
        finally:
            subprocess.run(["ip", "netns", "del", netns], check=False)
