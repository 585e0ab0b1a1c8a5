"""The console: a machine's VNC endpoint, websockify's token file, and noVNC's URL.

One implementation for the three users: the ggnet_console role renders the token file
with token_file() (through its filter plugin), the inventory validation checks
ggnet_console_vnc with check_vnc_endpoint(), and the API links a machine to its screen
with console_url().  Every function raises ValueError with a message fit to show an
operator; callers add where the value came from.

websockify's TokenFile plugin (0.10, Debian bookworm) reads lines `TOKEN: TARGET` where
the line is split at a colon followed by white space and TARGET at its last colon:
`HOST:PORT` connects over TCP, `unix_socket:PATH` to a unix socket.  It re-reads the
file for every new connection, so a changed file needs no restart.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from urllib.parse import quote

from .net import parse_ipv6

DEFAULT_PORT = 6080
# What websockify's TokenFile plugin writes before a unix socket's path.
UNIX_PREFIX = "unix_socket:"

# Inventory names that survive websockify's `TOKEN: TARGET` split and noVNC's query
# string unchanged (Ansible host names are far more liberal than this).
_TOKEN_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$")
_HOSTNAME_RE = re.compile(
    r"^(?=.{1,253}$)[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
    r"(\.[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*$"
)
# A unix socket path fits sockaddr_un.sun_path (108 bytes with the terminating NUL).
_UNIX_PATH_MAX = 107


def check_token(name: object) -> str:
    """The machine name as a token, or ValueError."""
    if not isinstance(name, str) or not _TOKEN_RE.match(name):
        raise ValueError(
            "is not usable as a console token: letters, digits, '.', '_' and '-' "
            "(starting with a letter or digit, at most 63 characters)"
        )
    return name


def vnc_target(endpoint: object) -> str:
    """websockify's target for a ggnet_console_vnc value.

    Accepted: `HOST:PORT` (a name, an IPv4 address or `[IPv6]:PORT`; PORT is a TCP
    port, not a VNC display number: display :1 is port 5901), and a unix socket as
    `unix:/PATH` or `/PATH`.
    """
    if not isinstance(endpoint, str) or not endpoint.strip():
        raise ValueError("must be HOST:PORT or a unix socket path (unix:/PATH)")
    value = endpoint.strip()
    if value.startswith(("unix:", "/")):
        path = value.removeprefix("unix:")
        if not path.startswith("/"):
            raise ValueError("a unix socket must be an absolute path (unix:/PATH)")
        if len(path.encode()) > _UNIX_PATH_MAX:
            raise ValueError(f"a unix socket path is at most {_UNIX_PATH_MAX} bytes")
        if any(c.isspace() or ord(c) < 32 for c in path):
            raise ValueError("a unix socket path cannot contain white space")
        return UNIX_PREFIX + path
    host, sep, port = value.rpartition(":")
    if not sep or not host:
        raise ValueError("must be HOST:PORT (e.g. 10.213.0.101:5900) or unix:/PATH")
    if not port.isdigit() or not 1 <= int(port) <= 65535:
        raise ValueError(f"port {port!r} is not a TCP port (1-65535)")
    if host.startswith("[") and host.endswith("]"):
        try:
            # websockify splits at the last colon and hands the rest to getaddrinfo.
            host = str(parse_ipv6(host[1:-1]))
        except ValueError:
            raise ValueError(f"{host} is not an IPv6 address") from None
    elif ":" in host:
        raise ValueError("an IPv6 address needs brackets: [ADDRESS]:PORT")
    elif not _HOSTNAME_RE.match(host):
        raise ValueError(f"{host!r} is not a host name or an IPv4 address")
    return f"{host}:{int(port)}"


def check_vnc_endpoint(endpoint: object) -> str | None:
    """None when ggnet_console_vnc is valid, else what is wrong with it."""
    try:
        vnc_target(endpoint)
    except ValueError as exc:
        return str(exc)
    return None


def token_lines(endpoints: Mapping[str, object]) -> list[str]:
    """One `NAME: TARGET` line per machine that has a VNC endpoint, sorted by name."""
    lines = []
    for name in sorted(endpoints):
        endpoint = endpoints[name]
        if endpoint is None or endpoint == "":
            continue
        try:
            lines.append(f"{check_token(name)}: {vnc_target(endpoint)}")
        except ValueError as exc:
            raise ValueError(f"{name}: ggnet_console_vnc {endpoint!r} {exc}") from None
    return lines


def token_file(endpoints: Mapping[str, object], header: Iterable[str] = ()) -> str:
    """The whole token file: comment lines from `header`, then token_lines()."""
    out = [f"# {line}".rstrip() for line in header]
    out.extend(token_lines(endpoints))
    return "\n".join(out) + "\n"


def console_url(server: str, port: int | str, name: str, scheme: str = "http") -> str:
    """noVNC's page showing machine `name`'s screen through the console on `server`.

    noVNC 1.3 (Debian bookworm) reads `path` from the query string and connects to
    ws://SERVER:PORT/PATH; the token rides in that path, so it is encoded once more.
    """
    if scheme not in ("http", "https"):
        raise ValueError(f"scheme {scheme!r} is not http or https")
    if not 1 <= int(port) <= 65535:
        raise ValueError(f"port {port!r} is not a TCP port (1-65535)")
    host = server
    if ":" in host and not host.startswith("["):
        host = f"[{host}]"
    path = quote(f"websockify?token={check_token(name)}", safe="")
    query = f"autoconnect=1&resize=scale&path={path}"
    if scheme == "https":
        query += "&encrypt=1"
    return f"{scheme}://{host}:{int(port)}/vnc.html?{query}"
