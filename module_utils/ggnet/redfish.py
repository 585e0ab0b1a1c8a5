"""Power through a PC's BMC over Redfish (DMTF DSP0266): on, off, cycle, state.

The inventory names a PC's BMC with the host var `ggnet_bmc` (docs/inventory.md):

    ggnet_bmc:
      url: https://10.213.1.21          # the BMC; /redfish/v1 is appended
      username: admin
      password_file: /etc/ggnet/bmc/pc-01   # read by ggnet-privd (root), or
      # password: "{{ vault_bmc_pc_01 }}"    # a vaulted variable
      system: /redfish/v1/Systems/1     # optional: the BMC's only system otherwise
      ca_file: /etc/ggnet/bmc-ca.pem    # optional: the CA that signed the BMC's cert
      verify_tls: true                  # default; false only for a BMC on a closed LAN

parse_bmc() checks that mapping (validate/clients.py reports its problems with the host
and key); Bmc speaks Redfish with urllib only (HTTP basic authentication; TLS verified
unless verify_tls is false).  A power-off is verified: the system's PowerState is read
back until it is Off, for at most `timeout` seconds.  No message carries the password.
"""

from __future__ import annotations

import base64
import json
import ssl
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

KEY = "ggnet_bmc"
KEYS = ("url", "username", "password", "password_file", "system", "ca_file", "verify_tls")
ACTIONS = ("on", "off", "cycle")
# What each action asks of the BMC (ComputerSystem.ResetType), and the state it must
# reach.  A cycle is an off then an on, each read back: the PowerCycle reset type is
# optional in Redfish and does not say when the PC was off.
_RESET = {"on": "On", "off": "ForceOff"}
_WANT = {"on": "On", "off": "Off"}
TIMEOUT = 60.0
POLL = 1.0
HTTP_TIMEOUT = 10.0


class BmcError(Exception):
    """A refused or failed power request; the message names the BMC, never a secret."""


@dataclass(frozen=True)
class BmcConfig:
    url: str
    username: str
    password: str | None = field(default=None, repr=False)
    password_file: str | None = None
    system: str | None = None
    ca_file: str | None = None
    verify_tls: bool = True

    def secret(self) -> str:
        """The password, from the inventory or read from password_file now."""
        if self.password is not None:
            return self.password
        assert self.password_file is not None
        try:
            text = Path(self.password_file).read_text(encoding="utf-8")
        except OSError as exc:
            raise BmcError(
                f"{KEY}.password_file: {self.password_file} cannot be read: {exc.strerror or exc}"
            ) from None
        return text.rstrip("\r\n")


def bmc_problems(value: Any) -> list[tuple[str, Any, str]]:
    """[(key, value shown, message)] of a ggnet_bmc value; [] when it is usable."""
    if not isinstance(value, Mapping):
        return [(KEY, value, "must be a mapping of url, username and password or password_file")]
    out: list[tuple[str, Any, str]] = []
    for k in sorted(set(map(str, value)) - set(KEYS)):
        out.append((f"{KEY}.{k}", value[k], f"is not a ggnet_bmc key (known: {', '.join(KEYS)})"))
    url = value.get("url")
    parts = urllib.parse.urlsplit(url) if isinstance(url, str) else None
    if parts is None or parts.scheme not in ("https", "http") or not parts.hostname:
        out.append((f"{KEY}.url", url, "must be the BMC's https:// (or http://) URL"))
    elif parts.username or parts.password:
        out.append((f"{KEY}.url", "(hidden)", "must not carry credentials: use username"))
    elif parts.query or parts.fragment:
        out.append((f"{KEY}.url", url, "must be the BMC's address, without ?query or #fragment"))
    user = value.get("username")
    if not isinstance(user, str) or not user or any(ord(ch) < 32 for ch in user) or ":" in user:
        out.append((f"{KEY}.username", user, "must be a user name of the BMC (no ':')"))
    has_pw, has_file = value.get("password") is not None, value.get("password_file") is not None
    if has_pw == has_file:
        out.append((KEY, "(hidden)", "needs exactly one of password and password_file"))
    if has_pw and (not isinstance(value["password"], str) or not value["password"]):
        out.append((f"{KEY}.password", "(hidden)", "must be a non-empty string"))
    for k in ("password_file", "ca_file"):
        v = value.get(k)
        if v is not None and (not isinstance(v, str) or not v.startswith("/")):
            out.append((f"{KEY}.{k}", v, "must be an absolute path on the boot server"))
    system = value.get("system")
    if system is not None and (
        not isinstance(system, str) or not system.startswith("/redfish/v1/Systems/")
    ):
        out.append((f"{KEY}.system", system, "must be a path /redfish/v1/Systems/<id>"))
    verify = value.get("verify_tls")
    if verify is not None and not isinstance(verify, bool):
        out.append((f"{KEY}.verify_tls", verify, "must be true or false"))
    return out


def parse_bmc(value: Any) -> BmcConfig:
    """A checked ggnet_bmc value; BmcError naming the first problem."""
    problems = bmc_problems(value)
    if problems:
        key, shown, message = problems[0]
        raise BmcError(f"{key}: {str(shown)[:80]!r} {message}")
    return BmcConfig(
        url=str(value["url"]).rstrip("/"),
        username=str(value["username"]),
        password=value.get("password"),
        password_file=value.get("password_file"),
        system=value.get("system"),
        ca_file=value.get("ca_file"),
        verify_tls=value.get("verify_tls", True),
    )


class Bmc:
    """One BMC's Redfish service."""

    def __init__(
        self,
        config: BmcConfig,
        http_timeout: float = HTTP_TIMEOUT,
        sleep: Callable[[float], None] = time.sleep,
    ):
        self.config = config
        self.http_timeout = http_timeout
        self.sleep = sleep
        self._system: str | None = config.system
        self._auth: str | None = None
        self._tls: ssl.SSLContext | None = None
        if config.url.startswith("https:"):
            if config.verify_tls:
                self._tls = ssl.create_default_context(cafile=config.ca_file)
            else:
                self._tls = ssl.create_default_context()
                self._tls.check_hostname = False
                self._tls.verify_mode = ssl.CERT_NONE

    # -- Redfish ----------------------------------------------------------------------

    def system(self) -> str:
        """The path of the ComputerSystem this BMC powers (the only one, unless named)."""
        if self._system is None:
            members = self._request("GET", "/redfish/v1/Systems").get("Members") or []
            paths = [m.get("@odata.id") for m in members if isinstance(m, dict)]
            if len(paths) != 1 or not isinstance(paths[0], str):
                raise BmcError(
                    f"{self.config.url}: has {len(paths)} systems; name the one of this PC "
                    f"with {KEY}.system"
                )
            self._system = paths[0]
        return self._system

    def power_state(self) -> str:
        """The system's PowerState: On, Off, PoweringOn, PoweringOff (or Paused)."""
        state = self._request("GET", self.system()).get("PowerState")
        if not isinstance(state, str):
            raise BmcError(f"{self.config.url}{self.system()}: no PowerState in its answer")
        return state

    def reset(self, reset_type: str) -> None:
        system = self._request("GET", self.system())
        action = (system.get("Actions") or {}).get("#ComputerSystem.Reset") or {}
        target = action.get("target") or f"{self.system()}/Actions/ComputerSystem.Reset"
        allowed = action.get("ResetType@Redfish.AllowableValues")
        if isinstance(allowed, list) and reset_type not in allowed:
            raise BmcError(
                f"{self.config.url}: the system does not offer ResetType {reset_type} "
                f"(it offers {', '.join(map(str, allowed))})"
            )
        self._request("POST", target, {"ResetType": reset_type})

    def wait_for(self, want: str, timeout: float = TIMEOUT, poll: float = POLL) -> str:
        """Read PowerState until it is `want`; BmcError when it is not within timeout."""
        deadline = time.monotonic() + timeout
        while True:
            state = self.power_state()
            if state == want:
                return state
            if time.monotonic() >= deadline:
                raise BmcError(
                    f"{self.config.url}: PowerState is still {state} {timeout:g} s after the "
                    f"request, not {want}"
                )
            self.sleep(poll)

    def power(
        self,
        action: str,
        timeout: float = TIMEOUT,
        poll: float = POLL,
        note: Callable[[str], None] = lambda _line: None,
    ) -> str:
        """Do `action` (on, off, cycle) and read the state back; the state reached."""
        if action not in ACTIONS:
            raise BmcError(f"action: {action!r} is not one of {', '.join(ACTIONS)}")
        steps = ["off", "on"] if action == "cycle" else [action]
        state = self.power_state()
        note(f"PowerState is {state}")
        for step in steps:
            want = _WANT[step]
            if state == want:
                note(f"already {want}: nothing to ask")
                continue
            self.reset(_RESET[step])
            note(f"asked ResetType {_RESET[step]}")
            state = self.wait_for(want, timeout, poll)
            note(f"PowerState read back: {state}")
        return state

    # -- HTTP -------------------------------------------------------------------------

    def _request(self, method: str, path: str, body: dict[str, Any] | None = None) -> Any:
        if not path.startswith("/"):
            raise BmcError(f"{self.config.url}: answered a link that is not a path: {path[:80]!r}")
        url = self.config.url + path
        data = json.dumps(body).encode() if body is not None else None
        req = urllib.request.Request(url, data=data, method=method)
        req.add_header("Accept", "application/json")
        req.add_header("OData-Version", "4.0")
        if data is not None:
            req.add_header("Content-Type", "application/json")
        req.add_header("Authorization", self._authorization())
        try:
            with urllib.request.urlopen(req, timeout=self.http_timeout, context=self._tls) as r:
                raw = r.read(1 << 20)
        except urllib.error.HTTPError as exc:
            why = {401: "the BMC refused the username or password", 403: "not allowed"}.get(
                exc.code, exc.reason
            )
            raise BmcError(f"{method} {url}: HTTP {exc.code}: {why}") from None
        except urllib.error.URLError as exc:
            reason = exc.reason
            if isinstance(reason, ssl.SSLCertVerificationError):
                reason = (
                    f"its TLS certificate is not trusted ({reason.verify_message}): give "
                    f"{KEY}.ca_file"
                )
            raise BmcError(f"{method} {url}: {reason}") from None
        except (OSError, ValueError) as exc:
            raise BmcError(f"{method} {url}: {exc}") from None
        if not raw.strip():
            return {}
        try:
            return json.loads(raw)
        except ValueError:
            raise BmcError(f"{method} {url}: the answer is not JSON") from None

    def _authorization(self) -> str:
        if self._auth is None:
            pair = f"{self.config.username}:{self.config.secret()}".encode()
            self._auth = "Basic " + base64.b64encode(pair).decode()
        return self._auth
