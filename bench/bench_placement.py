"""Placement of 1,000 PCs onto 10 simulated servers of one node group (no network).

The servers differ as a real fleet's do: capacity 80-160, CPU 10-75 %, memory 20-80 %,
pool 40-90 % free, priorities 0-2, from a fixed seed.  Goals: the load ratios (PCs /
capacity) differ by at most 1.2x between the most and the least loaded server, and a
placement is computed in at most 1 s.  Also timed: placing the plan again (every PC
already placed: the stable path, zero moves expected) and re-placing after one server
goes down (its PCs move, the rest stay).
"""

from __future__ import annotations

import random
import statistics
import time

from ggnet.placement import PC, ServerStatus, place

PCS = 1000
SERVERS = 10
ROUNDS = 20
SEED = 18


def _fleet(rng: random.Random) -> list[ServerStatus]:
    return [
        ServerStatus(
            name=f"boot{i + 1:02d}",
            node_group="hall",
            capacity=rng.randrange(80, 161, 10),
            cpu_percent=rng.uniform(10, 75),
            memory_percent=rng.uniform(20, 80),
            pool_free=rng.uniform(0.4, 0.9),
            priority=rng.randint(0, 2),
        )
        for i in range(SERVERS)
    ]


def _timed(fn):
    samples, result = [], None
    for _ in range(ROUNDS):
        start = time.perf_counter()
        result = fn()
        samples.append(time.perf_counter() - start)
    return result, {
        "median_ms": round(statistics.median(samples) * 1000, 2),
        "max_ms": round(max(samples) * 1000, 2),
    }


def run() -> dict:
    servers = _fleet(random.Random(SEED))
    pcs = [PC(f"pc-{i:04d}", "hall") for i in range(PCS)]
    plan, fresh = _timed(lambda: place(pcs, servers))
    loads = plan.loads(servers)
    ratio = max(loads.values()) / min(loads.values())

    placed = [PC(p.name, p.node_group, plan.placement[p.name]) for p in pcs]
    again, stable = _timed(lambda: place(placed, servers))

    down = [s if s.name != "boot01" else ServerStatus(**{**vars(s), "healthy": False})
            for s in servers]  # fmt: skip
    failover, failover_time = _timed(lambda: place(placed, down))
    on_dead = sum(1 for s in plan.placement.values() if s == "boot01")

    result = {
        "pcs": PCS,
        "servers": SERVERS,
        "capacity_total": sum(s.capacity for s in servers),
        "load_ratio_max_over_min": round(ratio, 3),
        "load_ratio_goal": 1.2,
        "loads": {name: round(load, 3) for name, load in sorted(loads.items())},
        "unplaced": len(plan.unplaced),
        "place_fresh": fresh,
        "place_again": {**stable, "moves": len(again.moves)},
        "place_after_boot01_down": {
            **failover_time,
            "moves": len(failover.moves),
            "pcs_on_boot01": on_dead,
        },
        "time_goal_ms": 1000,
        "goals_met": ratio <= 1.2 and fresh["max_ms"] <= 1000 and not again.moves,
    }
    print(
        f"    1000 PCs on 10 servers: max/min load {ratio:.3f} (goal <= 1.2), "
        f"{fresh['median_ms']} ms median, {fresh['max_ms']} ms max (goal <= 1000); "
        f"again: {len(again.moves)} moves; boot01 down: {len(failover.moves)} moves "
        f"({on_dead} PCs were on it)"
    )
    return result
