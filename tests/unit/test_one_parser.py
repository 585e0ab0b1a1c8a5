"""One parser for each notation (issue 15): a MAC, an IQN, an address, a size, a
duration or a time stamp is read by the engine's one function, never by a second regex
or unit table.

The scan is plain on purpose: each shape is a regex over the source text, and a hit
outside the notation's home fails unless ALLOWED names the file, the shape and why.
Parsers of a tool's OUTPUT (tcpdump, tgtadm, zfs) are not notations of ours: they are
named here when a shape catches them.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml
from ggnet.net import normalize_mac

from ggnet_api import config

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parents[2]
SCANNED = (
    "ggnet_api",
    "ggnet_cli",
    "ggnet_lab",
    "modules",
    "filter_plugins",
    "action_plugins",
    "module_utils",
    "tests/support",
    "bench",
    "bootprog",
    "pc",
    "roles",
    "playbooks",
)
SUFFIXES = (".py", ".j2", ".yml", ".yaml")

NET = "module_utils/ggnet/net.py"
MODEL = "module_utils/ggnet/notation.py"

# shape: (what gives a second parser away, the notation's one home)
SHAPES: dict[str, tuple[re.Pattern[str], str]] = {
    # Hex digit classes counted out as a MAC's octets, groups or whole: [0-9a-f]{2}.
    "mac regex": (re.compile(r"\[0-9a-f[^\]]*\]\{(?:2|4|12|17)\}", re.I), NET),
    # Octets split off a MAC text and read as hex: int(b, 16).
    "hex octets": (re.compile(r"\bint\(\w+,\s*16\)"), NET),
    # A regex that spells out an IQN: iqn\. (an escaped dot).
    "iqn regex": (re.compile(r"iqn\\\."), NET),
    # Address parsing libraries and filters.
    "address parser": (
        re.compile(r"^\s*(?:import|from) (?:ipaddress|netaddr)\b|\bipaddr\(", re.M),
        NET,
    ),
    # A unit table or unit class for sizes: {"K": 1 << 10, ...}, [KMGT], human_to_bytes.
    "size units": (re.compile(r"[\"']K[\"']\s*:|\[KMGT|human_to_bytes"), MODEL),
    # The same for durations: [smhdw], {"h": 3600, ...}.
    "duration units": (re.compile(r"\[smhdw|[\"']h[\"']\s*:\s*3600"), MODEL),
    # A time stamp read or written by hand: fromisoformat, strptime, a %Y-%m-%dT format.
    "time stamp": (re.compile(r"fromisoformat|strptime|%Y-%m-%dT"), MODEL),
}

ALLOWED: dict[tuple[str, str], str] = {
    ("tests/support/netboot_env.py", "mac regex"): (
        "reads tcpdump's text (Client-Ethernet-Address), a tool's output"
    ),
    ("pc/report_os.py", "mac regex"): (
        "runs on the PC, where the engine is not installed, over psutil's addresses"
    ),
    ("ggnet_api/openapi.yml", "mac regex"): (
        "the API's published contract for schemathesis: the colon form, a subset of what "
        "normalize_mac accepts (test below)"
    ),
    ("ggnet_api/tracing_otel.py", "time stamp"): (
        "reads ansible-runner's event stamps (`created`, any zone), a tool's output"
    ),
    ("bench/__main__.py", "time stamp"): (
        "a bench run's start in its results file, to the second: not a stamp ggnet reads"
    ),
    ("ggnet_api/openapi.yml", "duration units"): (
        "the published idle pattern: the one config.py builds from the engine's units (test below)"
    ),
}


def _sources():
    for top in SCANNED:
        for path in sorted((ROOT / top).rglob("*")):
            if path.suffix in SUFFIXES and path.is_file() and "__pycache__" not in path.parts:
                yield path.relative_to(ROOT).as_posix(), path.read_text(encoding="utf-8")


def _hits():
    found = set()
    for rel, text in _sources():
        for shape, (pattern, home) in SHAPES.items():
            if rel != home and pattern.search(text):
                found.add((rel, shape))
    return found


def test_every_notation_is_parsed_in_its_one_home():
    strays = sorted(_hits() - ALLOWED.keys())
    assert not strays, (
        "a second parser of a notation of ours; use the engine's "
        "(ggnet.net for MACs, IQNs and addresses, ggnet.notation (re-exported by ggnet.model) for sizes and durations, "
        "ggnet.notation for time stamps) "
        f"or name the file in ALLOWED with the reason: {strays}"
    )


def test_every_allowance_is_still_needed():
    assert not sorted(ALLOWED.keys() - _hits()), "remove these from ALLOWED"


@pytest.mark.parametrize(
    ("shape", "text"),
    [
        # What issue 15 found: the lab's own MAC regex and size table, the test frames'.
        ("mac regex", 'MAC_RE = re.compile(r"^[0-9a-f]{2}(:[0-9a-f]{2}){5}$")'),
        ("mac regex", r'_MAC = re.compile(r"^([0-9A-F]{2}[:-]){5}[0-9A-F]{2}$")'),
        ("hex octets", 'return bytes(int(b, 16) for b in text.split(":"))'),
        ("iqn regex", r'IQN = re.compile(r"^iqn\.\d{4}-\d{2}\.")'),
        ("address parser", "import ipaddress"),
        ("address parser", "{{ subnet | ansible.utils.ipaddr('network') }}"),
        ("size units", 'units = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30}'),
        ("size units", r're.compile(r"(\d+)([KMGT]?)")'),
        ("size units", "{{ quota | human_to_bytes }}"),
        ("duration units", r'"pattern": r"[0-9]{1,6}[smhdw]?"'),
        ("duration units", 'UNITS = {"m": 60, "h": 3600}'),
        # The two readers of ggnet's stamps there were (the API's rollouts, replication).
        ("time stamp", 'time.strptime(head, "%Y-%m-%dT%H:%M:%S")'),
        ("time stamp", "stamp = datetime.fromisoformat(m.group(1)).replace(tzinfo=UTC)"),
        ("time stamp", 'time.strftime("%Y-%m-%dT%H:%M:%S.000000000Z", time.gmtime(seconds))'),
    ],
)
def test_the_scan_sees_a_second_parser(shape, text):
    pattern, _home = SHAPES[shape]
    assert pattern.search(text)


def _openapi():
    return yaml.safe_load((ROOT / "ggnet_api" / "openapi.yml").read_text(encoding="utf-8"))


def test_the_api_publishes_the_idle_duration_it_accepts():
    jobs = _openapi()["paths"]["/api/jobs"]["post"]["requestBody"]["content"]
    text = yaml.safe_dump(jobs)
    assert f"^{config._DURATION}$" in text


@pytest.mark.parametrize("mac", ["52:54:00:21:30:03", "0a:00:00:00:00:01", "fe:ff:ff:ff:ff:ff"])
def test_macs_the_api_publishes_are_macs_the_engine_takes(mac):
    pattern = _openapi()["components"]["parameters"]["Mac"]["schema"]["pattern"]
    assert re.fullmatch(pattern, mac)
    assert normalize_mac(mac) == mac
