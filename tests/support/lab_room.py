"""What the molecule lab tests do to the converged lab: boot a qemu PC to bootprog's
marker, converge an inventory with ansible-playbook, read a run's changes, wait for a
PC's iSCSI session to end."""

from __future__ import annotations

import contextlib
import json
import os
import re
import shlex
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from ggnet.net import target_iqn
from ggnet_bootprog.build import SerialLine, parse_serial

from ggnet_api.db.database import JOB_DONE
from ggnet_lab import client, netns, vm

REPO = Path(__file__).resolve().parents[2]
LAB_API = vm.API_URL

_ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")
_RECAP = re.compile(r"^(\S+)\s+: ok=(\d+)\s+changed=(\d+)\s+unreachable=(\d+)\s+failed=(\d+)", re.M)


def boot(pc: client.LabPC, keep_running: bool = False, report: bool = False) -> tuple[int, int]:
    """Boot PC until its program has written; (count it read, count it wrote).

    count=0 read is the image as imported: a fresh or reset writeback.  With
    keep_running the PC stays on (a live iSCSI session) until client.stop(pc.name);
    with report its OS reports that it booted (report_os below)."""
    lines = boot_lines(pc, keep_running=keep_running, report=report)
    booted = [ln for ln in lines if ln.kind == "BOOT"]
    wrote = [ln for ln in lines if ln.kind == "WROTE"]
    assert booted and wrote, f"{pc.name}: the boot program did not boot: {lines}"
    assert booted[-1].identity == vm.MEDIA_IDENTITY, booted
    return booted[-1].count, wrote[-1].count


def boot_lines(
    pc: client.LabPC, keep_running: bool = False, report: bool = False
) -> list[SerialLine]:
    """Boot PC until its boot program has said how it went, on the serial console:
    it wrote its counter (GGNET-BOOT, then GGNET-WROTE) or it hung (GGNET-HANG).  The
    program's GGNET lines.  With report, a program that wrote has its OS report it."""
    result = client.boot(pc, until="iscsi", timeout=240, keep=True, progress=print)
    try:
        assert result.reached, client.format_summary(result)
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            lines = parse_serial(result.files.serial.read_text(errors="replace"))
            errors = [ln for ln in lines if ln.kind == "ERROR"]
            assert not errors, f"{pc.name}: the boot program failed: {errors}"
            kinds = {ln.kind for ln in lines}
            if "HANG" in kinds or {"BOOT", "WROTE"} <= kinds:
                print(client.format_summary(result), [f"{ln.kind} {ln.count}" for ln in lines])
                if report and "HANG" not in kinds:
                    report_os(pc)
                return lines
            time.sleep(0.5)
        raise AssertionError(f"{pc.name}: no GGNET-WROTE or GGNET-HANG in {result.files.serial}")
    finally:
        if not keep_running:
            client.stop(pc.name)


# A namespace of the PC's "OS" on the lab bridge, and its link's two ends.
_OS_NETNS, _OS_LINK, _OS_PEER = "ggnet-lab-os", "ggos0", "ggos1"


def report_os(pc: client.LabPC) -> None:
    """What a booted PC's OS does at startup: run pc/report_os.py, from the PC's own
    address, which marks its boot as having reached the OS (healthy_at: os).

    A STAND-IN for the PC's OS: bootprog has no network stack, so the real script
    runs here, in a throwaway namespace plugged into the lab bridge with the PC's
    fixed address (the PC itself no longer uses its NIC once bootprog runs)."""
    assert pc.ip, f"{pc.name}: no ggnet_ip in the inventory, so no address to report from"
    ns = ["ip", "netns", "exec", _OS_NETNS]
    steps = [
        ["ip", "netns", "add", _OS_NETNS],
        netns.nsenter(
            "ip", "link", "add", _OS_LINK, "type", "veth", "peer", "name", _OS_PEER,
            "netns", _OS_NETNS,
        ),
        netns.nsenter("ip", "link", "set", _OS_LINK, "master", netns.BRIDGE, "up"),
        [*ns, "ip", "addr", "add", f"{pc.ip}/24", "dev", _OS_PEER],
        [*ns, "ip", "link", "set", _OS_PEER, "up"],
    ]  # fmt: skip
    try:
        for step in steps:
            subprocess.run(step, check=True, capture_output=True, text=True)
        sent = subprocess.run(
            [*ns, sys.executable, str(REPO / "pc/report_os.py"), "--api", LAB_API,
             "--mac", pc.mac, "--no-tools"],
            capture_output=True, text=True, timeout=60,
        )  # fmt: skip
        assert sent.returncode == 0, f"{pc.name}: report_os: {sent.stdout}{sent.stderr}"
    finally:
        subprocess.run(["ip", "netns", "del", _OS_NETNS], capture_output=True)


def converge(inventory: Path, *extra: str, check: bool = True) -> subprocess.CompletedProcess:
    """ansible-playbook playbooks/site.yml on INVENTORY; with check, a failure fails the
    test with the end of its output."""
    bin_dir = Path(sys.executable).parent
    proc = subprocess.run(
        [str(bin_dir / "ansible-playbook"), "-i", str(inventory),
         str(REPO / "playbooks/site.yml"), *extra],
        capture_output=True, text=True, cwd=REPO, timeout=1800,
        # Plain text: molecule's environment forces colours, which the recap parse
        # below must not see.
        env={**os.environ, "ANSIBLE_CONFIG": str(REPO / "ansible.cfg"),
             "ANSIBLE_FORCE_COLOR": "0", "ANSIBLE_NOCOLOR": "1",
             "PATH": f"{bin_dir}:{os.environ['PATH']}"},
    )  # fmt: skip
    if check:
        assert proc.returncode == 0, proc.stdout[-5000:] + proc.stderr[-2000:]
    return proc


def changes(output: str) -> dict[str, int]:
    """Host -> changed count, from a run's PLAY RECAP."""
    found = {m.group(1): int(m.group(3)) for m in _RECAP.finditer(_ANSI.sub("", output))}
    assert found, f"no PLAY RECAP in:\n{output[-3000:]}"
    return found


def changed_tasks(output: str) -> list[str]:
    """The tasks a run reported changed (for a failing idempotence check's message)."""
    task, found = "", []
    for line in _ANSI.sub("", output).splitlines():
        if line.startswith("TASK ["):
            task = line.split("[", 1)[1].rsplit("]", 1)[0]
        elif line.startswith("changed:"):
            found.append(task)
    return found


@contextlib.contextmanager
def operator_token(host, name: str) -> Iterator[str]:
    """An operator token of the VM's API, as a curl header file on the VM (root-only):
    the token never leaves the VM.  Yields the file's path, removed afterwards."""
    path = f"/root/.ggnet-{name}.header"
    made = host.run(
        f"umask 077 && ggnet token create --name {name} --role operator "
        f"| sed 's/^/Authorization: Bearer /' > {path}"
    )
    assert made.rc == 0, made.stderr
    try:
        yield path
    finally:
        host.run(f"rm -f {path}")


def job_runner(host, auth: str) -> Callable[..., dict]:
    """run_job(kind, **extravars): a job started on the VM's API with the operator
    token's header file `auth` (operator_token), waited for to its end: the job."""

    def run_job(kind: str, **extravars) -> dict:
        body = shlex.quote(json.dumps({"kind": kind, "extravars": extravars}))
        started = host.check_output(
            f"curl -s -H @{auth} -H 'Content-Type: application/json' -d {body} {LAB_API}/api/jobs"
        )
        job = json.loads(started)
        assert "id" in job, started
        return wait_job(host, auth, job)

    return run_job


def wait_job(host, auth: str, job: dict, timeout: float = 900) -> dict:
    """The started `job` once it ended."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        job = api_get(host, auth, f"/api/jobs/{job['id']}")
        if job["state"] in JOB_DONE:
            return job
        time.sleep(2)
    raise AssertionError(f"job {job['id']} ({job['kind']} {job['extravars']}) still {job['state']}")


def api_get(host, auth: str, path: str) -> Any:
    """GET `path` of the VM's API with the token's header file `auth`: its JSON."""
    return json.loads(host.check_output(f"curl -s -H @{auth} {LAB_API}{path}"))


def wait_no_session(run: Callable[[str], str], name: str, timeout: float = 90) -> None:
    """PC NAME is off: neither LIO nor tgt shows a session for its target.  RUN runs a
    shell command on the boot server and returns its output."""
    iqn = target_iqn(name)  # the lab inventory keeps ggnet's default prefix
    probe = (
        f"for f in /sys/kernel/config/target/iscsi/{iqn}/tpgt_1/acls/*/info; do "
        '[ -f "$f" ] && ! grep -q \'No active iSCSI Session\' "$f" && echo busy-lio; done; '
        "tid=$(tgtadm --lld iscsi --mode target --op show 2>/dev/null "
        f'| awk \'$3 == "{iqn}" {{sub(":", "", $2); print $2}}\'); '
        '[ -n "$tid" ] && tgtadm --lld iscsi --mode conn --op show --tid "$tid" 2>/dev/null '
        "| grep -q . && echo busy-tgt; true"
    )
    deadline = time.monotonic() + timeout
    out = ""
    while time.monotonic() < deadline:
        out = run(probe)
        if "busy" not in out:
            return
        time.sleep(1)
    raise AssertionError(f"{name}: its target still shows a session after {timeout:.0f}s: {out}")
