"""ggnet's notations of sizes, percentages, durations and time stamps: their one parser
each (and the one writer of a time stamp).

A leaf: the model, the settings checks and the rollout's knobs all read these, and it
reads nothing of ggnet, so none of them has to import another for a parser.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from datetime import UTC, datetime

_UNITS = {"": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40, "P": 1 << 50}
# ZFS's own notation (binary units, optional "iB"/"B"): 64G, 512M, 1.5T, 64GiB.
_SIZE_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([KMGTP]?)(?:i?B)?\s*$", re.IGNORECASE)
_PERCENT_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*%\s*$")


def parse_size(value: object) -> int:
    """'64G' -> 68719476736.  Plain integers are bytes.  Binary units, as ZFS uses."""
    if isinstance(value, bool):
        raise ValueError("must be a size such as 64G, 512M or 1.5T")
    if isinstance(value, int):
        size = value
    elif isinstance(value, str) and (match := _SIZE_RE.match(value)):
        number, unit = match.groups()
        size = int(float(number) * _UNITS[unit.upper()])
    else:
        raise ValueError("is not a size: use a number with K, M, G, T or P, e.g. 64G or 1.5T")
    if size <= 0:
        raise ValueError("must be larger than zero")
    return size


def parse_percent(value: object) -> float:
    """'10%' -> 10.0; between 0 and 100 (exclusive)."""
    if not isinstance(value, str) or not (match := _PERCENT_RE.match(value)):
        raise ValueError("is not a percentage such as 10%")
    percent = float(match.group(1))
    if not 0 <= percent < 100:
        raise ValueError("must be at least 0% and below 100%")
    return percent


_DURATION_RE = re.compile(r"^\s*(\d+)\s*([smhdw]?)\s*$")
# Public so that a caller bounding a duration's shape (the API's job allow-list) names
# the units from here.
DURATION_UNITS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


def parse_duration(value: object) -> int:
    """'7d' -> 604800 seconds.  A whole number and one unit: s, m, h, d or w (no unit:
    seconds); a plain non-negative integer is seconds."""
    if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
        return value
    match = _DURATION_RE.match(value) if isinstance(value, str) else None
    if not match:
        raise ValueError(
            "is not a duration: a whole number with s, m, h, d or w, e.g. 90m, 12h or 7d"
        )
    return int(match.group(1)) * DURATION_UNITS[match.group(2)]


def parse_size_or_percent(value: object) -> tuple[str, float]:
    """('percent', 10.0) or ('bytes', 1073741824.0)."""
    if isinstance(value, str) and value.strip().endswith("%"):
        return "percent", parse_percent(value)
    try:
        return "bytes", float(parse_size(value))
    except ValueError:
        raise ValueError("is neither a size (e.g. 50G) nor a percentage (e.g. 10%)") from None


# ggnet's time stamps (ggnet:state_at, ggnet:replicated_at, ggnet:created): ISO 8601 in
# UTC to the nanosecond, 2026-01-01T00:00:00.000000000Z.
_TIME_RE = re.compile(r"(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d)(?:\.(\d{1,9}))?Z", re.ASCII)


def iso_time(ns: int) -> str:
    """The time stamp of NS nanoseconds since the epoch."""
    seconds, fraction = divmod(ns, 10**9)
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds)) + f".{fraction:09d}Z"


def now_iso(clock_ns: Callable[[], int] = time.time_ns) -> str:
    """Now as a time stamp: the seconds and their fraction from one reading of the clock."""
    return iso_time(clock_ns())


def iso_seconds(value: object) -> float | None:
    """Seconds since the epoch of a time stamp, its fraction kept (to a float's
    precision); None for anything else (a property never set, or set by hand)."""
    match = _TIME_RE.fullmatch(value) if isinstance(value, str) else None
    if not match:
        return None
    try:
        whole = datetime.fromisoformat(match.group(1)).replace(tzinfo=UTC)
    except ValueError:  # the shape, but no date: month 13, 25 o'clock
        return None
    fraction = match.group(2) or "0"
    return whole.timestamp() + int(fraction) / 10 ** len(fraction)
