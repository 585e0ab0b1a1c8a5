"""ggnet.preflight: each check's verdict and message from recorded tool output."""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys

import pytest
from ggnet.inventory import REPO_ROOT
from ggnet.preflight import (
    check_api_database,
    check_boot_interface,
    check_dnsmasq_config,
    check_dnsmasq_running,
    check_iscsi_backend,
    check_pool,
    check_tftp_files,
    human,
    reserve_bytes,
    run_checks,
    textfile,
)

pytestmark = pytest.mark.unit
MiB = 2**20


def fake(answers):
    """A runner answering by the command's first two words; records what ran."""
    calls = []

    def run(argv):
        calls.append(list(argv))
        return answers[" ".join(argv[:2])]

    run.calls = calls
    return run


def test_pool_below_reserve_fails_with_what_to_do():
    run = fake(
        {
            "zpool list": (0, "ONLINE\n", ""),
            "zfs get": (0, f"used\t{950 * MiB}\navailable\t{50 * MiB}\n", ""),
        }
    )
    c = check_pool("ggpool", "10%", run)
    assert not c.ok
    assert "ggpool has 50.0 MiB free, below its reserve of 100.0 MiB (10%)" in c.message
    assert "boots are refused" in c.message
    assert run.calls[1][:3] == ["zfs", "get", "-Hp"]


def test_pool_above_reserve_passes():
    run = fake(
        {
            "zpool list": (0, "ONLINE\n", ""),
            "zfs get": (0, f"used\t{10 * MiB}\navailable\t{990 * MiB}\n", ""),
        }
    )
    assert check_pool("ggpool", "64M", run).ok


def test_pool_degraded_and_missing():
    assert "DEGRADED" in check_pool("p", "10%", fake({"zpool list": (0, "DEGRADED\n", "")})).message
    c = check_pool("p", "10%", fake({"zpool list": (1, "", "cannot open 'p': no such pool")}))
    assert not c.ok and "not imported" in c.message and "zpool import p" in c.message


def test_reserve_bytes():
    assert reserve_bytes("10%", 1000) == 100
    assert reserve_bytes("1G", 5) == 2**30


def test_iscsi_backend(tmp_path):
    assert not check_iscsi_backend("lio", fake({}), configfs=str(tmp_path)).ok
    (tmp_path / "iscsi").mkdir()
    assert check_iscsi_backend("lio", fake({}), configfs=str(tmp_path)).ok
    run = fake({"tgtadm -C": (107, "", "tgtadm: can't send the request to the tgt daemon")})
    c = check_iscsi_backend("tgt", run, tgt_control=3)
    assert not c.ok and "can't send" in c.message and "systemctl start tgt" in c.message
    assert run.calls[0][:3] == ["tgtadm", "-C", "3"]


def test_dnsmasq_config_names_the_error():
    run = fake({"dnsmasq --test": (1, "", "dnsmasq: bad option at line 3 of x.conf\n")})
    c = check_dnsmasq_config("x.conf", run)
    assert not c.ok and "bad option at line 3" in c.message


def test_dnsmasq_running_by_pidfile(tmp_path):
    pidfile = tmp_path / "dnsmasq.pid"
    c = check_dnsmasq_running(str(pidfile), "ggnet-dnsmasq", fake({}))
    assert not c.ok and "no PC can PXE-boot" in c.message
    # A live pid that is not dnsmasq (this test's own python) is not dnsmasq.
    pidfile.write_text(f"{os.getpid()}\n")
    c = check_dnsmasq_running(str(pidfile), "ggnet-dnsmasq", fake({}))
    assert not c.ok and "not dnsmasq" in c.message


def test_tftp_files(tmp_path):
    (tmp_path / "undionly.kpxe").write_bytes(b"x")
    (tmp_path / "snponly.efi").write_bytes(b"")
    c = check_tftp_files(str(tmp_path), ["undionly.kpxe", "snponly.efi", "ipxe.efi"])
    assert not c.ok and "snponly.efi, ipxe.efi" in c.message


def test_boot_interface_parses_ip_o_addr():
    out = (
        "5: br0    inet 10.213.0.10/24 brd 10.213.0.255 scope global br0\\       valid_lft forever\n"
        "5: br0    inet6 fd67:676e:6574::1/64 scope global \\       valid_lft forever\n"
    )
    run = fake({"ip -o": (0, out, "")})
    assert check_boot_interface("br0", "10.213.0.10", run).ok
    c = check_boot_interface("br0", "10.213.0.11", run)
    assert not c.ok and "10.213.0.10, fd67:676e:6574::1" in c.message
    gone = fake({"ip -o": (1, "", 'Device "eth9" does not exist.')})
    assert "fix ggnet_network.interface" in check_boot_interface("eth9", "1.2.3.4", gone).message


def test_api_database(tmp_path):
    path = tmp_path / "api.db"
    assert "does not exist" in check_api_database(str(path)).message
    with sqlite3.connect(path) as db:
        db.execute("CREATE TABLE jobs (id)")
    c = check_api_database(str(path))
    assert not c.ok and "boots, discovered, tokens" in c.message
    with sqlite3.connect(path) as db:
        for t in ("boots", "discovered", "tokens"):
            db.execute(f"CREATE TABLE {t} (id)")
    assert check_api_database(str(path)).ok


def test_run_checks_leaves_out_what_is_not_configured_and_skips(tmp_path):
    checks = run_checks(
        {
            "tftp_root": str(tmp_path),
            "api_database": str(tmp_path / "x.db"),
            "skip": ["api_database"],
        }
    )
    assert [c.name for c in checks] == ["tftp_files"]


def test_human_ends_in_summary_and_textfile_has_every_check(tmp_path):
    checks = run_checks({"tftp_root": str(tmp_path), "api_database": str(tmp_path / "x.db")})
    text = human(checks)
    assert text.splitlines()[-1] == "preflight: 0 passed, 2 failed (tftp_files, api_database)"
    assert text.startswith("FAIL  tftp_files")
    prom = textfile(checks, 1700000000.0)
    assert 'ggnet_preflight_check_ok{check="tftp_files"} 0' in prom
    assert "ggnet_preflight_last_run_timestamp_seconds 1700000000.000" in prom


def _cli(*args):
    return subprocess.run(
        [sys.executable, "-m", "ggnet_cli.preflight", "--no-inventory", *args],
        capture_output=True,
        text=True,
        check=False,
    )


def test_cli_exit_codes_json_and_textfile(tmp_path):
    (tmp_path / "ipxe.efi").write_bytes(b"x")
    settings = tmp_path / "s.yml"
    settings.write_text(f"tftp_root: {tmp_path}\ntftp_files: [ipxe.efi]\n")
    proc = _cli("--settings", str(settings), "--json", "--textfile", str(tmp_path / "p.prom"))
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout)
    assert result["ok"] and result["checks"][0]["name"] == "tftp_files"
    assert 'check="tftp_files"} 1' in (tmp_path / "p.prom").read_text()
    settings.write_text(f"tftp_root: {tmp_path}\ntftp_files: [nope.efi]\n")
    proc = _cli("--settings", str(settings))
    assert proc.returncode == 1
    assert proc.stdout.splitlines()[-1] == "preflight: 0 passed, 1 failed (tftp_files)"


def test_on_a_boot_server_the_backend_checked_is_the_converged_one(tmp_path, monkeypatch):
    # The API's inventory copy (lab: lio) may lag a converge that moved the targets to
    # tgt; the check must ask tgtd then, not report LIO as the backend that serves PCs.
    import argparse

    from ggnet_cli import preflight as preflight_cmd

    targets_file = tmp_path / "targets.json"
    api_settings = tmp_path / "api.yml"
    api_settings.write_text(f"targets_file: {targets_file}\n")
    args = argparse.Namespace(
        inventory=str(REPO_ROOT / "inventory" / "lab"), server=None, settings=None,
        no_inventory=False,
    )  # fmt: skip
    monkeypatch.delenv("GGNET_API_CONFIG", raising=False)
    assert preflight_cmd._settings(args)["iscsi_backend"] == "lio"
    monkeypatch.setenv("GGNET_API_CONFIG", str(api_settings))
    assert preflight_cmd._settings(args)["iscsi_backend"] == "lio"  # no file yet
    targets_file.write_text('{"backend": "tgt", "chap": {}}')
    assert preflight_cmd._settings(args)["iscsi_backend"] == "tgt"
