"""The API's least privilege as the role builds it, and `ggnet token` run as root.

The role's units and settings are rendered here by Ansible's own templating, with the
template module's defaults (trim_blocks), from the role's defaults and vars: the
network-facing ggnet-api runs as its account under systemd hardening at least the
console's, the root ggnet-privd listens where the API's settings say, and the
pre-flight keeps root.  `ggnet token` run as root becomes the database's owner.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path
from typing import Any

import pytest
import yaml

from ggnet_cli import tokens

pytestmark = pytest.mark.unit

REPO = Path(__file__).resolve().parents[2]
ROLE = REPO / "roles" / "ggnet_api"
CONSOLE_UNIT = REPO / "roles" / "ggnet_console" / "templates" / "ggnet-console.service.j2"
# What the console's unit sets that is about the program, not about its sandbox.
NOT_HARDENING = {"Type", "User", "Group", "ExecStartPre", "ExecStart", "Restart"}


def _trusted(value: Any) -> Any:
    """Role files' strings as templates, as Ansible trusts what it reads from a role."""
    from ansible.template import trust_as_template

    if isinstance(value, str):
        return trust_as_template(value)
    if isinstance(value, dict):
        return {k: _trusted(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_trusted(v) for v in value]
    return value


def render(template: Path, **extra: Any) -> str:
    from ansible.parsing.dataloader import DataLoader
    from ansible.template import Templar, trust_as_template

    variables: dict[str, Any] = {}
    for part in ("defaults", "vars"):
        variables.update(_trusted(yaml.safe_load((ROLE / part / "main.yml").read_text())))
    variables.update(
        ansible_managed="Ansible managed",
        inventory_hostname="boot1",
        inventory_dir="/controller/inventory",
        ggnet_source_dir=str(REPO),
        ggnet_network={"server_ip": "10.20.0.1"},
    )
    variables.update(extra)
    templar = Templar(loader=DataLoader(), variables=variables)
    text = templar.template(
        trust_as_template(template.read_text()),
        escape_backslashes=False,
        overrides={"trim_blocks": True, "lstrip_blocks": False},
    )
    assert isinstance(text, str)
    return text


def directives(unit_text: str, section: str | None = None) -> dict[str, list[str]]:
    """Each directive of a unit (or of one SECTION of it) and its values in order."""
    found: dict[str, list[str]] = {}
    current = None
    for line in unit_text.splitlines():
        line = line.strip()
        if line.startswith("["):
            current = line.strip("[]")
        if not line or line.startswith(("#", "[")) or section not in (None, current):
            continue
        key, sep, value = line.partition("=")
        assert sep, f"not a directive: {line!r}"
        found.setdefault(key, []).append(value)
    return found


def one(unit: dict[str, list[str]], key: str) -> str:
    assert len(unit.get(key, [])) == 1, (key, unit.get(key))
    return unit[key][0]


def api_unit(**extra: Any) -> dict[str, list[str]]:
    return directives(render(ROLE / "templates" / "ggnet-api.service.j2", **extra))


def privd_unit(**extra: Any) -> dict[str, list[str]]:
    return directives(render(ROLE / "templates" / "ggnet-privd.service.j2", **extra))


def api_settings(**extra: Any) -> dict[str, Any]:
    return yaml.safe_load(render(ROLE / "templates" / "api.yml.j2", **extra))


def test_the_api_runs_as_its_own_account():
    unit = api_unit()
    assert one(unit, "User") == "ggnet-api"
    assert one(unit, "Group") == "ggnet-api"
    assert one(api_unit(ggnet_api_user="gg-web"), "User") == "gg-web"


def test_the_api_is_hardened_at_least_as_the_console():
    unit = api_unit()
    console = directives(
        render(
            CONSOLE_UNIT,
            ggnet_console_user="ggnet-console",
            ggnet_console_group="ggnet-console",
            _ggnet_console_check_command="/check",
            ggnet_console_token_file="/tokens",
            _ggnet_console_websockify="/ws",
            _ggnet_console_web_root="/web",
            _ggnet_console_listen="0:6080",
        ),
        "Service",
    )
    hardening = {k: v for k, v in console.items() if k not in NOT_HARDENING}
    assert "ProtectSystem" in hardening  # the console's sandbox, as read here
    for key, values in hardening.items():
        assert unit.get(key) == values, key


def test_the_api_has_no_capabilities_and_writes_only_its_state():
    unit = api_unit()
    assert one(unit, "CapabilityBoundingSet") == ""
    assert one(unit, "ProtectSystem") == "strict"
    assert one(unit, "ReadWritePaths") == "/var/lib/ggnet-api"
    assert one(api_unit(ggnet_api_state_dir="/srv/api"), "ReadWritePaths") == "/srv/api"
    assert one(unit, "RestrictAddressFamilies") == "AF_UNIX AF_INET AF_INET6"


@pytest.mark.parametrize("blocks", [False, True])
def test_only_the_preflight_keeps_root(blocks):
    unit = api_unit(ggnet_api_preflight_blocks_start=blocks)
    pre = one(unit, "ExecStartPre")
    prefix, _, command = pre.partition("/")
    assert "+" in prefix
    assert ("-" in prefix) is not blocks
    assert command == "usr/local/bin/ggnet preflight"
    assert not one(unit, "ExecStart").startswith(("+", "-", "!"))
    assert "ExecStartPre" not in api_unit(ggnet_api_preflight_on_start=False)


def test_the_serve_command_ends_its_line():
    # A block tag closing the line once ate its newline: Restart= ran into --config.
    unit = api_unit()
    assert one(unit, "ExecStart").endswith("--config /etc/ggnet/api.yml")
    assert one(unit, "Restart") == "on-failure"
    tls = api_unit(ggnet_api_tls_cert="/etc/ssl/api.pem", ggnet_api_tls_key="/etc/ssl/api.key")
    assert one(tls, "ExecStart").endswith(
        "--config /etc/ggnet/api.yml --certfile %d/tls-cert --keyfile %d/tls-key"
    )
    assert tls["LoadCredential"] == ["tls-cert:/etc/ssl/api.pem", "tls-key:/etc/ssl/api.key"]
    assert one(tls, "Restart") == "on-failure"
    assert "LoadCredential" not in unit


def test_the_api_needs_privd_and_reads_the_root_owned_inventory():
    unit = api_unit()
    assert "ggnet-privd.service" in one(unit, "Requires").split()
    assert "ggnet-privd.service" in one(unit, "After").split()
    env = dict(v.partition("=")[::2] for v in unit["Environment"])
    assert env["GIT_CONFIG_COUNT"] == "1"
    assert env["GIT_CONFIG_KEY_0"] == "safe.directory"
    assert env["GIT_CONFIG_VALUE_0"] == "/var/lib/ggnet/inventory"
    # No home: Ansible's scratch directory goes to the private /tmp.
    assert env["ANSIBLE_LOCAL_TEMP"].startswith("/tmp/")
    assert one(unit, "PrivateTmp") == "yes"


def test_privd_runs_as_root_with_its_socket_where_the_api_looks():
    unit = privd_unit()
    settings = api_settings()
    assert "User" not in unit and "Group" not in unit
    runtime = one(unit, "RuntimeDirectory")
    assert settings["privd_socket"] == f"/run/{runtime}/privd.sock"
    # A group on the directory would not last (systemd resets it before each Exec
    # line, as the lab showed); the socket's own group is the gate.
    assert one(unit, "RuntimeDirectoryMode") == "0755"
    assert "ExecStartPre" not in unit
    assert settings["privd_api_user"] == one(api_unit(), "User")
    assert one(unit, "ExecStart") == "/usr/local/bin/ggnet privd --config /etc/ggnet/api.yml"
    assert api_settings(ggnet_api_user="gg-web")["privd_api_user"] == "gg-web"


def test_privd_is_fenced_only_where_its_jobs_never_go():
    unit = privd_unit()
    assert one(unit, "NoNewPrivileges") == "yes"
    assert one(unit, "UMask") == "0022"  # approvals' git objects readable by the group
    # A converge job writes /usr, /etc, /opt and /root, runs zfs on /dev, LIO's configfs
    # under /sys, loads modules and installs packages: none of these may be set. Nor
    # may anything that gives privd its own mount namespace: its jobs (un)mount ZFS
    # datasets, which must happen in the host's (an apply failed in the lab that way).
    for key in (
        "PrivateTmp",
        "ProtectControlGroups",
        "ProtectKernelLogs",
        "ProtectClock",
        "ProtectHostname",
        "PrivateMounts",
        "ReadOnlyPaths",
        "InaccessiblePaths",
        "TemporaryFileSystem",
        "ProtectSystem",
        "ProtectHome",
        "PrivateDevices",
        "ProtectKernelTunables",
        "ProtectKernelModules",
        "CapabilityBoundingSet",
        "RestrictAddressFamilies",
        "RestrictSUIDSGID",
        "ReadWritePaths",
    ):
        assert key not in unit, key


def test_privd_restarts_before_the_api():
    handlers = yaml.safe_load((ROLE / "handlers" / "main.yml").read_text())
    names = [h["ansible.builtin.systemd_service"]["name"] for h in handlers]
    assert names == ["ggnet-privd.service", "ggnet-api.service"]
    # One topic restarts both, in that order, wherever both are concerned.
    assert {h.get("listen") for h in handlers} == {"Restart the ggnet services"}


# ------------------------------------------------------------ ggnet token as root


class Identity:
    """os's identity calls, recorded instead of made."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch, euid: int) -> None:
        self.calls: list[tuple[str, object]] = []
        monkeypatch.setattr(os, "geteuid", lambda: euid)
        for name in ("setgroups", "setgid", "setuid"):
            monkeypatch.setattr(os, name, lambda value, name=name: self.calls.append((name, value)))


def _fake_owner(monkeypatch: pytest.MonkeyPatch, path: Path, uid: int, gid: int) -> None:
    real_stat = Path.stat

    def stat(self: Path, **kwargs: Any) -> Any:
        st = real_stat(self, **kwargs)
        if self == path:
            fields = list(st)
            fields[4:6] = [uid, gid]  # st_uid, st_gid
            return os.stat_result(fields)
        return st

    monkeypatch.setattr(Path, "stat", stat)


def _database(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, uid: int, gid: int) -> Path:
    """An empty api.db that looks owned by uid:gid."""
    db = tmp_path / "api.db"
    db.write_bytes(b"")
    _fake_owner(monkeypatch, db, uid, gid)
    return db


def test_root_becomes_the_owner_of_the_database(monkeypatch, tmp_path):
    db = _database(monkeypatch, tmp_path, 998, 997)
    ids = Identity(monkeypatch, euid=0)
    tokens.become_owner_of(db)
    assert ids.calls == [("setgroups", []), ("setgid", 997), ("setuid", 998)]


def test_before_the_database_exists_root_becomes_its_directory_owner(monkeypatch, tmp_path):
    _fake_owner(monkeypatch, tmp_path, 998, 997)
    ids = Identity(monkeypatch, euid=0)
    tokens.become_owner_of(tmp_path / "api.db")
    assert ids.calls == [("setgroups", []), ("setgid", 997), ("setuid", 998)]


def test_root_stays_root_for_its_own_database(monkeypatch, tmp_path):
    db = _database(monkeypatch, tmp_path, 0, 0)
    ids = Identity(monkeypatch, euid=0)
    tokens.become_owner_of(db)
    assert ids.calls == []


def test_anyone_else_stays_who_they_are(monkeypatch, tmp_path):
    db = _database(monkeypatch, tmp_path, 998, 997)
    ids = Identity(monkeypatch, euid=1000)
    tokens.become_owner_of(db)
    assert ids.calls == []


def test_the_token_command_switches_before_it_opens_the_database(monkeypatch, tmp_path):
    db = _database(monkeypatch, tmp_path, 998, 997)
    ids = Identity(monkeypatch, euid=0)
    opened: list[tuple[str, list]] = []

    class FakeDatabase:
        def __init__(self, path: str) -> None:
            opened.append((path, list(ids.calls)))

        def tokens(self) -> list:
            return []

    monkeypatch.setattr("ggnet_api.db.database.Database", FakeDatabase)
    args = argparse.Namespace(action="list", state_dir=str(tmp_path))
    assert tokens.run(args) == 0
    assert opened == [(str(db), [("setgroups", []), ("setgid", 997), ("setuid", 998)])]
