"""ggnet's notations of sizes, percentages and durations: their one parser each.

A leaf: the model, the settings checks and the rollout's knobs all read these, and it
reads nothing of ggnet, so none of them has to import another for a parser.
"""

from __future__ import annotations

import re

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
