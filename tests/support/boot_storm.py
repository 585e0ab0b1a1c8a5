"""The pure parts of bench/bench_storm.py: a simulated PC's boot reads, and the
report's ratios to the single PC.

Here (ggnet_testing), not in bench/, so that the unit tier can import and check them
(tests/unit/test_boot_storm.py) without the bench's root, zfs-fuse, tgt and gunicorn."""

from __future__ import annotations

import random
from collections.abc import Mapping, Sequence

KIB = 1024
# An OS's boot reads: many small ones (metadata, DLLs' pages), some readahead-sized.
READ_SIZES_KIB = (4, 8, 16, 32, 64)
READ_WEIGHTS = (30, 15, 15, 15, 25)
# Share of reads at a new random place; the rest continue the previous read.
RANDOM_SHARE = 0.8


def boot_reads(rng: random.Random, disk_bytes: int, total_bytes: int) -> list[tuple[int, int]]:
    """(offset, length) of reads adding up to exactly total_bytes: lengths of 4-64 KiB
    (READ_SIZES_KIB, weighted), 4 KiB-aligned, inside the disk; RANDOM_SHARE of them at
    a random offset, the others right after the read before (a short sequential run)."""
    largest = max(READ_SIZES_KIB) * KIB
    if total_bytes % (4 * KIB) or total_bytes <= 0:
        raise ValueError(f"total_bytes: {total_bytes} is not a positive multiple of 4 KiB")
    if disk_bytes < largest:
        raise ValueError(f"disk_bytes: {disk_bytes} is smaller than one read ({largest})")
    out: list[tuple[int, int]] = []
    left, pos = total_bytes, -1
    while left:
        size = min(left, rng.choices(READ_SIZES_KIB, READ_WEIGHTS)[0] * KIB)
        if pos < 0 or rng.random() < RANDOM_SHARE or pos + size > disk_bytes:
            pos = rng.randrange(0, (disk_bytes - size) // (4 * KIB) + 1) * 4 * KIB
        out.append((pos, size))
        pos += size
        left -= size
    return out


# The figures of a round that get a ratio to the single PC's, and where they are.
RATIO_FIGURES = {
    "script_to_login_p50": ("script_to_login", "p50_ms"),
    "script_to_login_p99": ("script_to_login", "p99_ms"),
    "all_logged_in": ("all_logged_in_s",),
    "read_mib_s_total": ("read", "mib_s_total"),
    "read_mib_s_per_pc_p50": ("read", "mib_s_per_pc_p50"),
}


def _dig(round_: Mapping, path: Sequence[str]) -> float | None:
    value: object = round_
    for key in path:
        if not isinstance(value, Mapping) or key not in value:
            return None
        value = value[key]
    return float(value) if isinstance(value, int | float) else None


def ratios_to_first(rounds: Mapping[str, Mapping]) -> dict[str, dict[str, float | None]]:
    """Each round's RATIO_FIGURES divided by the same figure of the first round (N=1);
    None where either is missing or the first is 0.  Errors are counts, not ratios:
    they stay in each round."""
    names = list(rounds)
    if not names:
        return {}
    first = rounds[names[0]]
    out: dict[str, dict[str, float | None]] = {}
    for name in names:
        row: dict[str, float | None] = {}
        for figure, path in RATIO_FIGURES.items():
            base, value = _dig(first, path), _dig(rounds[name], path)
            row[figure] = round(value / base, 2) if base and value is not None else None
        out[name] = row
    return out
