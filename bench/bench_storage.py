"""Storage benchmarks on a real zfs-fuse pool (started here if none runs).

- reconcile: a no-change reconcile of writebacks for 5 and for 250 clients; goal: the
  250-client run costs at most 1.3x the 5-client run.  Measured twice, labelled:
  `library` (storage.converge_writebacks in this process) and `module` (the
  ggnet_writebacks module run by ansible-playbook from a generated args file, AnsiballZ
  start-up included: what an operator runs).
- listing: the candidate zfs commands for "which writebacks exist, from which version",
  each timed bare at 5 and 250 clients, to show what zfs-fuse's enumeration costs.
- reset: the boot path's reset of one written-to writeback whose version is unchanged
  (one `zfs rollback -r <writeback>@ggnet-base`); goal: p99 under 100 ms.  The version-
  change path (destroy + clone + base snapshot) is timed separately.
"""

from __future__ import annotations

import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
VENV_BIN = Path(sys.executable).parent
sys.path.insert(0, str(REPO / "tests" / "integration"))

from ggnet import layout, storage  # noqa: E402
from ggnet.zfs import Zfs  # noqa: E402
from zfs_pool import destroy_pool, make_pool, storage_cfg  # noqa: E402

IMAGES = {"os": {"size": "64M", "kind": "system"}}
ROUNDS = 30
MODULE_ROUNDS = 5
LIST_ROUNDS = 7
RESETS = 200
RECLONES = 30


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


def _module_runner(workdir: Path, cfg: dict, clients: list) -> list[str]:
    """argv of an ansible-playbook run of ggnet_writebacks with its args in a file."""
    argsfile = workdir / f"args-{len(clients)}.json"
    argsfile.write_text(
        json.dumps({"storage": cfg, "images": IMAGES, "clients": clients, "sessions": {}})
    )
    playbook = workdir / "writebacks.yml"
    playbook.write_text(
        "- name: Reconcile writebacks\n"
        "  hosts: localhost\n"
        "  gather_facts: false\n"
        "  tasks:\n"
        "    - name: All writebacks\n"
        "      ggnet_writebacks: \"{{ lookup('ansible.builtin.file', args_file) | from_json }}\"\n"
    )
    return [
        str(VENV_BIN / "ansible-playbook"),
        *("-i", "localhost,", "-c", "local", "-e", f"ansible_python_interpreter={sys.executable}"),
        *(str(playbook), "-e", f"args_file={argsfile}"),
    ]


def _run_module(argv: list[str]) -> dict:
    env = {
        **os.environ,
        "ANSIBLE_CONFIG": str(REPO / "ansible.cfg"),
        "ANSIBLE_STDOUT_CALLBACK": "ansible.posix.json",
        "ANSIBLE_CALLBACKS_ENABLED": "ansible.posix.json",
        "ANSIBLE_LOCALHOST_WARNING": "false",
        "ANSIBLE_INVENTORY_UNPARSED_WARNING": "false",
        "PATH": f"{VENV_BIN}:{os.environ['PATH']}",
    }
    proc = subprocess.run(argv, capture_output=True, text=True, env=env, cwd=REPO, check=False)
    start = proc.stdout.find("{")
    if start < 0:
        raise RuntimeError(f"ansible-playbook printed no JSON: {proc.stdout}{proc.stderr}")
    data = json.loads(proc.stdout[start:])
    return data["plays"][0]["tasks"][0]["hosts"]["localhost"]


def _listing_commands(cfg: dict) -> dict[str, list[str]]:
    pool = cfg["pool"]
    wb = f"{pool}/writebacks"
    get = ["zfs", "get", "-Hp", "-o", "name,property,value"]
    return {
        "before: get -r <all 17 props> <pool>": [
            *get,
            "-r",
            ",".join(storage.STATE_PROPS),
            pool,
        ],
        "now: get -d 2 <10 props> images writebacks": [
            *get,
            "-d",
            "2",
            ",".join(storage.READ_PROPS),
            f"{pool}/images",
            wb,
        ],
        "get -d 2 origin writebacks": [*get, "-d", "2", "origin", wb],
        "get -r origin writebacks (incl. base snapshots)": [*get, "-r", "origin", wb],
        "list -t filesystem -o name,origin -r writebacks": [
            *("zfs", "list", "-H", "-o", "name,origin", "-t", "filesystem", "-r", wb)
        ],
        "list -t filesystem -o name -r writebacks": [
            *("zfs", "list", "-H", "-o", "name", "-t", "filesystem", "-r", wb)
        ],
        "list -d 1 -o name writebacks (clients only)": [
            *("zfs", "list", "-H", "-o", "name", "-d", "1", wb)
        ],
        "get available,used <pool> (constant)": [*get, "available,used", pool],
    }


def _time_listing(cfg: dict) -> dict[str, float]:
    out = {}
    for label, argv in _listing_commands(cfg).items():
        samples = []
        for _ in range(LIST_ROUNDS):
            start = time.perf_counter()
            proc = subprocess.run(argv, capture_output=True, text=True, check=False)
            samples.append(time.perf_counter() - start)
            if proc.returncode != 0:
                raise RuntimeError(f"{argv}: {proc.stderr}")
        out[label] = _ms(statistics.median(samples))
    return out


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
        out: dict = {"reconcile": {}, "listing_ms": {}}
        rec = out["reconcile"]
        for n in (5, 250):
            clients = _clients(n)
            t0 = time.perf_counter()
            storage.converge_writebacks(cfg, IMAGES, clients, check=False, sessions={})
            create_s = time.perf_counter() - t0

            def noop(clients=clients):
                r = storage.converge_writebacks(cfg, IMAGES, clients, check=False, sessions={})
                assert not r.changed

            samples = _timed(noop, ROUNDS)
            argv = _module_runner(base, cfg, clients)
            module_samples = []
            for _ in range(MODULE_ROUNDS):
                start = time.perf_counter()
                result = _run_module(argv)
                module_samples.append(time.perf_counter() - start)
                assert not result.get("failed") and not result["changed"], result.get("msg")
            rec[str(n)] = {
                "clients": n,
                "create_all_s": round(create_s, 2),
                "library_median_ms": _ms(statistics.median(samples)),
                "library_p95_ms": _ms(_pct(samples, 95)),
                "module_median_ms": _ms(statistics.median(module_samples)),
            }
            out["listing_ms"][str(n)] = _time_listing(cfg)
        lib = rec["250"]["library_median_ms"] / rec["5"]["library_median_ms"]
        mod = rec["250"]["module_median_ms"] / rec["5"]["module_median_ms"]
        rec["ratio_250_vs_5_library"] = round(lib, 2)
        rec["ratio_250_vs_5_module"] = round(mod, 2)
        rec["goal"] = "250/5 <= 1.3"
        rec["goal_met_library"] = lib <= 1.3
        rec["goal_met_module"] = mod <= 1.3
        rec["library"] = "storage.converge_writebacks in-process, median of 30"
        rec["module"] = (
            "ansible-playbook -i localhost, one ggnet_writebacks task, args from a JSON file "
            "(AnsiballZ start-up included), median of 5"
        )

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
            assert r.changed and r.actions[0].detail.startswith("rollback"), r.actions
        out["reset"] = {
            "path": "same version: zfs rollback -r <writeback>@ggnet-base",
            "resets": RESETS,
            "median_ms": _ms(statistics.median(samples)),
            "p95_ms": _ms(_pct(samples, 95)),
            "p99_ms": _ms(_pct(samples, 99)),
            "max_ms": _ms(max(samples)),
            "goal_p99_ms": 100,
            "goal_met": _pct(samples, 99) < 0.1,
        }
        # The version-change path: alternate two pinned versions, every reset re-clones.
        head = layout.image_backing(cfg, "os")[0]
        with open(head, "r+b") as f:
            f.write(b"v2")
        storage._snapshot_version(cfg, "os", "v2", "bench", Zfs())
        samples = []
        for i in range(RECLONES):
            images = {"os": {**IMAGES["os"], "version": "v2" if i % 2 == 0 else "v1"}}
            start = time.perf_counter()
            r = storage.reset(cfg, images, clients, "pc-007", boot=True)
            samples.append(time.perf_counter() - start)
            assert r.changed and r.actions[0].detail.startswith("clone of"), r.actions
        out["reset_version_change"] = {
            "path": "version changed: umount -f, destroy, clone, snapshot @ggnet-base",
            "resets": RECLONES,
            "median_ms": _ms(statistics.median(samples)),
            "p95_ms": _ms(_pct(samples, 95)),
            "max_ms": _ms(max(samples)),
        }
        out["backend"] = "zfs-fuse, pool on a sparse file, disk_format=file"
        return out
    finally:
        destroy_pool(pool)
        shutil.rmtree(base, ignore_errors=True)
        if started_daemon:
            os.kill(started_daemon, 15)


if __name__ == "__main__":
    import json

    print(json.dumps(run(), indent=2))
