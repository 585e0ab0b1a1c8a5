"""A fleet's node groups as the inventory declares them, and placement's input from it.

Assumes a validated inventory (ggnet.validate checks ggnet_node_groups); raises
ValueError on what it cannot read.  `ggnet fleet place` calls pcs_to_place() and
statuses() with what the agents report, then placement.place().
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from . import model
from .placement import PC, ServerStatus
from .settings import NODE_GROUP_DEFAULTS, NODE_GROUPS_KEY


@dataclass(frozen=True)
class NodeGroup:
    name: str
    region: str
    priority: int
    capacity: int  # the most PCs one of its servers carries
    servers: tuple[str, ...]


def node_groups(
    groups: Mapping[str, Any], hostvars: Mapping[str, Mapping[str, Any]]
) -> dict[str, NodeGroup]:
    """{name: NodeGroup}, read from the first server that declares them; {} for none."""
    for server in model.servers_of(groups):
        declared = hostvars.get(server, {}).get(NODE_GROUPS_KEY)
        if declared is None:
            continue
        if not isinstance(declared, Mapping):
            raise ValueError(f"{server}: {NODE_GROUPS_KEY} must be a mapping")
        return {
            name: NodeGroup(
                name=name,
                region=spec["region"],
                priority=spec.get("priority", NODE_GROUP_DEFAULTS["priority"]),
                capacity=spec.get("capacity", NODE_GROUP_DEFAULTS["capacity"]),
                servers=tuple(spec["servers"]),
            )
            for name, spec in declared.items()
        }
    return {}


def pcs_to_place(groups: Mapping[str, Any], hostvars: Mapping[str, Mapping[str, Any]]) -> list[PC]:
    """The PCs that name a node group, with the server they are placed on now."""
    return [
        PC(name, hostvars[name]["ggnet_node_group"], hostvars[name].get("ggnet_server"))
        for name in model.clients_of(groups)
        if hostvars[name].get("ggnet_node_group")
    ]


def statuses(
    fleet: Mapping[str, NodeGroup], reports: Mapping[str, Mapping[str, Any] | None]
) -> list[ServerStatus]:
    """Each server of each group as placement sees it.  `reports` maps a server to what
    its agent said ({cpu_percent, memory_percent, pool_free, active}); a server with no
    report (None or absent: it did not answer) is unhealthy."""
    found = []
    for group in fleet.values():
        for server in group.servers:
            report = reports.get(server)
            said = report or {}
            found.append(
                ServerStatus(
                    name=server,
                    node_group=group.name,
                    capacity=group.capacity,
                    healthy=report is not None and bool(said.get("healthy", True)),
                    active=int(said.get("active", 0)),
                    cpu_percent=float(said.get("cpu_percent", 0.0)),
                    memory_percent=float(said.get("memory_percent", 0.0)),
                    pool_free=float(said.get("pool_free", 1.0)),
                    priority=group.priority,
                )
            )
    return found
