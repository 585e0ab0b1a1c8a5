"""The rollout bench's pure helpers: phase seconds from marks, and the summary of the
repeated figures it reports."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

# The benchmarks are run as `python -m bench` from the checkout, not installed: their
# package is found from the repository's root.
sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
from bench.bench_rollout import phases, summary

pytestmark = pytest.mark.unit


def test_phases_are_the_gaps_between_consecutive_marks():
    got = phases([("start", 10.0), ("applied", 10.5), ("tested", 17.0), ("done", 20.25)])
    assert got == {"applied": 0.5, "tested": 6.5, "done": 3.25, "total": 10.25}


def test_phases_need_two_marks():
    with pytest.raises(ValueError, match="at least one more"):
        phases([("start", 1.0)])


def test_summary_median_of_all_values_rounded_to_ms():
    got = summary([2.0004, 9.5, 3.25])
    assert got == {"median": 3.25, "min": 2.0, "max": 9.5, "values": [2.0, 9.5, 3.25]}
    assert summary([1.0, 3.0])["median"] == 2.0  # an even count: the middle's mean


def test_summary_of_nothing_is_none():
    assert summary([]) == {"median": None, "min": None, "max": None, "values": []}
