"""Sequential read through LIO, ggnet's default backend, in the lab's boot-server VM.

A client's disk (a file of random data) is read through a target that ggnet_targets
makes (backend lio, CHAP, run through Ansible as a converge runs it), against the raw
read of the backing file: in the same VM, the same run, with the same reader and the
same reads as bench_iscsi (qemu-io's 1 MiB aio_reads; qemu-img bench as the lean
reader), each iSCSI run right after a raw one.  The initiator is the VM's own qemu-io
on the VM's portal 127.0.0.1, so no traffic leaves the VM.  Goal: iSCSI / raw >= 0.85.

The VM is qemu under TCG: reader, target and TCP stack all run on its emulated CPUs,
so absolute figures are far below real hardware; the ratio is what carries over.
Needs the lab up (`ggnet lab up`); skipped, leaving the last results, when it is not.
"""

from __future__ import annotations

import json
import os
import secrets
import shlex
import statistics
import subprocess
import tempfile
from pathlib import Path

from ggnet.iscsi import MASK, SESSION_PARAMS, lun_number
from ggnet.net import initiator_iqn, target_iqn
from ggnet_testing.playbook import run_on_lab

from bench import bench_iscsi
from ggnet_lab import leases, netns, vm

# TCG reads ~10x slower than the host: 128 MiB keeps each run to a few seconds.
DISK_MIB = 128
ROUNDS = 5
# Its own prefix: converging it (and emptying it afterwards) never touches the
# targets a lab converge made under ggnet's.
PREFIX = "iqn.2025-01.lan.ggnet-bench"
NAME = "seq"
WORK = "/var/tmp/ggnet-iscsi-bench"
DISK = f"{WORK}/disk.img"
SECRET_FILE = f"{WORK}/chap.secret"
# The lab image has qemu-utils but not qemu-block-extra, so its qemu-io has no iSCSI
# driver.  The host runs the very same qemu build: its block-iscsi.so loads in the VM
# from a module dir under WORK (QEMU_MODULE_DIR), and the VM's own files stay as they are.
HOST_ISCSI_MODULE = Path("/usr/lib/x86_64-linux-gnu/qemu/block-iscsi.so")
MODULES = f"{WORK}/qemu-modules"

# Runs in the VM (its python3) so that ssh's latency is not timed: the cases in
# rounds, the file made hot or cold right before each run, each reader timed as a
# whole process (qemu-img bench: as it times its own reads) with its CPU seconds and
# the whole VM's (LIO works in kernel threads, so no process of its own to account).
RUNNER = r"""
import json, os, re, resource, subprocess, sys, time
job = json.load(sys.stdin)
path, mib = job["path"], job["disk_mib"]

def busy():
    with open("/proc/stat") as fh:
        f = [int(x) for x in fh.readline().split()[1:]]
    return (sum(f) - f[3] - f[4]) / os.sysconf("SC_CLK_TCK")  # all but idle, iowait

def prepare(cache):
    with open(path, "rb") as fh:
        if cache == "hot":
            while fh.read(8 << 20):
                pass
        else:
            os.fsync(fh.fileno())
            os.posix_fadvise(fh.fileno(), 0, 0, os.POSIX_FADV_DONTNEED)

def resident():
    out = subprocess.run(["fincore", "-n", "-b", "-o", "RES", path],
                         capture_output=True, text=True, check=True).stdout
    return int(out.split()[0]) / os.path.getsize(path)

def cpu(r):
    return r.ru_utime + r.ru_stime

def one(kind, argv):
    r0, b0, t0 = resource.getrusage(resource.RUSAGE_CHILDREN), busy(), time.perf_counter()
    env = {**os.environ, "LC_ALL": "C", "QEMU_MODULE_DIR": job["modules"]}
    p = subprocess.run(argv, capture_output=True, text=True, env=env)
    took = time.perf_counter() - t0
    b1, r1 = busy(), resource.getrusage(resource.RUSAGE_CHILDREN)
    if kind == "bench":
        m = re.search(r"Run completed in ([0-9.]+) seconds", p.stdout)
        took = float(m.group(1)) if m else None
    if p.returncode or took is None or "error" in p.stdout.lower():
        sys.exit(f"{argv[0]} failed: {p.stdout}{p.stderr}")
    return {"mib_s": mib / took, "reader_cpu_s": cpu(r1) - cpu(r0), "vm_cpu_s": b1 - b0}

load = os.getloadavg()[0]
runs = {name: [] for name in job["cases"]}
for _ in range(job["rounds"]):
    for name, (kind, argv) in job["cases"].items():
        prepare(job["cache"])
        cached = resident()
        runs[name].append({**one(kind, argv), "resident": cached})
print(json.dumps({"runs": runs, "load": [load, os.getloadavg()[0]]}))
"""


def _vm(command: str, stdin: str | None = None, secret: str = "", timeout: float = 900) -> str:
    proc = subprocess.run(
        vm.ssh_argv(command), input=stdin, capture_output=True, text=True, timeout=timeout
    )
    if proc.returncode != 0:
        err = f"{proc.stdout}{proc.stderr}".strip()
        raise RuntimeError(f"in {vm.NAME}: {err.replace(secret, MASK) if secret else err}")
    return proc.stdout


def _qemu_version(*ssh: str) -> str:
    argv = [*ssh, "qemu-io", "--version"]
    return subprocess.run(argv, capture_output=True, text=True).stdout.split("\n", 1)[0]


def _lab_ready() -> str | None:
    if not netns.exists():
        return "the lab is not up"
    if not vm.ssh_ok():
        return f"{vm.NAME} does not answer ssh"
    here, there = _qemu_version(), _qemu_version(*vm.ssh_argv())
    if here != there or not HOST_ISCSI_MODULE.is_file():
        return f"no qemu iSCSI driver for the VM's {there!r} (host: {here!r}, {HOST_ISCSI_MODULE})"
    return None


def _readers(spec: dict, secret: str) -> tuple[dict, dict, str]:
    """bench_iscsi's reads for DISK_MIB: qemu-io cases, qemu-img bench cases, and the
    iSCSI image options for qemu-img compare."""
    user, lun = spec["initiator_iqn"], lun_number("lio")
    iscsi = (
        f"driver=iscsi,transport=tcp,portal=127.0.0.1:3260,target={spec['target_iqn']},"
        f"lun={lun},initiator-name={user},user={user}"
    )
    # The secret through a 0600 file for qemu-io; qemu-img bench takes no --object, so
    # there (inside the VM only) it goes inline, as in bench_iscsi.
    qemu_io = ["qemu-io", "--object", f"secret,id=chap,file={SECRET_FILE}", "--image-opts"]
    lean = "driver=raw," + ",".join(f"file.{kv}" for kv in iscsi.split(","))
    reads = bench_iscsi._reads(DISK_MIB)
    cases = {
        "raw": ("qemu-io", ["qemu-io", "-f", "raw", *reads, DISK]),
        "iscsi": ("qemu-io", [*qemu_io, f"{iscsi},password-secret=chap", *reads]),
    }
    lean_cases = {
        "raw": ("bench", bench_iscsi._bench_argv(path=DISK, disk_mib=DISK_MIB)),
        "iscsi": (
            "bench",
            bench_iscsi._bench_argv(target=f"{lean},file.password={secret}", disk_mib=DISK_MIB),
        ),
    }
    return cases, lean_cases, f"{iscsi},password-secret=chap"


def _pairs(cases: dict, cache: str, secret: str) -> tuple[dict, list]:
    job = {
        "path": DISK,
        "modules": MODULES,
        "disk_mib": DISK_MIB,
        "rounds": ROUNDS,
        "cache": cache,
        "cases": cases,
    }
    out = json.loads(_vm(f"python3 -c {shlex.quote(RUNNER)}", json.dumps(job), secret))
    for runs in out["runs"].values():
        for run in runs:  # bench_iscsi's summary accounts a tgtd; LIO has no process
            run.update(tgtd_cpu_s=0.0, tgtd_faults=0)
    return out["runs"], out["load"]


def _section(runs: dict, load: list) -> dict:
    out = bench_iscsi._section(runs, "iscsi")
    med = statistics.median
    out["raw_reader_cpu_s"] = round(med(r["reader_cpu_s"] for r in runs["raw"]), 2)
    out["raw_vm_cpu_s"] = round(med(r["vm_cpu_s"] for r in runs["raw"]), 2)
    out["iscsi"]["vm_cpu_s"] = round(med(r["vm_cpu_s"] for r in runs["iscsi"]), 2)
    # TCG: a run is tens of MiB/s, so one decimal rather than bench_iscsi's integers.
    out["raw_runs_mib_s"] = [round(r["mib_s"], 1) for r in runs["raw"]]
    out["iscsi"]["runs_mib_s"] = [round(r["mib_s"], 1) for r in runs["iscsi"]]
    out["load_average_1m"] = [round(x, 2) for x in load]
    return out


def _measure(spec: dict, secret: str) -> dict:
    cases, lean_cases, iscsi_opts = _readers(spec, secret)
    raw_opts = f"driver=raw,file.driver=file,file.filename={DISK}"
    same = _vm(
        f"QEMU_MODULE_DIR={MODULES} qemu-img compare --image-opts "
        f"--object secret,id=chap,file={SECRET_FILE} "
        f"{shlex.quote(raw_opts)} {shlex.quote(iscsi_opts)}",
        secret=secret,
    )
    if "Images are identical" not in same:
        raise RuntimeError(f"the target does not read back the file: {same}")
    where = f"/sys/kernel/config/target/iscsi/{spec['target_iqn']}/tpgt_1/param"
    keys = _vm(f"cd {where} && cat {' '.join(SESSION_PARAMS)}").split()
    login_keys = dict(zip(SESSION_PARAMS, keys, strict=True))
    sections = {
        "hot": _section(*_pairs(cases, "hot", secret)),
        "cold": _section(*_pairs(cases, "cold", secret)),
        "hot_lean_reader": _section(*_pairs(lean_cases, "hot", secret)),
        "cold_lean_reader": _section(*_pairs(lean_cases, "cold", secret)),
    }
    info = _vm(f"cat /sys/kernel/config/target/core/fileio_*/ggnet-{NAME}-0/info").split()
    return {**sections, "login_keys": login_keys, "backstore": " ".join(info)}


def run() -> dict | None:
    why = _lab_ready()
    if why:
        print(f"    skipped: {why}; bring it up with `ggnet lab up` first")
        return None
    leases.take()  # a concurrent `ggnet lab down` (or a pytest session's end) waits
    secret = "Bench-" + secrets.token_hex(4)  # 14 characters, CHAP's 12-16
    spec = {
        "name": NAME,
        "target_iqn": target_iqn(NAME, PREFIX),
        "initiator_iqn": initiator_iqn(NAME, PREFIX),
        "luns": [{"path": DISK, "kind": "file"}],
        "chap_secret": secret,
    }
    # persist false: the VM's saved LIO configuration stays as the lab left it.
    params = {"backend": "lio", "iqn_prefix": PREFIX, "persist": False}
    with tempfile.TemporaryDirectory(prefix="ggnet-bench-iscsi-lab-") as tmp:
        try:
            _vm(
                "modprobe target_core_mod && modprobe iscsi_target_mod && "
                "(mountpoint -q /sys/kernel/config || mount -t configfs none /sys/kernel/config)"
                f" && rm -rf {WORK} && mkdir -p {WORK} && "
                f"head -c {DISK_MIB}M /dev/urandom > {DISK} && "
                f"(umask 077 && cat > {SECRET_FILE})",
                stdin=secret,
            )
            copied = subprocess.run(
                vm.ssh_argv(f"mkdir -p {MODULES} && cat > {MODULES}/{HOST_ISCSI_MODULE.name}"),
                input=HOST_ISCSI_MODULE.read_bytes(), capture_output=True, timeout=120,
            )  # fmt: skip
            if copied.returncode != 0:
                raise RuntimeError(f"copying the iSCSI driver in: {copied.stderr.decode()}")
            made = run_on_lab("ggnet_targets", {**params, "targets": [spec]}, Path(tmp))
            if made.get("failed"):
                raise RuntimeError(f"ggnet_targets failed: {made.get('msg')}".replace(secret, MASK))
            load = os.getloadavg()[0]
            result = _measure(spec, secret)
            result["host_load_average_1m"] = [round(load, 2), round(os.getloadavg()[0], 2)]
            cpus = int(_vm("nproc"))
        finally:
            # Empty the bench's prefix: its target and backstore go, the lab's stay.
            gone = run_on_lab("ggnet_targets", {**params, "targets": []}, Path(tmp))
            _vm(f"rm -rf {WORK}")
            leases.release()
    if gone.get("failed"):
        raise RuntimeError(f"removing the bench target failed: {gone.get('msg')}")
    reads = DISK_MIB // bench_iscsi.BLOCK_MIB
    return {
        "what": __doc__.split("\n\n")[1].replace("\n", " "),
        "where": (
            f"LIO in the lab VM {vm.NAME}: qemu TCG (emulated, no KVM), {cpus} vCPUs, "
            f"{vm.MEMORY_MIB} MiB; reader, LIO and the TCP stack share those vCPUs; the "
            f"file on the VM's ext4 root (virtio, host cache=unsafe)"
        ),
        "disk_mib": DISK_MIB,
        "block_mib": bench_iscsi.BLOCK_MIB,
        "vcpus": cpus,
        "rounds": ROUNDS,
        "goal": ">= 0.85",
        "reader": (
            f"qemu-io in the VM: {reads} aio_read commands of 1 MiB in disk order, all "
            "submitted at once, then aio_flush (bench_iscsi's reads); raw: `qemu-io -f raw "
            "<file>`; iSCSI: qemu-io's libiscsi driver, CHAP (secret from a 0600 file), to "
            "the VM's portal 127.0.0.1:3260, LUN 0; timed in the VM as a whole process, "
            "login and start-up included; before timing, qemu-img compare read every byte "
            "through the target against the file"
        ),
        "lean_reader": (
            f"qemu-img bench -c {reads} -d {bench_iscsi.BENCH_DEPTH} -s 1M -S 1M: the same "
            "reads with buffers allocated once, timed by qemu-img itself (no start-up, no "
            "login)"
        ),
        "cache": (
            "hot: the file read whole right before every run; cold: fsync and "
            "posix_fadvise(DONTNEED) right before every run; page_cache_before_runs = "
            "[lowest raw, highest any] share cached when a run started"
        ),
        "cpu": (
            "reader_cpu_s: the reader process's CPU seconds; vm_cpu_s: all the VM's "
            "non-idle CPU seconds over the run (reader, LIO's kernel threads, TCP), "
            "medians; the lean reader's runs include its start-up and login"
        ),
        **result,
        "ratio": result["hot"]["ratio"],
        "ratio_cold": result["cold"]["ratio"],
        "ratio_hot_lean_reader": result["hot_lean_reader"]["ratio"],
        "ratio_cold_lean_reader": result["cold_lean_reader"]["ratio"],
    }


if __name__ == "__main__":
    print(run())
