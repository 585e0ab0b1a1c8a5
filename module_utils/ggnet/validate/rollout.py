"""Checks of a server's ggnet_rollout (the knobs and each machine group's canary set)
and of its ggnet_boot_test (the boot test's knobs)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from .. import rollout
from ..boot_test_knobs import parse_knobs
from ..settings import BOOT_TEST_KEY
from .problems import _Collector
from .values import UNRESOLVED


def _check_rollout(
    out: _Collector, host: str, hv: Mapping[str, Any], members: Mapping[str, list[str]]
) -> None:
    """One problem per bad knob or canary set, naming the group, key and value: a
    group that is not a machine group, a PC not in the group, a share that is no
    percentage, a set naming no PC.  `members`: machine group -> its PCs."""
    value = hv.get(rollout.ROLLOUT_KEY)
    if value is None or value is UNRESOLVED:
        return
    _parsed, problems = rollout.parse_rollout(value, members)
    for key, shown, message in problems:
        out.add(host, key, None if shown is UNRESOLVED else shown, message)


def _check_boot_test(out: _Collector, host: str, hv: Mapping[str, Any]) -> None:
    """One problem per bad ggnet_boot_test knob, naming the key and the value."""
    value = hv.get(BOOT_TEST_KEY)
    if value is None or value is UNRESOLVED:
        return
    _knobs, problems = parse_knobs(value)
    for key, shown, message in problems:
        out.add(host, key, None if shown is UNRESOLVED else shown, message)
