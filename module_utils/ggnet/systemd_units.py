"""Several systemd units enabled and started (or disabled and stopped) in one pass.

ansible.builtin.systemd_service runs once per unit, and with daemon_reload it reloads
systemd every time; under a slow target each run costs seconds.  Here one
`systemctl show` reads every unit, systemd is reloaded only when it says a unit file
changed, and each verb runs once for all the units that need it.
"""

from __future__ import annotations

from dataclasses import dataclass, field

PROPERTIES = ("Id", "LoadState", "ActiveState", "UnitFileState", "NeedDaemonReload")
# UnitFileState values that need no `systemctl enable` (static units cannot be enabled).
ENABLED_STATES = ("enabled", "enabled-runtime", "static", "alias", "indirect", "generated")
ACTIVE_STATES = ("active", "reloading", "activating")


class UnitError(Exception):
    """A unit that cannot be converged; the message names it."""


@dataclass(frozen=True)
class Wanted:
    name: str
    enabled: bool = True
    started: bool | None = True  # None: left running or not, as it is

    @classmethod
    def parse(cls, raw: dict) -> Wanted:
        name = raw.get("name")
        if not name or "." not in name:
            raise UnitError(
                f"units entry {name!r}: name must be a unit with its suffix (ggnet-api.service)"
            )
        state = raw.get("state", "started")
        if state not in ("started", "stopped", None):
            raise UnitError(f"unit {name}: state {state!r} is not started, stopped or null")
        started = None if state is None else state == "started"
        return cls(name=name, enabled=bool(raw.get("enabled", True)), started=started)


def parse_show(text: str) -> list[dict[str, str]]:
    """`systemctl show -p ...` of several units: blocks separated by blank lines."""
    units: list[dict[str, str]] = []
    current: dict[str, str] = {}
    for line in text.splitlines():
        if not line.strip():
            if current:
                units.append(current)
                current = {}
            continue
        key, _, value = line.partition("=")
        current[key] = value
    if current:
        units.append(current)
    return units


def needs_reload(shown: list[dict[str, str]]) -> bool:
    return any(
        u.get("NeedDaemonReload") == "yes" or u.get("LoadState") == "not-found" for u in shown
    )


@dataclass
class Plan:
    enable: list[str] = field(default_factory=list)
    disable: list[str] = field(default_factory=list)
    start: list[str] = field(default_factory=list)
    stop: list[str] = field(default_factory=list)

    @property
    def changed(self) -> bool:
        return bool(self.enable or self.disable or self.start or self.stop)

    def actions(self) -> list[str]:
        return [
            f"{verb} {name}"
            for verb in ("enable", "disable", "start", "stop")
            for name in getattr(self, verb)
        ]


def plan(wanted: list[Wanted], shown: list[dict[str, str]]) -> Plan:
    """What to run so that every unit is as WANTED, from what systemd SHOWED of them
    (in the same order)."""
    if len(shown) != len(wanted):
        raise UnitError(f"systemctl showed {len(shown)} units for {len(wanted)} asked")
    result = Plan()
    for want, unit in zip(wanted, shown, strict=True):
        if unit.get("LoadState") != "loaded":
            if want.enabled or want.started:
                raise UnitError(
                    f"unit {want.name} is {unit.get('LoadState') or 'unknown'} to systemd: "
                    "is its unit file installed (the role's earlier tasks, or its package)?"
                )
            continue  # wanted off, and not there at all: nothing to do
        file_state = unit.get("UnitFileState", "")
        if want.enabled and file_state not in ENABLED_STATES:
            result.enable.append(want.name)
        if not want.enabled and file_state in ("enabled", "enabled-runtime"):
            result.disable.append(want.name)
        active = unit.get("ActiveState") in ACTIVE_STATES
        if want.started is True and not active:
            result.start.append(want.name)
        if want.started is False and active:
            result.stop.append(want.name)
    return result
