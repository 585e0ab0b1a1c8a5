"""Tap names fit the kernel's 15 characters and stay unique."""

from __future__ import annotations

import pytest

from ggnet_lab import netns

pytestmark = pytest.mark.unit


@pytest.mark.parametrize("machine", ["boot1", "pc-bios", "pc-uefi", "pc-pxe"])
def test_short_names_stay_readable(machine):
    assert netns.tap_name(machine) == f"gt-{machine}"


@pytest.mark.parametrize(
    "machine", ["a-very-long-client-name-01", "pc_with_underscores", "pc.dots", "x" * 40]
)
def test_every_tap_name_fits_ifnamsiz(machine):
    name = netns.tap_name(machine)
    assert len(name) <= 15
    assert all(c.isalnum() or c == "-" for c in name)


def test_long_names_sharing_a_prefix_get_different_taps():
    assert netns.tap_name("classroom-pc-001") != netns.tap_name("classroom-pc-002")


def test_nsenter_switches_only_the_network():
    argv = netns.nsenter("tcpdump", "-i", "x")
    assert argv[:2] == ["nsenter", "--net=/var/run/netns/ggnet-lab"]
    assert argv[2:] == ["tcpdump", "-i", "x"]
