"""The clients storage is handed (the ggnet_clients filter's output): checked, their
wanted disks, and whether each is running."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from .. import layout
from .results import StorageError

# The keys storage reads from a client (the ggnet_clients filter's output), and what
# each may hold: the modules declare `clients` as a plain list of dicts, so this is
# where a bad one is refused, by client and key.
CLIENT_KEYS = {
    "name": (str,),
    "image": (str,),
    "game_disk": (str, type(None)),
    "keep_writeback": (bool, type(None)),
    "target_iqn": (str, type(None)),
    # In its machine group's canary set (ggnet.rollout): boots a version in canary.
    "canary": (bool, type(None)),
}


def check_client(client: object, index: int) -> None:
    if not isinstance(client, Mapping):
        raise StorageError(
            f"clients[{index}]: {client!r} is not a client (a mapping from the ggnet_clients filter)"
        )
    who = f"client {client.get('name')!r}" if client.get("name") else f"clients[{index}]"
    for key, types in CLIENT_KEYS.items():
        value = client.get(key)
        if not isinstance(value, types):
            wanted = " or ".join("null" if t is type(None) else t.__name__ for t in types)
            if key in ("name", "image") and value is None:
                raise StorageError(f"{who}: {key} is missing")
            raise StorageError(f"{who}: {key} must be {wanted}, got {value!r}")


def wanted_disks(clients: list[Mapping[str, Any]]) -> dict[tuple[str, str], Mapping[str, Any]]:
    wanted: dict[tuple[str, str], Mapping[str, Any]] = {}
    seen = set()
    for index, client in enumerate(clients):
        check_client(client, index)
        name: str = client["name"]  # check_client: present, a str
        if name in seen:
            raise StorageError(f"client {name!r} is listed twice")
        seen.add(name)
        try:
            layout.client_dataset({"pool": "p"}, name)
        except layout.LayoutError as exc:
            raise StorageError(f"client {name!r}: {exc}") from None
        wanted[(name, "system")] = {**client, "_disk_image": client.get("image")}
        if client.get("game_disk"):
            wanted[(name, "game")] = {**client, "_disk_image": client["game_disk"]}
    return wanted


def client_running(client: Mapping[str, Any], sessions: Mapping[str, list] | None) -> bool | None:
    """True/False from the iSCSI sessions, None when they are unknown."""
    if sessions is None:
        return None
    return bool(sessions.get(client.get("target_iqn") or ""))


def find_client(clients: list[Mapping[str, Any]], name: str) -> Mapping[str, Any]:
    # Only the one found is checked (by wanted_disks): the boot path must not pay for
    # checking every client; the reconcile checks them all.
    for client in clients:
        if isinstance(client, Mapping) and client.get("name") == name:
            return client
    raise StorageError(
        f"unknown client {name!r}: not in ggnet_clients of the inventory "
        f"({len(clients)} clients known)"
    )
