"""The boot test's knobs, ggnet_boot_test: parsed and checked in one place, for the
validation and the boot-test job (ggnet.storage.boot_test_job).  A leaf: it reads
only the settings and the notations."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from .notation import parse_duration
from .settings import BOOT_TEST_FIRMWARES, BOOT_TEST_KEY, BOOT_TEST_KEYS, default

MEMORY_MIN, MEMORY_MAX = 64, 65536
TIMEOUT_MAX = 3600


@dataclass(frozen=True)
class Knobs:
    firmware: str = default(BOOT_TEST_KEY, "firmware")
    timeout: int = 300  # settings' "5m"; checked against it in the tests
    marker: str = default(BOOT_TEST_KEY, "marker")
    memory: int = default(BOOT_TEST_KEY, "memory")


def parse_knobs(value: Any) -> tuple[Knobs, list[tuple[str, Any, str]]]:
    """(ggnet_boot_test parsed, its problems as (key, value, message)); a bad knob
    leaves its default in the result."""
    if value is None:
        return Knobs(), []
    if not isinstance(value, Mapping):
        return Knobs(), [(BOOT_TEST_KEY, value, "must be a mapping")]
    problems: list[tuple[str, Any, str]] = []
    known = ", ".join(sorted(BOOT_TEST_KEYS))
    for key in value:
        if key not in BOOT_TEST_KEYS:
            problems.append((f"{BOOT_TEST_KEY}.{key}", None, f"unknown key (known: {known})"))
    knobs: dict[str, Any] = {}
    firmware = value.get("firmware")
    if firmware is not None:
        if firmware not in BOOT_TEST_FIRMWARES:
            problems.append(
                (
                    f"{BOOT_TEST_KEY}.firmware",
                    firmware,
                    f"must be one of {', '.join(BOOT_TEST_FIRMWARES)}",
                )
            )
        else:
            knobs["firmware"] = firmware
    timeout = value.get("timeout")
    if timeout is not None:
        try:
            seconds = parse_duration(timeout)
        except ValueError as exc:
            problems.append((f"{BOOT_TEST_KEY}.timeout", timeout, str(exc)))
        else:
            if not 0 < seconds <= TIMEOUT_MAX:
                problems.append(
                    (f"{BOOT_TEST_KEY}.timeout", timeout, "must be above 0 and at most 1h")
                )
            else:
                knobs["timeout"] = seconds
    marker = value.get("marker")
    if marker is not None:
        why = None
        if not isinstance(marker, str) or not marker:
            why = "must be a non-empty regular expression"
        else:
            try:
                re.compile(marker)
            except re.error as exc:
                why = f"is not a regular expression: {exc}"
        if why:
            problems.append((f"{BOOT_TEST_KEY}.marker", marker, why))
        else:
            knobs["marker"] = marker
    memory = value.get("memory")
    if memory is not None:
        if (
            not isinstance(memory, int)
            or isinstance(memory, bool)
            or not MEMORY_MIN <= memory <= MEMORY_MAX
        ):
            problems.append(
                (
                    f"{BOOT_TEST_KEY}.memory",
                    memory,
                    f"must be a whole number of MiB, {MEMORY_MIN} to {MEMORY_MAX}",
                )
            )
        else:
            knobs["memory"] = memory
    return Knobs(**knobs), problems
