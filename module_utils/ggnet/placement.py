"""Load-aware placement of PCs on the servers of their node group: a pure function.

place() takes the PCs (name, node group, the server they are on now) and each server's
status, and returns a Plan: {pc: server}, the moves with their reasons, and the PCs
that have no room.  Nothing here reads the network, the inventory or the clock; the
caller (`ggnet fleet place`) gathers the statuses and writes the plan back.

A server's score for one more PC (lower is better) is its load ratio, (PCs + active) /
capacity, plus the penalties and weights of ggnet.settings.PLACEMENT.  The plan is
stable: a PC that has a server keeps it unless that server is unhealthy, gone from its
node group, over its capacity, or far over its share (see rebalance_margin).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from .settings import PLACEMENT


@dataclass(frozen=True)
class PC:
    name: str
    node_group: str
    server: str | None = None  # where it is placed now (ggnet_server), if anywhere


@dataclass(frozen=True)
class ServerStatus:
    """What placement needs of one server (from its agent's signed status)."""

    name: str
    node_group: str
    capacity: int  # the most PCs it carries
    healthy: bool = True
    active: int = 0  # PCs it serves that are not in this placement: they hold capacity
    cpu_percent: float = 0.0
    memory_percent: float = 0.0
    pool_free: float = 1.0  # the pool's free fraction, 0..1
    priority: int = 0  # higher is preferred


@dataclass(frozen=True)
class Move:
    pc: str
    before: str | None
    after: str | None  # None: no room, the PC is unplaced
    reason: str


@dataclass
class Plan:
    placement: dict[str, str] = field(default_factory=dict)
    moves: list[Move] = field(default_factory=list)
    unplaced: dict[str, str] = field(default_factory=dict)  # pc -> why

    def loads(self, statuses: Iterable[ServerStatus]) -> dict[str, float]:
        """Each server's load ratio under this plan (its active PCs included)."""
        count: dict[str, int] = {}
        for server in self.placement.values():
            count[server] = count.get(server, 0) + 1
        return {s.name: load(s, count.get(s.name, 0)) for s in statuses if s.capacity > 0}


def load(status: ServerStatus, pcs: int) -> float:
    """The load ratio of `status` carrying `pcs` PCs of this placement (and its active)."""
    return (pcs + status.active) / status.capacity


def extra(status: ServerStatus, priority_rank: float = 0.0, knobs=None) -> float:
    """The part of a server's score that does not depend on how many PCs it carries.

    priority_rank is 0 for the highest priority of the group and 1 for the lowest."""
    k = {**PLACEMENT, **(knobs or {})}
    cost = 0.0
    if status.cpu_percent > k["cpu_limit"]:
        cost += k["cpu_penalty"]
    if status.memory_percent > k["memory_limit"]:
        cost += k["memory_penalty"]
    cost += k["pool_weight"] * (1.0 - min(max(status.pool_free, 0.0), 1.0))
    return cost + k["priority_weight"] * priority_rank


def score(status: ServerStatus, pcs: int, priority_rank: float = 0.0, knobs=None) -> float:
    """The score of `status` carrying `pcs` PCs of this placement (lower is better)."""
    return load(status, pcs) + extra(status, priority_rank, knobs)


class _Group:
    """The healthy servers of one node group and what the plan has put on them."""

    def __init__(self, servers: list[ServerStatus], knobs: Mapping[str, float]):
        self.servers = {s.name: s for s in servers}
        top = max((s.priority for s in servers), default=0)
        low = min((s.priority for s in servers), default=0)
        spread = top - low
        self.extra = {
            s.name: extra(s, (top - s.priority) / spread if spread else 0.0, knobs) for s in servers
        }
        self.count = {s.name: 0 for s in servers}

    def room(self, name: str) -> bool:
        s = self.servers[name]
        return self.count[name] + s.active < s.capacity

    def ratio(self, name: str, pcs: int) -> float:
        return load(self.servers[name], pcs)

    def score(self, name: str, pcs: int) -> float:
        return self.ratio(name, pcs) + self.extra[name]

    def best(self, skip: str | None = None) -> str | None:
        """The server with room that scores lowest for one more PC (ties: higher
        priority, then name), or None when the group is full."""
        ranked = [
            (self.score(n, self.count[n] + 1), -self.servers[n].priority, n)
            for n in self.servers
            if n != skip and self.room(n)
        ]
        return min(ranked)[2] if ranked else None

    def free(self) -> int:
        return sum(max(s.capacity - s.active - self.count[n], 0) for n, s in self.servers.items())


def place(
    pcs: Iterable[PC], statuses: Iterable[ServerStatus], knobs: Mapping[str, float] | None = None
) -> Plan:
    """The plan for every PC: where it boots from, what moves and why, what has no room."""
    k = {**PLACEMENT, **(knobs or {})}
    statuses = list(statuses)
    known = {s.name: s for s in statuses}
    groups = {
        g: _Group(sorted((s for s in statuses if s.node_group == g and s.healthy and
                          s.capacity > 0), key=lambda s: s.name), k)
        for g in {s.node_group for s in statuses}
    }  # fmt: skip
    plan = Plan()
    kept: dict[str, list[str]] = {}  # server -> its PCs that stay, sorted
    waiting: list[tuple[PC, str]] = []  # PCs to place, with why
    for pc in sorted(pcs, key=lambda p: p.name):
        group = groups.get(pc.node_group)
        if group is None or not group.servers:
            why = (
                "no status from any server of the group"
                if group is None
                else ("no healthy server in the group")
            )
            _unplace(plan, pc, f"node group {pc.node_group}: {why}")
            continue
        reason = _why_not_kept(pc, known, group)
        if reason is None:
            assert pc.server is not None
            kept.setdefault(pc.server, []).append(pc.name)
            group.count[pc.server] += 1
        else:
            waiting.append((pc, reason))

    # Over capacity (it shrank, or its active PCs grew): the last names move.
    for server, names in sorted(kept.items()):
        group = groups[known[server].node_group]
        status = group.servers[server]
        while names and group.count[server] + status.active > status.capacity:
            name = names.pop()
            group.count[server] -= 1
            waiting.append((PC(name, status.node_group, server),
                            f"server {server} is over its capacity of {status.capacity}"))  # fmt: skip

    _rebalance(groups, kept, k["rebalance_margin"], plan)
    for server, names in kept.items():
        for name in names:
            plan.placement[name] = server

    for pc, reason in sorted(waiting, key=lambda w: w[0].name):
        group = groups[pc.node_group]
        target = group.best()
        if target is None:
            _unplace(plan, pc, f"node group {pc.node_group} has no room: {reason}")
            continue
        group.count[target] += 1
        plan.placement[pc.name] = target
        # Taken off an over-full server that a rebalance then emptied, a PC can land
        # where it was: it stays, and that is no move.
        if target != pc.server:
            plan.moves.append(Move(pc.name, pc.server, target, reason))
    plan.moves.sort(key=lambda m: m.pc)
    return plan


def _why_not_kept(pc: PC, known: Mapping[str, ServerStatus], group: _Group) -> str | None:
    if pc.server is None:
        return "not placed yet"
    if pc.server not in known:
        return f"no status from server {pc.server}"
    status = known[pc.server]
    if status.node_group != pc.node_group:
        return f"server {pc.server} is not in node group {pc.node_group}"
    if pc.server not in group.servers:
        return f"server {pc.server} is unhealthy"
    return None


def _unplace(plan: Plan, pc: PC, reason: str) -> None:
    plan.unplaced[pc.name] = reason
    if pc.server is not None:
        plan.moves.append(Move(pc.name, pc.server, None, reason))


def _rebalance(
    groups: Mapping[str, _Group], kept: dict[str, list[str]], margin: float, plan: Plan
) -> None:
    """Move kept PCs off servers far over their share, one at a time, while a server of
    the group would carry one at a load ratio and a score both more than `margin` lower.
    Every move lowers the plan's total score by more than the margin, so this ends; a
    plan this function leaves alone, it leaves alone the next time too.  A moved PC
    leaves `kept`."""
    for _name, group in sorted(groups.items()):
        while (step := _one_move(group, kept, margin)) is not None:
            source, target, pc = step
            plan.placement[pc] = target
            plan.moves.append(
                Move(pc, source, target,
                     f"server {source} is far over its share ({group.count[source] + 1} of "
                     f"{group.servers[source].capacity} PCs; {target} had "
                     f"{group.count[target] - 1} of {group.servers[target].capacity})")
            )  # fmt: skip


def _one_move(group: _Group, kept: dict[str, list[str]], margin: float):
    """(source, target, pc) of the move off the most loaded eligible server, or None."""
    by_load = sorted(
        (s for s in group.servers if kept.get(s)),
        key=lambda s: (-group.score(s, group.count[s]), s),
    )
    for source in by_load:
        target = group.best(skip=source)
        if target is None:
            continue  # no other server has room
        pcs, after = group.count[source], group.count[target] + 1
        if (
            group.score(source, pcs) - group.score(target, after) > margin
            and group.ratio(source, pcs) - group.ratio(target, after) > margin
        ):
            group.count[source] -= 1
            group.count[target] += 1
            return source, target, kept[source].pop()  # fmt: skip
    return None
