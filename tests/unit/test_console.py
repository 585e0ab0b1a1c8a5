"""The console's pure parts: VNC endpoints, the token file, noVNC's URL, and the
ggnet_console role's defaults against its argument specs."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from urllib.parse import parse_qs, unquote, urlsplit

import pytest
import yaml
from ggnet import console

pytestmark = pytest.mark.unit
ROLE = Path(__file__).resolve().parents[2] / "roles" / "ggnet_console"


@pytest.mark.parametrize(
    ("endpoint", "target"),
    [
        ("127.0.0.1:5901", "127.0.0.1:5901"),
        (" 10.213.0.101:5900 ", "10.213.0.101:5900"),
        ("pc-01.lan:05900", "pc-01.lan:5900"),
        ("[fd00:213::101]:5900", "fd00:213::101:5900"),
        (
            "unix:/var/lib/ggnet-lab/pcs/pc-bios/vnc.sock",
            "unix_socket:/var/lib/ggnet-lab/pcs/pc-bios/vnc.sock",
        ),
        ("/run/pc.sock", "unix_socket:/run/pc.sock"),
    ],
)
def test_vnc_targets_in_websockifys_form(endpoint, target):
    assert console.vnc_target(endpoint) == target
    assert console.check_vnc_endpoint(endpoint) is None


@pytest.mark.parametrize(
    ("endpoint", "fragment"),
    [
        (None, "HOST:PORT"),
        ("", "HOST:PORT"),
        (5901, "HOST:PORT"),
        ("127.0.0.1", "HOST:PORT"),
        (":5900", "HOST:PORT"),
        ("127.0.0.1:0", "not a TCP port"),
        ("127.0.0.1:65536", "not a TCP port"),
        ("127.0.0.1:vnc", "not a TCP port"),
        ("fd00::1:5900", "needs brackets"),
        ("[nonsense]:5900", "not an IPv6 address"),
        ("bad host:5900", "not a host name"),
        ("unix:relative.sock", "absolute path"),
        ("unix:/tmp/a b.sock", "white space"),
        ("unix:/" + "x" * 120, "at most 107 bytes"),
    ],
)
def test_bad_vnc_endpoints_say_what_is_wrong(endpoint, fragment):
    with pytest.raises(ValueError, match=fragment):
        console.vnc_target(endpoint)
    assert fragment in console.check_vnc_endpoint(endpoint)


def test_token_file_one_sorted_line_per_machine_with_an_endpoint():
    text = console.token_file(
        {"pc-02": "unix:/run/pc-02.sock", "pc-01": "127.0.0.1:5901", "pc-03": None, "pc-04": ""},
        header=["managed", "second line"],
    )
    assert text == (
        "# managed\n# second line\npc-01: 127.0.0.1:5901\npc-02: unix_socket:/run/pc-02.sock\n"
    )


def test_token_file_lines_split_the_way_websockify_splits_them():
    # websockify 0.10: re.split(':\\s', line), then target.rsplit(':', 1).
    import re

    for line in console.token_lines({"pc-01": "[fd00::5]:5900", "pc-02": "unix:/run/x.sock"}):
        token, target = re.split(r":\s", line)
        assert token in ("pc-01", "pc-02")
        host, port = target.strip().rsplit(":", 1)
        assert (host, port) in (("fd00::5", "5900"), ("unix_socket", "/run/x.sock"))


@pytest.mark.parametrize("name", ["pc 01", "pc:01", "-pc", "", "p" * 64, "pc/01", "pc?x"])
def test_names_that_cannot_be_tokens_are_refused(name):
    with pytest.raises(ValueError, match="console token"):
        console.token_lines({name: "127.0.0.1:5901"})


def test_a_bad_endpoint_names_its_machine():
    with pytest.raises(ValueError, match=r"pc-07: ggnet_console_vnc '127.0.0.1' "):
        console.token_file({"pc-07": "127.0.0.1"})


def test_console_url_carries_the_token_in_novncs_path():
    url = console.console_url("boot1.lan", 6080, "pc-01")
    parts = urlsplit(url)
    assert (parts.scheme, parts.netloc, parts.path) == ("http", "boot1.lan:6080", "/vnc.html")
    query = parse_qs(parts.query)
    assert query["autoconnect"] == ["1"]
    # noVNC 1.3 reads each query variable with decodeURIComponent.
    raw_path = dict(p.split("=", 1) for p in parts.query.split("&"))["path"]
    assert "&" not in raw_path and "=" not in raw_path
    assert unquote(raw_path) == "websockify?token=pc-01"


def test_console_url_ipv6_and_https():
    url = console.console_url("fd00:213::10", "6443", "pc-01", scheme="https")
    assert url.startswith("https://[fd00:213::10]:6443/vnc.html?")
    assert "encrypt=1" in url


@pytest.mark.parametrize(
    ("args", "fragment"),
    [
        (("boot1", 6080, "pc 01"), "console token"),
        (("boot1", 0, "pc-01"), "not a TCP port"),
        (("boot1", 6080, "pc-01", "ftp"), "scheme"),
    ],
)
def test_console_url_refuses(args, fragment):
    with pytest.raises(ValueError, match=fragment):
        console.console_url(*args)


def test_role_argument_specs_match_defaults():
    defaults = yaml.safe_load((ROLE / "defaults" / "main.yml").read_text())
    specs = yaml.safe_load((ROLE / "meta" / "argument_specs.yml").read_text())
    options = specs["argument_specs"]["main"]["options"]
    assert set(options) == set(defaults)
    for name, spec in options.items():
        assert spec["default"] == defaults[name], name
        assert name.startswith("ggnet_console_")
    assert defaults["ggnet_console_port"] == console.DEFAULT_PORT


def test_role_vars_are_prefixed_and_not_knobs():
    internals = yaml.safe_load((ROLE / "vars" / "main.yml").read_text())
    defaults = yaml.safe_load((ROLE / "defaults" / "main.yml").read_text())
    assert all(k.startswith("_ggnet_console_") for k in internals)
    assert not set(internals) & set(defaults)


def _filter_module():
    spec = importlib.util.spec_from_file_location(
        "ggnet_console_filter", ROLE / "filter_plugins" / "ggnet_console.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_filter_renders_from_hostvars_and_names_a_bad_value():
    pytest.importorskip("ansible")
    from ansible.errors import AnsibleFilterError

    filt = _filter_module().FilterModule().filters()["ggnet_console_token_file"]
    hostvars = {
        "pc-01": {"ggnet_console_vnc": "127.0.0.1:5901", "ggnet_mac": "x"},
        "pc-02": {"ggnet_mac": "y"},
        "boot1": {"ggnet_console_vnc": "127.0.0.1:5999"},
    }
    assert filt(["pc-01", "pc-02"], hostvars) == "pc-01: 127.0.0.1:5901\n"
    with pytest.raises(AnsibleFilterError, match="pc-02: ggnet_console_vnc 'nope'"):
        filt(["pc-02"], {"pc-02": {"ggnet_console_vnc": "nope"}})
