"""Real PCs boot the converged lab: qemu PCs on the lab bridge, the VM's dnsmasq, its
API's boot scripts, its LIO block backstores on OpenZFS zvol writebacks, and bootprog's
program on the lab-os image (ggnet_lab/vm.py attaches it; inventory/lab imports it).

The program prints `GGNET-BOOT fw=… id=lab-os count=N` and stores N+1 on its own disk
(`GGNET-WROTE … count=N+1`), so a PC's serial console tells what its disk held:
count=0 is the image as imported, anything else is what some boot wrote.

The tests run in file order and build on each other, as an operator's day would:
every PC boots; a reboot discards what it wrote; maintenance keeps it until released.
Applying a PC's disk as a new version, its rollout and rollback are test_lab_rollout.py.
Then the same boots in proxy mode (a router's DHCP in the namespace), converged from
an inventory copy and switched back.  The switch to tgt is a row of the room-change
matrix (test_room_changes.py).
Operations go through the VM's own API as jobs (machine.yml, image.yml), with a token
that never leaves the VM.
"""

from __future__ import annotations

import shlex
import shutil
import subprocess
import time
from pathlib import Path

import pytest
import yaml
from ggnet import layout
from ggnet_testing import lab_room

from ggnet_lab import client, netns, vm

REPO = Path(__file__).resolve().parents[3]

testinfra_hosts = [f"ssh://{vm.NAME}?ssh_config={vm.write_ssh_config()}"]

API = vm.API_URL
PCS = client.lab_pcs()
# Counts the boot scripts asked for from an address that is not the PC's.
FOREIGN_METRIC = "ggnet_boot_foreign_requests_total"
STORAGE = yaml.safe_load((REPO / "inventory/lab/group_vars/all.yml").read_text())["ggnet_storage"]


def boot(name: str) -> tuple[int, int]:
    """Boot a lab PC until its program has written; (count it read, count it wrote)."""
    return lab_room.boot(PCS[name])


def wait_no_session(host, name: str) -> None:
    """The PC is off: its target shows no session (apply refuses a running client)."""
    lab_room.wait_no_session(host.check_output, name)


def disk_count(host, path: str) -> int:
    """The boot counter stored in a disk on the VM (bootprog's state sector).

    A zvol is read through its block device, whose page cache LIO's block backstore
    bypasses: flushed first, or a sector read before a PC wrote it would be read stale."""
    if path.startswith("/dev/"):
        host.check_output(f"blockdev --flushbufs {shlex.quote(path)}")
    code = (
        "import struct,sys; f=open(sys.argv[1],'rb'); f.seek(48*512); d=f.read(44); "
        "assert d[:8]==b'GGNETST1', d[:8]; print(struct.unpack('<I', d[40:44])[0])"
    )
    return int(host.check_output(f"python3 -c {shlex.quote(code)} {shlex.quote(path)}"))


@pytest.fixture(scope="module")
def api(host):
    """Start a job on the VM's API and wait for its end: (state, job)."""
    with lab_room.operator_token(host, "lab-boots") as auth:
        yield lab_room.job_runner(host, auth)


def test_every_lab_pc_boots_the_image_from_its_own_writeback(host):
    image_path, _ = layout.image_backing(STORAGE, "lab-os")
    for name in ("pc-bios", "pc-uefi", "pc-pxe"):
        assert boot(name) == (0, 1), name
        # What it wrote is in its own writeback, not in the image nor in another PC's.
        assert disk_count(host, layout.writeback_backing(STORAGE, name, "system")[0]) == 1
    assert disk_count(host, image_path) == 0


def metric_sum(host, name: str, **labels: str) -> float:
    """The sum of one family's samples on the VM's /metrics whose labels include these."""
    want = [f'{k}="{v}"' for k, v in labels.items()]
    total = 0.0
    for line in host.check_output(f"curl -s {API}/metrics").splitlines():
        if line.startswith((name + "{", name + " ")) and all(w in line for w in want):
            total += float(line.rsplit(" ", 1)[1])
    return total


def wait_metric(host, name: str, least: float, **labels: str) -> float:
    """The collector reads dnsmasq's log and LIO's counters every few seconds."""
    deadline = time.monotonic() + 60
    while (value := metric_sum(host, name, **labels)) < least and time.monotonic() < deadline:
        time.sleep(3)
    return value


def test_the_boots_are_counted_from_dnsmasqs_log_and_lio_and_promtool_accepts_them(host):
    log_dir, log = host.file("/var/log/ggnet"), host.file("/var/log/ggnet/dnsmasq.log")
    assert (log_dir.user, log_dir.group, log_dir.mode) == ("root", "ggnet-api", 0o2751)
    assert (log.user, log.group, log.mode) == ("nobody", "ggnet-api", 0o640)
    # Every PC got an address; the native-PXE PC fetched iPXE over TFTP first.
    assert wait_metric(host, "ggnet_dhcp_messages_total", 3, type="ack") >= 3
    assert wait_metric(host, "ggnet_tftp_requests_total", 1, file="snponly.efi") >= 1
    assert wait_metric(host, "ggnet_tftp_sent_bytes_total", 1, file="snponly.efi") > 0
    for name in ("pc-bios", "pc-uefi", "pc-pxe"):
        assert wait_metric(host, "ggnet_iscsi_logins_total", 1, client=name) >= 1, name
    assert metric_sum(host, "ggnet_iscsi_targets") == 3
    lint = host.run(f"curl -s {API}/metrics | promtool check metrics")
    assert lint.rc == 0, lint.stdout + lint.stderr


def test_dnsmasq_writes_to_a_fresh_log_after_a_rotation(host):
    acks = metric_sum(host, "ggnet_dhcp_messages_total", type="ack")
    host.check_output("logrotate -f /etc/logrotate.d/ggnet-dnsmasq")
    assert host.file("/var/log/ggnet/dnsmasq.log.1").exists
    assert boot("pc-bios") == (0, 1)
    mac = PCS["pc-bios"].mac
    assert mac in host.file("/var/log/ggnet/dnsmasq.log").content_string
    assert wait_metric(host, "ggnet_dhcp_messages_total", acks + 1, type="ack") > acks


def test_a_pcs_script_asked_for_from_elsewhere_resets_nothing_and_holds_no_secret(host):
    # pc-bios wrote count=1 above. Its script, asked for by the boot server itself and
    # by the lab host (neither is pc-bios's address), must leave that write in place
    # and carry no credentials; the next test boots pc-bios as before.
    writeback = layout.writeback_backing(STORAGE, "pc-bios", "system")[0]
    assert disk_count(host, writeback) == 1
    url = f"{API}/boot/{PCS['pc-bios'].mac}"
    answers = {
        "boot server": host.check_output(f"curl -s --max-time 20 {url}"),
        "lab host": subprocess.run(
            netns.nsenter("curl", "-s", "--max-time", "20", url),
            capture_output=True, text=True, check=True,
        ).stdout,
    }  # fmt: skip
    for source, body in answers.items():
        leaked = [w for w in ("password", "username", "iscsi:", "sanboot") if w in body]
        assert body.startswith("#!ipxe") and not leaked, f"from the {source}: {leaked}"
    assert disk_count(host, writeback) == 1
    metrics = host.check_output(f"curl -s {API}/metrics")
    counted = [ln for ln in metrics.splitlines() if ln.startswith(FOREIGN_METRIC)]
    assert counted and float(counted[0].rsplit(" ", 1)[1]) >= 2, counted


def test_a_reboot_discards_what_the_pc_wrote(host):
    # pc-bios wrote count=1 above; its next boot's reset rolls the writeback back.
    assert boot("pc-bios") == (0, 1)
    assert disk_count(host, layout.writeback_backing(STORAGE, "pc-pxe", "system")[0]) == 1


def test_maintenance_keeps_what_the_pc_wrote_across_reboots(host, api):
    wait_no_session(host, "pc-bios")
    job = api("machine", op="keep", client="pc-bios")
    assert job["state"] == "successful", job
    assert boot("pc-bios") == (1, 2)  # its last boot's write survived this reboot
    assert boot("pc-bios") == (2, 3)
    # Back to normal: released, its next boot gets the image fresh.
    wait_no_session(host, "pc-bios")
    assert api("machine", op="release", client="pc-bios")["state"] == "successful"
    assert boot("pc-bios") == (0, 1)


def _variant_inventory(
    tmp_path: Path, settings: dict, drop_host_keys: tuple[str, ...] = ()
) -> Path:
    """A copy of inventory/lab with other settings dicts, as an operator would edit it."""
    inv = tmp_path / "inventory"
    shutil.copytree(REPO / "inventory/lab", inv)
    all_vars = inv / "group_vars/all.yml"
    data = yaml.safe_load(all_vars.read_text())
    data.update(settings)
    all_vars.write_text(yaml.safe_dump(data, sort_keys=False))
    hosts = yaml.safe_load((inv / "hosts.yml").read_text())
    for pc in hosts["all"]["children"]["ggnet_clients"]["children"]["lab_pcs"]["hosts"].values():
        for key in drop_host_keys:
            pc.pop(key, None)
    (inv / "hosts.yml").write_text(yaml.safe_dump(hosts, sort_keys=False))
    return inv


def _converge(inventory: Path, tags: str, *extra: str) -> str:
    return lab_room.converge(inventory, "--tags", tags, *extra).stdout


@pytest.fixture
def router_dhcp(tmp_path):
    """A separate DHCP server in the lab namespace (the room's router): addresses only."""
    leases = tmp_path / "router.leases"
    pidfile = tmp_path / "router.pid"
    argv = netns.nsenter(
        "dnsmasq", "--conf-file=/dev/null", "--port=0", "--interface=ggbr0",
        "--bind-interfaces", "--dhcp-range=10.213.0.120,10.213.0.140,255.255.255.0,10m",
        f"--dhcp-leasefile={leases}", f"--pid-file={pidfile}", "--dhcp-authoritative",
        "--log-dhcp", f"--log-facility={tmp_path / 'router.log'}",
    )  # fmt: skip
    subprocess.run(argv, check=True, capture_output=True, text=True)
    try:
        yield leases
    finally:
        if pidfile.exists():
            subprocess.run(["kill", pidfile.read_text().strip()], check=False)


def test_proxy_mode_boots_with_addresses_from_the_routers_dhcp(host, tmp_path, router_dhcp):
    network = {
        **yaml.safe_load((REPO / "inventory/lab/group_vars/all.yml").read_text())["ggnet_network"],
        "dhcp_mode": "proxy",
    }
    network.pop("dhcp_range")
    inventory = _variant_inventory(tmp_path, {"ggnet_network": network}, ("ggnet_ip",))
    _converge(inventory, "netboot")
    try:
        conf = host.check_output("cat /etc/ggnet/dnsmasq.conf")
        assert "dhcp-range=10.213.0.0,proxy" in conf, conf
        # The same boot, its address from the router, its boot information from ggnet.
        assert boot("pc-bios") == (0, 1)
        leased = router_dhcp.read_text()
        assert PCS["pc-bios"].mac in leased, leased
        (ip,) = [ln.split()[2] for ln in leased.splitlines() if PCS["pc-bios"].mac in ln]
        assert ip.startswith("10.213.0.1") and 120 <= int(ip.rsplit(".", 1)[1]) <= 140, leased
    finally:
        # Back to the lab's own full-DHCP netboot: later tests boot PCs without a router.
        _converge(REPO / "inventory/lab", "netboot")
