"""The anomaly bench keeps its tuning seeds apart from the seeds it judges the goals on."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

# The benchmarks are run as `python -m bench` from the checkout, not installed: their
# package is found from the repository's root.
sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
from bench import bench_anomaly

pytestmark = pytest.mark.unit


def test_tuning_and_held_out_seeds_are_apart():
    assert bench_anomaly.HELD_OUT
    assert set(bench_anomaly.TUNING).isdisjoint(bench_anomaly.HELD_OUT)


def test_the_default_run_covers_both_sets(monkeypatch):
    monkeypatch.delenv("GGNET_ANOMALY_SEEDS", raising=False)
    assert set(bench_anomaly._seeds()) == {*bench_anomaly.TUNING, *bench_anomaly.HELD_OUT}


def test_summary_judges_held_out_seeds_only():
    def run(precision):
        return {"precision": precision, "recall": 1.0, "median_delay_min": 1, "meets_goals": True}

    tuning, held = bench_anomaly.TUNING[0], bench_anomaly.HELD_OUT[0]
    per_seed = {
        str(tuning): {"methods": {"ggnet": {**run(0.5), "meets_goals": False}}},
        str(held): {"methods": {"ggnet": run(0.95)}},
    }
    out = bench_anomaly._summary(per_seed, ("ggnet",), held_out=True)["ggnet"]
    assert out["seeds"] == [held]
    assert out["precision"] == [0.95]
    assert out["meets_goals_on_all"] is True
    assert bench_anomaly._summary(per_seed, ("ggnet",), held_out=False)["ggnet"]["seeds"] == [
        tuning
    ]


def test_an_unknown_method_is_named(monkeypatch):
    monkeypatch.setenv("GGNET_ANOMALY_METHODS", "ggnet,prophet")
    with pytest.raises(SystemExit, match="prophet"):
        bench_anomaly._methods()


def test_a_role_with_no_seed_in_the_run_claims_nothing():
    held = bench_anomaly.HELD_OUT[0]
    per_seed = {str(held): {"methods": {"ggnet": {"precision": 1.0, "meets_goals": True}}}}
    assert bench_anomaly._summary(per_seed, ("ggnet",), held_out=False) == {}


def test_summary_lists_figures_in_the_order_of_its_seeds():
    # per_seed follows the run's order (4242, 777, 13 once): "seeds" is sorted, and
    # every figure must follow it, or a seed's figures are printed under another's.
    held = sorted(s for s in (90001, 90002) if s not in bench_anomaly.TUNING)
    per_seed = {
        str(held[1]): {"methods": {"ggnet": {"precision": 0.8, "recall": 0.8,
                                             "median_delay_min": 12, "meets_goals": False}}},
        str(held[0]): {"methods": {"ggnet": {"precision": 0.95, "recall": 0.95,
                                             "median_delay_min": 5, "meets_goals": True}}},
    }  # fmt: skip
    out = bench_anomaly._summary(per_seed, ("ggnet",), held_out=True)["ggnet"]
    assert out["seeds"] == held
    assert out["precision"] == [0.95, 0.8]
    assert out["median_delay_min"] == [5, 12]
