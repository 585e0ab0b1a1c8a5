"""Boot stages recognised from frames of a capture and lines of a serial console."""

from __future__ import annotations

import pytest
from ggnet_testing.lab_frames import BROADCAST, PC, SERVER, dhcp, frame, ipv4, tcp, udp

from ggnet_lab import pcap, stages
from ggnet_lab.stages import SerialLine, Stage, StageClock

pytestmark = pytest.mark.unit


def _boot_frames():
    """A boot as the bridge sees it: the PC's DHCP, the server's answers, TFTP, HTTP,
    iSCSI, and a DISCOVER of another PC in between."""
    return [
        frame(100.5, "52:54:00:21:30:02", BROADCAST, ipv4(17, udp(68, 67, dhcp(1, "52:54:00:21:30:02")))),
        frame(102.0, PC, BROADCAST, ipv4(17, udp(68, 67, dhcp(1, PC)))),
        frame(103.0, PC, BROADCAST, ipv4(17, udp(68, 67, dhcp(1, PC)))),
        frame(103.5, SERVER, PC, ipv4(17, udp(67, 68, dhcp(2, PC, op=2)))),
        frame(104.0, SERVER, PC, ipv4(17, udp(67, 68, dhcp(5, PC, op=2)))),
        frame(104.2, PC, SERVER, ipv4(17, udp(2070, 69, b"\x00\x01undionly.kpxe\x00octet\x00"))),
        frame(105.0, PC, SERVER, ipv4(6, tcp(40000, 8080, b"GET /boot/52:54:00:21:30:01 HTTP/1.1\r\n"))),
        frame(106.0, PC, SERVER, ipv4(6, tcp(40001, 3260, bytes([0x43]) + bytes(47)))),
    ]  # fmt: skip


def test_pcap_round_trip_in_arbitrary_chunks(tmp_path):
    frames = _boot_frames()
    path = tmp_path / "c.pcap"
    pcap.write_pcap(path, frames)
    data = path.read_bytes()
    stream = pcap.PcapStream()
    got = []
    for i in range(0, len(data), 7):  # chunks that split headers and frames
        got += stream.feed(data[i : i + 7])
    assert [f.data for f in got] == [f.data for f in frames]
    assert [round(f.time, 6) for f in got] == [f.time for f in frames]


def test_pcap_follower_sees_frames_appended_later(tmp_path):
    path = tmp_path / "c.pcap"
    frames = _boot_frames()
    follower = pcap.PcapFollower(path)
    assert follower.poll() == []  # tcpdump has not created it yet
    pcap.write_pcap(path, frames[:2])
    assert len(follower.poll()) == 2
    pcap.write_pcap(tmp_path / "all.pcap", frames)
    path.write_bytes((tmp_path / "all.pcap").read_bytes())
    assert len(follower.poll()) == len(frames) - 2


def test_not_a_pcap_is_refused():
    with pytest.raises(pcap.PcapError, match="not a pcap"):
        pcap.PcapStream().feed(b"GIF89a" + bytes(30))


def test_dhcp_message_type_and_client():
    packet = pcap.decode(_boot_frames()[3])
    assert stages.dhcp_message(packet) == ("OFFER", PC)
    assert stages.dhcp_message(pcap.decode(_boot_frames()[5])) is None  # TFTP


def test_every_stage_from_a_whole_boot():
    clock = StageClock(PC.upper(), started=100.0)
    for packet in pcap.packets(_boot_frames()):
        clock.observe(packet)
    clock.observe(SerialLine(108.25, "GGNET-BOOT fw=bios id=lab-os count=0"))
    seen = {name: (t, detail) for name, t, detail in clock.summary()}
    assert seen["bridge"] == (2.0, "DHCPDISCOVER")  # the first one, not the retry
    assert seen["dhcp-offer"] == (3.5, "DHCPOFFER")
    assert seen["dhcp-ack"] == (4.0, "DHCPACK")
    assert seen["tftp"] == (pytest.approx(4.2), "TFTP read undionly.kpxe")
    assert seen["http"] == (5.0, "HTTP GET /boot/52:54:00:21:30:01")
    assert seen["iscsi"] == (6.0, "iSCSI login request")
    assert seen["marker"][0] == 8.25


def test_another_pcs_traffic_proves_nothing():
    clock = StageClock("52:54:00:21:30:03", started=100.0)
    for packet in pcap.packets(_boot_frames()):
        clock.observe(packet)
    assert all(t is None for _, t, _ in clock.summary())


def test_a_discover_relayed_with_another_source_mac_is_not_the_pc_on_the_bridge():
    relayed = frame(1.0, SERVER, BROADCAST, ipv4(17, udp(68, 67, dhcp(1, PC))))
    clock = StageClock(PC, started=0.0)
    assert clock.observe(pcap.decode(relayed)) == []


def test_later_issues_can_add_a_stage(monkeypatch):
    monkeypatch.setattr(stages, "STAGES", list(stages.STAGES))
    stages.register(Stage("login", "the OS shows a login prompt", stages.serial_contains("login:")),
                    after="marker")  # fmt: skip
    assert stages.names()[-2:] == ["marker", "login"]
    clock = StageClock(PC, started=0.0)
    (new,) = clock.observe(SerialLine(30.0, "boot1 login: "))
    assert new[0].name == "login" and new[1] == 30.0
    with pytest.raises(ValueError, match="exists already"):
        stages.register(Stage("login", "again", stages.serial_contains("x")))
    with pytest.raises(ValueError, match="no boot stage 'nope'"):
        stages.register(Stage("other", "x", stages.serial_contains("x")), after="nope")
