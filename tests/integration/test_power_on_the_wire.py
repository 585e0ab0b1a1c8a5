"""Power for real (issue 19): the magic packet on the wire of the boot interface, a wake
job through the API confirmed by the PC's boot request, and Redfish power against
sushy-tools' emulator (its fake driver: no libvirt) on 127.0.0.1 over TLS.

The network is this test's own: a "server" namespace with two NICs on the same subnet,
`up0` (addressed first, so the kernel's routes send a broadcast out of it) and `boot0`
(the inventory's boot interface), each a veth to a namespace of its own where a raw
socket captures what arrives.  Nothing leaves the namespaces."""

from __future__ import annotations

import contextlib
import ctypes
import itertools
import os
import shutil
import socket
import struct
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from ggnet import redfish, wol
from ggnet_testing.api_project import (
    STORAGE,
    bearer,
    hosts_yml,
    inventory_app,
    iscsi_yml,
    role_tokens,
)
from ggnet_testing.daemons import free_port, wait_for

from ggnet_privd.ops import Ops
from ggnet_privd.protocol import OpError

pytestmark = pytest.mark.integration

CLONE_NEWNET = 0x40000000
ETH_P_ALL = 0x0003
MAC = "52:54:00:77:00:01"
OTHER = "52:54:00:77:00:99"
SUBNET = "10.77.0.0/24"
_SEQ = itertools.count()


def run(*argv: str) -> None:
    subprocess.run(argv, check=True, capture_output=True, text=True)


def in_netns(ns: str, fn: Callable[[], Any]) -> Any:
    """fn() in a thread moved into namespace ns (setns changes only that thread, and
    threads it starts are born there too)."""
    out: list[Any] = []

    def body() -> None:
        libc = ctypes.CDLL(None, use_errno=True)
        fd = os.open(f"/var/run/netns/{ns}", os.O_RDONLY)
        try:
            if libc.setns(fd, CLONE_NEWNET) != 0:
                out.append(OSError(ctypes.get_errno(), f"setns {ns}"))
                return
        finally:
            os.close(fd)
        try:
            out.append(fn())
        except BaseException as exc:  # handed back to the caller
            out.append(exc)

    t = threading.Thread(target=body)
    t.start()
    t.join()
    if isinstance(out[0], BaseException):
        raise out[0]
    return out[0]


class Capture:
    """Every frame that arrives on an interface of a namespace, from start() on."""

    def __init__(self, ns: str, ifname: str):
        self.ns, self.ifname = ns, ifname
        self.frames: list[bytes] = []
        self._stop = threading.Event()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=lambda: in_netns(ns, self._loop), daemon=True)

    def start(self) -> Capture:
        self._thread.start()
        assert self._ready.wait(5), f"capture on {self.ns}/{self.ifname} did not start"
        return self

    def _loop(self) -> None:
        with socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ETH_P_ALL)) as s:
            s.bind((self.ifname, 0))
            s.settimeout(0.05)
            self._ready.set()
            while not self._stop.is_set():
                with contextlib.suppress(TimeoutError):
                    self.frames.append(s.recv(65535))

    def stop(self) -> list[dict[str, Any]]:
        time.sleep(0.2)  # what is on the wire arrives
        self._stop.set()
        self._thread.join(5)
        return [w for w in map(wake_of, self.frames) if w is not None]


def wake_of(frame: bytes) -> dict[str, Any] | None:
    """The magic packet a frame carries over IPv4/UDP: where it went and for whom."""
    if len(frame) < 42 or frame[12:14] != b"\x08\x00":
        return None
    ihl = (frame[14] & 0x0F) * 4
    if frame[23] != 17:  # UDP
        return None
    udp = 14 + ihl
    (port,) = struct.unpack("!H", frame[udp + 2 : udp + 4])
    mac = wol.mac_of_packet(frame[udp + 8 :])
    if mac is None:
        return None
    return {
        "dst_mac": frame[0:6].hex(":"),
        "dst_ip": socket.inet_ntoa(frame[30:34]),
        "port": port,
        "mac": mac,
    }


@pytest.fixture
def net() -> Iterator[dict[str, str]]:
    """server (up0 10.77.0.2, boot0 10.77.0.1), room (room0 <-> boot0), uplink
    (upl0 <-> up0)."""
    if os.geteuid() != 0:
        pytest.fail("the power tests make network namespaces: run them as root")
    base = f"ggnet-t-pw-{os.getpid()}-{next(_SEQ)}"
    names = {"server": f"{base}-s", "room": f"{base}-r", "uplink": f"{base}-u"}
    made: list[str] = []
    try:
        for ns in names.values():
            run("ip", "netns", "add", ns)
            made.append(ns)
            run("ip", "-n", ns, "link", "set", "lo", "up")
        s = names["server"]
        for mine, peer, where, addr in (
            ("up0", "upl0", names["uplink"], "10.77.0.2/24"),
            ("boot0", "room0", names["room"], "10.77.0.1/24"),
        ):
            run("ip", "-n", s, "link", "add", mine, "type", "veth", "peer", "name", peer)
            run("ip", "-n", s, "link", "set", peer, "netns", where)
            run("ip", "-n", s, "address", "add", addr, "dev", mine)
            run("ip", "-n", s, "link", "set", mine, "up")
            run("ip", "-n", where, "link", "set", peer, "up")
        yield names
    finally:
        for ns in made:
            subprocess.run(["ip", "netns", "del", ns], check=False, capture_output=True)


def _send_unbound(packet: bytes) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_BROADCAST, 1)
        sock.sendto(packet, ("10.77.0.255", 9))


def test_the_magic_packet_leaves_from_the_boot_interface_only(net):
    route = wol.wake_route({"interface": "boot0", "subnet": SUBNET})
    # The control: a broadcast the kernel routes itself leaves from up0, so a wake
    # that did not bind to the boot interface would miss the room.
    room, uplink = Capture(net["room"], "room0").start(), Capture(net["uplink"], "upl0").start()
    in_netns(net["server"], lambda: _send_unbound(wol.magic_packet(MAC)))
    assert room.stop() == [] and len(uplink.stop()) == 1

    room, uplink = Capture(net["room"], "room0").start(), Capture(net["uplink"], "upl0").start()
    started = time.monotonic()
    sent = in_netns(net["server"], lambda: wol.send(MAC, route))
    took = time.monotonic() - started
    seen, leaked = room.stop(), uplink.stop()
    assert leaked == []
    assert (
        seen
        == [{"dst_mac": "ff:ff:ff:ff:ff:ff", "dst_ip": "10.77.0.255", "port": 9, "mac": MAC}]
        * wol.REPEAT
    )
    assert abs(sent - time.time()) < 5 and took < 2


def test_a_wake_job_is_confirmed_by_the_pcs_boot_request(net, tmp_path):
    hosts = hosts_yml(
        f"""\
        hosts:
          pc-01: {{ggnet_mac: "{MAC}", ggnet_ip: 10.77.0.101}}
        """
    )
    all_vars = (
        f"ggnet_network: {{interface: boot0, server_ip: 10.77.0.1, subnet: {SUBNET},\n"
        "  dhcp_mode: full, dhcp_range: [10.77.0.150, 10.77.0.199]}\n"
        + STORAGE
        + iscsi_yml()
        + "ggnet_images:\n  win11: {size: 64M, kind: system}\nggnet_image: win11\n"
    )
    app = inventory_app(tmp_path, hosts, all_vars)
    e = app.extensions["ggnet"]
    tokens = role_tokens(app, "viewer", "operator")
    client = app.test_client()
    try:
        # The job workers are started inside the server namespace: privd's wake (in
        # this process, no privd socket) sends from there.
        in_netns(net["server"], e.jobs.start)
        room, uplink = Capture(net["room"], "room0").start(), Capture(net["uplink"], "upl0").start()
        resp = client.post("/api/machines/pc-01/wake", headers=bearer(tokens["operator"]))
        assert resp.status_code == 202, resp.get_json()
        job_id = resp.get_json()["id"]
        job = wait_for(
            "the wake job's end",
            lambda: (j := e.db.job(job_id)) and j["state"] not in ("queued", "running") and j,
            timeout=15,
        )
        assert job["state"] == "successful", job
        events = [ev["stdout"] for ev in e.db.events(job_id)]
        assert events[-1] == f"magic packet for {MAC} sent from boot0 to 10.77.0.255:9"
        assert [w["mac"] for w in room.stop()] == [MAC] * wol.REPEAT
        assert uplink.stop() == []
        power = client.get("/api/machines/pc-01", headers=bearer(tokens["viewer"])).get_json()
        assert power["power"]["wake"]["state"] == "sent"
        assert power["power"]["wake"]["job_id"] == job_id

        # The PC comes up and asks for its script from its own address: confirmed.
        client.get(f"/boot/{MAC}", environ_base={"REMOTE_ADDR": "10.77.0.101"})
        wake = client.get("/api/machines/pc-01", headers=bearer(tokens["viewer"])).get_json()
        wake = wake["power"]["wake"]
        assert (wake["state"], wake["via"]) == ("confirmed", "boot")
        assert 0 <= wake["seconds"] < 15
        metrics = client.get("/metrics").get_data(as_text=True)
        assert 'ggnet_wake_to_request_seconds_count{via="boot"} 1.0' in metrics

        # Refusals name what is wrong, and nothing is sent.
        room = Capture(net["room"], "room0").start()
        resp = client.post("/api/machines/pc-02/wake", headers=bearer(tokens["operator"]))
        assert resp.status_code == 404
        assert resp.get_json()["error"] == (
            "machine 'pc-02': not a client of this server's inventory"
        )
        ops = Ops(e.config, e.inventory, e.collector)
        with pytest.raises(OpError, match=f"args.mac: {OTHER} is not the MAC of a client"):
            in_netns(net["server"], lambda: ops.call("wake", {"mac": OTHER}))
        assert room.stop() == []
    finally:
        e.close()
        e.jobs.stop()


# -- Redfish, against sushy-tools' emulator ------------------------------------------------


def _emulator() -> Path:
    """sushy-emulator of this venv (dev.lock), or GGNET_SUSHY_EMULATOR."""
    found = os.environ.get("GGNET_SUSHY_EMULATOR") or str(
        Path(sys.executable).parent / "sushy-emulator"
    )
    if not Path(found).is_file():
        found = shutil.which("sushy-emulator") or ""
    if not found:
        pytest.fail("sushy-emulator is not installed: `make deps` (dev.lock has sushy-tools)")
    return Path(found)


def _self_signed(cert: Path, key: Path) -> None:
    """A certificate for 127.0.0.1, valid a day, signed by its own key (the BMC's)."""
    import datetime
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    private = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = datetime.datetime.now(datetime.UTC)
    made = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(private.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(private, hashes.SHA256())
    )
    cert.write_bytes(made.public_bytes(serialization.Encoding.PEM))
    key.write_bytes(
        private.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )


def _python_of(script: Path) -> str:
    first = script.read_text().splitlines()[0]
    return first[2:].strip() if first.startswith("#!") else sys.executable


@pytest.fixture(scope="module")
def bmc(tmp_path_factory) -> Iterator[dict[str, Any]]:
    """sushy-emulator --fake over TLS on 127.0.0.1 with one system, On, behind basic
    authentication (its bcrypt htpasswd)."""
    d = tmp_path_factory.mktemp("bmc")
    emulator = _emulator()
    _self_signed(d / "cert.pem", d / "key.pem")
    password = "bmc-pw-" + os.urandom(6).hex()
    (d / "password").write_text(password + "\n")
    htpasswd = subprocess.run(
        [_python_of(emulator), "-c",
         "import bcrypt,sys; print('admin:' + bcrypt.hashpw(sys.argv[1].encode(), "
         "bcrypt.gensalt(4)).decode())", password],
        check=True, capture_output=True, text=True,
    ).stdout  # fmt: skip
    (d / "htpasswd").write_text(htpasswd)
    (d / "conf.py").write_text(
        f"SUSHY_EMULATOR_AUTH_FILE = {str(d / 'htpasswd')!r}\n"
        "SUSHY_EMULATOR_FAKE_SYSTEMS = [{'uuid': '1f3a44a2-4c1e-4b7e-9d50-5ad6c0d1e001', "
        "'name': 'pc-01', 'power_state': 'On', 'nics': []}]\n"
    )
    port = free_port()
    log = (d / "emulator.log").open("wb")
    proc = subprocess.Popen(
        [
            str(emulator), "--fake", "-i", "127.0.0.1", "-p", str(port),
            "--config", str(d / "conf.py"),
            "--ssl-certificate", str(d / "cert.pem"), "--ssl-key", str(d / "key.pem"),
        ],
        stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
        # Its fake driver keeps the systems in $TMPDIR/sushy-emulator: this test's own.
        env={**os.environ, "TMPDIR": str(d)},
    )  # fmt: skip
    url = f"https://127.0.0.1:{port}"
    cfg = {
        "url": url,
        "username": "admin",
        "password_file": str(d / "password"),
        "ca_file": str(d / "cert.pem"),
    }
    try:
        probe = redfish.Bmc(redfish.parse_bmc(cfg), http_timeout=2)

        def up() -> bool:
            if proc.poll() is not None:
                raise RuntimeError(f"sushy-emulator exited: {(d / 'emulator.log').read_text()}")
            try:
                return probe.power_state() == "On"
            except redfish.BmcError:
                return False

        wait_for("sushy-emulator's answer", up, timeout=30)
        yield {"config": cfg, "password": password, "log": d / "emulator.log", "dir": d}
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
        log.close()


def _state(cfg: dict[str, Any]) -> str:
    """The emulator's PowerState as a second client reads it."""
    return redfish.Bmc(redfish.parse_bmc(cfg)).power_state()


def test_bmc_power_cycle_and_off_are_read_back(bmc, tmp_path):
    hosts = hosts_yml(
        f"""\
        hosts:
          pc-01:
            ggnet_mac: "{MAC}"
            ggnet_bmc: {{url: "{bmc["config"]["url"]}", username: admin,
                         password_file: "{bmc["config"]["password_file"]}",
                         ca_file: "{bmc["config"]["ca_file"]}"}}
        """
    )
    all_vars = (
        f"ggnet_network: {{interface: ggtest-none0, server_ip: 10.77.0.1, subnet: {SUBNET},\n"
        "  dhcp_mode: proxy}\n" + STORAGE + iscsi_yml()
        + "ggnet_images:\n  win11: {size: 64M, kind: system}\nggnet_image: win11\n"
    )  # fmt: skip
    app = inventory_app(tmp_path, hosts, all_vars, power_poll=0.25, power_timeout=30.0)
    e = app.extensions["ggnet"]
    try:
        ops = Ops(e.config, e.inventory, e.collector)
        started = time.monotonic()
        cycled = ops.call("power", {"client": "pc-01", "action": "cycle"})
        assert cycled["state"] == "On" and _state(bmc["config"]) == "On"
        assert cycled["steps"][:2] == ["PowerState is On", "asked ResetType ForceOff"]
        assert "PowerState read back: Off" in cycled["steps"]
        assert cycled["steps"][-2:] == ["asked ResetType On", "PowerState read back: On"]
        off = ops.call("power", {"client": "pc-01", "action": "off"})
        assert off["state"] == "Off" and _state(bmc["config"]) == "Off"
        took = time.monotonic() - started
        # The fake driver applies a change 1 to 11 s after it is asked.
        assert took < 40
        text = repr((cycled, off)) + bmc["log"].read_text(errors="replace")
        assert bmc["password"] not in text
    finally:
        e.close()


def test_bmc_refusals_are_clear_and_keep_the_password(bmc):
    cfg = bmc["config"]
    untrusted = {k: v for k, v in cfg.items() if k != "ca_file"}
    with pytest.raises(
        redfish.BmcError, match=r"TLS certificate is not trusted .*: give ggnet_bmc\.ca_file"
    ):
        _state(untrusted)
    wrong = {**untrusted, "ca_file": cfg["ca_file"], "password_file": None}
    wrong = {k: v for k, v in wrong.items() if v is not None} | {"password": "not-it-123"}
    with pytest.raises(redfish.BmcError, match="HTTP 401: the BMC refused") as exc:
        _state(wrong)
    assert "not-it-123" not in str(exc.value) and bmc["password"] not in str(exc.value)
    missing = {**cfg, "password_file": str(bmc["dir"] / "absent")}
    with pytest.raises(redfish.BmcError, match=r"ggnet_bmc\.password_file: .*absent cannot be"):
        _state(missing)
