"""The iPXE scripts a PC gets from the boot endpoint, and the URLs they call back.

These are pure functions: the API's GET /boot/<mac> chooses boot_script() for a known
client or discovery_script() for an unknown MAC and answers the text as-is
(Content-Type text/plain).  No other place renders iPXE; the netboot role only sends
iPXE to /boot/${mac}.

Callbacks the scripts make (all plain HTTP GETs; the API answers 200 with any body):

  {api}/boot/<mac>/stage?name=<stage>[&token=<t>][&error=<errno>]   see STAGES
  {api}/boot/<mac>/discover?manufacturer=..&product=..&serial=..&uuid=..
                            &platform=..&buildarch=..   an unknown PC reports itself

iPXE cannot POST without its optional `params` command, which Debian's build may lack,
so the discovery report travels in the query string.  What arrives is not plain
percent-encoding: iPXE (Debian's 1.0.0+git-20190125) expands ${var:uristring}, then
parses the whole URL, which *decodes* every field, and re-encodes the query for the
HTTP request escaping only whitespace, non-printables, '%', '#', ':', '@' and '?'.
So '+', '&' and '=' inside a value reach the server literally, and a value holding a
NUL byte cuts the rest of the URL off (${uuid:uristring} of an unset SMBIOS UUID is
16 zero bytes: the report used to end at `uuid=`).  Hence: the UUID goes as ${uuid}
(always hex and hyphens), and the server parses the query with
parse_discover_query(), never with a form decoder ('+' is not a space here) nor a
plain split on '&'.  A callback that fails never stops a boot: reporting is best
effort, booting is the job.

A stage callback carries the per-boot token the API put into that boot's script (see
ggnet_api/blueprints/boot.py): the API takes a stage only with the token of the PC's
latest boot.  Tokens are URL-safe (secrets.token_urlsafe), so they need no escaping.

The known-client script carries that one client's CHAP secret because iPXE must answer
the target's challenge; it is never logged here, and callers must not log the text.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any
from urllib.parse import quote, unquote

from . import chap
from .net import is_valid_mac, normalize_mac

# Stage names the scripts report, in boot order.  `failed` carries error=<iPXE errno>
# (hex, e.g. 0x3c0c6039: look it up at https://ipxe.org/err/<errno>).
STAGES = ("script-loaded", "game-disk-hooked", "game-disk-failed", "sanboot", "failed")
# The BIOS drive numbers iPXE gives the disks: the system disk is the first hard
# disk (what the firmware boots), the game disk the second.
SYSTEM_DRIVE = 0x80
GAME_DRIVE = 0x81
# How long a failed PC waits before it asks the API for a fresh script.  Long enough
# that a room of failing PCs does not hammer a struggling server, short enough that
# PCs come back on their own once it is fixed.
RETRY_SECONDS = 10
DISCOVERY_POLL_SECONDS = 30
DISCOVERY_FIELDS = ("manufacturer", "product", "serial", "uuid", "platform", "buildarch")
# How each field is expanded: free text is URI-encoded by iPXE; the UUID setting has its
# own type that prints hex and hyphens (as uristring it is raw bytes, see above).
_DISCOVERY_EXPANSION = {"uuid": "${uuid}"}


class IpxeError(ValueError):
    """A script cannot be rendered; the message says which client and what to fix."""


def _api(api_base_url: str) -> str:
    if not isinstance(api_base_url, str) or not api_base_url.startswith(("http://", "https://")):
        raise IpxeError(
            f"api_base_url {api_base_url!r} is not an http:// URL; pass the URL the PCs "
            "reach the API at, e.g. http://10.213.0.10:8080"
        )
    return api_base_url.rstrip("/")


def _mac(client: Mapping[str, Any]) -> str:
    mac = client.get("mac")
    # The model hands over the normalised form; any other is a caller's slip.
    if not is_valid_mac(mac) or normalize_mac(mac) != mac:
        raise IpxeError(f"{client.get('name', '?')}: mac {mac!r} is not a normalised MAC address")
    return mac


def stage_url(
    api_base_url: str,
    mac: str,
    name: str,
    error: str | None = None,
    token: str | None = None,
) -> str:
    """The callback URL of one boot stage; `error` may hold iPXE settings like ${errno};
    `token` is the boot's own token (URL-safe characters only)."""
    if name not in STAGES:
        raise IpxeError(f"stage {name!r} is not one of {', '.join(STAGES)}")
    url = f"{_api(api_base_url)}/boot/{mac}/stage?name={name}"
    if token is not None:
        if not token or not all(c.isascii() and (c.isalnum() or c in "-_") for c in token):
            raise IpxeError("a boot token must be URL-safe (secrets.token_urlsafe)")
        url += f"&token={token}"
    if error is not None:
        url += f"&error={error}"
    return url


def discover_url(api_base_url: str, mac: str = "${mac}") -> str:
    """The discovery report URL, with iPXE settings that iPXE fills in and encodes."""
    query = "&".join(
        f"{f}={_DISCOVERY_EXPANSION.get(f, f'${{{f}:uristring}}')}" for f in DISCOVERY_FIELDS
    )
    return f"{_api(api_base_url)}/boot/{mac}/discover?{query}"


def parse_discover_query(query: str | bytes) -> dict[str, str]:
    """The fields of a discovery report, from the raw query string iPXE sent.

    Splits only at `&<field>=` of the fields in DISCOVERY_FIELDS order, so a value may
    hold '&', '=' or '+' (iPXE sends them unescaped, see the module doc); then
    percent-decodes each value ('+' stays '+').  Fields that are absent are left out,
    empty ones are ''.  A query of other keys or another order gives {} for the keys
    it cannot place rather than guesses.
    """
    if isinstance(query, bytes):
        query = query.decode("latin-1")
    query = query.lstrip("?")
    marks: list[tuple[str, int]] = []  # (field, where its "field=" starts), in order
    pos = 0
    for f in DISCOVERY_FIELDS:
        if not marks and query.startswith(f"{f}="):
            at = 0
        else:
            i = query.find(f"&{f}=", pos)
            if i < 0:
                continue
            at = i + 1
        marks.append((f, at))
        pos = at + len(f) + 1
    found: dict[str, str] = {}
    for i, (f, at) in enumerate(marks):
        end = marks[i + 1][1] - 1 if i + 1 < len(marks) else len(query)
        found[f] = unquote(query[at + len(f) + 1 : end], encoding="utf-8", errors="replace")
    return found


def boot_url(api_base_url: str, mac: str = "${mac}") -> str:
    """Where iPXE fetches a PC's script: the DHCP server hands this out too."""
    return f"{_api(api_base_url)}/boot/{mac}"


def _notify(url: str) -> str:
    # A named image so freeing it never touches the running script; the trailing ||
    # makes a failed report harmless.
    return f"imgfetch --name ggnet-cb {url} && imgfree ggnet-cb ||"


def check_set_value(value: object, what: str, where: str) -> str:
    """`value` as an iPXE `set` may carry it literally (IpxeError naming `where` and
    `what`, never the value: it may be a secret)."""
    if not isinstance(value, str) or not value:
        raise IpxeError(f"{where}: {what} is empty")
    # One rule with validation and the targets (ggnet.chap): what passes there is
    # carried here literally.  Never show the value itself: it may be a secret.
    wrong = chap.chars_problem(value)
    if wrong:
        raise IpxeError(f"{where}: {what} {wrong}")
    return value


def _uri_ok(uri: str, where: str, what: str) -> str:
    if not isinstance(uri, str) or not uri.startswith("iscsi:") or any(c.isspace() for c in uri):
        raise IpxeError(
            f"{where}: {what} {uri!r} is not an iscsi: SAN URI (see ggnet.iscsi.san_uri)"
        )
    return uri


def boot_script(
    client: Mapping[str, Any],
    san_uris: Sequence[str],
    api_base_url: str,
    chap: Mapping[str, str] | None = None,
    token: str | None = None,
) -> str:
    """The script of a known client: hook its game disk, sanboot its system disk.

    san_uris: the system disk's URI, then the game disk's if the client has one, as
    ggnet.iscsi.san_uri() builds them for the client's target.  chap: {user, secret}
    and, with mutual CHAP, {mutual_user, mutual_secret} (model.chap_credentials), or
    None when CHAP is off.  token: the boot's token, which every stage callback carries.
    """
    name = str(client.get("name") or "?")
    mac = _mac(client)
    api = _api(api_base_url)
    if not san_uris or len(san_uris) > 2:
        raise IpxeError(
            f"{name}: expected 1 or 2 SAN URIs (system disk, then game disk), got {len(san_uris or [])}"
        )
    system = _uri_ok(san_uris[0], name, "system disk URI")
    game = _uri_ok(san_uris[1], name, "game disk URI") if len(san_uris) == 2 else None
    initiator = check_set_value(client.get("initiator_iqn"), "initiator_iqn", name)

    lines = [
        "#!ipxe",
        f"# ggnet: {name} ({mac})",
        f"set ggnet-name {name}",
        f"set initiator-iqn {initiator}",
    ]
    if chap:
        lines += [
            f"set username {check_set_value(chap.get('user'), 'CHAP user', name)}",
            f"set password {check_set_value(chap.get('secret'), 'CHAP secret', name)}",
        ]
    if chap and chap.get("mutual_user"):
        # Mutual CHAP: iPXE checks the target's answer against these.
        lines += [
            f"set reverse-username {check_set_value(chap.get('mutual_user'), 'mutual CHAP user', name)}",
            f"set reverse-password {check_set_value(chap.get('mutual_secret'), 'mutual CHAP secret', name)}",
        ]
    else:
        # A previous script (a retry chain) may have left credentials behind.
        if not chap:
            lines += ["clear username ||", "clear password ||"]
        lines += ["clear reverse-username ||", "clear reverse-password ||"]
    lines += [
        _notify(stage_url(api, mac, "script-loaded", token=token)),
        # A retry (chain --replace below) finds the drives of the last try still hooked.
        f"sanunhook --drive 0x{GAME_DRIVE:02x} ||",
        f"sanunhook --drive 0x{SYSTEM_DRIVE:02x} ||",
        # The system disk is the first hard disk (what the firmware boots).
        f"sanhook --drive 0x{SYSTEM_DRIVE:02x} {system} || goto failed",
    ]
    if game:
        lines += [
            # Always an explicit drive: without --drive, sanhook takes the default
            # drive 0x80 (or ${san-drive}), which the system disk holds, and iPXE
            # refuses it before any iSCSI login: EADDRINUSE from core/sanboot.c,
            # errno 0x03232019.  The same target serves both LUNs (two sessions).
            f"sanhook --drive 0x{GAME_DRIVE:02x} {game} || goto game_failed",
            _notify(stage_url(api, mac, "game-disk-hooked", token=token)),
            "goto system",
            ":game_failed",
            # Booting without games beats not booting: warn on screen and in the API.
            "echo ggnet: WARNING: the game disk of ${ggnet-name} could not be attached (error ${errno}); starting without it",
            _notify(stage_url(api, mac, "game-disk-failed", "${errno}", token)),
            ":system",
        ]
    lines += [
        _notify(stage_url(api, mac, "sanboot", token=token)),
        f"sanboot --drive 0x{SYSTEM_DRIVE:02x} || goto failed",
        # sanboot returns only when the disk could not be booted.
        ":failed",
        "set ggnet-errno ${errno}",
        "echo",
        "echo ggnet: ${ggnet-name} could not start from its disk on the boot server (error ${ggnet-errno}).",
        "echo ggnet: Check that the boot server is up and that this PC's target exists;",
        "echo ggnet: details: https://ipxe.org/err/${ggnet-errno}",
        _notify(stage_url(api, mac, "failed", "${ggnet-errno}", token)),
        f"prompt --timeout {RETRY_SECONDS * 1000} ggnet: retrying in {RETRY_SECONDS} s; press any key for the iPXE shell && shell ||",
        # A fresh script, not the same sanboot again: the API may have fixed the cause.
        f"chain --replace --autofree {boot_url(api, mac)} || goto failed",
        "",
    ]
    return "\n".join(lines)


def discovery_script(api_base_url: str) -> str:
    """The script of an unknown MAC: report what the firmware knows, then wait to be approved."""
    api = _api(api_base_url)
    return "\n".join(
        [
            "#!ipxe",
            "# ggnet: discovery of an unknown PC",
            ":report",
            f"imgfetch --name ggnet-cb {discover_url(api)} && imgfree ggnet-cb || goto unreported",
            "echo ggnet: this PC (${mac}) is not registered yet; it has been reported to the boot server.",
            "echo ggnet: approve it in ggnet, and it boots by itself within "
            f"{DISCOVERY_POLL_SECONDS} s.",
            "goto wait",
            ":unreported",
            "echo ggnet: this PC (${mac}) is not registered and the boot server did not take its report (error ${errno}).",
            ":wait",
            f"sleep {DISCOVERY_POLL_SECONDS}",
            # Asking /boot again both retries the report and picks up an approval.
            f"chain --replace --autofree {boot_url(api)} || goto wait",
            "",
        ]
    )


def error_script(
    message: str, api_base_url: str, mac: str, token: str | None = None, report: bool = True
) -> str:
    """A script that shows why the API refuses to boot a PC (e.g. the pool is full).

    The API uses it when it knows the boot would fail; the PC asks again later.  With
    report off the script calls no stage back (an answer that recorded no boot).
    """
    api = _api(api_base_url)
    text = " ".join(str(message).split()) or "the boot server refused to boot this PC"
    # A message is operator text, not iPXE syntax: keep ${ and # from being interpreted.
    text = text.replace("$", "S").replace("#", "No.")
    callback = [_notify(stage_url(api, mac, "failed", quote("refused", safe=""), token))]
    return "\n".join(
        [
            "#!ipxe",
            f"echo ggnet: {text}",
            *(callback if report else []),
            f"prompt --timeout {RETRY_SECONDS * 1000} ggnet: retrying in {RETRY_SECONDS} s; press any key for the iPXE shell && shell ||",
            f"chain --replace --autofree {boot_url(api, mac)}",
            "",
        ]
    )
