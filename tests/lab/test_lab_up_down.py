"""The lab itself: the VM answers ssh, LIO loads in it, each firmware kind gets its PC
onto the bridge, and `lab down` leaves nothing behind."""

from __future__ import annotations

import subprocess

import pytest

pytestmark = pytest.mark.lab


def test_ssh_runs_a_command_in_the_vm(lab_vm):
    assert lab_vm.check("hostname").strip() == "boot1"
    addresses = lab_vm.check("ip -br addr show dev eth0")
    assert "10.213.0.10/24" in addresses


def test_lio_modules_load_and_configfs_target_exists(lab_vm):
    lab_vm.check("modprobe target_core_mod && modprobe iscsi_target_mod")
    modules = lab_vm.check("cat /proc/modules")
    assert "iscsi_target_mod" in modules
    assert "target_core_mod" in modules
    lab_vm.check("test -d /sys/kernel/config/target")


def test_services_that_would_interfere_do_not_run(lab_vm):
    proc = lab_vm.ssh("systemctl is-active dnsmasq tgt")
    assert "active\n" not in proc.stdout.replace("inactive", "")


def test_ansible_reaches_the_vm_through_the_namespace(lab_vm):
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parents[2]
    ansible = Path(sys.executable).with_name("ansible")
    proc = subprocess.run(
        [str(ansible), "-i", "inventory/lab", "ggnet_servers", "-m", "ansible.builtin.ping"],
        cwd=root, capture_output=True, text=True, timeout=180,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "pong" in proc.stdout


@pytest.mark.parametrize("name", ["pc-bios", "pc-uefi", "pc-pxe"])
def test_each_firmware_kind_gets_its_pc_onto_the_bridge(lab_vm, name):
    from ggnet_lab import client, netns

    pc = client.lab_pcs()[name]
    result = client.boot(pc, until="bridge", timeout=90, progress=print)
    assert result.reached, client.format_summary(result)
    elapsed, detail = result.clock.seen["bridge"]
    assert detail == "DHCPDISCOVER"
    print(f"{name}: on the bridge after {elapsed:.1f}s")
    # Stopped by PID at the end of boot(), its tap gone with it.
    assert client.pid(name) is None
    assert not netns.link_exists(netns.tap_name(name))
    assert result.files.capture.stat().st_size > 0


def test_nothing_links_the_lab_to_the_host(lab_vm):
    from ggnet_lab import netns

    links = subprocess.run(
        ["ip", "-n", "ggnet-lab", "-d", "-o", "link", "show"], capture_output=True, text=True
    ).stdout.splitlines()
    assert links
    for line in links:
        name = line.split(":")[1].strip()
        # Only loopback, the bridge and tun/tap devices: no veth, no uplink.
        assert name == "lo" or name == netns.BRIDGE or " tun " in line, line
    host = subprocess.run(["ip", "-o", "addr", "show"], capture_output=True, text=True).stdout
    assert "10.213.0." not in host
