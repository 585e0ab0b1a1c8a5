"""The ZFS user properties ggnet keeps on its datasets, and the ggnet:disks record."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from .. import layout

P_MANAGED = "ggnet:managed"
P_KIND = "ggnet:kind"
P_SOURCE = "ggnet:source"
P_CURRENT = "ggnet:current"
P_COMMENT = "ggnet:comment"
P_CREATED = "ggnet:created"
P_APPLIED_FROM = "ggnet:applied_from"
P_CLIENT = "ggnet:client"
P_DISK = "ggnet:disk"
P_KEEP = "ggnet:keep"
# On a version's snapshot: candidate, tested, canary, promoted or rejected (ggnet.rollout);
# absent on versions made before states existed, which count as promoted.
P_STATE = "ggnet:state"
# When the version got that state (ISO 8601 UTC): a rollout's patience runs from it.
P_STATE_AT = "ggnet:state_at"
# On a version's snapshot: the last boot test's result, compact JSON (passed, reason,
# stages, at, firmware, screenshot; ggnet.storage.boot_test_job).
P_BOOT_TEST = "ggnet:boot_test"
# On a replica's image dataset: when the last replication run that left it complete
# ended (ISO 8601 UTC, as ggnet:created; ggnet.replication).
P_REPLICATED_AT = "ggnet:replicated_at"
# On each client dataset: its disks as ggnet last made them, "<role>=<origin>,<quota>"
# separated by spaces ("none" for no disks).  The reconcile reads it from a one-level
# listing instead of walking every writeback: zfs-fuse pays a socket round trip per
# dataset listed.  Cleared before ggnet changes a disk and written after, so an
# interrupted change leaves no record, and a missing record means "read the disks".
P_DISKS = "ggnet:disks"


def format_disks(disks: Mapping[str, tuple[str | None, int]]) -> str:
    """The ggnet:disks value for {role: (origin, quota)}."""
    items = [f"{role}={origin or '-'},{quota}" for role, (origin, quota) in sorted(disks.items())]
    return " ".join(items) or "none"


def parse_disks(value: str | None) -> dict[str, tuple[str | None, int]] | None:
    """{role: (origin, quota)} from a ggnet:disks value; None when absent or unreadable
    (the caller then reads the disks themselves)."""
    if not value:
        return None
    if value == "none":
        return {}
    disks: dict[str, tuple[str | None, int]] = {}
    for item in value.split():
        role, eq, rest = item.partition("=")
        origin, comma, quota = rest.rpartition(",")
        if not (eq and comma and origin and quota.isdigit()) or role not in layout.DISK_ROLES:
            return None
        disks[role] = (None if origin == "-" else origin, int(quota))
    return disks


def format_boot_test(result: Mapping[str, Any]) -> str:
    """The ggnet:boot_test value of a boot test's result: compact JSON, keys sorted."""
    return json.dumps(dict(result), separators=(",", ":"), sort_keys=True)


def parse_boot_test(value: str | None) -> dict[str, Any] | None:
    """A boot test's result from its ggnet:boot_test value; None when absent or unreadable."""
    if not value or value == "-":
        return None
    try:
        parsed = json.loads(value)
    except ValueError:
        return None
    return parsed if isinstance(parsed, dict) else None
