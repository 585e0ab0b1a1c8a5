"""Safe image updates end to end on this machine: how long a good version takes from
`apply` to promoted, and how long a bad one takes from its first canary failure to the
rollback being in place (issue 20).

Real parts: a zfs-fuse pool (the running daemon, or one started here), a private tgtd in
a network namespace, the API in-process (reset_on_boot, rollout_auto) with its boot path
(GET /boot/<mac>, its reset, its stage callbacks and boot records) and rollouts, the boot
test job (ggnet.storage.boot_test_job.boot_test, the real qemu runner booting bootprog's
disk from tgt, BIOS), and each rollout job as `ansible-playbook playbooks/image.yml`
with the extra-vars the rollouts handed the runner, holding the runner's own claim on
the image (ggnet_api/locks.py) while it runs.

Simulated: the PCs.  A canary boot is an HTTP client (the app's test client from the
PC's address) asking for its script and sending its stage callback at once; a real PC
takes 10-60 s from power-on to its sanboot (docs/netboot.md), so in a room
apply -> promoted = measured + promote_after x a real boot.  The job runner is not the
app's (no background threads here): the bench runs the job's playbook itself.

Rounds (REPEATS of each, one room):
- promote: pc-01 writes bootprog's disk over its writeback and it is applied (a
  candidate); the boot test passes (tested); the version goes to canary; PROMOTE_AFTER
  canary boots of pc-03 through the boot path; the rollouts' tick decides promote; the
  job runs.  One boot of pc-02 on the served version first gives the rollout its
  baseline.  boot_time_ratio is set high: the boots here last milliseconds and a reset
  with a version change (a clone) is slower than one without, which would pause.
- rollback: a version applied the same way that boots in the boot test too but fails on
  the canary (it is set tested, then canary, without a boot test: the case the canary
  is there for); pc-03 boots it, its `failed` callback at t0; the rollouts queue the
  rollback within that callback; the job runs while a simulated pc-03 asks for its
  script again every POLL s (as a PC rebooting at once would; a real PC refused retries
  after ipxe.RETRY_SECONDS) until a script that boots: which version it was a clone of,
  and how long it waited.
"""

from __future__ import annotations

import contextlib
import json
import logging
import re
import shutil
import statistics
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

IMAGES = {"os": {"size": "32M", "kind": "system"}}
SIZE = 32 << 20
PCS = {f"pc-0{i}": (f"52:54:00:dd:00:0{i}", f"10.213.0.10{i}") for i in (1, 2, 3)}
CANARY = "pc-03"
PROMOTE_AFTER = 2
REPEATS = 3
POLL = 0.05
BOOT_TEST_TIMEOUT = 60
# docs/netboot.md: seconds from power-on to the marker in the lab (pc-bios 6.9-7.5,
# pc-uefi 11.3-12.5, pc-pxe 16.4-17.2); a real PC in a room: 10-60 s.
REAL_BOOT_S = (10, 60)
TOKEN = re.compile(r"/stage\?name=sanboot&token=([A-Za-z0-9_-]+)")


def summary(values: Sequence[float]) -> dict[str, Any]:
    """{median, min, max, values} of seconds, rounded to ms; all None when empty."""
    if not values:
        return {"median": None, "min": None, "max": None, "values": []}
    return {
        "median": round(statistics.median(values), 3),
        "min": round(min(values), 3),
        "max": round(max(values), 3),
        "values": [round(v, 3) for v in values],
    }


def phases(marks: Sequence[tuple[str, float]]) -> dict[str, float]:
    """Seconds of each phase from consecutive (name, time) marks, the first mark being
    the start: {name of the later mark: its time - the previous one's}, plus total."""
    if len(marks) < 2:
        raise ValueError("phases need a start mark and at least one more")
    out = {name: t - marks[i][1] for i, (name, t) in enumerate(marks[1:])}
    out["total"] = marks[-1][1] - marks[0][1]
    return out


def _hosts_and_vars(cfg: dict) -> tuple[str, str]:
    from ggnet_testing.api_project import LOCAL, NETWORK, hosts_yml

    hosts = hosts_yml(
        "children:\n  vip:\n    hosts:\n"
        + "".join(
            f'      {n}: {{ggnet_mac: "{mac}", ggnet_ip: {ip}}}\n' for n, (mac, ip) in PCS.items()
        ),
        f"{LOCAL}, ansible_python_interpreter: {sys.executable}",
    )
    all_vars = (
        NETWORK
        + f"ggnet_storage: {json.dumps(cfg)}\n"
        + "ggnet_iscsi: {backend: tgt, chap: false}\n"
        + f"ggnet_images: {json.dumps(IMAGES)}\n"
        + "ggnet_image: os\n"
        + f"ggnet_rollout: {{promote_after: {PROMOTE_AFTER}, max_failures: 1, "
        + f"boot_time_ratio: 1000, canary: {{vip: {{machines: [{CANARY}]}}}}}}\n"
    )
    return hosts, all_vars


class Room:
    """The pool, tgtd, the API and the three PCs' writebacks."""

    def __init__(self, stack: contextlib.ExitStack, work: Path):
        from ggnet import storage
        from ggnet_testing import zfs_pool
        from ggnet_testing.api_project import inventory_app
        from ggnet_testing.tgt_netns import tgt_in_netns

        self.work = work
        stack.enter_context(zfs_pool.daemon(work))
        pool = zfs_pool.make_pool(work, "1G")
        stack.callback(zfs_pool.destroy_pool, pool)
        self.cfg = zfs_pool.storage_cfg(pool)
        self.tgt = stack.enter_context(tgt_in_netns(work))
        hosts, all_vars = _hosts_and_vars(self.cfg)
        self.app = inventory_app(
            work,
            hosts,
            all_vars,
            reset_on_boot=True,
            rollout_auto=True,
            boot_limit_mac=100000,
            boot_limit_source=100000,
            iscsi_options={"control_port": self.tgt.control_port, "netns": self.tgt.netns},
        )
        self.e = self.app.extensions["ggnet"]
        stack.callback(self.e.close)
        self.clients = list(self.e.inventory.snapshot.clients.values())
        storage.converge_images(self.cfg, IMAGES, check=False)
        storage.converge_writebacks(self.cfg, IMAGES, self.clients, check=False, sessions={})
        time.sleep(1.05)  # writebacks are judged untouched by mtime against their creation
        self.submitted: list[tuple[float, dict]] = []
        # stands in for the runner's queue: the bench runs each job's playbook itself
        self.e.jobs.submit = self._submit

    def _submit(self, kind: str, extravars: dict, by: str, wait: bool = True) -> dict:
        self.submitted.append((time.monotonic(), extravars))
        return {"id": uuid.uuid4().hex}

    # -- versions ----------------------------------------------------------------------

    def write_disk(self, identity: str) -> None:
        """pc-01 writes bootprog's disk (booting to `identity`'s marker) over its
        writeback, as an operator's update would be made."""
        from ggnet_testing import boot_tests

        boot_tests.write_bootprog_disk(self.cfg, IMAGES, self.clients, "pc-01", identity, self.work)

    def apply(self, identity: str) -> str:
        """pc-01's writeback applied as a new version (a candidate): its name."""
        from ggnet_testing import boot_tests

        return boot_tests.apply_version(self.cfg, IMAGES, self.clients, "pc-01", identity)

    def state(self, version: str) -> str:
        from ggnet import layout
        from ggnet.storage.properties import P_STATE
        from ggnet.zfs import Zfs

        snap = layout.version_snapshot(self.cfg, "os", version)
        return str(Zfs().get([snap], [P_STATE])[snap][P_STATE])

    def boot_test(self, version: str) -> None:
        from ggnet.boot_test_knobs import Knobs
        from ggnet.storage import boot_test_job as job
        from ggnet_testing import boot_tests

        knobs = Knobs(firmware="bios", timeout=BOOT_TEST_TIMEOUT)
        setup = boot_tests.job_setup(self.tgt, self.work / "boot-tests", knobs)
        job.boot_test(self.cfg, IMAGES, "os", version, setup)

    # -- the boot path ----------------------------------------------------------------

    def origin(self, name: str) -> str:
        from ggnet_testing import boot_tests

        return boot_tests.origin(self.cfg, name)

    def script(self, name: str) -> str | None:
        """GET /boot/<mac> from the PC's address: the sanboot token, or None when the
        boot was refused (the refusal script)."""
        mac, ip = PCS[name]
        resp = self.app.test_client().get(f"/boot/{mac}", environ_base={"REMOTE_ADDR": ip})
        if resp.status_code != 200:
            raise RuntimeError(f"GET /boot/{mac}: {resp.status_code} {resp.text[:200]}")
        found = TOKEN.search(resp.text)
        return found.group(1) if found and "sanboot" in resp.text else None

    def stage(self, name: str, token: str, result: str) -> None:
        mac, ip = PCS[name]
        resp = self.app.test_client().get(
            f"/boot/{mac}/stage?name={result}&token={token}", environ_base={"REMOTE_ADDR": ip}
        )
        if resp.status_code != 200:
            raise RuntimeError(f"stage {result} of {name}: {resp.status_code} {resp.text[:200]}")

    def boot(self, name: str, result: str = "sanboot") -> str:
        """One boot through the boot path ended by its callback; the version served."""
        token = self.script(name)
        if token is None:
            raise RuntimeError(f"the boot of {name} was refused")
        self.stage(name, token, result)
        return self.origin(name)

    # -- jobs ---------------------------------------------------------------------------

    def run_job(self, extravars: dict, held: Callable[[], None] = lambda: None) -> None:
        """The rollout's image job as the runner would run it: its claim held (boots of
        the image's PCs are refused meanwhile; `held` is called once it is),
        playbooks/image.yml with its extra-vars."""
        from ggnet_testing.playbook import run_playbook, task_result

        from ggnet_api.jobs import job_label
        from ggnet_api.locks import job_claim

        job_id = uuid.uuid4().hex
        claim = job_claim("image", extravars, self.e.inventory.snapshot)
        self.e.jobs.locks.take(job_id, claim, job_label(job_id, "image", extravars))
        try:
            held()
            argv = ["-i", self.e.config["inventory"], "playbooks/image.yml"]
            data, output = run_playbook([*argv, "-e", json.dumps(extravars)], timeout=300)
        finally:
            self.e.jobs.locks.release(job_id)
        result = task_result(data, "boot1", "Run the operation")
        if not result.get("changed") or result.get("failed"):
            raise RuntimeError(f"image job {extravars} failed:\n{output[-2000:]}")

    def take_job(self, since: int) -> tuple[float, dict]:
        if len(self.submitted) != since + 1:
            raise RuntimeError(f"expected one rollout job, got {self.submitted[since:]}")
        return self.submitted[since]


def promote_round(room: Room, n: int) -> dict[str, Any]:
    from ggnet import rollout, storage

    served = room.boot("pc-02")  # the served version's boot time: the baseline
    room.write_disk(f"good{n}")
    t0 = time.monotonic()
    version = room.apply(f"good{n}")
    marks = [("start", t0), ("applied", time.monotonic())]
    room.boot_test(version)
    if room.state(version) != rollout.TESTED:
        raise RuntimeError(f"{version}: the boot test did not pass ({room.state(version)})")
    marks.append(("boot_tested", time.monotonic()))
    storage.set_state(room.cfg, IMAGES, "os", version, rollout.CANARY)
    marks.append(("canary", time.monotonic()))
    got = [room.boot(CANARY) for _ in range(PROMOTE_AFTER)]
    if got != [version] * PROMOTE_AFTER:
        raise RuntimeError(f"the canary booted {got}, not {version}")
    marks.append(("canary_boots", time.monotonic()))
    room.e.collector.sample = room.e.privileged.sample()  # the collection's real read
    since = len(room.submitted)
    room.e.rollouts.tick()
    decision = room.e.rollouts.latest["os"]["decision"]
    if decision["action"] != "promote":
        raise RuntimeError(f"the rollout did not promote {version}: {decision}")
    _, extravars = room.take_job(since)
    marks.append(("decided", time.monotonic()))
    room.run_job(extravars)
    marks.append(("promoted_job", time.monotonic()))
    if room.state(version) != rollout.PROMOTED or room.boot("pc-02") != version:
        raise RuntimeError(f"{version} is {room.state(version)}, pc-02 boots {served}")
    return {"version": version, "previous": served, **phases(marks)}


def rollback_round(room: Room, n: int) -> dict[str, Any]:
    from ggnet import rollout, storage

    served = room.boot("pc-02")
    room.write_disk(f"bad{n}")
    version = room.apply(f"bad{n}")
    storage.set_state(room.cfg, IMAGES, "os", version, rollout.TESTED)
    storage.set_state(room.cfg, IMAGES, "os", version, rollout.CANARY)
    room.e.collector.sample = room.e.privileged.sample()
    token = room.script(CANARY)
    if token is None or room.origin(CANARY) != version:
        raise RuntimeError(f"the canary did not get {version}")
    since = len(room.submitted)
    t0 = time.monotonic()
    room.stage(CANARY, token, "failed")
    t_callback = time.monotonic()
    queued_at, extravars = room.take_job(since)
    if extravars != {"op": "state", "image": "os", "version": version, "state": "rejected"}:
        raise RuntimeError(f"unexpected rollout job {extravars}")
    # the canary reboots at once and asks again until it gets a script that boots
    asked: list[tuple[float, bool]] = []
    done = threading.Event()
    failure: list[BaseException] = []

    def pc() -> None:
        try:
            while True:
                at = time.monotonic()
                token = room.script(CANARY)
                asked.append((at, token is not None))
                if token is not None:
                    room.stage(CANARY, token, "sanboot")
                    return
                time.sleep(POLL)
        except BaseException as exc:  # reported below
            failure.append(exc)
        finally:
            done.set()

    job_started = time.monotonic()
    thread = threading.Thread(target=pc, name="canary")
    room.run_job(extravars, held=thread.start)  # the runner takes it at once (idle)
    job_done = time.monotonic()
    done.wait(60)
    thread.join(5)
    if failure:
        raise RuntimeError(f"the canary's requests failed: {failure[0]}")
    got = room.origin(CANARY)
    state = room.state(version)
    first_ok = next(at for at, ok in asked if ok)
    return {
        "version": version,
        "previous": served,
        "rejected": state == rollout.REJECTED,
        "canary_gets_previous": got == served,
        "callback_s": t_callback - t0,
        "job_queued_s": queued_at - t0,
        "job_s": job_done - job_started,
        "rollback_done_s": job_done - t0,
        "first_request_refused": not asked[0][1],
        "requests_refused": sum(1 for _, ok in asked if not ok),
        "canary_waited_s": first_ok - asked[0][0],
        "canary_script_at_s": first_ok - t0,
    }


@contextlib.contextmanager
def _room() -> Iterator[Room]:
    with tempfile.TemporaryDirectory(prefix="bench-rollout-") as tmp, contextlib.ExitStack() as st:
        yield Room(st, Path(tmp))


def _collect(rounds: list[dict[str, Any]], keys: Sequence[str]) -> dict[str, Any]:
    return {k: summary([float(r[k]) for r in rounds]) for k in keys}


def run(repeats: int = REPEATS, room: Callable[[], Any] = _room) -> dict[str, Any] | None:
    if shutil.which("qemu-system-x86_64") is None or shutil.which("zfs-fuse") is None:
        print("    skipped: needs qemu-system-x86_64 and zfs-fuse")
        return None
    promotes: list[dict[str, Any]] = []
    rollbacks: list[dict[str, Any]] = []
    # every refused request of the polling canary would log a warning
    logging.getLogger("ggnet_api.blueprints.boot").setLevel(logging.ERROR)
    with room() as r:
        for n in range(repeats):
            promotes.append(promote_round(r, n))
            print(f"    promote {n}: {promotes[-1]['total']:.2f} s", flush=True)
            rollbacks.append(rollback_round(r, n))
            print(f"    rollback {n}: {rollbacks[-1]['rollback_done_s']:.2f} s", flush=True)
    promote_keys = ("applied", "boot_tested", "canary", "canary_boots", "decided")
    promote = _collect(promotes, (*promote_keys, "promoted_job", "total"))
    rollback = _collect(
        rollbacks,
        ("callback_s", "job_queued_s", "job_s", "rollback_done_s", "canary_waited_s",
         "canary_script_at_s"),
    )  # fmt: skip
    measured = promote["total"]["median"]
    worst = max(r["canary_script_at_s"] for r in rollbacks)
    slowest = max(r["rollback_done_s"] for r in rollbacks)
    # After a `failed` report the PC's script prompts RETRY_SECONDS before it asks for a
    # fresh one (docs/netboot.md), as a refused boot does: the earliest a real canary
    # asks again after its failure.
    from ggnet.ipxe import RETRY_SECONDS as next_request

    return {
        "setup": (
            "host bench, simulated PCs: a zfs-fuse pool, tgtd in a netns, the API in-process "
            "(reset_on_boot, rollout_auto) with its boot path and rollouts, the real boot "
            "test (qemu TCG, BIOS, bootprog's disk over tgt), each rollout job as "
            "ansible-playbook playbooks/image.yml holding the runner's claim; the PCs are "
            f"HTTP clients; promote_after {PROMOTE_AFTER}, max_failures 1, {repeats} rounds"
        ),
        "promote": {
            "phases_s": promote,
            "rounds": promotes,
            "note": (
                "apply -> promoted with canary boots that last milliseconds; in a room "
                f"total = measured + {PROMOTE_AFTER} x a real boot (10-60 s): "
                f"{measured + PROMOTE_AFTER * REAL_BOOT_S[0]:.0f}-"
                f"{measured + PROMOTE_AFTER * REAL_BOOT_S[1]:.0f} s for the median"
            ),
        },
        "rollback": {
            "phases_s": rollback,
            "rounds": rollbacks,
            "all_rejected": all(r["rejected"] for r in rollbacks),
            "all_canaries_got_previous": all(r["canary_gets_previous"] for r in rollbacks),
            "first_request_refused": [r["first_request_refused"] for r in rollbacks],
            "next_request_after_failure_s": next_request,
            "in_place_before_next_request": slowest < next_request,
            "margin_s": round(next_request - slowest, 3),
            "note": (
                "t0 = the canary's failed callback; a canary rebooting at once asks every "
                f"{POLL} s here and is refused while the job holds the image (a real PC "
                "retries after 10 s); its first bootable script came "
                f"{worst:.2f} s after t0 at worst, and was the previous version's"
            ),
        },
    }
