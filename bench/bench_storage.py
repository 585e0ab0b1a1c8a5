"""Storage benchmarks on a real zfs-fuse pool (started here if none runs).

- reconcile: a no-change converge_writebacks for 5 and for 250 clients; goal: the
  250-client run costs at most 1.3x the 5-client run (one `zfs get -r`, no per-client
  subprocess).
- reset: the boot path's reset of one written-to writeback; goal: p99 under 100 ms.
"""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "tests" / "integration"))

from ggnet import layout, storage  # noqa: E402
from zfs_pool import destroy_pool, make_pool, storage_cfg  # noqa: E402

IMAGES = {"os": {"size": "64M", "kind": "system"}}
ROUNDS = 30
RESETS = 200


def _clients(n):
    return [
        {"name": f"pc-{i:03d}", "image": "os", "keep_writeback": False, "target_iqn": f"iqn.b:{i}"}
        for i in range(n)
    ]


def _timed(fn, rounds):
    samples = []
    for _ in range(rounds):
        start = time.perf_counter()
        fn()
        samples.append(time.perf_counter() - start)
    return samples


def _pct(samples, q):
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, round(q / 100 * (len(ordered) - 1)))]


def _ms(x):
    return round(x * 1000, 2)


def _zfs_running():
    return subprocess.run(["zpool", "list"], capture_output=True).returncode == 0


def run() -> dict:
    started_daemon = None
    if not _zfs_running():
        Path("/var/run/zfs").mkdir(parents=True, exist_ok=True)
        pidfile = Path(tempfile.mkdtemp()) / "zfs-fuse.pid"
        subprocess.run(["zfs-fuse", "--no-kstat-mount", "-p", str(pidfile)], check=True)
        while not _zfs_running():
            time.sleep(0.1)
        started_daemon = int(pidfile.read_text())
    base = Path(tempfile.mkdtemp(prefix="ggnet-bench-"))
    pool = make_pool(base, "2G")
    try:
        cfg = storage_cfg(pool)
        storage.converge_images(cfg, IMAGES, check=False)
        out = {}
        for n in (5, 250):
            clients = _clients(n)
            t0 = time.perf_counter()
            storage.converge_writebacks(cfg, IMAGES, clients, check=False, sessions={})
            create_s = time.perf_counter() - t0

            def noop(clients=clients):
                r = storage.converge_writebacks(cfg, IMAGES, clients, check=False, sessions={})
                assert not r.changed

            samples = _timed(noop, ROUNDS)
            out[f"reconcile_{n}"] = {
                "clients": n,
                "create_all_s": round(create_s, 2),
                "noop_median_ms": _ms(statistics.median(samples)),
                "noop_p95_ms": _ms(_pct(samples, 95)),
            }
        ratio = out["reconcile_250"]["noop_median_ms"] / out["reconcile_5"]["noop_median_ms"]
        out["reconcile_ratio_250_vs_5"] = round(ratio, 2)
        out["reconcile_goal_met"] = ratio <= 1.3

        clients = _clients(250)
        path = layout.writeback_backing(cfg, "pc-007", "system")[0]
        samples = []
        for i in range(RESETS):
            with open(path, "r+b") as f:
                f.seek((i % 64) << 20)
                f.write(os.urandom(4096))
            start = time.perf_counter()
            r = storage.reset(cfg, IMAGES, clients, "pc-007", boot=True)
            samples.append(time.perf_counter() - start)
            assert r.changed
        out["reset"] = {
            "resets": RESETS,
            "median_ms": _ms(statistics.median(samples)),
            "p95_ms": _ms(_pct(samples, 95)),
            "p99_ms": _ms(_pct(samples, 99)),
            "max_ms": _ms(max(samples)),
            "goal_p99_ms": 100,
            "goal_met": _pct(samples, 99) < 0.1,
        }
        out["backend"] = "zfs-fuse, pool on a sparse file, disk_format=file"
        return out
    finally:
        destroy_pool(pool)
        if started_daemon:
            os.kill(started_daemon, 15)


if __name__ == "__main__":
    import json

    print(json.dumps(run(), indent=2))
