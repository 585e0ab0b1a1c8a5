"""Run the benchmarks: `python -m bench [NAME ...]`.

Each bench/bench_<name>.py defines run() -> dict; the dict is written to
bench/results/<name>.json together with the time and the machine it ran on.  A bench
that needs something absent (netboot_lab: the converged lab) returns None instead."""

from __future__ import annotations

import importlib
import json
import platform
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results"


def available() -> list[str]:
    return sorted(p.stem.removeprefix("bench_") for p in HERE.glob("bench_*.py"))


def main(argv: list[str]) -> int:
    names = argv or available()
    unknown = sorted(set(names) - set(available()))
    if unknown:
        print(f"unknown benchmark(s): {', '.join(unknown)}; known: {', '.join(available())}")
        return 2
    RESULTS.mkdir(exist_ok=True)
    for name in names:
        print(f"==> bench {name}", flush=True)
        started = time.time()
        result = importlib.import_module(f"bench.bench_{name}").run()
        if result is None:  # the bench could not run here; its last results stay
            continue
        result["_meta"] = {
            "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(started)),
            "seconds": round(time.time() - started, 1),
            "machine": f"{platform.node()} {platform.machine()} python {platform.python_version()}",
        }
        out = RESULTS / f"{name}.json"
        out.write_text(json.dumps(result, indent=2, sort_keys=True) + "\n")
        print(f"    wrote {out.relative_to(HERE.parent)}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
