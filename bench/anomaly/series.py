"""Synthetic 14-day boot series of a few machine groups, with labelled anomalies.

One sample a minute.  A group is one boot server with one image (the labels the API
gives: instance for boot results, instance+image for boot durations).  Its normal life:
a quiet night, a boot storm at opening time (10:00, a few minutes earlier or later each
day) that also slows boots down and fails a few more of them, steady boots during the
day, a smaller evening storm, busier weekends.  None of that is an anomaly.

Anomalies, never overlapping within a group, each in opening hours (at night no PC
boots, so nothing can be seen): steps and bursts of boot time, slow drifts of boot
time, bursts and steps of the error ratio.  Everything comes from one seed.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass, field

MINUTES = 14 * 24 * 60
DAY = 24 * 60
# The first day has no history to compare with: anomalies start on the second.
FIRST_ANOMALY = DAY + 60
# Kinds, and the alert each one should raise.
TIME_KINDS = ("time_step", "time_burst", "time_drift")
ERROR_KINDS = ("error_burst", "error_step")


@dataclass
class Group:
    instance: str
    image: str
    base_seconds: float
    day_rate: float  # boots a minute in daytime
    fail_ratio: float


@dataclass
class Anomaly:
    group: str  # the instance
    kind: str
    start: int  # minute
    end: int  # minute, exclusive
    factor: float  # boot time multiplier or failure ratio

    @property
    def metric(self) -> str:
        return "time" if self.kind in TIME_KINDS else "error"


@dataclass
class Series:
    groups: list[Group]
    anomalies: list[Anomaly]
    # Per instance, one value a minute: cumulative counters.
    boots: dict[str, dict[str, list[int]]] = field(default_factory=dict)  # result -> values
    duration_count: dict[str, list[int]] = field(default_factory=dict)
    duration_sum: dict[str, list[float]] = field(default_factory=dict)
    # Minutes of the normal peaks (storms), per day: [(start, end)].
    peaks: list[tuple[int, int]] = field(default_factory=list)


GROUPS = [
    Group("boot01", "win11-hall", 38.0, 0.7, 0.01),
    Group("boot02", "win10-lan", 46.0, 0.5, 0.015),
    Group("boot03", "linux-lab", 27.0, 0.35, 0.01),
]


def _open(minute_of_day: int) -> bool:
    """Opening hours 10:00-01:00, the hours anomalies are placed in."""
    return minute_of_day >= 10 * 60 or minute_of_day < 60


def _anomalies(rng: random.Random, per_group: int) -> list[Anomaly]:
    out = []
    kinds = [*TIME_KINDS, *ERROR_KINDS]
    for g in GROUPS:
        taken: list[tuple[int, int]] = []
        placed = 0
        while placed < per_group:
            kind = kinds[placed % len(kinds)]
            if kind == "time_step":
                length, factor = rng.randint(45, 120), rng.uniform(1.7, 2.5)
            elif kind == "time_burst":
                length, factor = rng.randint(15, 30), rng.uniform(2.2, 3.0)
            elif kind == "time_drift":  # factor reached at the end of a linear ramp
                length, factor = rng.randint(90, 150), rng.uniform(2.2, 2.8)
            elif kind == "error_burst":
                length, factor = rng.randint(15, 40), rng.uniform(0.3, 0.6)
            else:
                length, factor = rng.randint(60, 180), rng.uniform(0.15, 0.3)
            start = rng.randrange(FIRST_ANOMALY, MINUTES - 300)
            if not all(_open((m) % DAY) for m in range(start, start + length, 5)):
                continue
            # Apart from the others by 2 h: an alert's tail stays with its own anomaly.
            if any(start < e + 120 and s < start + length + 120 for s, e in taken):
                continue
            taken.append((start, start + length))
            out.append(Anomaly(g.instance, kind, start, start + length, round(factor, 3)))
            placed += 1
    return sorted(out, key=lambda a: (a.start, a.group))


def _storm(rng: random.Random, day: int) -> list[tuple[int, int, float]]:
    """(start, length, boots a minute) of the day's storms: opening and evening."""
    weekend = day % 7 in (5, 6)
    opening = day * DAY + 10 * 60 + rng.randint(-15, 15)
    evening = day * DAY + 18 * 60 + rng.randint(-20, 20)
    return [
        (opening, rng.randint(18, 25), rng.uniform(3.0, 4.5) * (1.3 if weekend else 1.0)),
        (evening, rng.randint(25, 35), rng.uniform(1.2, 2.0) * (1.3 if weekend else 1.0)),
    ]


def _poisson(rng: random.Random, lam: float) -> int:
    if lam <= 0:
        return 0
    limit, k, p = math.exp(-lam), 0, rng.random()
    while p > limit:
        k += 1
        p *= rng.random()
    return k


def generate(seed: int, per_group: int = 18) -> Series:
    rng = random.Random(seed)
    anomalies = _anomalies(rng, per_group)
    storms = [s for day in range(14) for s in _storm(rng, day)]
    series = Series(GROUPS, anomalies, peaks=[(s, s + n) for s, n, _ in storms])
    for g in GROUPS:
        mine = [a for a in anomalies if a.group == g.instance]
        results = {"ok": [0] * MINUTES, "failed": [0] * MINUTES, "timeout": [0] * MINUTES}
        count, total = [0] * MINUTES, [0.0] * MINUTES
        ok_n = failed_n = timeout_n = n_done = 0
        s_done = 0.0
        for m in range(MINUTES):
            mod, day = m % DAY, m // DAY
            weekend = day % 7 in (5, 6)
            rate = g.day_rate * (1.3 if weekend else 1.0) if _open(mod) else 0.03
            slow, fail = 1.0, g.fail_ratio
            for start, length, extra in storms:
                if start <= m < start + length:
                    # A storm: many PCs at once, so boots are slower and fail a bit more.
                    rate += extra * g.day_rate / 0.5
                    slow, fail = 1.5, g.fail_ratio * 2
            for a in mine:
                if not a.start <= m < a.end:
                    continue
                if a.kind in ("time_step", "time_burst"):
                    slow *= a.factor
                elif a.kind == "time_drift":
                    slow *= 1 + (a.factor - 1) * (m - a.start + 1) / (a.end - a.start)
                else:
                    fail = a.factor
            for _ in range(_poisson(rng, rate)):
                if rng.random() < fail:
                    if rng.random() < 0.7:
                        failed_n += 1
                    else:
                        timeout_n += 1
                    continue
                ok_n += 1
                n_done += 1
                s_done += g.base_seconds * slow * rng.lognormvariate(0, 0.15)
            results["ok"][m], results["failed"][m], results["timeout"][m] = (
                ok_n,
                failed_n,
                timeout_n,
            )
            count[m], total[m] = n_done, round(s_done, 1)
        series.boots[g.instance] = results
        series.duration_count[g.instance] = count
        series.duration_sum[g.instance] = total
    return series
