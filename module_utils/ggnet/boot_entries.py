"""A PC's boot-path entry: what the API serves it, without secrets.

The API writes the entries of the snapshot it serves (with the inventory commit) after
every load; a converge compares them with the controller's inventory to report what
the boot path would serve differently, and waits for the commit to be served.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from typing import Any

from .files import write_atomic

# The parts of a client (ggnet.model.client) the boot script depends on.
ENTRY_KEYS = ("mac", "ip", "image", "game_disk", "boot", "target_iqn", "initiator_iqn")


def entry(client: Mapping[str, Any]) -> dict[str, Any]:
    return {key: client.get(key) for key in ENTRY_KEYS}


def entries(clients: Iterable[Mapping[str, Any]]) -> dict[str, dict[str, Any]]:
    return {c["name"]: entry(c) for c in clients}


def compare(
    wanted: Mapping[str, Mapping[str, Any]], served: Mapping[str, Mapping[str, Any]]
) -> dict[str, Any]:
    """What the boot path serves differently from WANTED: PCs added, removed, and the
    keys that differ per PC present in both."""
    changed = {
        name: sorted(k for k in ENTRY_KEYS if wanted[name].get(k) != served[name].get(k))
        for name in sorted(set(wanted) & set(served))
    }
    return {
        "added": sorted(set(wanted) - set(served)),
        "removed": sorted(set(served) - set(wanted)),
        "changed": {name: keys for name, keys in changed.items() if keys},
    }


def differs(report: Mapping[str, Any]) -> bool:
    return bool(report["added"] or report["removed"] or report["changed"])


def write_served(path: str, commit: str | None, served: Mapping[str, Any]) -> None:
    text = json.dumps({"commit": commit, "entries": served}, indent=1, sort_keys=True)
    write_atomic(path, text + "\n")


def read_served(path: str) -> dict[str, Any] | None:
    """The served file, or None when the API has not written one (not started yet)."""
    try:
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as exc:
        raise ValueError(f"{path}: not the API's served-entries file ({exc})") from None
    return data if isinstance(data, dict) else None
