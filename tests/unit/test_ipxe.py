"""The iPXE scripts: what a known PC, an unknown PC and a failing PC are told."""

from __future__ import annotations

import pytest
from ggnet import ipxe, iscsi, net

pytestmark = pytest.mark.unit

API = "http://10.213.0.10:8080"
CLIENT = {
    "name": "pc-01",
    "mac": "52:54:00:21:30:01",
    "initiator_iqn": net.initiator_iqn("pc-01"),
    "target_iqn": net.target_iqn("pc-01"),
}
SYSTEM = iscsi.san_uri("10.213.0.10", CLIENT["target_iqn"], "lio", 0)
GAME = iscsi.san_uri("10.213.0.10", CLIENT["target_iqn"], "lio", 1)
CHAP = {"user": CLIENT["initiator_iqn"], "secret": "s3cret-Secret"}


def test_known_client_hooks_system_then_game_and_boots_drive_0x80():
    text = ipxe.boot_script(CLIENT, [SYSTEM, GAME], API, CHAP)
    lines = text.splitlines()
    assert lines[0] == "#!ipxe"
    assert f"set initiator-iqn {CLIENT['initiator_iqn']}" in lines
    assert f"set username {CHAP['user']}" in lines and f"set password {CHAP['secret']}" in lines
    hook_system = lines.index(f"sanhook --drive 0x80 {SYSTEM} || goto failed")
    # An explicit 0x81: a bare sanhook takes the default drive 0x80, which the system
    # disk holds (EADDRINUSE, iPXE error 0x03232019).
    hook_game = lines.index(f"sanhook --drive 0x81 {GAME} || goto game_failed")
    boot = lines.index("sanboot --drive 0x80 || goto failed")
    assert hook_system < hook_game < boot


def test_stage_callbacks_are_reported_in_boot_order():
    text = ipxe.boot_script(CLIENT, [SYSTEM, GAME], API, CHAP)
    order = [s for s in ipxe.STAGES if f"stage?name={s}" in text]
    assert order == list(ipxe.STAGES)
    positions = [
        text.index(f"stage?name={s}")
        for s in ("script-loaded", "game-disk-hooked", "sanboot", "failed")
    ]
    assert positions == sorted(positions)
    assert f"{API}/boot/{CLIENT['mac']}/stage?name=failed&error=${{ggnet-errno}}" in text


def test_without_game_disk_or_chap():
    text = ipxe.boot_script(CLIENT, [SYSTEM], API)
    assert "game" not in text.replace("ggnet", "")
    assert "set password" not in text and "clear password ||" in text


def test_failure_retries_with_a_fresh_script_after_a_message():
    text = ipxe.boot_script(CLIENT, [SYSTEM], API)
    failed = text[text.index(":failed") :]
    assert "echo ggnet: ${ggnet-name} could not start" in failed
    assert "prompt --timeout 10000" in failed
    assert failed.rstrip().endswith(
        f"chain --replace --autofree {API}/boot/{CLIENT['mac']} || goto failed"
    )


def test_discovery_reports_every_firmware_field_uri_encoded():
    text = ipxe.discovery_script(API + "/")
    for field in ipxe.DISCOVERY_FIELDS:
        if field == "uuid":
            # As uristring an unset UUID is 16 NUL bytes, which cut the URL short.
            assert "uuid=${uuid}&" in text and "${uuid:uristring}" not in text
        else:
            assert f"{field}=${{{field}:uristring}}" in text
    assert f"{API}/boot/${{mac}}/discover?" in text
    assert f"chain --replace --autofree {API}/boot/${{mac}} || goto wait" in text


@pytest.mark.parametrize(
    "secret", ["has space12345", "dollar${x}1234", "quote'1234567", "hash#12345678"]
)
def test_unsafe_secret_is_refused_without_showing_it(secret):
    with pytest.raises(ipxe.IpxeError) as err:
        ipxe.boot_script(CLIENT, [SYSTEM], API, {"user": CHAP["user"], "secret": secret})
    assert "pc-01" in str(err.value) and "CHAP secret" in str(err.value)
    assert secret not in str(err.value)


@pytest.mark.parametrize(
    ("uris", "message"),
    [
        ([], "expected 1 or 2 SAN URIs"),
        (["http://x/disk"], "is not an iscsi: SAN URI"),
        ([SYSTEM, GAME, GAME], "expected 1 or 2"),
    ],
)
def test_bad_san_uris_name_the_client(uris, message):
    with pytest.raises(ipxe.IpxeError, match=message) as err:
        ipxe.boot_script(CLIENT, uris, API)
    assert "pc-01" in str(err.value)


def test_api_url_must_be_http():
    with pytest.raises(ipxe.IpxeError, match="not an http:// URL"):
        ipxe.discovery_script("10.213.0.10:8080")


def test_unknown_stage_is_refused():
    with pytest.raises(ipxe.IpxeError, match="not one of"):
        ipxe.stage_url(API, CLIENT["mac"], "booted")


def test_error_script_cannot_inject_ipxe_syntax():
    text = ipxe.error_script("pool full ${x} # now", API, CLIENT["mac"])
    assert "${x}" not in text and "# now" not in text
    assert "echo ggnet: pool full" in text


def test_discover_query_as_debians_ipxe_sends_it():
    # A raw query seen from Debian's iPXE (BIOS, qemu): '+' and ',' literal.
    raw = (
        "manufacturer=QEMU&product=Standard%20PC%20(i440FX%20+%20PIIX,%201996)&serial="
        "&uuid=00000000-0000-0000-0000-000000000000&platform=pcbios&buildarch=i386"
    )
    assert ipxe.parse_discover_query(raw.encode()) == {
        "manufacturer": "QEMU",
        "product": "Standard PC (i440FX + PIIX, 1996)",
        "serial": "",
        "uuid": "00000000-0000-0000-0000-000000000000",
        "platform": "pcbios",
        "buildarch": "i386",
    }


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        # iPXE re-sends '&', '=' and '%' (decoded from %25, re-encoded) of a value.
        ("manufacturer=AT&T=1&product=a%25b&platform=efi",
         {"manufacturer": "AT&T=1", "product": "a%b", "platform": "efi"}),
        ("?product=x&buildarch=x86_64", {"product": "x", "buildarch": "x86_64"}),
        ("foo=1&bar=2", {}),
        ("", {}),
    ],
)  # fmt: skip
def test_discover_query_splits_only_at_known_fields(query, expected):
    assert ipxe.parse_discover_query(query) == expected
