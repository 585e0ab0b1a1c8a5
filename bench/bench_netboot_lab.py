"""The lab's boots, timed: the converged boot-server VM (LIO, zfs-fuse, the real API
and its writeback reset) and the three lab PCs, each booted RUNS times to the marker.

Per PC: seconds from power-on to each boot stage (ggnet_lab.stages), and the boot
server's share of the span from the script request to the iSCSI login
(ggnet_lab.server_time): the script's answer, the writeback reset included, plus the
target's answer to the login.  The PC's own part of that span (iPXE under TCG) is
reported beside it, not counted.  Goal: the server's share <= 150 ms.

The boot server is itself a TCG-emulated VM here, so its figures are an upper bound
for the same work on real hardware.  Needs the lab up and converged (`make demo`); it
is skipped, leaving the last results in place, when it is not.
"""

from __future__ import annotations

import shlex
import statistics
import subprocess
import time

from bench.stats import percentile
from ggnet_lab import client, netns, server_time, vm

RUNS = 3
GOAL_SERVER_MS = 150
API_HEALTH = "http://10.213.0.10:8080/health"


def _lab_ready() -> str | None:
    if not netns.exists():
        return "the lab is not up"
    probe = subprocess.run(
        netns.nsenter("curl", "-sf", "-o", "/dev/null", "--max-time", "5", API_HEALTH),
        capture_output=True,
    )
    return None if probe.returncode == 0 else f"the lab's API does not answer {API_HEALTH}"


# The floor inside the VM: what the same rollback costs there with nothing around it.
FLOOR = """
import statistics, subprocess, sys, time
ds = sys.argv[1]
took = []
for _ in range(5):
    t = time.perf_counter()
    subprocess.run(["zfs", "rollback", "-r", ds + "@ggnet-base"], check=True)
    took.append((time.perf_counter() - t) * 1000)
print(round(statistics.median(took), 1))
"""


def _vm_rollback_ms(client: str) -> float:
    dataset = f"ggpool/writebacks/{client}/system"
    done = vm.ssh("python3", "-c", shlex.quote(FLOOR), dataset, timeout=120)
    if done.returncode != 0:
        raise RuntimeError(f"timing a rollback in the VM failed: {done.stderr.strip()}")
    return float(done.stdout.strip())


def run() -> dict | None:
    why = _lab_ready()
    if why:
        print(f"    skipped: {why}; bring it up and converge it with `make demo` first")
        return None
    pcs = client.lab_pcs()
    floor_ms = _vm_rollback_ms(next(iter(pcs)))
    per_pc: dict[str, dict] = {}
    for name, pc in pcs.items():
        runs = []
        for i in range(RUNS):
            result = client.boot(pc, until="marker", timeout=240, progress=lambda _m: None)
            time.sleep(0.3)  # the capture's last packets
            if not result.reached:
                raise RuntimeError(client.format_summary(result))
            stages = {s: round(t, 2) for s, t, _ in result.clock.summary() if t is not None}
            measured = server_time.from_capture(result.files.capture, pc.mac)
            runs.append({"stages_s": stages, **(measured.as_dict() if measured else {})})
            print(f"    {name} run {i + 1}: marker {stages.get('marker')} s, "
                  f"server {measured.server_ms if measured else '?'} ms")  # fmt: skip
        per_pc[name] = {"firmware": pc.firmware, "runs": runs}
    server = [r["server_ms"] for p in per_pc.values() for r in p["runs"] if "server_ms" in r]
    scripts = [r["script_ms"] for p in per_pc.values() for r in p["runs"] if "script_ms" in r]
    return {
        "what": __doc__.split("\n\n")[1].replace("\n", " "),
        "boot_server": f"lab VM {vm.NAME} (qemu TCG), LIO, zfs-fuse, disk_format=file",
        "runs_per_pc": RUNS,
        "pcs": per_pc,
        "server_ms": {
            "goal": GOAL_SERVER_MS,
            "median": statistics.median(server) if server else None,
            "p90": percentile(server, 90) if server else None,
            "max": max(server) if server else None,
            "goal_met": bool(server) and max(server) <= GOAL_SERVER_MS,
        },
        "script_ms_median": statistics.median(scripts) if scripts else None,
        "vm_bare_rollback_ms_median": floor_ms,
        "vm_bare_rollback": "`zfs rollback -r` of a PC's writeback in the VM, alone, median "
        "of 5: the floor of the reset there (on this machine it is ~56 ms, bench storage)",
    }
