"""qemu command lines of the VM and the PCs, and lab PCs read from inventory vars."""

from __future__ import annotations

import base64
import shutil
from pathlib import Path

import pytest

from ggnet_lab import client, vm
from ggnet_lab.image import Image

pytestmark = pytest.mark.unit


def _option(argv, flag):
    return [argv[i + 1] for i, a in enumerate(argv) if a == flag]


def test_vm_runs_under_tcg_only(tmp_path):
    argv = vm.qemu_argv(Image(tmp_path), vm.VMFiles(tmp_path / "vm"), "gt-boot1", "ssh-ed25519 K c")
    assert _option(argv, "-accel") == ["tcg,thread=multi"]
    assert not any("kvm" in a for a in argv)
    assert _option(argv, "-smp") == ["2"]
    assert _option(argv, "-m") == ["2048"]
    assert "-daemonize" in argv
    assert _option(argv, "-pidfile") == [str(tmp_path / "vm" / "qemu.pid")]
    drives = _option(argv, "-drive")
    assert drives[0].startswith(f"file={tmp_path / 'vm' / 'root.qcow2'},")
    assert drives[1].startswith(f"file={tmp_path / 'vm' / 'pool.img'},")
    # The boot program's disk is the VM's read-only medium, found by its serial.
    assert drives[2].startswith(f"file={tmp_path / 'vm' / 'media.img'},")
    assert "readonly=on" in drives[2]
    assert f"serial={vm.MEDIA_SERIAL}" in " ".join(_option(argv, "-device"))
    assert _option(argv, "-netdev") == ["tap,id=lab,ifname=gt-boot1,script=no,downscript=no"]
    assert any("mac=52:54:00:21:30:10" in d for d in _option(argv, "-device"))


def test_kernel_command_line_carries_the_key_without_spaces():
    key = "ssh-ed25519 AAAAC3Nza ggnet-lab\n"
    line = vm.kernel_cmdline(key)
    words = line.split()
    assert "root=/dev/vda" in words and "net.ifnames=0" in words
    assert f"zfs.zfs_arc_max={vm.ARC_MAX_MIB * 2**20}" in words
    (encoded,) = [w.split("=", 1)[1] for w in words if w.startswith("ggnet.sshkey=")]
    assert base64.b64decode(encoded).decode() == key.strip()


def test_ssh_goes_through_the_namespace_with_the_lab_key(monkeypatch, tmp_path):
    monkeypatch.setenv("GGNET_LAB_DIR", str(tmp_path))
    argv = vm.ssh_argv("true")
    assert f"IdentityFile={tmp_path / 'ssh' / 'id_ed25519'}" in argv
    assert "User=root" in argv
    assert "ProxyCommand=nsenter --net=/var/run/netns/ggnet-lab socat - TCP:%h:%p" in argv
    assert argv[-2:] == ["10.213.0.10", "true"]


def test_ssh_config_for_testinfra_says_what_ssh_argv_says(monkeypatch, tmp_path):
    monkeypatch.setenv("GGNET_LAB_DIR", str(tmp_path))
    (tmp_path / "ssh").mkdir()
    text = vm.write_ssh_config().read_text()
    assert text.startswith("Host boot1 10.213.0.10\n    HostName 10.213.0.10\n")
    for key, value in vm.ssh_options().items():
        assert f"    {key} {value}\n" in text


def _pc_argv(firmware, tmp_path):
    pc = client.LabPC("pc-x", "52:54:00:21:30:09", firmware)
    return client.qemu_argv(pc, client.PCFiles(tmp_path), "gt-pc-x")


def test_bios_pc_boots_from_the_nics_ipxe_rom(tmp_path):
    argv = _pc_argv("bios", tmp_path)
    assert _option(argv, "-accel") == ["tcg"]
    assert _option(argv, "-drive") == []  # no pflash: SeaBIOS
    (nic,) = _option(argv, "-device")
    assert "mac=52:54:00:21:30:09" in nic and "romfile" not in nic
    assert _option(argv, "-boot") == ["order=n"]


def test_uefi_pcs_get_their_own_vars_copy(tmp_path):
    for firmware in ("uefi-ipxe", "uefi-pxe"):
        drives = _option(_pc_argv(firmware, tmp_path), "-drive")
        assert any("readonly=on" in d and "OVMF_CODE_4M.fd" in d for d in drives)
        assert any(d.endswith(f"file={tmp_path / 'OVMF_VARS_4M.fd'}") for d in drives)


def test_uefi_pxe_empties_the_rom_and_uefi_ipxe_keeps_it(tmp_path):
    (nic,) = _option(_pc_argv("uefi-pxe", tmp_path), "-device")
    assert nic.endswith(",romfile=")
    (nic,) = _option(_pc_argv("uefi-ipxe", tmp_path), "-device")
    assert "romfile" not in nic


def test_pc_console_and_display_are_files_of_its_own(tmp_path):
    argv = _pc_argv("bios", tmp_path)
    assert _option(argv, "-serial") == [f"file:{tmp_path / 'serial.log'}"]
    assert _option(argv, "-display") == [f"vnc=unix:{tmp_path / 'vnc.sock'}"]


def test_pc_from_inventory_vars():
    pc = client.pc_from_vars("pc-1", {"ggnet_mac": "52-54-00-AA-BB-CC", "ggnet_boot": "uefi"})
    assert pc == client.LabPC("pc-1", "52:54:00:aa:bb:cc", "uefi-ipxe")
    pc = client.pc_from_vars("pc-2", {"ggnet_mac": "52:54:00:aa:bb:cd"})
    assert pc.firmware == "bios"


def test_bad_client_vars_name_the_host_and_the_key():
    with pytest.raises(client.ClientError, match=r"pc-1: ggnet_mac 'nope'"):
        client.pc_from_vars("pc-1", {"ggnet_mac": "nope"})
    with pytest.raises(client.ClientError, match=r"pc-1: ggnet_lab_firmware 'coreboot'.*bios"):
        client.pc_from_vars(
            "pc-1", {"ggnet_mac": "52:54:00:aa:bb:cc", "ggnet_lab_firmware": "coreboot"}
        )


def test_the_lab_inventory_describes_the_three_firmware_kinds():
    pcs = client.lab_pcs(Path(__file__).resolve().parents[2] / "inventory" / "lab")
    assert {pc.firmware for pc in pcs.values()} == set(client.FIRMWARES)


def test_pc_screen_listens_where_the_inventory_says_else_on_a_unix_socket(tmp_path):
    pc = client.pc_from_vars("pc-x", {"ggnet_mac": "52:54:00:21:30:09"})
    assert _option(client.qemu_argv(pc, client.PCFiles(tmp_path), "t"), "-display") == [
        f"vnc=unix:{tmp_path / 'vnc.sock'}"
    ]
    pc = client.pc_from_vars(
        "pc-x", {"ggnet_mac": "52:54:00:21:30:09", "ggnet_console_vnc": "10.213.0.1:5902"}
    )
    # qemu counts displays from 5900; the console's token file names the port.
    assert _option(client.qemu_argv(pc, client.PCFiles(tmp_path), "t"), "-display") == [
        "vnc=10.213.0.1:2"
    ]
    with pytest.raises(client.ClientError, match=r"ggnet_console_vnc '10\.213\.0\.1:80'"):
        client.pc_from_vars(
            "pc-x", {"ggnet_mac": "52:54:00:21:30:09", "ggnet_console_vnc": "10.213.0.1:80"}
        )


# The four notations the engine accepts for one NIC (issue 15: the lab refused the
# dotted one that validate and the converge took).
SAME_NIC = ("52:54:00:21:30:03", "52-54-00-21-30-03", "5254.0021.3003", "525400213003")


@pytest.mark.parametrize("written", [*SAME_NIC, "52:54:00:21:30:03".upper(), " 5254.0021.3003 "])
def test_a_pc_takes_every_mac_notation_and_hands_qemu_the_colon_form(written, tmp_path):
    pc = client.pc_from_vars("pc-x", {"ggnet_mac": written})
    assert pc.mac == "52:54:00:21:30:03"
    (nic,) = _option(client.qemu_argv(pc, client.PCFiles(tmp_path), "t"), "-device")
    assert "mac=52:54:00:21:30:03," in nic


def test_a_lab_pc_holds_the_colon_form_however_it_was_made():
    assert client.LabPC("pc-x", "5254.0021.3003", "bios").mac == "52:54:00:21:30:03"


@pytest.mark.parametrize("bad", ["ff:ff:ff:ff:ff:ff", "01:00:5e:00:00:01", "52:54:00:21:30", 1234])
def test_the_lab_refuses_what_the_engine_refuses_with_its_reason(bad):
    with pytest.raises(client.ClientError, match=r"^pc-x: ggnet_mac .* (is|was|must)"):
        client.pc_from_vars("pc-x", {"ggnet_mac": bad})


@pytest.mark.parametrize("which", ["pc-x", *SAME_NIC])
def test_lab_boot_finds_a_pc_by_name_or_by_its_mac_in_any_notation(which):
    pcs = {
        "pc-x": client.pc_from_vars("pc-x", {"ggnet_mac": "5254.0021.3003"}),
        "pc-y": client.pc_from_vars("pc-y", {"ggnet_mac": "52-54-00-21-30-04"}),
    }
    assert client.find(pcs, which) is pcs["pc-x"]
    assert client.find(pcs, "52:54:00:21:30:05") is None
    assert client.find(pcs, "pc-z") is None


def _written(mac, style):
    """A colon-form MAC as an operator may paste it."""
    bare = mac.replace(":", "")
    return {
        "colon": mac.upper(),
        "dash": mac.replace(":", "-").upper(),
        "dotted": f"{bare[:4]}.{bare[4:8]}.{bare[8:]}",
        "bare": bare,
    }[style]


def test_an_inventory_written_in_other_notations_boots_the_same(tmp_path):
    lab = Path(__file__).resolve().parents[2] / "inventory" / "lab"
    reference = client.lab_pcs(lab)
    copy = tmp_path / "lab"
    shutil.copytree(lab, copy)
    hosts = copy / "hosts.yml"
    text = hosts.read_text()
    styles = ("dotted", "dash", "bare", "colon")
    for pc, style in zip(reference.values(), styles, strict=False):
        assert f'"{pc.mac}"' in text
        text = text.replace(f'"{pc.mac}"', f'"{_written(pc.mac, style)}"')
    hosts.write_text(text)
    assert client.lab_pcs(copy) == reference


def test_the_boot_clock_and_the_server_time_compare_macs_in_the_colon_form():
    from ggnet_lab import server_time, stages

    assert stages.StageClock("5254.0021.3003", 0.0).mac == "52:54:00:21:30:03"
    assert server_time.measure([], "52-54-00-21-30-03") is None
