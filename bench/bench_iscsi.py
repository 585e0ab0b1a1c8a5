"""iSCSI benchmarks on a private tgtd in a network namespace.

1. Sequential read of a client's disk through its target, against the raw read of the
   backing file in the same run, both with qemu-io reading 1 MiB blocks in order (the
   same reader, so only the iSCSI path differs).  Goal: ratio >= 0.85.
2. A reconcile that changes nothing, for 5 and for 250 clients: the module's own
   converge() (one tgtadm show, the plan, the configuration compare) and the whole
   ansible-playbook run.  Goal: 250 / 5 <= 1.3.
"""

from __future__ import annotations

import importlib.util
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests" / "integration"))

from ggnet.iscsi import lun_number  # noqa: E402
from ggnet.net import initiator_iqn, target_iqn  # noqa: E402
from tgt_netns import PREFIX, run_module, tgt_in_netns  # noqa: E402

DISK_MIB = 512
BLOCK_MIB = 1
REPEATS = 3


def _module():
    import ggnet
    from ggnet import iscsi, iscsi_lio, iscsi_tgt, net

    for name, obj in {
        "": ggnet,
        ".iscsi": iscsi,
        ".iscsi_tgt": iscsi_tgt,
        ".iscsi_lio": iscsi_lio,
        ".net": net,
    }.items():
        sys.modules.setdefault(f"ansible.module_utils.ggnet{name}", obj)
    spec = importlib.util.spec_from_file_location(
        "ggnet_targets_bench", REPO / "modules" / "ggnet_targets.py"
    )
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _spec(tmp: Path, name: str, size: int) -> dict:
    path = tmp / f"{name}.img"
    with open(path, "wb") as fh:
        fh.truncate(size)
    return {
        "name": name,
        "target_iqn": target_iqn(name, PREFIX),
        "initiator_iqn": initiator_iqn(name, PREFIX),
        "luns": [{"path": str(path), "kind": "file"}],
        "chap_secret": "Bench-secret-1",
    }


def _reads() -> list[str]:
    out = []
    for i in range(DISK_MIB // BLOCK_MIB):
        out += ["-c", f"aio_read -q {i * BLOCK_MIB}M {BLOCK_MIB}M"]
    # aio_read returns at once, so the reads are all in flight together, as an OS's
    # readahead would have them; aio_flush waits for the last one.
    return [*out, "-c", "aio_flush"]


def _timed(argv: list[str]) -> float:
    started = time.perf_counter()
    proc = subprocess.run(
        argv, capture_output=True, text=True, check=False, env={**os.environ, "LC_ALL": "C"}
    )
    elapsed = time.perf_counter() - started
    if proc.returncode != 0 or "error" in proc.stdout.lower():
        raise RuntimeError(f"{argv[:6]}... failed: {proc.stdout}{proc.stderr}")
    return elapsed


def bench_sequential_read(tgt, tmp: Path, module) -> dict:
    pc = _spec(tmp, "bench-seq", 0)
    with open(pc["luns"][0]["path"], "wb") as fh:
        for _ in range(DISK_MIB):
            fh.write(os.urandom(1 << 20))
    params = {
        "backend": "tgt",
        "control_port": tgt.control_port,
        "netns": tgt.netns,
        "conf_path": str(tmp / "seq.conf"),
        "iqn_prefix": PREFIX,
        "targets": [pc],
        "force": False,
        "persist": True,
    }
    module.converge(params, check_mode=False)
    raw_argv = ["qemu-io", "-f", "raw", *_reads(), pc["luns"][0]["path"]]
    iscsi_argv = (
        tgt.qemu_io_argv(
            pc["initiator_iqn"],
            pc["target_iqn"],
            lun_number("tgt"),
            user=pc["initiator_iqn"],
            secret=pc["chap_secret"],
        )
        + _reads()
    )
    _timed(raw_argv)  # both readers then find the file in the page cache
    raw, net = [], []
    for _ in range(REPEATS):
        raw.append(DISK_MIB / _timed(raw_argv))
        net.append(DISK_MIB / _timed(iscsi_argv))
    raw_mib, net_mib = statistics.median(raw), statistics.median(net)
    return {
        "disk_mib": DISK_MIB,
        "block_mib": BLOCK_MIB,
        "raw_mib_s": round(raw_mib, 1),
        "iscsi_mib_s": round(net_mib, 1),
        "ratio": round(net_mib / raw_mib, 3),
        "goal": ">= 0.85",
        "reader": "qemu-io, 1 MiB sequential aio_reads all in flight, page-cache warm, median of 3",
    }


def bench_noop_reconcile(tgt, tmp: Path, module) -> dict:
    out: dict = {}
    for count in (5, 250):
        specs = [_spec(tmp, f"pc-{i:03}", 1 << 20) for i in range(count)]
        params = {
            "backend": "tgt",
            "control_port": tgt.control_port,
            "netns": tgt.netns,
            "conf_path": str(tmp / "noop.conf"),
            "iqn_prefix": PREFIX,
            "targets": specs,
            "force": False,
            "persist": True,
        }
        first = module.converge(params, check_mode=False)
        assert first["changed"], "the first converge should create the targets"
        in_process = []
        for _ in range(REPEATS):
            started = time.perf_counter()
            again = module.converge(params, check_mode=False)
            in_process.append(time.perf_counter() - started)
            assert not again["changed"], again["actions"][:3]
        playbook = []
        for _ in range(REPEATS):
            started = time.perf_counter()
            result, _ = run_module(params, workdir=tmp)
            playbook.append(time.perf_counter() - started)
            assert not result["changed"] and not result.get("failed"), result.get("msg")
        out[str(count)] = {
            "module_s": round(statistics.median(in_process), 4),
            "playbook_s": round(statistics.median(playbook), 3),
        }
    out["ratio_module"] = round(out["250"]["module_s"] / out["5"]["module_s"], 2)
    out["ratio_playbook"] = round(out["250"]["playbook_s"] / out["5"]["playbook_s"], 2)
    out["goal"] = "250/5 <= 1.3"
    return out


def run() -> dict:
    module = _module()
    with tempfile.TemporaryDirectory(prefix="ggnet-bench-iscsi-") as d:
        tmp = Path(d)
        with tgt_in_netns(tmp) as tgt:
            seq = bench_sequential_read(tgt, tmp, module)
        with tgt_in_netns(tmp) as tgt:
            noop = bench_noop_reconcile(tgt, tmp, module)
    return {"sequential_read": seq, "noop_reconcile": noop}


if __name__ == "__main__":
    print(run())
