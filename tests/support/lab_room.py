"""What the molecule lab tests do to the converged lab: boot a qemu PC to bootprog's
marker, converge an inventory with ansible-playbook, read a run's changes, wait for a
PC's iSCSI session to end."""

from __future__ import annotations

import contextlib
import os
import re
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

from ggnet.net import target_iqn
from ggnet_bootprog.build import parse_serial

from ggnet_lab import client, vm

REPO = Path(__file__).resolve().parents[2]

_ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")
_RECAP = re.compile(r"^(\S+)\s+: ok=(\d+)\s+changed=(\d+)\s+unreachable=(\d+)\s+failed=(\d+)", re.M)


def boot(pc: client.LabPC, keep_running: bool = False) -> tuple[int, int]:
    """Boot PC until its program has written: (count it read, count it wrote).

    count=0 read is the image as imported: a fresh or reset writeback.  With
    keep_running the PC stays on (a live iSCSI session) until client.stop(pc.name)."""
    result = client.boot(pc, until="marker", timeout=240, keep=True, progress=print)
    try:
        assert result.reached, client.format_summary(result)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            lines = parse_serial(result.files.serial.read_text(errors="replace"))
            errors = [ln for ln in lines if ln.kind == "ERROR"]
            assert not errors, f"{pc.name}: the boot program failed: {errors}"
            booted = [ln for ln in lines if ln.kind == "BOOT"]
            wrote = [ln for ln in lines if ln.kind == "WROTE"]
            if booted and wrote:
                assert booted[-1].identity == vm.MEDIA_IDENTITY, booted
                print(client.format_summary(result))
                return booted[-1].count, wrote[-1].count
            time.sleep(0.5)
        raise AssertionError(f"{pc.name}: no GGNET-WROTE line in {result.files.serial}")
    finally:
        if not keep_running:
            client.stop(pc.name)


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
