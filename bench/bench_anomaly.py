"""Anomaly detection, measured: ggnet's rules against Grafana's adaptive bands.

A synthetic 14-day series of three machine groups (bench/anomaly/series.py) with 54
labelled anomalies (steps, bursts and slow drifts of boot time, bursts and steps of the
error ratio) and normal daily boot storms that must not alert is evaluated, minute by
minute, by promtool's own rule evaluation (bench/anomaly/promtool_run.py) under
  ours      monitoring/rules/ggnet-anomaly.rules.yml, as shipped
  baseline  bench/anomaly/grafana_adaptive.rules.yml, the adaptive bands of Grafana's
            promql-anomaly-detection written from its description
and scored per anomaly (bench/anomaly/score.py): precision, recall, median detection
delay.  Goals for ours: >= 0.9, >= 0.9, <= 10 minutes.

The rules' numbers were chosen on the TUNING seeds only; HELD_OUT are series they
never saw, and the goals are judged there.  A held-out seed whose figures were looked
at while changing the rules joins TUNING (7 and 2026 did, when the fast band and the
noise sigma were added; 11 did when its late error anomalies were studied to add the
two-failure and two-boot paths; 404 and 8080, held out with it, are retired, neither
tuned on nor judged on again; 5, 99 and 31337 did when their false error alerts at the
storms and their late detections were studied; 4242, 777 and 13 did when seed 13's
late quiet-room detections were studied) and fresh held-out seeds replace it: 1729,
6174 and 8128, chosen before that tuning began and never run before the rules were
fixed.  promtool is
single-threaded and its rule evaluation (not the per-minute queries: measured, under
5 % of a run) is the cost, about 4 minutes a (method, seed) pair, so the pairs run
side by side, one per CPU.  GGNET_ANOMALY_SEEDS (comma-separated) runs other seeds
(a seed not in TUNING counts as held out) and GGNET_ANOMALY_METHODS some of the
methods: to iterate on the tuning seeds without running the held-out ones.
GGNET_ANOMALY_JOBS sets how many promtool runs go at once (default: one per CPU).
"""

from __future__ import annotations

import os
import shutil
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from bench.anomaly import promtool_run, score
from bench.anomaly.series import GROUPS, MINUTES, generate

REPO = Path(__file__).resolve().parents[1]
TUNING = (21, 7, 2026, 11, 5, 99, 31337, 4242, 777, 13)
# Written here before the tuning on 4242, 777 and 13 began; not run until the rules
# were final, then run once.  A seed whose figures are studied joins TUNING.
HELD_OUT = (1729, 6174, 8128)
METHODS = {
    "ggnet": (REPO / "monitoring/rules/ggnet-anomaly.rules.yml", score.ALERT_OF),
    "grafana_adaptive": (
        REPO / "bench/anomaly/grafana_adaptive.rules.yml",
        {"time": "AdaptiveBootTimeAnomaly", "error": "AdaptiveBootErrorRateAnomaly"},
    ),
}
GOALS = {"precision": 0.9, "recall": 0.9, "median_delay_min": 10}


def _meets(result: dict) -> bool:
    delay = result["median_delay_min"]
    return (
        result["precision"] >= GOALS["precision"]
        and result["recall"] >= GOALS["recall"]
        and delay is not None
        and delay <= GOALS["median_delay_min"]
    )


def _seeds() -> tuple[int, ...]:
    chosen = os.environ.get("GGNET_ANOMALY_SEEDS")
    if chosen:
        return tuple(int(s) for s in chosen.split(","))
    return (*TUNING, *HELD_OUT)


def _methods() -> tuple[str, ...]:
    chosen = os.environ.get("GGNET_ANOMALY_METHODS")
    if not chosen:
        return tuple(METHODS)
    names = tuple(n.strip() for n in chosen.split(","))
    unknown = sorted(set(names) - set(METHODS))
    if unknown:
        raise SystemExit(
            f"GGNET_ANOMALY_METHODS: unknown method(s) {', '.join(unknown)}; "
            f"known: {', '.join(METHODS)}"
        )
    return names


def _summary(per_seed: dict, methods: tuple[str, ...], held_out: bool) -> dict:
    """Per method: the held-out (or tuning) seeds' figures side by side, and whether
    all of them meet the goals; nothing for a role with no seed in this run."""
    out = {}
    for name in methods:
        runs = {  # in seed order, as "seeds" lists them
            s: per_seed[s]["methods"][name]
            for s in sorted(per_seed, key=int)
            if (int(s) not in TUNING) == held_out
        }
        if not runs:  # none of this role in this run (GGNET_ANOMALY_SEEDS)
            continue
        out[name] = {
            "seeds": [int(s) for s in runs],
            "precision": [r["precision"] for r in runs.values()],
            "recall": [r["recall"] for r in runs.values()],
            "median_delay_min": [r["median_delay_min"] for r in runs.values()],
            "meets_goals_on_all": all(r["meets_goals"] for r in runs.values()),
        }
    return out


def run() -> dict | None:
    if shutil.which("promtool") is None:
        print("    promtool is not installed (apt-get install prometheus); skipped")
        return None
    seeds, methods_run = _seeds(), _methods()
    series = {seed: generate(seed) for seed in seeds}

    def one(job):
        seed, name = job
        rules, names = METHODS[name]
        return job, score.score(series[seed], promtool_run.firing(rules, series[seed]), names)

    jobs = [(seed, name) for seed in seeds for name in methods_run]
    workers = int(os.environ.get("GGNET_ANOMALY_JOBS") or os.cpu_count() or 1)
    with ThreadPoolExecutor(max_workers=workers) as pool:
        results = dict(pool.map(one, jobs))
    per_seed: dict[str, dict] = {}
    for seed in seeds:
        kinds: dict[str, int] = {}
        for a in series[seed].anomalies:
            kinds[a.kind] = kinds.get(a.kind, 0) + 1
        methods = {}
        for name in methods_run:
            r = results[(seed, name)]
            r["meets_goals"] = _meets(r)
            methods[name] = r
            print(
                f"    seed {seed:5d} {name:17s} precision {r['precision']:.3f}  "
                f"recall {r['recall']:.3f}  median delay {r['median_delay_min']} min  "
                f"({r['alert_episodes']} alert episodes, {r['false_episodes']} false)"
            )
        per_seed[str(seed)] = {
            "role": "tuning" if seed in TUNING else "held out",
            "anomalies": len(series[seed].anomalies),
            "anomalies_by_kind": dict(sorted(kinds.items())),
            "daily_peaks": len(series[seed].peaks),
            "methods": methods,
        }
    return {
        "tuning_seeds": list(TUNING),
        "held_out_seeds": [s for s in seeds if s not in TUNING],
        "days": MINUTES // (24 * 60),
        "groups": [f"{g.instance}/{g.image}" for g in GROUPS],
        "evaluation": "promtool test rules, 1m evaluation interval, 1m samples",
        "scoring": score.__doc__.strip(),
        "goals": GOALS,
        "held_out": _summary(per_seed, methods_run, held_out=True),
        "tuning": _summary(per_seed, methods_run, held_out=False),
        "per_seed": per_seed,
    }
