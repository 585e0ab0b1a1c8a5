"""Score an alert timeline against the labelled anomalies.

Event-based, as an operator meets alerts:
- an episode is a run of consecutive firing minutes of one alert on one group;
- an anomaly is detected when an episode of its metric's alert on its group fires
  between its start and GRACE minutes after its end (a 10-minute window still holds
  the anomaly's boots after it stops);
- precision = episodes that overlap such a window / all episodes; recall = detected
  anomalies / all anomalies; delay = first firing minute in the window - start.
An episode overlapping a normal daily peak and no anomaly is counted as a peak alert.
"""

from __future__ import annotations

import statistics

from bench.anomaly.series import Series

GRACE = 20
ALERT_OF = {"time": "GgnetBootTimeAnomaly", "error": "GgnetBootErrorRateAnomaly"}


def episodes(minutes: set[int]) -> list[tuple[int, int]]:
    """[(first, last)] runs of consecutive minutes."""
    runs: list[tuple[int, int]] = []
    for m in sorted(minutes):
        if runs and m == runs[-1][1] + 1:
            runs[-1] = (runs[-1][0], m)
        else:
            runs.append((m, m))
    return runs


def score(series: Series, timeline: dict[tuple[str, str], set[int]], names: dict) -> dict:
    """names: {"time": alertname, "error": alertname} of the method scored."""
    delays: list[int] = []
    by_kind: dict[str, dict] = {}
    for a in series.anomalies:
        fired = timeline.get((names[a.metric], a.group), set())
        hits = [m for m in fired if a.start <= m <= a.end + GRACE]
        k = by_kind.setdefault(a.kind, {"anomalies": 0, "detected": 0, "delays": []})
        k["anomalies"] += 1
        if hits:
            k["detected"] += 1
            k["delays"].append(min(hits) - a.start)
            delays.append(min(hits) - a.start)
    true_eps = false_eps = peak_eps = 0
    for (alertname, group), minutes in timeline.items():
        metric = next((m for m, n in names.items() if n == alertname), None)
        windows = [
            (a.start, a.end + GRACE)
            for a in series.anomalies
            if a.group == group and a.metric == metric
        ]
        for first, last in episodes(minutes):
            if any(first <= e and s <= last for s, e in windows):
                true_eps += 1
                continue
            false_eps += 1
            if any(first <= e + GRACE and s <= last for s, e in series.peaks):
                peak_eps += 1
    total = true_eps + false_eps
    return {
        "anomalies": len(series.anomalies),
        "detected": len(delays),
        "alert_episodes": total,
        "false_episodes": false_eps,
        "false_episodes_at_daily_peaks": peak_eps,
        "precision": round(true_eps / total, 3) if total else 0.0,
        "recall": round(len(delays) / len(series.anomalies), 3),
        "median_delay_min": statistics.median(delays) if delays else None,
        "by_kind": {
            kind: {
                "anomalies": k["anomalies"],
                "recall": round(k["detected"] / k["anomalies"], 3),
                "median_delay_min": statistics.median(k["delays"]) if k["delays"] else None,
            }
            for kind, k in sorted(by_kind.items())
        },
    }
