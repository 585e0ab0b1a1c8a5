"""The per-client model and the size/percentage parsers (module_utils/ggnet/model.py)."""

import subprocess
import sys

import pytest
from ggnet import chap, model

pytestmark = pytest.mark.unit

SETTINGS = {
    "ggnet_iscsi": {"backend": "lio", "chap": True, "chap_secret": "s3cret-s3cret"},
    "ggnet_images": {"win": {"size": "64G", "kind": "system", "version": "v3"}},
}


def _inventory(servers=("boot1",), **extra_client_vars):
    groups = {
        "all": [*servers, "pc-02", "pc-01"],
        "ggnet_servers": list(servers),
        "ggnet_clients": ["pc-02", "pc-01"],
        "vip": ["pc-02"],
    }
    hostvars = {s: dict(SETTINGS) for s in servers}
    for i, name in enumerate(("pc-01", "pc-02"), start=1):
        hostvars[name] = {
            **SETTINGS,
            "ggnet_mac": f"52-54-00-00-00-0{i}",
            "ggnet_image": "win",
            **extra_client_vars,
        }
    return groups, hostvars


@pytest.mark.parametrize(
    ("text", "size"),
    [
        ("64G", 64 << 30),
        ("512M", 512 << 20),
        ("1.5T", 3 << 39),
        ("64GiB", 64 << 30),
        ("10k", 10 << 10),
        (4096, 4096),
        ("4096", 4096),
    ],
)
def test_sizes(text, size):
    assert model.parse_size(text) == size


@pytest.mark.parametrize("text", ["64X", "G", "-1G", "0", "", "1,5T", True, None])
def test_bad_sizes(text):
    with pytest.raises(ValueError):
        model.parse_size(text)


def test_percentages():
    assert model.parse_percent("10%") == 10.0
    assert model.parse_percent("2.5 %") == 2.5
    for bad in ("100%", "120%", "10", "-1%", 10):
        with pytest.raises(ValueError):
            model.parse_percent(bad)
    assert model.parse_size_or_percent("50G") == ("bytes", float(50 << 30))


def test_clients_are_sorted_normalised_and_placed():
    groups, hostvars = _inventory()
    clients = model.clients(groups, hostvars)
    assert [c["name"] for c in clients] == ["pc-01", "pc-02"]
    first = clients[0]
    assert first["mac"] == "52:54:00:00:00:01"
    assert first["server"] == "boot1"
    assert first["boot"] == "auto"
    assert first["keep_writeback"] is False
    assert first["game_disk"] is None
    assert first["image_version"] == "v3"
    assert first["target_iqn"] == "iqn.2025-01.lan.ggnet:target.pc-01"
    assert first["initiator_iqn"] == "iqn.2025-01.lan.ggnet:initiator.pc-01"
    assert first["chap"] is True
    assert clients[1]["groups"] == ["vip"]


def test_the_client_model_holds_no_secret():
    groups, hostvars = _inventory()
    text = repr(model.clients(groups, hostvars))
    assert "s3cret" not in text
    creds = model.chap_credentials("pc-01", hostvars["pc-01"])
    # pc-01's own secret, derived from the server secret; never the server secret itself.
    secret = chap.pc_secret("s3cret-s3cret", "pc-01")
    assert creds == {"user": "iqn.2025-01.lan.ggnet:initiator.pc-01", "secret": secret}


def test_placement_needs_ggnet_server_with_several_servers():
    groups, hostvars = _inventory(servers=("boot1", "boot2"))
    with pytest.raises(model.ModelError, match="ggnet_server is required"):
        model.clients(groups, hostvars)
    groups, hostvars = _inventory(servers=("boot1", "boot2"), ggnet_server="boot2")
    assert {c["server"] for c in model.clients(groups, hostvars)} == {"boot2"}
    assert model.clients(groups, hostvars, server="boot1") == []


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("90m", 5400), ("12h", 43200), ("7d", 604800), ("2w", 1209600), ("45", 45), (30, 30)],
)
def test_parse_duration(text, seconds):
    assert model.parse_duration(text) == seconds


@pytest.mark.parametrize("bad", ["1.5h", "7 days", "", "-1d", True, None, -5, "d"])
def test_parse_duration_refuses(bad):
    with pytest.raises(ValueError, match="is not a duration"):
        model.parse_duration(bad)


def test_model_and_storage_import_without_netaddr():
    """A target without python3-netaddr still runs the storage modules (parse_size)."""
    code = (
        "import sys\n"
        "class Block:\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        "        if name == 'netaddr':\n"
        "            raise ImportError('netaddr blocked')\n"
        "sys.meta_path.insert(0, Block())\n"
        "from ggnet import model, storage\n"
        "assert model.parse_size('64G') == 64 << 30\n"
        "assert 'netaddr' not in sys.modules\n"
        "print('ok')\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.returncode == 0 and proc.stdout.strip() == "ok", proc.stderr
