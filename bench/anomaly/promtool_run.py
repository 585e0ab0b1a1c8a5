"""Run rules over a synthetic series with promtool's own rule evaluation.

`promtool test rules` evaluates every rule group minute by minute over the input
series exactly as Prometheus does (recording rules, `for:`, the ALERTS series).  The
test written here asks, at every minute, for no firing alert; promtool reports each
minute where one fired, with its labels, and that report is read back as the alert
timeline.  A test that expects nothing and is told what happened is the one way
promtool gives its evaluation back without a server.
"""

from __future__ import annotations

import re
import subprocess
import tempfile
from pathlib import Path

import yaml

from bench.anomaly.series import MINUTES, Series

JOB = "ggnet_api"
# `expr: "ALERTS...", time: 1d11h50m,` then `exp: nil` and `got: {...} 1E+00, ...`.
_CASE = re.compile(r"time: (\w+),\s*\n\s*exp:.*\n\s*got:\s*(.*)")
_UNITS = {"w": 7 * 24 * 60, "d": 24 * 60, "h": 60, "m": 1}
_ALERT = re.compile(r"\{([^}]*)\}")


def _minutes(duration: str) -> int:
    """Minutes of a Prometheus duration as promtool prints it (1d11h50m; 0s)."""
    return sum(int(n) * _UNITS.get(unit, 0) for n, unit in re.findall(r"(\d+)([a-z]+)", duration))


def _values(values) -> str:
    return " ".join(str(v) for v in values)


def input_series(series: Series) -> list[dict]:
    out = []
    for g in series.groups:
        inst = g.instance
        for result, values in series.boots[inst].items():
            out.append({
                "series": f'ggnet_boots_total{{job="{JOB}",instance="{inst}",result="{result}"}}',
                "values": _values(values),
            })  # fmt: skip
        labels = f'job="{JOB}",instance="{inst}",image="{g.image}"'
        out.append({
            "series": f"ggnet_boot_duration_seconds_count{{{labels}}}",
            "values": _values(series.duration_count[inst]),
        })  # fmt: skip
        out.append({
            "series": f"ggnet_boot_duration_seconds_sum{{{labels}}}",
            "values": _values(series.duration_sum[inst]),
        })  # fmt: skip
    return out


def firing(rules_file: Path, series: Series) -> dict[tuple[str, str], set[int]]:
    """{(alertname, instance): minutes at which it was firing}."""
    with tempfile.TemporaryDirectory(prefix="ggnet-anomaly-") as tmp:
        test = Path(tmp) / "bench.test.yml"
        test.write_text(
            yaml.safe_dump(
                {
                    "rule_files": [str(rules_file.resolve())],
                    "evaluation_interval": "1m",
                    "tests": [
                        {
                            "interval": "1m",
                            "input_series": input_series(series),
                            "promql_expr_test": [
                                {
                                    "expr": 'ALERTS{alertstate="firing"}',
                                    "eval_time": f"{m}m",
                                    "exp_samples": [],
                                }
                                for m in range(MINUTES)
                            ],
                        }
                    ],
                },
                width=1 << 30,
            )
        )
        proc = subprocess.run(
            ["promtool", "test", "rules", str(test)], capture_output=True, text=True, check=False
        )
    out = proc.stdout + proc.stderr
    if proc.returncode != 0 and "FAILED" not in out:
        raise RuntimeError(f"promtool test rules failed:\n{out[-4000:]}")
    timeline: dict[tuple[str, str], set[int]] = {}
    for minute, got in _CASE.findall(out):
        for labels in _ALERT.findall(got):
            pairs = dict(re.findall(r'(\w+)="([^"]*)"', labels))
            key = (pairs["alertname"], pairs["instance"])
            timeline.setdefault(key, set()).add(_minutes(minute))
    return timeline
