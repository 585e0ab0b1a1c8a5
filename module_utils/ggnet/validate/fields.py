"""Checks of single values that every room shares: mappings, choices, booleans, addresses."""

from __future__ import annotations

import difflib
from collections.abc import Iterable, Mapping
from typing import Any

from ..net import parse_ipv4
from ..settings import SERVERS_GROUP
from .problems import _Collector
from .values import UNRESOLVED


def _type_name(value: object) -> str:
    return {bool: "a boolean", int: "a number", float: "a number", list: "a list"}.get(
        type(value), "a " + type(value).__name__
    )


def _suggest(word: str, choices: Iterable[str]) -> str:
    match = difflib.get_close_matches(word, sorted(choices), n=1, cutoff=0.6)
    return f"; did you mean {match[0]}?" if match else ""


def _unknown(what: str, value: object, known: Iterable[str]) -> str:
    """The message for a name not among `known`: "unknown image (known: a, b); did you
    mean a?"."""
    names = sorted(known)
    return f"{what} (known: {', '.join(names) or 'none'})" + _suggest(str(value), names)


def _a_server(out: _Collector, host: str, key: str, value: Any, servers: list[str]) -> bool:
    """Whether `value` names a host of ggnet_servers; a problem when it does not."""
    if value in servers:
        return True
    hint = _suggest(str(value), servers)
    out.add(host, key, value, f"is not a host of {SERVERS_GROUP}" + hint)
    return False


def _one_of(choices: Iterable[str]) -> str:
    return " | ".join(choices)


def _dict_setting(out: _Collector, host: str, hv: Mapping[str, Any], key: str) -> dict | None:
    value = hv.get(key)
    if value is None or value is UNRESOLVED:
        return {} if value is None else None
    if not isinstance(value, Mapping):
        out.add(host, key, value, f"must be a mapping, not {_type_name(value)}")
        return None
    return dict(value)


def _unknown_subkeys(out: _Collector, host: str, key: str, value: Mapping, allowed) -> None:
    for sub in value:
        if sub not in allowed:
            out.add(host, f"{key}.{sub}", None, "unknown key" + _suggest(str(sub), allowed))


def _choice(out: _Collector, host: str, key: str, value: Any, choices: tuple) -> bool:
    if value is UNRESOLVED:
        return False
    if value not in choices:
        hint = _suggest(str(value), choices) if isinstance(value, str) else ""
        out.add(host, key, value, f"must be one of {_one_of(choices)}{hint}")
        return False
    return True


def _bool(out: _Collector, host: str, key: str, value: Any) -> None:
    if value is not UNRESOLVED and not isinstance(value, bool):
        out.add(host, key, value, "must be true or false (a YAML boolean, unquoted)")


def _ip_field(out: _Collector, host: str, key: str, value: Any):
    if value in (None, UNRESOLVED):
        return None
    try:
        return parse_ipv4(value)
    except ValueError as exc:
        out.add(host, key, value, str(exc))
        return None


def _inside(out: _Collector, host: str, key: str, ip, subnet) -> bool:
    if ip not in subnet:
        out.add(host, key, ip, f"is outside the subnet {subnet}")
        return False
    if ip in (subnet.network, subnet.broadcast):
        which = "network" if ip == subnet.network else "broadcast"
        out.add(host, key, ip, f"is the {which} address of {subnet}, not a host address")
        return False
    return True


def _abs_path(value: object) -> bool:
    return isinstance(value, str) and value.startswith("/") and "\n" not in value
