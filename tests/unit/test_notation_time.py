"""ggnet's time stamps (ggnet.notation): the one writer, reading the clock once, and the
one reader, which keeps the fraction of a second."""

from __future__ import annotations

import time

import pytest
from ggnet.notation import iso_seconds, iso_time, now_iso

pytestmark = pytest.mark.unit


def test_now_reads_the_clock_once():
    # Two readings a nanosecond apart straddle a second: the seconds of one with the
    # fraction of the other would be a stamp a second off (…:01.000000000Z).
    readings = iter([1_999_999_999, 2_000_000_000])
    calls = []

    def clock() -> int:
        calls.append(1)
        return next(readings)

    assert now_iso(clock) == "1970-01-01T00:00:01.999999999Z"
    assert len(calls) == 1


def test_now_without_a_clock_is_now():
    before = time.time_ns()
    stamp = now_iso()
    after = time.time_ns()
    assert before / 1e9 - 1e-6 <= (iso_seconds(stamp) or 0) <= after / 1e9 + 1e-6


def test_stamps_have_a_fixed_width_so_text_order_is_time_order():
    stamps = [iso_time(ns) for ns in (0, 5, 10**9 - 1, 10**9, 60 * 10**9, 1_767_225_600 * 10**9)]
    assert stamps[0] == "1970-01-01T00:00:00.000000000Z"
    assert stamps[4] == "1970-01-01T00:01:00.000000000Z"  # a dataset's creation, to the second
    assert stamps[5] == "2026-01-01T00:00:00.000000000Z"
    assert sorted(stamps) == stamps and len({len(s) for s in stamps}) == 1


@pytest.mark.parametrize(
    ("stamp", "seconds"),
    [
        ("1970-01-01T00:00:10.500000000Z", 10.5),
        # Was 60.0 from the API's reader, which dropped the fraction.
        ("1970-01-01T00:01:00.5Z", 60.5),
        ("1970-01-01T00:01:00Z", 60.0),
        ("2026-01-01T00:00:00.000000000Z", 1_767_225_600.0),
        ("2026-01-01T00:00:00.000001000Z", 1_767_225_600.000001),
    ],
)
def test_a_stamp_reads_as_seconds_with_its_fraction(stamp, seconds):
    assert iso_seconds(stamp) == pytest.approx(seconds, abs=1e-7)


def test_written_and_read_back_agree():
    ns = 1_767_225_600_123_456_789
    assert iso_seconds(iso_time(ns)) == pytest.approx(ns / 1e9, abs=1e-6)


@pytest.mark.parametrize(
    "value",
    [
        None,
        "",
        "soon",
        "yesterday",
        12,
        "1970-01-01T00:01:00",  # no zone: not a ggnet stamp
        "1970-01-01T00:01:00+02:00",
        "1970-01-01 00:01:00Z",
        "1970-13-01T00:00:00Z",  # the shape, but no date
        "1970-01-01T00:00:00.1234567890Z",  # finer than a nanosecond
        "1970-01-01T00:00:00Z\n",
        "١٩٧٠-01-01T00:00:00Z",  # digits, but not ASCII ones
    ],
)
def test_anything_else_is_no_time(value):
    assert iso_seconds(value) is None
