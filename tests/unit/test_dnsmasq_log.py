"""dnsmasq's log file followed incrementally, its lines counted, its leases counted."""

from __future__ import annotations

import os

import pytest

from ggnet_api import dnsmasq_log as d

pytestmark = pytest.mark.unit

MAC = "52:54:00:bb:00:01"


def line(tag: str, msg: str) -> str:
    # The month name is whatever the locale says: the parser never reads it.
    return f"déc.  6 22:00:01 dnsmasq-{tag}[4242]: {msg}\n"


def append(path, *lines: str) -> None:
    with open(path, "a", encoding="utf-8") as fh:
        fh.write("".join(lines))


def test_tail_starts_at_the_end_then_reads_only_what_was_appended(tmp_path):
    log = tmp_path / "dnsmasq.log"
    log.write_text("old 1\nold 2\n")
    tail = d.LogTail(str(log))
    assert tail.read() == []  # the first read only remembers where the file ends
    append(log, "new 1\n", "new 2\n")
    assert tail.read() == ["new 1", "new 2"]
    assert tail.read() == []


def test_tail_keeps_a_partial_line_until_it_ends(tmp_path):
    log = tmp_path / "dnsmasq.log"
    log.write_text("")
    tail = d.LogTail(str(log))
    tail.read()
    append(log, "first\nsec")
    assert tail.read() == ["first"]
    append(log, "ond\n")
    assert tail.read() == ["second"]


def test_tail_reads_a_rotated_file_from_its_start(tmp_path):
    log = tmp_path / "dnsmasq.log"
    log.write_text("a\n" * 100)
    tail = d.LogTail(str(log))
    tail.read()
    os.rename(log, tmp_path / "dnsmasq.log.1")  # logrotate's move, then dnsmasq reopens
    log.write_text("after rotation\n")
    assert tail.read() == ["after rotation"]


def test_tail_reads_a_truncated_file_from_its_start(tmp_path):
    log = tmp_path / "dnsmasq.log"
    log.write_text("a\n" * 100)
    tail = d.LogTail(str(log))
    tail.read()
    with open(log, "w") as fh:  # copytruncate: same inode, shorter
        fh.write("fresh\n")
    assert tail.read() == ["fresh"]


def test_tail_reads_at_most_max_bytes_per_read_and_drops_overlong_lines(tmp_path):
    log = tmp_path / "dnsmasq.log"
    log.write_text("")
    tail = d.LogTail(str(log), max_bytes=10)
    tail.read()
    append(log, "12345\n12345\n12345\n")
    assert tail.read() == ["12345"]  # 10 bytes: one line and a partial one
    assert tail.offset == 10
    assert tail.read() == ["12345", "12345"]  # the other 8
    assert tail.read() == []
    big = d.LogTail(str(log))
    big.read()
    append(log, "x" * (d.MAX_LINE + 1) + "\nshort\n")
    assert big.read() == ["short"]


def test_missing_log_is_no_lines(tmp_path):
    assert d.LogTail(str(tmp_path / "none")).read() == []


def test_dhcp_lines_are_counted_by_type_and_error_kind():
    log = d.DnsmasqLog("/nonexistent")
    log.feed(
        [
            line("dhcp", f"DHCPDISCOVER(eth1) {MAC}"),
            line("dhcp", f"DHCPOFFER(eth1) 10.0.0.5 {MAC}"),
            line("dhcp", f"DHCPREQUEST(eth1) 10.0.0.5 {MAC}"),
            line("dhcp", f"DHCPACK(eth1) 10.0.0.5 {MAC} ignored"),  # a PC named "ignored"
            # log-dhcp puts a transaction id first.
            line("dhcp", f"3735928559 DHCPDISCOVER(eth1) {MAC} no address available"),
            line("dhcp", f"DHCPNAK(eth1) 10.0.0.9 {MAC} wrong address"),
            line("dhcp", f"DHCPNAK(eth1) 10.0.0.9 {MAC} something new"),
            line("dhcp", "no address range available for DHCP request via eth2"),
            line("dhcp", "3735928559 requested options: 1:netmask"),  # log-dhcp's detail
            line("dhcp", "DHCPSOLICIT(eth1) 00:01:00:01"),  # DHCPv6: not counted
            "unrelated line\n",
        ]
    )
    c = log.counters
    assert {k: v for k, v in c.dhcp.items() if v} == {
        "discover": 2,
        "offer": 1,
        "request": 1,
        "ack": 1,
        "nak": 2,
    }
    assert {k: v for k, v in c.dhcp_errors.items() if v} == {
        "no_address": 1,
        "wrong_address": 1,
        "other": 1,
        "no_range": 1,
    }
    # Every type and kind is there from the start (0): rate() needs no first sample.
    assert set(c.dhcp) == set(d.DHCP_TYPES)
    assert set(c.dhcp_errors) == set(d.DHCP_ERROR_KINDS)


def test_tftp_lines_are_counted_by_known_file_with_the_bytes_sent(tmp_path):
    (tmp_path / "undionly.kpxe").write_bytes(b"x" * 1000)
    log = d.DnsmasqLog("/nonexistent", tftp_root=str(tmp_path))
    log.feed(
        [
            line("tftp", f"sent {tmp_path}/undionly.kpxe to 10.0.0.5"),
            line("tftp", f"sent {tmp_path}/undionly.kpxe to 10.0.0.6"),
            line("tftp", f"sent {tmp_path}/pwned-{'a' * 50}.bin to 10.0.0.6"),
            line("tftp", f"failed sending {tmp_path}/snponly.efi to 10.0.0.7"),
            line("tftp", f"file {tmp_path}/ipxe.efi not found for 10.0.0.8"),
            line("tftp", f"file {tmp_path}/x/../../etc/passwd not found"),
            line("tftp", f"cannot access {tmp_path}/snponly.efi: Permission denied"),
            line("tftp", "error 0 TFTP Aborted received from 10.0.0.5"),
            line("tftp", "unsupported request from 10.0.0.5"),
        ]
    )
    c = log.counters
    assert c.tftp_requests == {"undionly.kpxe": 2, "other": 2, "snponly.efi": 2, "ipxe.efi": 1}
    assert c.tftp_bytes == {"undionly.kpxe": 2000, "other": 0}
    assert c.tftp_errors == {
        ("snponly.efi", "failed"): 1,
        ("ipxe.efi", "not_found"): 1,
        ("other", "not_found"): 1,
        ("snponly.efi", "denied"): 1,
        ("other", "client_abort"): 1,
        ("other", "unsupported"): 1,
    }
    files = {r[0] for r in c.rows()["tftp_requests"]}
    assert files <= {*d.BOOT_FILES, d.OTHER}


def test_poll_counts_what_the_file_gained(tmp_path):
    path = tmp_path / "dnsmasq.log"
    path.write_text(line("dhcp", f"DHCPDISCOVER(eth1) {MAC}") * 5)  # before the API
    log = d.DnsmasqLog(str(path))
    assert log.poll().dhcp["discover"] == 0
    append(path, line("dhcp", f"DHCPDISCOVER(eth1) {MAC}"))
    append(path, line("dhcp", f"DHCPOFFER(eth1) 10.0.0.5 {MAC}").encode().decode())
    assert log.poll().dhcp["discover"] == 1
    assert log.poll().dhcp["discover"] == 1


def test_undecodable_bytes_do_not_stop_the_count(tmp_path):
    path = tmp_path / "dnsmasq.log"
    path.write_bytes(b"")
    log = d.DnsmasqLog(str(path))
    log.poll()
    with open(path, "ab") as fh:
        fh.write(b"\xff\xfe junk\n" + line("dhcp", f"DHCPDISCOVER(eth1) {MAC}").encode())
    assert log.poll().dhcp["discover"] == 1


def test_active_leases_count_unexpired_and_infinite_ones(tmp_path):
    path = tmp_path / "dnsmasq.leases"
    path.write_text(
        f"2000 {MAC} 10.0.0.5 pc-01 *\n"
        "500 52:54:00:bb:00:02 10.0.0.6 pc-02 *\n"  # expired
        "0 52:54:00:bb:00:03 10.0.0.7 * *\n"  # never expires
        "duid 00:01:00:01\n"
    )
    assert d.active_leases(str(path), now=1000.0) == 2
    assert d.active_leases(str(tmp_path / "none"), now=1000.0) is None
    assert d.active_leases(None, now=1000.0) is None
