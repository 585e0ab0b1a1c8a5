"""Verify the converged lab boot server from the outside, over the same SSH path Ansible
uses: what a person would check by hand after `ansible-playbook playbooks/site.yml`.

Nothing here prints a boot script: it carries the PC's CHAP secret."""

import json
import shlex
import time

from ggnet.net import initiator_iqn, target_iqn

from ggnet_lab import vm

# testinfra reads the inventory without Ansible's templating (the lab's key path is a
# template), so it reaches the VM with the same options written as an ssh_config.
testinfra_hosts = [f"ssh://{vm.NAME}?ssh_config={vm.write_ssh_config()}"]

CLIENTS = {
    "pc-bios": "52:54:00:21:30:01",
    "pc-uefi": "52:54:00:21:30:02",
    "pc-pxe": "52:54:00:21:30:03",
}
API = vm.API_URL


def test_state_and_config_directories(host):
    assert host.file("/var/lib/ggnet").is_directory
    assert host.file("/var/lib/ggnet").mode == 0o750
    assert host.file("/etc/ggnet").is_directory


def test_lio_modules_load_at_boot_and_are_loaded(host):
    listed = host.file("/etc/modules-load.d/ggnet-lio.conf").content_string.split()
    assert "iscsi_target_mod" in listed
    assert host.file("/sys/kernel/config/target").is_directory
    assert host.run("grep -qw iscsi_target_mod /proc/modules").rc == 0


def test_openzfs_runs_from_the_images_module_with_the_labs_arc_cap(host):
    """The lab's storage is OpenZFS, built into the image for its kernel, as on a
    production server; its ARC is held to the lab's share of the VM's memory."""
    kernel = host.check_output("uname -r")
    module = host.check_output("modinfo -n zfs")
    assert module.startswith(f"/lib/modules/{kernel}/") and "dkms" in module, module
    assert host.file("/dev/zfs").exists
    arc = int(host.check_output("cat /sys/module/zfs/parameters/zfs_arc_max"))
    assert arc == vm.ARC_MAX_MIB * 2**20
    assert host.check_output("zfs get -H -o value type ggpool/images/lab-os") == "volume"


def test_pool_has_every_image_and_one_writeback_per_client_and_disk(host):
    out = host.check_output("zfs list -H -o name -r ggpool")
    names = set(out.split())
    assert "ggpool/images/lab-os" in names
    assert "ggpool/images/games" in names
    for client in CLIENTS:
        assert f"ggpool/writebacks/{client}/system" in names
        assert f"ggpool/writebacks/{client}/game" in names


def test_every_client_has_a_lio_target_with_its_acl_and_two_luns(host):
    root = "/sys/kernel/config/target/iscsi"
    for client in CLIENTS:
        iqn = target_iqn(client)
        tpg = f"{root}/{iqn}/tpgt_1"
        assert host.file(tpg).is_directory, iqn
        acls = host.check_output(f"ls {tpg}/acls").split()
        assert acls == [initiator_iqn(client)]
        assert sorted(host.check_output(f"ls {tpg}/lun").split()) == ["lun_0", "lun_1"]


def test_lio_configuration_is_saved_privately_and_restored_at_boot(host):
    saved = host.file("/etc/rtslib-fb-target/saveconfig.json")
    assert saved.exists
    assert saved.mode == 0o600
    assert host.service("rtslib-fb-targetctl").is_enabled


def test_dnsmasq_runs_with_a_config_it_accepts_and_serves_ipxe(host):
    assert host.service("ggnet-dnsmasq").is_running
    assert host.service("ggnet-dnsmasq").is_enabled
    assert host.run("dnsmasq --test -C /etc/ggnet/dnsmasq.conf").rc == 0
    for binary in ("undionly.kpxe", "snponly.efi", "ipxe.efi"):
        assert host.file(f"/srv/ggnet/tftp/{binary}").size > 0
    fixed = host.file("/etc/ggnet/dnsmasq-hosts.conf").content_string
    for mac in CLIENTS.values():
        assert mac in fixed


def _get(host, path):
    """(status, body) of a GET on the API, from the boot server itself."""
    cmd = host.run(f"curl -s -o /tmp/ggnet-verify.body -w '%{{http_code}}' {API}{path}")
    body = host.file("/tmp/ggnet-verify.body").content_string
    host.run("rm -f /tmp/ggnet-verify.body")
    return int(cmd.stdout or 0), body


def test_api_is_healthy(host):
    assert host.service("ggnet-api").is_running
    status, body = _get(host, "/health")
    assert status == 200, body
    assert json.loads(body)["status"] == "ok"


def test_boot_path_gives_a_known_pcs_script_only_to_that_pc(host):
    # The boot server's own address is not pc-bios's: the script it gets holds no
    # credentials and no SAN URI (the real PCs' boots in test_lab_boots.py get theirs).
    status, body = _get(host, f"/boot/{CLIENTS['pc-bios']}")
    leaked = [w for w in ("password", "username", "iscsi:", "sanboot") if w in body]
    assert status == 200 and body.startswith("#!ipxe"), status
    assert not leaked, f"a foreign request's script carries {leaked}; script not shown (secret)"


# Run on the VM, so that the secrets never leave it: logs in to TARGET's LUN 0 as
# INITIATOR with the CHAP credentials of CREDS (from the converged targets file) and
# prints only the exit code.
_LOGIN = """
import json, subprocess, sys
target, initiator, creds = sys.argv[1:4]
c = json.load(open("/etc/ggnet/targets.json"))["chap"][creds]
url = "iscsi://%s%%%s@10.213.0.10/%s/0" % (initiator, c["secret"], target)
r = subprocess.run(["iscsi-readcapacity16", "-i", initiator, url], capture_output=True)
print(r.returncode)
"""


def _login_rc(host, target: str, initiator: str, creds: str) -> int:
    return int(
        host.check_output(
            f"python3 -c {shlex.quote(_LOGIN)} {shlex.quote(target)} "
            f"{shlex.quote(initiator)} {shlex.quote(creds)}"
        )
    )


def test_one_pcs_chap_credentials_open_no_other_pcs_target(host):
    bios_target, bios = target_iqn("pc-bios"), initiator_iqn("pc-bios")
    # Its own credentials open pc-bios's target: the check below can fail for CHAP alone.
    assert _login_rc(host, bios_target, bios, "pc-bios") == 0
    # pc-uefi's secret, presented under pc-bios's (public) initiator name: refused,
    # because each PC's secret is its own (one shared secret would open it).
    assert _login_rc(host, bios_target, bios, "pc-uefi") != 0
    # pc-uefi as itself: refused too (the ACL names pc-bios only).
    assert _login_rc(host, bios_target, initiator_iqn("pc-uefi"), "pc-uefi") != 0


def test_boot_path_gives_an_unknown_pc_the_discovery_script(host):
    status, body = _get(host, "/boot/52:54:00:99:99:99")
    assert status == 200
    assert "/discover?" in body


def test_prometheus_scrapes_the_api_and_node_exporter(host):
    assert host.service("prometheus").is_running
    assert host.service("prometheus-node-exporter").is_running
    deadline = time.monotonic() + 90
    health = {}
    while time.monotonic() < deadline:
        raw = host.check_output("curl -s http://127.0.0.1:9090/api/v1/targets")
        targets = json.loads(raw)["data"]["activeTargets"]
        health = {t["labels"]["job"]: t["health"] for t in targets}
        if health and all(h == "up" for h in health.values()):
            break
        time.sleep(5)
    assert health.get("ggnet_api") == "up", health
    assert health.get("node") == "up", health


def test_console_serves_novnc(host):
    assert host.service("ggnet-console").is_running
    status = host.check_output(
        "curl -s -o /dev/null -w '%{http_code}' http://127.0.0.1:6080/vnc.html"
    )
    assert status == "200"


def test_preflight_runs_before_every_api_start_without_keeping_the_boot_path_down(host):
    unit = host.file("/etc/systemd/system/ggnet-api.service").content_string
    # "+": the checks keep root while the API runs as its own account.
    assert "ExecStartPre=-+/usr/local/bin/ggnet preflight" in unit.splitlines()
    # Its report is in the API's journal: one summary line per start.
    log = host.check_output("journalctl -u ggnet-api --no-pager -o cat")
    assert "preflight: " in log and " passed, " in log, log[-2000:]


def _service_user(host, service: str) -> str:
    pid = host.check_output(f"systemctl show -p MainPID --value {service}").strip()
    assert pid not in ("", "0"), f"{service} has no main process"
    return host.check_output(f"ps -o user= -p {pid}").strip()


def test_the_api_runs_without_root_and_privd_does_the_root_work(host):
    assert _service_user(host, "ggnet-api") == "ggnet-api"
    assert _service_user(host, "ggnet-privd") == "root"
    sock = host.file("/run/ggnet-privd/privd.sock")
    assert sock.is_socket and sock.mode == 0o660 and sock.group == "ggnet-api"
    # Everything the API keeps is its own: nothing a root process left behind.
    assert host.check_output("find /var/lib/ggnet-api ! -user ggnet-api") == ""
    for path in ("/etc/ggnet/targets.json", "/etc/ggnet/api.yml"):
        f = host.file(path)
        assert (f.mode, f.user, f.group) == (0o640, "root", "ggnet-api"), path


def test_privd_answers_no_other_user(host):
    # Another account cannot reach the socket at all; the uid check behind it is
    # tests/unit/test_privd.py's.
    probe = (
        "import socket; s = socket.socket(socket.AF_UNIX); "
        "s.connect('/run/ggnet-privd/privd.sock'); print('connected')"
    )
    r = host.run(
        f"setpriv --reuid=nobody --regid=nogroup --clear-groups python3 -c {shlex.quote(probe)}"
    )
    assert r.rc != 0 and "connected" not in r.stdout, r.stdout + r.stderr
