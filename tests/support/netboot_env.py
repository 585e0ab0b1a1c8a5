"""A boot network in a private netns for the netboot tests: real dnsmasq from the
ggnet_netboot role, real tgtd, a throwaway HTTP API that answers with the real
ggnet.ipxe scripts, and qemu PCs (TCG) on a bridge.

Addresses: 10.215.1.0/24 (server 10.215.1.1, router 10.215.1.254 in proxy tests) and
the role's ULA.  Everything is stopped by PID and the namespaces deleted even when a
test fails (the pytest fixture in test_netboot_*.py owns a NetbootEnv and closes it).
"""

from __future__ import annotations

import ctypes
import http.server
import itertools
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import textwrap
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import parse_qs, unquote, urlsplit

from ggnet import ipxe, iscsi
from ggnet.net import is_valid_mac, normalize_mac

REPO = Path(__file__).resolve().parents[2]
SUBNET = "10.215.1"
SERVER_IP = f"{SUBNET}.1"
ROUTER_IP = f"{SUBNET}.254"
API_PORT = 8080
BRIDGE = "br0"
OVMF_CODE = Path("/usr/share/OVMF/OVMF_CODE_4M.fd")
OVMF_VARS = Path("/usr/share/OVMF/OVMF_VARS_4M.fd")
CLONE_NEWNET = 0x40000000
# Several environments in one process (a module's fixtures) need their own names.
_ENV_COUNT = itertools.count(1)


def run(cmd: list[str], check: bool = True, **kw) -> subprocess.CompletedProcess:
    proc = subprocess.run(cmd, capture_output=True, text=True, **kw)
    if check and proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed ({proc.returncode}): {proc.stderr.strip()}")
    return proc


def in_ns(ns: str, *cmd: str) -> list[str]:
    # nsenter switches only the network: files made later stay visible (LAB.md).
    return ["nsenter", f"--net=/var/run/netns/{ns}", *cmd]


def stop(proc: subprocess.Popen | None, timeout: float = 5) -> None:
    if proc is None or proc.poll() is not None:
        return
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout)


@dataclass
class Event:
    t: float  # time.monotonic()
    kind: str  # script, stage, discover
    mac: str
    detail: dict = field(default_factory=dict)
    wall: float = 0.0  # time.time(), to line up with tcpdump's timestamps


class Api:
    """The API's boot endpoints, stand-in: real ggnet.ipxe scripts, events recorded."""

    def __init__(self, ns: str, clients: dict[str, dict], api_url: str):
        self.clients = clients  # mac -> {"client": ..., "san_uris": [...], "chap": ...}
        self.api_url = api_url
        self.events: list[Event] = []
        # What the real API does before it answers a known PC's script (the writeback
        # reset): called with the MAC; its duration is recorded on the script event.
        self.on_script = None
        self._server = self._bind_in(ns)
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()

    def _bind_in(self, ns: str) -> http.server.ThreadingHTTPServer:
        api = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):
                body = api.answer(self.path).encode()
                self.send_response(200)
                self.send_header("Content-Type", "text/plain")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args):  # scripts carry a CHAP secret: log nothing
                pass

        made: list = []

        def bind():
            # setns() changes only the calling thread: the socket is born in the netns.
            libc = ctypes.CDLL(None, use_errno=True)
            fd = os.open(f"/var/run/netns/{ns}", os.O_RDONLY)
            try:
                if libc.setns(fd, CLONE_NEWNET) != 0:
                    made.append(OSError(ctypes.get_errno(), "setns"))
                    return
            finally:
                os.close(fd)
            try:
                made.append(http.server.ThreadingHTTPServer((SERVER_IP, API_PORT), Handler))
            except OSError as exc:
                made.append(exc)

        t = threading.Thread(target=bind)
        t.start()
        t.join()
        if isinstance(made[0], Exception):
            raise made[0]
        return made[0]

    def answer(self, path: str) -> str:
        url = urlsplit(path)
        # iPXE percent-encodes what it expands into a URL path: 52%3a54%3a00...
        parts = [unquote(p) for p in url.path.strip("/").split("/")]
        query = {k: v[0] for k, v in parse_qs(url.query, keep_blank_values=True).items()}
        now, wall = time.monotonic(), time.time()
        if len(parts) >= 2 and parts[0] == "boot":
            # As the API does: any notation, compared in the normalised form.
            mac = normalize_mac(parts[1]) if is_valid_mac(parts[1]) else parts[1]
        if len(parts) == 2 and parts[0] == "boot":
            known = self.clients.get(mac)
            detail = {"known": bool(known)}
            if known and self.on_script:
                self.on_script(mac)
                detail["reset_s"] = time.monotonic() - now
            self.events.append(Event(now, "script", mac, detail, wall))
            if known:
                return ipxe.boot_script(
                    known["client"], known["san_uris"], self.api_url, known.get("chap")
                )
            return ipxe.discovery_script(self.api_url)
        if len(parts) == 3 and parts[0] == "boot" and parts[2] in ("stage", "discover"):
            if parts[2] == "discover":
                # The way the API must read it: iPXE leaves '+', '&', '=' unescaped.
                query = ipxe.parse_discover_query(url.query)
            self.events.append(Event(now, parts[2], mac, {**query, "_raw": path}, wall))
            return ""
        self.events.append(Event(now, "unknown", "", {"path": path}, wall))
        return ""

    def stages(self, mac: str) -> list[str]:
        mac = normalize_mac(mac)
        return [e.detail.get("name") for e in self.events if e.kind == "stage" and e.mac == mac]

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()


class Tgt:
    """tgtd in the netns with one target per client (disk = LUN 1, as tgt numbers)."""

    def __init__(self, ns: str, workdir: Path, seq: int = 1):
        self.ns = ns
        # The control port names tgtd's IPC files in /var/run, shared by every netns:
        # unique per process and per environment within it.
        self.port = str(100 + (os.getpid() * 8 + seq) % 800)
        self.log = open(workdir / "tgtd.log", "w")  # noqa: SIM115 (closed in close())
        self.proc = subprocess.Popen(
            in_ns(ns, "tgtd", "-f", "-C", self.port), stdout=self.log, stderr=subprocess.STDOUT
        )
        self.tids: dict[str, int] = {}
        for _ in range(100):
            if self.adm("--op", "show", "--mode", "target", check=False).returncode == 0:
                return
            if self.proc.poll() is not None:
                raise RuntimeError(
                    f"tgtd exited ({self.proc.returncode}); see {workdir / 'tgtd.log'}"
                )
            time.sleep(0.05)
        raise RuntimeError("tgtd did not answer tgtadm")

    def adm(self, *args: str, check: bool = True) -> subprocess.CompletedProcess:
        return run(in_ns(self.ns, "tgtadm", "-C", self.port, "--lld", "iscsi", *args), check=check)

    def add_target(
        self, iqn: str, initiator: str, disks: list[Path], chap: dict | None = None
    ) -> None:
        tid = str(len(self.tids) + 1)
        self.adm("--op", "new", "--mode", "target", "--tid", tid, "-T", iqn)
        for i, disk in enumerate(disks):
            lun = str(iscsi.lun_number("tgt", i))
            self.adm(
                "--op", "new", "--mode", "logicalunit", "--tid", tid, "--lun", lun, "-b", str(disk)
            )
        self.adm("--op", "bind", "--mode", "target", "--tid", tid, "--initiator-name", initiator)
        if chap:
            self.adm(
                "--op",
                "new",
                "--mode",
                "account",
                "--user",
                chap["user"],
                "--password",
                chap["secret"],
            )
            self.adm("--op", "bind", "--mode", "account", "--tid", tid, "--user", chap["user"])
        self.tids[iqn] = int(tid)

    def close(self) -> None:
        if self.proc.poll() is None:
            # tgtd ignores SIGTERM while targets exist (LAB.md).
            for tid in self.tids.values():
                self.adm(
                    "--op", "delete", "--mode", "target", "--tid", str(tid), "--force", check=False
                )
            self.adm("--op", "delete", "--mode", "system", check=False)
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        self.log.close()


class Capture:
    """tcpdump -tt on the netns bridge; packets() parses what it wrote so far.

    DHCP (ports 67/68/4011) with the message type (-v), iSCSI (3260) SYNs and the
    first data segments.  Times are time.time() seconds, like Event.wall."""

    FILTER = "udp port 67 or udp port 68 or udp port 4011 or tcp port 3260"

    def __init__(self, ns: str, out: Path):
        self.out = out
        self._file = open(out, "w")  # noqa: SIM115 (closed in stop())
        self.proc = subprocess.Popen(
            in_ns(ns, "tcpdump", "-i", BRIDGE, "-n", "-tt", "-v", "-l", "-U", "-s", "512",
                  self.FILTER),
            stdout=self._file, stderr=subprocess.PIPE, text=True,
        )  # fmt: skip
        # tcpdump prints "listening on ..." to stderr once the capture is armed.
        line = self.proc.stderr.readline()
        if self.proc.poll() is not None or "listening" not in line:
            raise RuntimeError(f"tcpdump did not start: {line.strip()}")

    def stop(self) -> None:
        stop(self.proc)
        self._file.close()

    def packets(self) -> list[dict]:
        """[{t, kind, ...}]: kind dhcp (msg=Discover|Offer|Request|ACK, mac) or
        iscsi (syn / data, from the client or the server)."""
        text = self.out.read_text(errors="replace") if self.out.exists() else ""
        found: list[dict] = []
        for block in re.split(r"\n(?=\d+\.\d+ )", text):
            m = re.match(r"(\d+\.\d+) IP ", block)
            if not m:
                continue
            t = float(m.group(1))
            dhcp = re.search(r"DHCP-Message[^:]*: (\w+)", block)
            if dhcp:
                mac = re.search(r"Client-Ethernet-Address ([0-9a-f:]{17})", block)
                found.append({"t": t, "kind": "dhcp", "msg": dhcp.group(1),
                              "mac": mac.group(1) if mac else None})  # fmt: skip
                continue
            tcp = re.search(
                r"\n\s+(\S+)\.(\d+) > (\S+)\.(\d+): Flags \[([^\]]*)\].*?length (\d+)", block
            )
            if tcp and "3260" in (tcp.group(2), tcp.group(4)):
                to_server = tcp.group(4) == "3260"
                if "S" in tcp.group(5) and to_server:
                    found.append({"t": t, "kind": "iscsi", "what": "syn"})
                elif int(tcp.group(6)) > 0:
                    found.append({"t": t, "kind": "iscsi",
                                  "what": "login-request" if to_server else "login-response"})  # fmt: skip
        return found


@dataclass
class Boot:
    serial: Path
    started: float  # time.monotonic() at power-on
    marker_at: float | None
    text: str
    wall_started: float = 0.0  # time.time() at power-on


class NetbootEnv:
    def __init__(self, workdir: Path):
        self.workdir = workdir
        self.seq = next(_ENV_COUNT)
        self.ns = f"ggnet-t-nb-{os.getpid()}-{self.seq}"
        self.router_ns = f"{self.ns}-r"
        self.procs: list[subprocess.Popen] = []
        self.api: Api | None = None
        self.tgt: Tgt | None = None
        self.namespaces: list[str] = []
        self._taps = 0
        self._make_netns()

    # --- network ---------------------------------------------------------------------
    def _make_netns(self) -> None:
        run(["ip", "netns", "add", self.ns])
        self.namespaces.append(self.ns)
        ns = self.ns
        run(in_ns(ns, "ip", "link", "set", "lo", "up"))
        run(in_ns(ns, "ip", "link", "add", BRIDGE, "type", "bridge"))
        run(in_ns(ns, "ip", "address", "add", f"{SERVER_IP}/24", "dev", BRIDGE))
        run(in_ns(ns, "ip", "link", "set", BRIDGE, "up"))

    def add_ula(self, cidr: str) -> None:
        """What the ggnet-dnsmasq unit's ExecStartPre does on a server."""
        run(in_ns(self.ns, "ip", "-6", "address", "replace", cidr, "dev", BRIDGE, "nodad"))

    def add_router(self) -> None:
        """A second netns on the bridge holding the 'existing router' DHCP server."""
        run(["ip", "netns", "add", self.router_ns])
        self.namespaces.append(self.router_ns)
        run(in_ns(self.ns, "ip", "link", "add", "rt0", "type", "veth", "peer", "name", "rt1"))
        run(in_ns(self.ns, "ip", "link", "set", "rt1", "netns", self.router_ns))
        run(in_ns(self.ns, "ip", "link", "set", "rt0", "master", BRIDGE, "up"))
        run(in_ns(self.router_ns, "ip", "address", "add", f"{ROUTER_IP}/24", "dev", "rt1"))
        run(in_ns(self.router_ns, "ip", "link", "set", "rt1", "up"))
        conf = self.workdir / "router-dnsmasq.conf"
        conf.write_text(
            textwrap.dedent(f"""\
                port=0
                interface=rt1
                bind-interfaces
                pid-file=
                dhcp-range={SUBNET}.20,{SUBNET}.40,1h
                dhcp-leasefile={self.workdir}/router.leases
                dhcp-authoritative
                no-ping
                log-dhcp
                log-facility={self.workdir}/router-dnsmasq.log
            """)
        )
        self.start_dnsmasq(conf, ns=self.router_ns)

    def tap(self) -> str:
        self._taps += 1
        name = f"tap{self._taps}"
        run(in_ns(self.ns, "ip", "tuntap", "add", name, "mode", "tap"))
        run(in_ns(self.ns, "ip", "link", "set", name, "master", BRIDGE, "up"))
        return name

    # --- daemons ---------------------------------------------------------------------
    def render_role(
        self, mode: str, clients: list[dict]
    ) -> tuple[Path, subprocess.CompletedProcess]:
        """Converge the ggnet_netboot role locally into workdir/<mode>/ (no service)."""
        out = self.workdir / mode
        out.mkdir(exist_ok=True)
        hosts = {
            name: {k: v for k, v in c.items() if v is not None}
            for name, c in ((c["name"], c["vars"]) for c in clients)
        }
        inventory = {
            "all": {
                "children": {
                    "ggnet_servers": {
                        "hosts": {
                            "boot1": {
                                "ansible_connection": "local",
                                "ansible_python_interpreter": sys.executable,
                            }
                        }
                    },
                    "ggnet_clients": {"hosts": hosts},
                },
                "vars": {
                    "ggnet_network": {
                        "interface": BRIDGE,
                        "server_ip": SERVER_IP,
                        "subnet": f"{SUBNET}.0/24",
                        "dhcp_mode": mode,
                        "dhcp_range": [f"{SUBNET}.150", f"{SUBNET}.199"],
                    },
                    "ggnet_images": {
                        "lab": {"size": "4M", "kind": "system"},
                        "games": {"size": "1M", "kind": "data"},
                    },
                    "ggnet_iscsi": {"backend": "tgt", "chap": True},
                },
            }
        }
        (out / "hosts.yml").write_text(json.dumps(inventory))
        role_vars = {
            "ggnet_netboot_tftp_root": str(out / "tftp"),
            "ggnet_netboot_config": str(out / "dnsmasq.conf"),
            "ggnet_netboot_hosts_file": str(out / "dnsmasq-hosts.conf"),
            "ggnet_netboot_lease_file": str(out / "dnsmasq.leases"),
            "ggnet_netboot_log_facility": str(out / "dnsmasq.log"),
            "ggnet_netboot_log_dhcp": True,
            "ggnet_netboot_manage_service": False,
            "ggnet_netboot_api_port": API_PORT,
        }
        play = [
            {
                "name": "Render ggnet_netboot for a test",
                "hosts": "ggnet_servers",
                "gather_facts": False,
                "roles": [{"role": "ggnet_netboot", "vars": role_vars}],
            }
        ]
        (out / "play.yml").write_text(json.dumps(play))
        env = {
            **os.environ,
            "ANSIBLE_CONFIG": str(REPO / "ansible.cfg"),
        }
        proc = run(
            [str(Path(sys.executable).parent / "ansible-playbook"), "-i", str(out / "hosts.yml"),
             str(out / "play.yml"), "--skip-tags", "packages"],
            cwd=REPO, env=env,
        )  # fmt: skip
        return out, proc

    def start_dnsmasq(self, conf: Path, ns: str | None = None) -> subprocess.Popen:
        # root: the lease file lives in the test's private directory.
        cmd = in_ns(
            ns or self.ns, "dnsmasq", "--keep-in-foreground", f"--conf-file={conf}", "--user=root"
        )
        proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        self.procs.append(proc)
        time.sleep(0.3)
        if proc.poll() is not None:
            raise RuntimeError(f"dnsmasq ({conf}) exited at once: {proc.stderr.read().strip()}")
        return proc

    def start_api(self, clients: dict[str, dict]) -> Api:
        self.api = Api(self.ns, clients, f"http://{SERVER_IP}:{API_PORT}")
        return self.api

    def capture(self, name: str = "capture") -> Capture:
        """tcpdump on the bridge: DHCP and iSCSI packets with their times."""
        cap = Capture(self.ns, self.workdir / f"{name}.txt")
        self.procs.append(cap.proc)
        return cap

    def start_tgt(self) -> Tgt:
        self.tgt = Tgt(self.ns, self.workdir, self.seq)
        return self.tgt

    # --- PCs -------------------------------------------------------------------------
    def boot(self, name: str, mac: str, firmware: str = "bios", until=None,
             timeout: float = 90) -> Boot:  # fmt: skip
        """Run a qemu PC until until(serial_text) is true (default: the boot program
        wrote its disk) or timeout, then stop it."""
        until = until or (lambda text: "GGNET-WROTE" in text or "GGNET-ERROR" in text)
        serial = self.workdir / f"{name}-{int(time.time() * 1000)}.serial"
        tap = self.tap()
        nic = f"virtio-net-pci,netdev=n0,mac={mac}"
        cmd = ["qemu-system-x86_64", "-accel", "tcg", "-m", "256", "-display", "none", "-nodefaults",
               "-no-user-config", "-serial", f"file:{serial}",
               "-netdev", f"tap,id=n0,ifname={tap},script=no,downscript=no"]  # fmt: skip
        if firmware == "bios":
            cmd += ["-device", nic, "-boot", "n"]
        else:
            vars_copy = self.workdir / f"{name}-vars.fd"
            shutil.copyfile(OVMF_VARS, vars_copy)
            cmd += ["-drive", f"if=pflash,format=raw,readonly=on,file={OVMF_CODE}",
                    "-drive", f"if=pflash,format=raw,file={vars_copy}"]  # fmt: skip
            # uefi-pxe: OVMF's own PXE (empty romfile), which fetches snponly.efi by TFTP.
            cmd += ["-device", nic + (",romfile=" if firmware == "uefi-pxe" else "")]
        started, wall_started = time.monotonic(), time.time()
        proc = subprocess.Popen(
            in_ns(self.ns, *cmd), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
        )
        self.procs.append(proc)
        marker_at = None
        text = ""
        try:
            deadline = started + timeout
            while time.monotonic() < deadline and proc.poll() is None:
                text = serial.read_text(errors="replace") if serial.exists() else ""
                if until(text):
                    marker_at = time.monotonic()
                    break
                time.sleep(0.1)
        finally:
            stop(proc)
            run(in_ns(self.ns, "ip", "link", "del", tap), check=False)
        text = serial.read_text(errors="replace") if serial.exists() else ""
        return Boot(serial, started, marker_at, text, wall_started)

    # --- teardown --------------------------------------------------------------------
    def close(self) -> None:
        for proc in reversed(self.procs):
            stop(proc)
        if self.api:
            self.api.close()
        if self.tgt:
            self.tgt.close()
        for ns in reversed(self.namespaces):
            run(["ip", "netns", "del", ns], check=False)
