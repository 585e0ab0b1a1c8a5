"""MAC, IQN and IPv4 helpers (module_utils/ggnet/net.py)."""

import pytest
from ggnet import net

pytestmark = pytest.mark.unit


@pytest.mark.parametrize(
    "text",
    [
        "52:54:00:ab:cd:ef",
        "52:54:00:AB:CD:EF",
        "52-54-00-AB-CD-EF",
        "5254.00ab.cdef",
        "525400abcdef",
        "  52:54:00:ab:cd:ef ",
    ],
)
def test_every_common_notation_normalises_to_lower_colon_form(text):
    assert net.normalize_mac(text) == "52:54:00:ab:cd:ef"


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("52:54:00:ab:cd", "is not a MAC address"),
        ("52:54:00:ab:cd:eg", "is not a MAC address"),
        ("52:54-00:ab:cd:ef", "is not a MAC address"),
        ("5254.00ab.cdef.0000", "is not a MAC address"),
        ("01:00:5e:00:00:01", "multicast"),
        ("33:33:00:00:00:01", "multicast"),
        ("ff:ff:ff:ff:ff:ff", "broadcast"),
        ("00:00:00:00:00:00", "all-zero"),
        (41135040001, "read as a number by YAML"),
        (None, "must be a MAC address string"),
    ],
)
def test_bad_macs_are_rejected_with_the_reason(text, fragment):
    with pytest.raises(ValueError, match=fragment):
        net.normalize_mac(text)


def test_iqns_are_derived_from_the_name_and_prefix():
    assert net.target_iqn("pc-01") == "iqn.2025-01.lan.ggnet:target.pc-01"
    assert net.initiator_iqn("pc-01") == "iqn.2025-01.lan.ggnet:initiator.pc-01"
    assert (
        net.target_iqn("vip-3", "iqn.2024-12.org.example") == "iqn.2024-12.org.example:target.vip-3"
    )
    # A prefix that already has a unique part is extended with dots, not a second colon.
    assert net.target_iqn("pc-01", "iqn.2024-12.org.example:room1") == (
        "iqn.2024-12.org.example:room1.target.pc-01"
    )


@pytest.mark.parametrize("name", ["PC-01", "pc_01", "-pc", "pc-", "pc 01", "pc/01", ""])
def test_names_that_cannot_form_an_iqn_are_rejected(name):
    with pytest.raises(ValueError, match="cannot form an iSCSI name"):
        net.target_iqn(name)


@pytest.mark.parametrize(
    "prefix", ["iqn.2025.lan.ggnet", "iqn.2025-13.lan.ggnet", "IQN.2025-01.lan.ggnet", "eui.1234"]
)
def test_bad_iqn_prefixes_are_rejected(prefix):
    with pytest.raises(ValueError, match="IQN prefix"):
        net.target_iqn("pc-01", prefix)


def test_iqn_length_limit_is_enforced():
    with pytest.raises(ValueError, match="longer than 223 bytes"):
        net.target_iqn("a" * 200)


def test_address_helpers():
    assert net.ip_in_subnet("10.0.0.5", "10.0.0.0/24")
    assert not net.ip_in_subnet("10.0.1.5", "10.0.0.0/24")
    assert not net.ip_in_subnet("10.0.0.0", "10.0.0.0/24")  # network address
    assert not net.ip_in_subnet("10.0.0.255", "10.0.0.0/24")  # broadcast
    assert net.ip_in_range("10.0.0.150", "10.0.0.100", "10.0.0.199")
    assert not net.ip_in_range("10.0.0.99", "10.0.0.100", "10.0.0.199")
    with pytest.raises(ValueError, match="not an IPv4 address"):
        net.parse_ipv4("10.1")
    with pytest.raises(ValueError, match=r"did you mean 10\.0\.0\.0/24"):
        net.parse_subnet("10.0.0.7/24")


@pytest.mark.parametrize("text", ["52:54:00:ab:cd:ef", "52-54-00-AB-CD-EF", "5254.00ab.cdef"])
def test_mac_bytes_reads_every_notation(text):
    assert net.mac_bytes(text) == bytes.fromhex("525400abcdef")


def test_frames_may_carry_broadcast_but_a_nic_may_not():
    assert net.mac_bytes("ff:ff:ff:ff:ff:ff") == b"\xff" * 6
    with pytest.raises(ValueError, match="broadcast"):
        net.normalize_mac("ff:ff:ff:ff:ff:ff")
    with pytest.raises(ValueError, match="is not a MAC address"):
        net.mac_bytes("ff:ff:ff:ff:ff")


def test_a_mac_off_the_wire_reads_as_normalize_mac_writes_it():
    assert net.mac_of_bytes(net.mac_bytes("5254.00AB.CDEF")) == net.normalize_mac("5254.00AB.CDEF")
    with pytest.raises(ValueError, match="5 bytes"):
        net.mac_of_bytes(b"\x52\x54\x00\xab\xcd")


@pytest.mark.parametrize(
    ("value", "named"),
    [
        ("iqn.2025-01.lan.ggnet:initiator.pc-01", True),
        ("eui.02004567A425678D", True),
        ("naa.52004567BA64678D", True),
        ("10.0.0.5", False),
        ("ALL", False),
        (None, False),
    ],
)
def test_initiators_named_by_an_iscsi_name_or_by_an_address(value, named):
    assert net.is_iscsi_name(value) is named


@pytest.mark.parametrize("text", ["fd00::5", " ::1 ", "fe80::1%eth0"])
def test_ipv6_addresses(text):
    assert net.is_ipv6(text)
    assert str(net.parse_ipv6(text)) == text.strip()


@pytest.mark.parametrize("text", ["10.0.0.5", "fd00::g", "[::1]", "", None])
def test_not_ipv6(text):
    assert not net.is_ipv6(text)
