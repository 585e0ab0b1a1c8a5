"""ggnet_testing/boot_storm.py (bench storm): a simulated PC's boot reads and the storm report's ratios."""

from __future__ import annotations

import itertools
import random

import pytest
from ggnet_testing.boot_storm import KIB, boot_reads, ratios_to_first

pytestmark = pytest.mark.unit
MIB = 1 << 20


def test_boot_reads_add_up_and_stay_inside_the_disk():
    reads = boot_reads(random.Random(3), 128 * MIB, 64 * MIB)
    assert sum(length for _, length in reads) == 64 * MIB
    assert all(4 * KIB <= length <= 64 * KIB and length % (4 * KIB) == 0 for _, length in reads)
    assert all(off % (4 * KIB) == 0 and off + length <= 128 * MIB for off, length in reads)
    # Mostly random: most reads do not start where the one before ended.
    jumps = sum(1 for a, b in itertools.pairwise(reads) if b[0] != a[0] + a[1])
    assert 0.6 < jumps / len(reads) < 0.95
    assert {length // KIB for _, length in reads} == {4, 8, 16, 32, 64}


def test_boot_reads_on_a_disk_of_one_read():
    reads = boot_reads(random.Random(1), 64 * KIB, 256 * KIB)
    assert all(off + length <= 64 * KIB for off, length in reads)


@pytest.mark.parametrize(
    "disk, total, message",
    [(128 * MIB, 5000, "not a positive multiple of 4 KiB"), (32 * KIB, 64 * KIB, "smaller")],
)
def test_boot_reads_refuses_what_cannot_be_read(disk, total, message):
    with pytest.raises(ValueError, match=message):
        boot_reads(random.Random(1), disk, total)


def test_ratios_are_to_the_first_round():
    rounds = {
        "1": {
            "script_to_login": {"p50_ms": 100.0, "p99_ms": 200.0},
            "all_logged_in_s": 0.5,
            "read": {"mib_s_total": 50.0, "mib_s_per_pc_p50": 50.0},
        },
        "10": {
            "script_to_login": {"p50_ms": 250.0, "p99_ms": 900.0},
            "all_logged_in_s": None,  # not every PC logged in
            "read": {"mib_s_total": 60.0, "mib_s_per_pc_p50": 6.0},
        },
    }
    out = ratios_to_first(rounds)
    assert out["1"] == dict.fromkeys(out["1"], 1.0)
    assert out["10"] == {
        "script_to_login_p50": 2.5,
        "script_to_login_p99": 4.5,
        "all_logged_in": None,
        "read_mib_s_total": 1.2,
        "read_mib_s_per_pc_p50": 0.12,
    }
