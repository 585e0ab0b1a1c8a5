"""Opening time: N PCs switched on at once against a real boot server on this machine.

The server, as deployed (roles/ggnet_api):
- the API under gunicorn, `ggnet serve`'s command line (one gthread worker, the role's
  default ggnet_api_threads = 16 threads), not root's work: resets go to
- ggnet-privd (`ggnet privd`) on its Unix socket, as the API's unit asks it;
- a zfs-fuse pool with one writeback per PC (disk_format file), cloned from a 128 MiB
  image of random bytes;
- tgtd in a network namespace of its own, its targets made by ggnet's own converge
  (iscsi_converge, the ggnet_targets engine) from the inventory: CHAP per PC.
Both ggnet processes run as root here (privd_api_user root): the bench has no
unprivileged account to give the API; nothing else differs.

Each simulated PC, all released together:
1. GET /boot/<mac> from its own address (127.0.1.x, which a dnsmasq lease file gives
   its MAC: the boot path's origin check runs as in full-DHCP mode): the script, whose
   making resets the PC's writeback (privd: zfs rollback);
2. GET the script's `script-loaded` callback, as iPXE does before sanhook;
3. logs in with a real initiator: qemu-io's libiscsi driver, with the target, LUN,
   initiator name and CHAP account taken from the script (the portal is tgtd's
   namespace loopback, not the inventory's server_ip);  the qemu-io process is started
   before the PCs are released and opens the disk on command, so the figures hold the
   login, not qemu's own start-up (which a PC does not have);
4. GET the `sanboot` callback;
5. reads READ_MIB MiB of its disk as an OS boots (ggnet_testing/boot_storm.py: 4-64 KiB reads,
   4 in 5 at a random place, QUEUE_DEPTH in flight), then writes WRITES x 4 KiB so that
   its next boot resets a written writeback (a rollback, not only a check).

Why qemu-io: it is the only userspace initiator here that logs in once and then reads
a scripted list of offsets and lengths (libiscsi's iscsi-perf reads in order only;
iscsi-inq logs in and out).  It is libiscsi underneath, as in bench_iscsi.

Two modes, each with every N (PCs pc-000 .. pc-N-1, smallest N first), privd and the
API restarted between them with their setting:
- reset_at_boot (reset_on_session_end off): every writeback was written to since its
  last reset, so every boot's reset is a rollback (PCs switched off less than a minute
  before; and the only case before this bench's changes);
- reset_after_session (the default): before each round the bench waits until the
  collector (every COLLECT_INTERVAL s here) has seen every session end and privd has
  reset the writebacks, as after a night; the boots only check them.
BEFORE holds the same figures measured on the code before (every boot a rollback).

Figures per N:
- script_to_login: from the PC sending its script request to its login done (the
  disk opened: login, then qemu's INQUIRY / READ CAPACITY), measured at the PC;
  everything in it is the server's but the PC's own parsing of the script (~0.1 ms).
- all_logged_in_s: from the release to the last PC's login;
- read: the READ_MIB MiB read of every PC, aggregate MiB/s (all bytes over the span
  from the first login to the last read done) and per PC;
- errors: every PC that did not get its script, log in, or read everything, by kind;
- cpu_s: CPU seconds of the API worker, privd, tgtd and zfs-fuse during the round.
Each figure is also given as a ratio to the same run's N = 1.  The PCs, their reads
and the server share the machine's two cores: at N = 250 the reads (250 x READ_MIB
through tgtd and FUSE) compete with the logins of the PCs that come last.
"""

from __future__ import annotations

import contextlib
import http.client
import os
import random
import re
import resource
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import yaml
from ggnet_testing.boot_storm import boot_reads, ratios_to_first

from bench.stats import percentile

SIZES = (1, 10, 50, 100, 250)
IMAGE_MIB = 128
READ_MIB = 64
WRITES = 16
QUEUE_DEPTH = 16
THREADS = 16  # roles/ggnet_api/defaults/main.yml: ggnet_api_threads
CHAP_SECRET = "BenchStormSec1"
SERVER_IP = "10.213.0.10"
PC_TIMEOUT = 600.0
# The bench's collector runs every 5 s (deployed: 15 s) to shorten the waits for the
# resets after the sessions; its reads then load the storm a little more, not less.
COLLECT_INTERVAL = 5.0
MODES = {
    # Every boot rolls its writeback back (PCs switched off less than a minute before,
    # or a server without reset_on_session_end): the resets are in the storm.
    "reset_at_boot": {"reset_on_session_end": False},
    # The room was switched off long enough for the collector to see every session end
    # and privd to reset its writeback: the boots only check them.
    "reset_after_session": {"reset_on_session_end": True},
}
ENV_C = {**os.environ, "LC_ALL": "C"}


# This bench on the code before the reset batches and the reset after the session
# (commit 41a23d8: a reset per /boot request, 16 at once, every one a rollback),
# 2026-12-07, the lab VM running beside it; for comparison, not re-run.
BEFORE = {
    "commit": "41a23d8",
    "rounds": {
        "1": {"script_p50_ms": 544.7, "script_p99_ms": 544.7, "script_to_login_p50_ms": 552.4,
              "script_to_login_p99_ms": 552.4, "all_logged_in_s": 0.552,
              "read_mib_s_total": 52.0, "errors": 0},
        "10": {"script_p50_ms": 508.6, "script_p99_ms": 1064.4, "script_to_login_p50_ms": 522.1,
               "script_to_login_p99_ms": 1114.1, "all_logged_in_s": 1.135,
               "read_mib_s_total": 64.4, "errors": 0},
        "50": {"script_p50_ms": 1567.6, "script_p99_ms": 2647.7,
               "script_to_login_p50_ms": 2346.1, "script_to_login_p99_ms": 3219.1,
               "all_logged_in_s": 3.228, "read_mib_s_total": 63.3, "errors": 0},
        "100": {"script_p50_ms": 3722.0, "script_p99_ms": 7543.2,
                "script_to_login_p50_ms": 7084.2, "script_to_login_p99_ms": 8602.3,
                "all_logged_in_s": 8.743, "read_mib_s_total": 60.0, "errors": 0},
        "250": {"script_p50_ms": 8550.4, "script_p99_ms": 17284.6,
                "script_to_login_p50_ms": 17625.3, "script_to_login_p99_ms": 22066.4,
                "all_logged_in_s": 22.722, "read_mib_s_total": 59.7, "errors": 0},
    },
}  # fmt: skip


def _mac(i: int) -> str:
    return f"52:54:00:5a:{i >> 8 & 255:02x}:{i & 255:02x}"


def _source(i: int) -> str:
    return f"127.0.{1 + (i >> 8)}.{1 + (i & 255)}"


def spread(samples: list[float]) -> dict[str, float | None]:
    """p50 / p99 (nearest rank, bench.stats) and max of seconds, in ms."""
    if not samples:
        return {"p50_ms": None, "p99_ms": None, "max_ms": None}
    return {
        "p50_ms": round(percentile(samples, 50) * 1000, 1),
        "p99_ms": round(percentile(samples, 99) * 1000, 1),
        "max_ms": round(max(samples) * 1000, 1),
    }


def _inventory(root: Path, storage_cfg: dict, image_source: Path, count: int) -> Path:
    inv = root / "inventory"
    (inv / "group_vars").mkdir(parents=True)
    hosts = "\n".join(f'            pc-{i:03d}: {{ggnet_mac: "{_mac(i)}"}}' for i in range(count))
    (inv / "hosts.yml").write_text(
        "all:\n  children:\n    ggnet_servers:\n      hosts:\n"
        "        boot1: {ansible_host: 127.0.0.1, ansible_connection: local}\n"
        "    ggnet_clients:\n      children:\n        room:\n          hosts:\n" + hosts + "\n"
    )
    group_vars = {
        "ggnet_network": {
            "interface": "eth1",
            "server_ip": SERVER_IP,
            "subnet": "10.213.0.0/16",
            "dhcp_mode": "full",
            "dhcp_range": ["10.213.1.1", "10.213.4.250"],
        },
        "ggnet_storage": storage_cfg,
        "ggnet_iscsi": {"backend": "tgt", "chap": True, "chap_secret": CHAP_SECRET},
        "ggnet_images": {"os": {"kind": "system", "source": str(image_source)}},
        "ggnet_image": "os",
    }
    (inv / "group_vars" / "all.yml").write_text(yaml.safe_dump(group_vars))
    return inv


def _leases(path: Path, count: int) -> None:
    until = int(time.time()) + 86400
    path.write_text("".join(f"{until} {_mac(i)} {_source(i)} * *\n" for i in range(count)))


def _proc_cpu(pid: int, children: bool = False) -> float:
    """CPU seconds of a process (all threads); with children, also those of the
    children it has waited for (privd's zfs commands)."""
    try:
        with open(f"/proc/{pid}/stat") as fh:
            fields = fh.read().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    ticks = int(fields[11]) + int(fields[12])
    if children:
        ticks += int(fields[13]) + int(fields[14])
    return ticks / os.sysconf("SC_CLK_TCK")


def _children(pid: int) -> list[int]:
    try:
        with open(f"/proc/{pid}/task/{pid}/children") as fh:
            return [int(x) for x in fh.read().split()]
    except OSError:
        return []


def _wait_http(port: int, proc: subprocess.Popen, what: str) -> None:
    deadline = time.monotonic() + 120
    while True:
        try:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
            conn.request("GET", "/health")
            conn.getresponse().read()
            conn.close()
            return
        except OSError:
            if time.monotonic() > deadline or proc.poll() is not None:
                raise RuntimeError(f"{what} did not come up") from None
            time.sleep(0.2)


@dataclass
class Pc:
    index: int
    name: str
    mac: str
    source: str
    tgt: object
    lun_reads: list[tuple[int, int]]
    proc: subprocess.Popen | None = None
    out: bytearray = field(default_factory=bytearray)
    t: dict[str, float] = field(default_factory=dict)
    error: str | None = None
    error_kind: str | None = None

    # -- qemu-io, started ahead and driven through its stdin --------------------------

    def spawn(self) -> None:
        from ggnet_testing.tgt_netns import nsexec

        self.out = bytearray()
        self.proc = subprocess.Popen(
            nsexec(self.tgt.netns, "qemu-io"),
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            env=ENV_C,
        )

    def _send(self, *lines: str) -> None:
        assert self.proc is not None and self.proc.stdin is not None
        self.proc.stdin.write(("\n".join(lines) + "\n").encode())
        self.proc.stdin.flush()

    def _until(self, pattern: re.Pattern, count: int, deadline: float) -> None:
        """Read qemu-io's output until PATTERN has matched COUNT times."""
        assert self.proc is not None and self.proc.stdout is not None
        fd = self.proc.stdout.fileno()
        while len(pattern.findall(self.out)) < count:
            if time.monotonic() > deadline:
                raise TimeoutError("qemu-io did not answer in time")
            chunk = os.read(fd, 65536)
            if not chunk:
                raise EOFError(f"qemu-io exited: {bytes(self.out[-300:])!r}")
            self.out += chunk

    def ready(self) -> None:
        self._until(_PROMPT, 1, time.monotonic() + 60)

    def quit(self) -> None:
        if self.proc is None:
            return
        with contextlib.suppress(OSError, ValueError):
            self._send("quit")
            assert self.proc.stdin is not None
            self.proc.stdin.close()
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.proc = None

    # -- the boot ----------------------------------------------------------------------

    def _get(self, port: int, path: str) -> tuple[int, str]:
        conn = http.client.HTTPConnection(
            "127.0.0.1", port, timeout=PC_TIMEOUT, source_address=(self.source, 0)
        )
        try:
            conn.request("GET", path)
            resp = conn.getresponse()
            return resp.status, resp.read().decode(errors="replace")
        finally:
            conn.close()

    def boot(self, port: int, go: threading.Event) -> None:
        go.wait()
        deadline = time.monotonic() + PC_TIMEOUT
        self.t["request"] = time.perf_counter()
        step = "script"
        try:
            status, script = self._get(port, f"/boot/{self.mac}")
            self.t["script"] = time.perf_counter()
            if status != 200 or "sanhook" not in script:
                self._fail("script", f"HTTP {status}: {script.strip()[-200:]}")
                return
            got = _parse_script(script)
            step = "script-loaded"
            status, body = self._get(port, got["stage"].format(stage="script-loaded"))
            if status != 200:
                self._fail("callback", f"script-loaded: HTTP {status}: {body.strip()[:200]}")
                return
            self.t["loaded"] = time.perf_counter()
            step = "login"
            opts = (
                f"driver=iscsi,transport=tcp,portal={self.tgt.portal}:3260,"
                f"target={got['target']},lun={got['lun']},initiator-name={got['initiator']},"
                # On qemu-io's stdin, never on a command line.
                f"user={got['user']},password={got['password']}"
            )
            # qemu-io takes the next line from a pipe only when more input arrives (or
            # at its end): one command, then its prompt, which comes once it is done.
            self._send(f"open -o {opts}")
            self._until(_PROMPT, 2, deadline)
            if _FAILED.search(self.out):
                self._fail("login", _last_lines(self.out, got["password"]))
                return
            self.t["login"] = time.perf_counter()
            step = "sanboot"
            status, body = self._get(port, got["stage"].format(stage="sanboot"))
            if status != 200:
                self._fail("callback", f"sanboot: HTTP {status}: {body.strip()[:200]}")
                return
            step = "read"
            self.t["read_start"] = time.perf_counter()
            cmds = []
            for n, (offset, length) in enumerate(self.lun_reads, 1):
                cmds.append(f"aio_read -q {offset} {length}")
                if n % QUEUE_DEPTH == 0:
                    cmds.append("aio_flush")
            cmds.append("aio_flush")
            rng = random.Random(self.index)
            for _ in range(WRITES):
                cmds.append(f"aio_write -q {rng.randrange(IMAGE_MIB * 256) * 4096} 4k")
            cmds += ["aio_flush", "length", "quit"]
            # The batch ends with the input: qemu-io runs every line of it, then exits.
            self._send(*cmds)
            assert self.proc is not None and self.proc.stdin is not None
            self.proc.stdin.close()
            with contextlib.suppress(EOFError):
                self._until(_NEVER, 1, deadline)
            self.t["read_done"] = time.perf_counter()
            if _FAILED.search(self.out) or not _LENGTH.search(self.out):
                self._fail("read", _last_lines(self.out, got["password"]))
        except (OSError, TimeoutError, EOFError, ValueError) as exc:
            self._fail(step if step != "script" else "script", f"{type(exc).__name__}: {exc}")

    def _fail(self, kind: str, detail: str) -> None:
        self.error_kind = kind
        self.error = detail.replace(CHAP_SECRET, "***")[:300]


_PROMPT = re.compile(rb"qemu-io> ")
_LENGTH = re.compile(rb"\d+(?:\.\d+)? (?:bytes|KiB|MiB|GiB)\n")
_NEVER = re.compile(rb"(?!x)x")
_FAILED = re.compile(rb"failed|rror|can't|no file open")


def _last_lines(out: bytearray, secret: str) -> str:
    text = bytes(out).decode(errors="replace").replace("qemu-io> ", "").replace(secret, "***")
    return " | ".join(line for line in text.splitlines()[-4:] if line.strip())


def _parse_script(script: str) -> dict[str, str]:
    """What iPXE takes from a ggnet script: the system disk's target and LUN, the
    initiator name, the CHAP account, and the stage callback's URL pattern."""
    sets = dict(line.split(" ", 2)[1:] for line in script.splitlines() if line.startswith("set "))
    hook = next(line for line in script.splitlines() if line.startswith("sanhook --drive 0x80"))
    uri = hook.split()[3]  # iscsi:<server>::<port>:<lun>:<iqn>
    _scheme, _server, _proto, _port, lun, target = uri.split(":", 5)
    stage = re.search(r"imgfetch --name ggnet-cb (\S*?/stage\?name=)script-loaded(\S*)", script)
    if stage is None:
        raise ValueError("the script has no script-loaded callback")
    base = stage.group(1).split("://", 1)[1].split("/", 1)[1]
    return {
        "target": target,
        "lun": lun,
        "initiator": sets["initiator-iqn"],
        "user": sets["username"],
        "password": sets["password"],
        "stage": "/" + base + "{stage}" + stage.group(2),
    }


class Server:
    """zfs-fuse pool + writebacks, tgtd in a netns, privd and the API under gunicorn."""

    def __init__(self, work: Path, count: int, api_env: dict[str, str] | None = None):
        self.work = work
        self.count = count
        self.api_env = api_env or {}
        self.procs: dict[str, subprocess.Popen] = {}
        self.logs: list = []

    def start(self, stack: contextlib.ExitStack) -> None:
        from ggnet import storage
        from ggnet.iscsi_converge import converge, with_defaults
        from ggnet_testing import zfs_pool
        from ggnet_testing.tgt_netns import tgt_in_netns

        from ggnet_api import config as config_mod
        from ggnet_api.snapshot import CurrentInventory

        self.zfs_pid = stack.enter_context(zfs_pool.daemon(self.work)) or int(
            subprocess.run(["pidof", "zfs-fuse"], capture_output=True, text=True).stdout.split()[0]
        )
        pool = zfs_pool.make_pool(self.work, "4G")
        stack.callback(zfs_pool.destroy_pool, pool)
        cfg = zfs_pool.storage_cfg(pool)
        cfg["writeback_quota"] = "1G"
        image = self.work / "os.img"
        with open(image, "wb") as fh:
            for _ in range(IMAGE_MIB):
                fh.write(os.urandom(1 << 20))
        inv = _inventory(self.work, cfg, image, self.count)
        lease_file = self.work / "dnsmasq.leases"
        _leases(lease_file, self.count)
        self.port = _free_port()
        api_cfg = {
            "state_dir": str(self.work / "state"),
            "inventory": str(inv),
            "public_url": f"http://127.0.0.1:{self.port}",
            "lease_file": str(lease_file),
            "neighbour_file": str(self.work / "no-arp"),
            "privd_socket": str(self.work / "privd.sock"),
            "privd_api_user": "root",
            "prometheus_url": "",
            "collect_interval": COLLECT_INTERVAL,
            **self.api_env,
        }
        self.api_cfg = api_cfg
        self.cfg_path = self.work / "api.yml"
        self.cfg_path.write_text(yaml.safe_dump(api_cfg))
        loaded = CurrentInventory(config_mod.load(str(self.cfg_path)))
        assert loaded.reload(), loaded.load_error
        snap = loaded.snapshot
        assert len(snap.clients) == self.count, (len(snap.clients), snap.problems[:3])
        storage.converge_images(snap.storage, snap.images, check=False)
        started = time.perf_counter()
        storage.converge_writebacks(
            snap.storage, snap.images, list(snap.clients.values()), check=False, sessions={}
        )
        self.create_s = time.perf_counter() - started
        self.tgt = stack.enter_context(tgt_in_netns(self.work))
        params = {
            "backend": "tgt",
            "control_port": self.tgt.control_port,
            "netns": self.tgt.netns,
            "persist": False,
            "clients": list(snap.clients.values()),
            "storage": snap.storage,
            "chap_secrets": snap.chap,
        }
        converge(with_defaults(params), check_mode=False)
        self.snap = snap
        # The collector (through privd) reads this tgtd's sessions.
        self.api_cfg["iscsi_options"] = {
            "control_port": self.tgt.control_port,
            "netns": self.tgt.netns,
        }
        stack.callback(self.stop)

    def restart(self, **settings: object) -> None:
        """privd and the API (again) with SETTINGS on top of the bench's own."""
        self.stop()
        self.procs.clear()
        self.cfg_path.write_text(yaml.safe_dump({**self.api_cfg, **settings}))
        self._start_privd()
        self._start_api()

    def _spawn(self, name: str, argv: list[str]) -> subprocess.Popen:
        log = open(self.work / f"{name}.log", "w")  # noqa: SIM115 (closed in stop)
        self.logs.append(log)
        env = {
            **os.environ,
            "GGNET_API_CONFIG": str(self.cfg_path),
            "GGNET_API_LOG_LEVEL": "WARNING",
        }
        proc = subprocess.Popen(
            argv, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )
        self.procs[name] = proc
        return proc

    def _start_privd(self) -> None:
        sock = self.work / "privd.sock"
        with contextlib.suppress(FileNotFoundError):
            sock.unlink()
        proc = self._spawn("privd", [sys.executable, "-m", "ggnet_cli.main", "privd"])
        deadline = time.monotonic() + 60
        while not sock.exists():
            if time.monotonic() > deadline or proc.poll() is not None:
                raise RuntimeError(f"ggnet privd did not come up: {self._log('privd')}")
            time.sleep(0.1)

    def _start_api(self) -> None:
        import argparse

        from ggnet_cli import serve

        parser = argparse.ArgumentParser()
        serve.add_arguments(parser)
        args = parser.parse_args(["--bind", f"127.0.0.1:{self.port}", "--threads", str(THREADS)])
        # Exactly `ggnet serve`'s command line (its access log goes to api.log).
        argv = serve.gunicorn_argv(args, sys.executable)
        proc = self._spawn("api", argv)
        try:
            _wait_http(self.port, proc, "the API")
        except RuntimeError:
            raise RuntimeError(f"the API did not come up: {self._log('api')}") from None
        # The inventory loads in the background: wait until a known PC gets its script
        # refused for its origin (no reset, no boot row) rather than "no inventory".
        deadline = time.monotonic() + 120
        while True:
            conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)
            conn.request("GET", f"/boot/{_mac(0)}")
            body = conn.getresponse().read().decode()
            conn.close()
            if "served only to that PC" in body:
                break
            if time.monotonic() > deadline:
                raise RuntimeError(f"the API has no inventory: {body[:300]}")
            time.sleep(0.5)
        self.worker = next(iter(_children(proc.pid)), proc.pid)

    def _log(self, name: str) -> str:
        with contextlib.suppress(OSError):
            return (self.work / f"{name}.log").read_text()[-2000:]
        return ""

    def cpu(self) -> dict[str, float]:
        return {
            "api_worker": _proc_cpu(self.worker),
            "privd_and_its_zfs_commands": _proc_cpu(self.procs["privd"].pid, children=True),
            "tgtd": _proc_cpu(self.tgt.proc.pid)
            + sum(_proc_cpu(c) for c in _children(self.tgt.proc.pid)),
            "zfs_fuse": _proc_cpu(self.zfs_pid),
        }

    def stop(self) -> None:
        for proc in self.procs.values():
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGTERM)
        for proc in self.procs.values():
            try:
                proc.wait(40)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
        for log in self.logs:
            log.close()
        self.logs.clear()


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _dirty_all(server: Server) -> None:
    """A 4 KiB write into every writeback, so that every first boot rolls back."""
    from ggnet import layout

    for name in server.snap.clients:
        path = layout.writeback_backing(server.snap.storage, name, "system")[0]
        with open(path, "r+b") as fh:
            fh.seek(4096)
            fh.write(os.urandom(4096))


def _stale(server: Server, names: list[str]) -> list[str]:
    """Those of NAMES whose next boot would reset something (one zfs read for all)."""
    from ggnet import storage
    from ggnet.zfs import Zfs

    snap = server.snap
    clients = [snap.clients[n] for n in names]
    state = storage.read_for_reset(snap.storage, snap.images, clients, Zfs())
    return [
        n
        for n in names
        if storage.reset(
            snap.storage, snap.images, clients, n, check=True, boot=True, state=state
        ).actions
    ]


def _reset_idle(server: Server, names: list[str]) -> None:
    from ggnet_api.privileged import SocketClient

    privd = SocketClient(str(server.work / "privd.sock"))
    for name in names:
        privd.reset_idle(name)


def _wait_reset(server: Server, names: list[str], timeout: float = 900.0) -> float:
    """Seconds until no writeback of NAMES needs a reset: the collector has seen their
    sessions end and privd has reset them (reset_on_session_end)."""
    started = time.perf_counter()
    while _stale(server, names):
        if time.perf_counter() - started > timeout:
            raise RuntimeError(f"writebacks still not reset after {timeout:.0f} s")
        time.sleep(2)
    return round(time.perf_counter() - started, 1)


def _round(server: Server, n: int) -> dict:
    names = sorted(server.snap.clients)[:n]
    pcs = []
    for i, name in enumerate(names):
        rng = random.Random(1000 + i)
        pcs.append(
            Pc(i, name, _mac(i), _source(i), server.tgt,
               boot_reads(rng, IMAGE_MIB << 20, READ_MIB << 20))
        )  # fmt: skip
    for pc in pcs:
        pc.spawn()
    for pc in pcs:
        pc.ready()
    go = threading.Event()
    threads = [threading.Thread(target=pc.boot, args=(server.port, go), daemon=True) for pc in pcs]
    for t in threads:
        t.start()
    time.sleep(0.5)  # every thread at the gate
    cpu0, load0 = server.cpu(), os.getloadavg()[0]
    released = time.perf_counter()
    go.set()
    for t in threads:
        t.join(PC_TIMEOUT + 60)
    cpu1 = server.cpu()
    for pc in pcs:
        pc.quit()
    logged = [pc for pc in pcs if "login" in pc.t]
    done = [pc for pc in pcs if "read_done" in pc.t and pc.error is None]
    errors: dict[str, int] = {}
    for pc in pcs:
        if pc.error_kind:
            errors[pc.error_kind] = errors.get(pc.error_kind, 0) + 1
    read_span = (
        max(pc.t["read_done"] for pc in done) - min(pc.t["read_start"] for pc in done)
        if done
        else 0.0
    )
    per_pc = sorted(READ_MIB / (pc.t["read_done"] - pc.t["read_start"]) for pc in done)
    return {
        "pcs": n,
        "logged_in": len(logged),
        "errors": errors,
        "error_examples": sorted({f"{pc.name}: {pc.error}" for pc in pcs if pc.error})[:5],
        "script": spread([pc.t["script"] - pc.t["request"] for pc in pcs if "script" in pc.t]),
        "script_loaded_callback": spread(
            [pc.t["loaded"] - pc.t["script"] for pc in pcs if "loaded" in pc.t]
        ),
        "login": spread([pc.t["login"] - pc.t["loaded"] for pc in logged]),
        "script_to_login": spread([pc.t["login"] - pc.t["request"] for pc in logged]),
        "all_logged_in_s": (
            round(max(pc.t["login"] for pc in logged) - released, 3) if len(logged) == n else None
        ),
        "read": {
            "mib_s_total": round(READ_MIB * len(done) / read_span, 1) if read_span else None,
            "mib_s_per_pc_p50": round(per_pc[len(per_pc) // 2], 1) if per_pc else None,
            "mib_s_per_pc_min": round(per_pc[0], 1) if per_pc else None,
            "span_s": round(read_span, 2),
        },
        "cpu_s": {k: round(cpu1[k] - cpu0[k], 2) for k in cpu0},
        "load_1m_before": round(load0, 2),
    }


def _goals(rounds: dict) -> dict:
    big, one = rounds[str(max(SIZES))], rounds["1"]
    all_in = big["all_logged_in_s"]
    return {
        "all_logged_in_without_errors": {
            "goal": f"all {max(SIZES)} log in, zero errors",
            "met": big["logged_in"] == max(SIZES) and not big["errors"],
        },
        "script_to_login_p99": {
            "goal": "<= 1000 ms at N = 250",
            "value_ms": big["script_to_login"]["p99_ms"],
            "met": big["script_to_login"]["p99_ms"] <= 1000,
        },
        "all_logged_in_ratio": {
            "goal": "<= 10 x N = 1",
            "value": round(all_in / one["all_logged_in_s"], 1) if all_in else None,
            "met": bool(all_in) and all_in <= 10 * one["all_logged_in_s"],
        },
    }


def run(sizes: tuple[int, ...] = SIZES, api_env: dict[str, str] | None = None) -> dict:
    work = Path(tempfile.mkdtemp(prefix="ggnet-bench-storm-"))

    def stop(signum: int, _frame: object) -> None:
        raise SystemExit(f"bench storm: signal {signum}")  # the stack below cleans up

    signal.signal(signal.SIGTERM, stop)
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, min(hard, 8192)), hard))
    try:
        with contextlib.ExitStack() as stack:
            server = Server(work, max(sizes), api_env)
            server.start(stack)
            _dirty_all(server)
            modes: dict[str, dict] = {}
            for mode, settings in MODES.items():
                print(f"    {mode}", flush=True)
                server.restart(**settings)
                if settings["reset_on_session_end"]:
                    # Sessions that ended under the mode before were not reset then: reset
                    # them with privd's op as the collector does, as after a night.
                    _reset_idle(server, _stale(server, sorted(server.snap.clients)))
                rounds: dict[str, dict] = {}
                for n in sizes:
                    names = sorted(server.snap.clients)[:n]
                    waited = None
                    if settings["reset_on_session_end"]:
                        # The room was switched off: every session ended, was seen to.
                        waited = _wait_reset(server, sorted(server.snap.clients))
                    stale = len(_stale(server, names))
                    print(f"    N = {n}", flush=True)
                    rounds[str(n)] = _round(server, n)
                    rounds[str(n)]["writebacks_to_reset_at_start"] = stale
                    if waited is not None:
                        rounds[str(n)]["waited_for_resets_after_sessions_s"] = waited
                    print(f"      {rounds[str(n)]}", flush=True)
                modes[mode] = {"settings": settings, "rounds": rounds}
                modes[mode]["ratio_to_n1"] = ratios_to_first(rounds)
                if str(max(SIZES)) in rounds and "1" in rounds:
                    modes[mode]["goals"] = _goals(rounds)
            out = {
                "what": (
                    "N simulated PCs released at once against the API under gunicorn "
                    f"({THREADS} threads) + ggnet-privd, tgtd in a netns, a zfs-fuse pool of "
                    f"{max(sizes)} writebacks; each PC: script (its reset), script-loaded, "
                    f"CHAP login with qemu-io (libiscsi), sanboot, {READ_MIB} MiB of 4-64 KiB "
                    f"reads (4 in 5 random, {QUEUE_DEPTH} in flight), {WRITES} x 4 KiB writes; "
                    "see bench/bench_storm.py's docstring"
                ),
                "create_writebacks_s": round(server.create_s, 1),
                "cpus": os.cpu_count(),
                "lab_busy": os.path.exists("/tmp/ggnet-lab-busy"),
                "collect_interval_s": COLLECT_INTERVAL,
                "modes": modes,
                "before": BEFORE,
            }
            return out
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    import json

    wanted = tuple(int(x) for x in sys.argv[1:]) or SIZES
    print(json.dumps(run(wanted), indent=2))
