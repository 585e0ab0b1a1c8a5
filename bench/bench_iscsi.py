"""iSCSI benchmarks on a private tgtd in a network namespace.

1. Sequential read of a client's disk through its target, against the raw read of the
   backing file in the same run, each pair with the same reader reading 1 MiB blocks
   in order (so only the iSCSI path differs).  Goal: ratio >= 0.85.  Hot cache (the
   headline, qemu-io as before) and cold cache (as a PC's first boot), each also with
   a lean reader (qemu-img bench, buffers allocated once); the headline tgtd runs as
   tgt.service starts it with ggnet's drop-in (malloc tunables); also measured: tgtd
   without them, a target left at tgt's default login keys; CPU seconds of the reader
   and of tgtd, tgtd's page faults.  Hot, also the bound for any target behind TCP
   (bench/tcp_ceiling.py: a sendfile() sender, no protocol) and tgt's share of it.
2. A reconcile that changes nothing, for 5 and for 250 clients: the engine's part of
   ggnet_targets' run (one tgtadm show, the plan, the configuration compare) in this
   process, and the whole ansible-playbook run.  Goal: 250 / 5 <= 1.3.
"""

from __future__ import annotations

import json
import os
import re
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from ggnet.iscsi import MASK, lun_number
from ggnet.iscsi_converge import converge, with_defaults
from ggnet.net import initiator_iqn, target_iqn
from ggnet_testing.playbook import run_module
from ggnet_testing.tgt_netns import ENV_C, PREFIX, nsexec, tgt_in_netns

from bench.tcp_ceiling import warm

DISK_MIB = 512
BLOCK_MIB = 1
REPEATS = 3
SEQ_REPEATS = 5
BENCH_DEPTH = 16  # qemu-img bench: requests in flight
# glibc serves tgtd's per-command data buffers (1 MiB here) with a fresh mmap each
# time, so every page of every read is faulted in again; these keep them on the heap.
# tgt.service gets them from ggnet_iscsi's drop-in: the headline tgtd runs with them.
MALLOC_TUNABLES = {
    "MALLOC_MMAP_THRESHOLD_": str(512 << 20),
    "MALLOC_TRIM_THRESHOLD_": str(512 << 20),
}


def _params(tgt, **given) -> dict:
    """ggnet_targets' parameters for the targets on TGT, as a playbook gives them."""
    return {
        "backend": "tgt",
        "iqn_prefix": PREFIX,
        "control_port": tgt.control_port,
        "netns": tgt.netns,
        **given,
    }


def _converge(params: dict, workdir: Path) -> dict:
    """ggnet_targets through ansible-playbook, as a converge runs it; fails loudly."""
    result, _ = run_module("ggnet_targets", params, workdir)
    if result.get("failed"):
        raise RuntimeError(f"ggnet_targets failed: {result.get('msg')}")
    return result


def _reconcile_in_process(params: dict) -> bool:
    """The engine's part of ggnet_targets' run for PARAMS in check mode: read tgtd, plan,
    compare the saved configuration.  True when anything would change."""
    return converge(with_defaults(params), check_mode=True)["changed"]


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


def _reads(disk_mib: int = DISK_MIB) -> list[str]:
    out = []
    for i in range(disk_mib // BLOCK_MIB):
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


def _proc_stat(pid: int) -> tuple[float, int]:
    """CPU seconds (all threads) and minor page faults of a process so far."""
    with open(f"/proc/{pid}/stat") as fh:
        fields = fh.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK"), int(fields[7])


def _measured(argv: list[str], tgtd_pid: int | None) -> dict:
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = _proc_stat(tgtd_pid) if tgtd_pid else (0.0, 0)
    elapsed = _timed(argv)
    t1 = _proc_stat(tgtd_pid) if tgtd_pid else (0.0, 0)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return {
        "mib_s": DISK_MIB / elapsed,
        "reader_cpu_s": (after.ru_utime + after.ru_stime) - (before.ru_utime + before.ru_stime),
        "tgtd_cpu_s": t1[0] - t0[0],
        "tgtd_faults": t1[1] - t0[1],
    }


def _same_bytes(pc: dict, iscsi_argv: list[str]) -> None:
    """qemu-img compare reads every byte through the target against the file."""
    at = iscsi_argv.index("qemu-io")
    opts = iscsi_argv[at + 1 : iscsi_argv.index("-c")]  # [--object secret,...] --image-opts X
    raw = f"driver=raw,file.driver=file,file.filename={pc['luns'][0]['path']}"
    argv = [*iscsi_argv[:at], "qemu-img", "compare", *opts[:-1], raw, opts[-1]]
    proc = subprocess.run(argv, capture_output=True, text=True, check=False)
    if proc.returncode != 0 or "Images are identical" not in proc.stdout:
        raise RuntimeError(f"the target does not read back the file: {proc.stdout}{proc.stderr}")


def _login_keys(tgt, tid: int) -> dict:
    from ggnet.iscsi import SESSION_PARAMS
    from ggnet.iscsi_tgt_admin import parse_params

    shown = tgt.tgtadm("--op", "show", "--mode", "target", "--tid", str(tid)).stdout
    keys = parse_params(f"Target {tid}:\n{shown}")[tid]
    return {k: keys.get(k) for k in SESSION_PARAMS}


def _summary(runs: list[dict], raws: list[dict]) -> dict:
    med = statistics.median
    out = {
        "mib_s": round(med(r["mib_s"] for r in runs), 1),
        "ratio": round(med(r["mib_s"] for r in runs) / med(r["mib_s"] for r in raws), 3),
        # Each run against the raw read just before it: less sensitive to load that
        # other work on the machine puts on and takes off between runs.
        "ratio_paired_median": round(
            med(r["mib_s"] / w["mib_s"] for r, w in zip(runs, raws, strict=True)), 3
        ),
        "reader_cpu_s": round(med(r["reader_cpu_s"] for r in runs), 3),
        "runs_mib_s": [round(r["mib_s"]) for r in runs],
    }
    if any(r["tgtd_cpu_s"] or r["tgtd_faults"] for r in runs):
        out["tgtd_cpu_s"] = round(med(r["tgtd_cpu_s"] for r in runs), 3)
        out["tgtd_minor_faults"] = int(med(r["tgtd_faults"] for r in runs))
    return out


def _resident(path: str) -> float:
    """The share of the file in the page cache now (util-linux fincore)."""
    out = subprocess.run(
        ["fincore", "-n", "-b", "-o", "RES", path], capture_output=True, text=True, check=True
    ).stdout
    return int(out.split()[0]) / os.path.getsize(path)


def _drop(path: str) -> None:
    with open(path, "rb") as fh:
        os.fsync(fh.fileno())
        os.posix_fadvise(fh.fileno(), 0, 0, os.POSIX_FADV_DONTNEED)


def _bench_argv(
    target: str | None = None, path: str | None = None, disk_mib: int = DISK_MIB
) -> list[str]:
    """qemu-img bench: the same sequential reads with buffers allocated once."""
    n = disk_mib // BLOCK_MIB
    argv = ["qemu-img", "bench", "-c", str(n), "-d", str(BENCH_DEPTH)]
    argv += ["-s", f"{BLOCK_MIB}M", "-S", f"{BLOCK_MIB}M"]
    return [*argv, "-f", "raw", path] if path else [*argv, "--image-opts", target]


def _bench_run(argv: list[str], secret: str | None) -> float:
    """MiB/s as qemu-img bench times its own reads (no start-up, no login)."""
    proc = subprocess.run(argv, capture_output=True, text=True, check=False, env=ENV_C)
    m = re.search(r"Run completed in ([0-9.]+) seconds", proc.stdout)
    if proc.returncode != 0 or not m:
        err = f"{proc.stdout}{proc.stderr}"
        raise RuntimeError(f"qemu-img bench failed: {err.replace(secret, MASK) if secret else err}")
    return DISK_MIB / float(m.group(1))


def _pairs(cases: dict, cache: str, path: str) -> dict[str, list[dict]]:
    """SEQ_REPEATS rounds, each case once per round; the file hot or cold before each."""
    runs: dict[str, list[dict]] = {name: [] for name in cases}
    for _ in range(SEQ_REPEATS):
        for name, (kind, argv, pid, secret) in cases.items():
            if cache == "hot":
                warm(path)  # this machine's DAMON reclaim pages out idle page cache
            else:
                _drop(path)
            resident = _resident(path)
            if kind == "qemu-io":
                run = _measured(argv, pid)
            else:
                t0 = _proc_stat(pid) if pid else (0.0, 0)
                run = {"mib_s": _bench_run(argv, secret), "reader_cpu_s": 0.0}
                t1 = _proc_stat(pid) if pid else (0.0, 0)
                run.update(tgtd_cpu_s=t1[0] - t0[0], tgtd_faults=t1[1] - t0[1])
            run["resident"] = resident
            runs[name].append(run)
    return runs


def _section(runs: dict[str, list[dict]], headline: str) -> dict:
    raws = runs["raw"]
    out = {
        "raw_mib_s": round(statistics.median(r["mib_s"] for r in raws), 1),
        "raw_runs_mib_s": [round(r["mib_s"]) for r in raws],
        "page_cache_before_runs": [
            round(min(r["resident"] for r in raws), 3),
            round(max(r["resident"] for rs in runs.values() for r in rs), 3),
        ],
    }
    for name, summary in ((n, _summary(r, raws)) for n, r in runs.items() if n != "raw"):
        if name == headline:
            out["iscsi_mib_s"] = summary.pop("mib_s")
            out["ratio"] = summary.pop("ratio")
            out["iscsi"] = summary
        else:
            out[name] = summary
    return out


def bench_sequential_read(tgt, tmp: Path, shipped_tgt) -> dict:
    """tgt is tgtd as it ran before (no malloc tunables), shipped_tgt as tgt.service
    now starts it (MALLOC_TUNABLES); both hold the same targets."""
    pc = _spec(tmp, "bench-seq", 0)
    path = pc["luns"][0]["path"]
    with open(path, "wb") as fh:
        for _ in range(DISK_MIB):
            fh.write(os.urandom(1 << 20))
    lun = lun_number("tgt")
    old = {**pc, "target_iqn": target_iqn("bench-seq-tgt-defaults", PREFIX)}
    for t in (tgt, shipped_tgt):
        _converge(_params(t, targets=[pc], persist=False), tmp)
    # The same disk behind a target left at tgt's own login keys, for comparison.
    t = shipped_tgt
    t.tgtadm("--op", "new", "--mode", "target", "--tid", "9", "--targetname", old["target_iqn"])
    t.tgtadm(
        "--op", "new", "--mode", "logicalunit", "--tid", "9", "--lun", str(lun),
        "--backing-store", path, "--bstype", "rdwr",
    )  # fmt: skip
    t.tgtadm(
        "--op", "bind", "--mode", "target", "--tid", "9", "--initiator-name", pc["initiator_iqn"]
    )
    # The same CHAP account (made by the converge above), so both logins are alike.
    t.tgtadm("--op", "bind", "--mode", "account", "--tid", "9", "--user", pc["initiator_iqn"])

    def via(t, spec):
        user, secret = spec["initiator_iqn"], spec["chap_secret"]
        return t.qemu_io_argv(user, spec["target_iqn"], lun, user=user, secret=secret)

    def bench_via(t, spec):
        user = spec["initiator_iqn"]
        opts = (
            f"driver=raw,file.driver=iscsi,file.transport=tcp,file.portal={t.portal}:3260,"
            f"file.target={spec['target_iqn']},file.lun={lun},file.initiator-name={user},"
            # qemu-img bench takes no --object secret: the bench's throwaway secret goes
            # inline and is masked in any error.
            f"file.user={user},file.password={spec['chap_secret']}"
        )
        return (
            "bench",
            nsexec(t.netns, *_bench_argv(target=opts)),
            t.proc.pid,
            spec["chap_secret"],
        )

    qemu_io = {
        "raw": ("qemu-io", ["qemu-io", "-f", "raw", *_reads(), path], None, None),
        "iscsi": ("qemu-io", via(shipped_tgt, pc) + _reads(), shipped_tgt.proc.pid, None),
        "iscsi_without_malloc_tunables": ("qemu-io", via(tgt, pc) + _reads(), tgt.proc.pid, None),
        "iscsi_tgt_default_keys": (
            "qemu-io", via(shipped_tgt, old) + _reads(), shipped_tgt.proc.pid, None,
        ),
    }  # fmt: skip
    lean = {
        "raw": ("bench", _bench_argv(path=path), None, None),
        "iscsi": bench_via(shipped_tgt, pc),
        "iscsi_without_malloc_tunables": bench_via(tgt, pc),
    }
    for name, (_, argv, _, _) in qemu_io.items():
        if name != "raw":
            _same_bytes(pc, argv)
    warm(path)
    load_before = os.getloadavg()
    hot = _section(_pairs(qemu_io, "hot", path), "iscsi")
    hot_lean = _section(_pairs(lean, "hot", path), "iscsi")
    ceiling = _tcp_ceiling(shipped_tgt.netns, path, hot_lean["iscsi_mib_s"])
    cold_lean = _section(_pairs(lean, "cold", path), "iscsi")
    cold = _section(_pairs({k: qemu_io[k] for k in ("raw", "iscsi")}, "cold", path), "iscsi")
    out = {
        "disk_mib": DISK_MIB,
        "block_mib": BLOCK_MIB,
        "goal": ">= 0.85",
        "repeats": SEQ_REPEATS,
        "load_average_1m": [round(load_before[0], 2), round(os.getloadavg()[0], 2)],
        "lab_busy": os.path.exists("/tmp/ggnet-lab-busy"),
        "cpus": os.cpu_count(),
        "tgtd_env": dict(MALLOC_TUNABLES),
        "reader": (
            f"qemu-io ({_qemu_version()}): {DISK_MIB} aio_read commands of {BLOCK_MIB} MiB "
            "in disk order, all submitted at once, then aio_flush; each aio_read allocates "
            "and pattern-fills a fresh buffer, the same on both sides; raw: `qemu-io -f raw "
            "<file>` (file driver, aio=threads, host page cache); iSCSI: qemu-io's libiscsi "
            "driver, CHAP login over the netns loopback to a private tgtd (`tgtd -f`, as "
            "tgt.service starts it, with tgtd_env; bs-type rdwr, so tgtd reads the same "
            "page cache); timed as a whole process; before timing, qemu-img compare read "
            "every byte through each target against the file"
        ),
        "lean_reader": (
            f"qemu-img bench -c {DISK_MIB // BLOCK_MIB} -d {BENCH_DEPTH} -s {BLOCK_MIB}M "
            f"-S {BLOCK_MIB}M: the same reads, {BENCH_DEPTH} in flight, buffers allocated "
            "once, timed by qemu-img itself (no start-up, no login); raw with -f raw on "
            "the file, iSCSI through the same targets"
        ),
        "cache": (
            "hot: the file read whole right before every run (this machine's DAMON "
            "reclaim pages out page cache idle for ~30 s); cold: dropped with "
            "posix_fadvise(DONTNEED) right before every run, as on a PC's first boot; "
            "page_cache_before_runs = [lowest raw, highest any] share of the file cached "
            "when a run started"
        ),
        "hot": hot,
        "hot_lean_reader": hot_lean,
        "hot_tcp_ceiling": ceiling,
        "cold": cold,
        "cold_lean_reader": cold_lean,
        "ratio": hot["ratio"],
        "ratio_hot_lean_reader": hot_lean["ratio"],
        "ratio_cold": cold["ratio"],
        "ratio_cold_lean_reader": cold_lean["ratio"],
        "login_keys": _login_keys(shipped_tgt, 1),
    }
    out["hot"]["iscsi_tgt_default_keys"]["login_keys"] = _login_keys(shipped_tgt, 9)
    return out


def _tcp_ceiling(netns: str, path: str, iscsi_lean_mib_s: float) -> dict:
    """The hot read's bound for any target behind TCP (bench/tcp_ceiling.py), in the
    same network namespace as tgtd, and the lean iSCSI read's share of it."""
    script = Path(__file__).with_name("tcp_ceiling.py")
    argv = nsexec(netns, sys.executable, str(script), path, str(SEQ_REPEATS))
    runs = json.loads(subprocess.run(argv, capture_output=True, text=True, check=True).stdout)
    raw, tcp = (statistics.median(runs[k]) for k in ("raw", "tcp"))
    return {
        "reader": (
            "one Python process, one reused 1 MiB buffer: raw = readinto from the file; "
            "tcp = recv_into from a loopback socket whose sender sendfile()s the file "
            "(no copy on the sending side, no protocol): the cheapest possible target"
        ),
        "raw_mib_s": round(raw, 1),
        "tcp_mib_s": round(tcp, 1),
        "raw_runs_mib_s": [round(x) for x in runs["raw"]],
        "tcp_runs_mib_s": [round(x) for x in runs["tcp"]],
        "ratio": round(tcp / raw, 3),
        "ratio_paired_median": round(
            statistics.median(t / r for t, r in zip(runs["tcp"], runs["raw"], strict=True)), 3
        ),
        # How close tgt comes to that bound: the lean reader through the target over
        # the bare socket, both reading the same hot bytes in the same namespace.
        "iscsi_lean_share_of_tcp": round(iscsi_lean_mib_s / tcp, 3),
    }


def _qemu_version() -> str:
    out = subprocess.run(["qemu-io", "--version"], capture_output=True, text=True).stdout
    return out.split("\n", 1)[0].strip()


def bench_noop_reconcile(tgt, tmp: Path) -> dict:
    out: dict = {}
    for count in (5, 250):
        specs = [_spec(tmp, f"pc-{i:03}", 1 << 20) for i in range(count)]
        params = _params(tgt, targets=specs, conf_path=str(tmp / "noop.conf"))
        first = _converge(params, tmp)
        assert first["changed"], "the first converge should create the targets"
        in_process = []
        for _ in range(REPEATS):
            started = time.perf_counter()
            changes = _reconcile_in_process(params)
            in_process.append(time.perf_counter() - started)
            assert not changes, "a second reconcile should change nothing"
        playbook = []
        for _ in range(REPEATS):
            started = time.perf_counter()
            result, _ = run_module("ggnet_targets", params, tmp)
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
    with tempfile.TemporaryDirectory(prefix="ggnet-bench-iscsi-") as d:
        tmp = Path(d)
        with tgt_in_netns(tmp) as tgt, tgt_in_netns(tmp, env=MALLOC_TUNABLES) as shipped:
            seq = bench_sequential_read(tgt, tmp, shipped)
        with tgt_in_netns(tmp) as tgt:
            noop = bench_noop_reconcile(tgt, tmp)
    return {"sequential_read": seq, "noop_reconcile": noop}


if __name__ == "__main__":
    print(run())
