"""An operator changes the room by editing the inventory in git and converging: every
change of the matrix converges in one site.yml run, a second run changes nothing, and
the PCs boot after it; an approval made on the server meanwhile reaches the operator's
repository by git pull; bad input changes nothing and says what is wrong.

The operator's inventory here is a git repository of its own (the README's way),
copied from inventory/lab with other names, groups and MAC notations:

room A (LIO)                                  room B (tgt)
  pc-bios -> seat-01, MAC as 5254.0021.3001     the names of inventory/lab again,
  pc-pxe  -> seat-03, MAC as 52-54-00-21-30-03  MACs and images as there,
  pc-uefi: new MAC (bare hex), group quiet      lab-os-b dropped (kept on the pool),
           without the game disk, image         the iSCSI backend switched to tgt,
           lab-os-b (a new image)               plus the PC approved on the server

Both rooms converge with `site.yml --tags room` (what a room change touches); the
second run is `ggnet diff --room` for room A (check mode: no drift) and the whole
site.yml for room B, which must change nothing: that run is also molecule's
idempotence check.  This file runs last: it leaves the lab on tgt.
"""

from __future__ import annotations

import json
import os
import shlex
import shutil
import subprocess
import time
from pathlib import Path

import pytest
import yaml
from ggnet.net import target_iqn
from ggnet_testing.lab_room import (
    REPO,
    boot,
    changed_tasks,
    changes,
    converge,
    operator_token,
    wait_no_session,
)

from ggnet_lab import client, vm

testinfra_hosts = [f"ssh://{vm.NAME}?ssh_config={vm.write_ssh_config()}"]

API = vm.API_URL
SERVER_REPO = "/var/lib/ggnet/inventory"
IQN = target_iqn("x")[:-1]  # what precedes a PC's name in its target's IQN
APPROVED_MAC = "52:54:00:21:30:99"


def git(repo: Path, *args: str, env: dict | None = None) -> str:
    proc = subprocess.run(
        ["git", "-C", str(repo), "-c", "user.name=operator", "-c", "user.email=op@lab.invalid",
         *args],
        capture_output=True, text=True, env=env,
    )  # fmt: skip
    assert proc.returncode == 0, f"git {args}: {proc.stderr}"
    return proc.stdout.strip()


def lab_hosts() -> dict:
    hosts = yaml.safe_load((REPO / "inventory/lab/hosts.yml").read_text())
    return hosts["all"]["children"]["ggnet_clients"]["children"]["lab_pcs"]["hosts"]


def write_room(repo: Path, room: str) -> None:
    """The operator's edit: inventory/lab's files, then room A's or room B's changes."""
    for old in ("hosts.yml", "group_vars", "host_vars"):
        if (repo / old).is_dir():
            shutil.rmtree(repo / old)
    shutil.copytree(REPO / "inventory/lab/group_vars", repo / "group_vars")
    hosts = yaml.safe_load((REPO / "inventory/lab/hosts.yml").read_text())
    all_vars = yaml.safe_load((repo / "group_vars/all.yml").read_text())
    pcs = lab_hosts()
    if room == "A":
        all_vars["ggnet_images"]["lab-os-b"] = dict(all_vars["ggnet_images"]["lab-os"])
        seat1 = {**pcs["pc-bios"], "ggnet_mac": "5254.0021.3001"}
        seat3 = {**pcs["pc-pxe"], "ggnet_mac": "52-54-00-21-30-03"}
        uefi = {**pcs["pc-uefi"], "ggnet_mac": "525400213012", "ggnet_image": "lab-os-b"}
        clients = {
            "children": {
                "arena": {"hosts": {"seat-01": seat1, "seat-03": seat3}},
                "quiet": {"hosts": {"pc-uefi": uefi}},
            }
        }
        (repo / "group_vars/lab_pcs.yml").rename(repo / "group_vars/arena.yml")
        (repo / "group_vars/quiet.yml").write_text(
            "# No game disk in the quiet corner.\nggnet_image: lab-os\nggnet_keep_writeback: false\n"
        )
        hosts["all"]["children"]["ggnet_clients"] = clients
        # The canary PC moved to the quiet corner: its canary set moves with it.
        all_vars["ggnet_rollout"]["canary"] = {"quiet": {"machines": ["pc-uefi"]}}
    else:
        all_vars["ggnet_iscsi"]["backend"] = "tgt"
    (repo / "group_vars/all.yml").write_text(yaml.safe_dump(all_vars, sort_keys=False))
    (repo / "hosts.yml").write_text(yaml.safe_dump(hosts, sort_keys=False))


def commit_room(repo: Path, room: str, message: str) -> str:
    write_room(repo, room)
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "-m", message)
    return git(repo, "rev-parse", "HEAD")


def converge_room(inventory: Path) -> str:
    """A room change in one run (`--tags room`): its output."""
    first = converge(inventory, "--tags", "room")
    assert changes(first.stdout)["boot1"] > 0, "the room change changed nothing"
    return first.stdout


def ggnet_diff(inventory: Path, *extra: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [shutil.which("ggnet") or "ggnet", "diff", "-i", str(inventory), *extra],
        capture_output=True, text=True, cwd=REPO, timeout=1800,
    )  # fmt: skip


def served(host) -> dict:
    return json.loads(host.check_output("cat /var/lib/ggnet-api/served.json"))


def server_state(host) -> tuple[str, str, str]:
    """What a refused converge must leave as it was: the server's inventory commit, its
    targets, its DHCP entries."""
    return (
        host.check_output(f"git -C {SERVER_REPO} rev-parse HEAD"),
        host.check_output(
            "ls /sys/kernel/config/target/iscsi 2>/dev/null; "
            "tgtadm --lld iscsi --mode target --op show 2>/dev/null | grep '^Target'; true"
        ),
        host.check_output("cat /etc/ggnet/dnsmasq-hosts.conf 2>/dev/null; true"),
    )


@pytest.fixture(scope="module")
def operator(tmp_path_factory):
    repo = tmp_path_factory.mktemp("operator") / "room"
    repo.mkdir()
    git(repo, "init", "-q", "-b", "main")
    return repo


@pytest.fixture(scope="module")
def token(host):
    with operator_token(host, "room-changes") as header:
        yield header


def test_ggnet_diff_lists_per_pc_what_room_a_would_change(host, operator):
    # The tests before this one booted the PCs: their sessions must be gone, or the
    # retire phase rightly refuses (the check run included).
    for name in ("pc-bios", "pc-uefi", "pc-pxe"):
        wait_no_session(host.check_output, name)
    commit_room(operator, "A", "room A: seats renamed and regrouped")
    proc = ggnet_diff(operator, "--room", "--json")
    assert proc.returncode == 1, proc.stdout[-3000:] + proc.stderr[-3000:]
    pcs = {p["pc"]: p for p in json.loads(proc.stdout)["pcs"]}
    # Gone (renamed away), new, and changed in place: each with what differs.
    assert {"pc-bios", "pc-pxe", "seat-01", "seat-03", "pc-uefi"} <= set(pcs), pcs
    assert "destroy" in json.dumps(pcs["pc-bios"]) and "create" in json.dumps(pcs["seat-01"])
    assert "mac" in json.dumps(pcs["pc-uefi"]), pcs["pc-uefi"]


def test_room_a_converges_in_one_run_and_its_pcs_boot(host, operator):
    for name in ("pc-bios", "pc-uefi", "pc-pxe"):
        wait_no_session(host.check_output, name)
    converge_room(operator)
    # The second run, in check mode: ggnet diff finds nothing left to change.
    again = ggnet_diff(operator, "--room")
    assert again.returncode == 0, again.stdout[-3000:] + again.stderr[-3000:]
    assert "no drift: the servers match the inventory" in again.stdout
    # The boot path serves the operator's commit: the server shares its history.
    assert served(host)["commit"] == git(operator, "rev-parse", "HEAD")
    assert set(served(host)["entries"]) == {"seat-01", "seat-03", "pc-uefi"}
    targets = host.check_output("ls /sys/kernel/config/target/iscsi")
    assert f"{IQN}seat-01" in targets and f"{IQN}pc-bios" not in targets, targets
    hosts_file = host.check_output("cat /etc/ggnet/dnsmasq-hosts.conf")
    assert "52:54:00:21:30:12,10.213.0.102,pc-uefi" in hosts_file, hosts_file
    assert "pc-bios" not in hosts_file, hosts_file
    wbs = host.check_output("zfs list -H -o name -r ggpool/writebacks")
    assert "ggpool/writebacks/pc-uefi/game" not in wbs.split(), wbs
    assert "ggpool/writebacks/pc-bios" not in wbs.split(), wbs
    pcs = client.lab_pcs(operator)
    assert pcs["pc-uefi"].mac == "52:54:00:21:30:12"
    for name in ("seat-01", "pc-uefi", "seat-03"):
        assert boot(pcs[name]) == (0, 1), name


def test_a_pc_with_a_live_session_is_not_retired(host, operator):
    pcs = client.lab_pcs(operator)
    wait_no_session(host.check_output, "seat-01")
    boot(pcs["seat-01"], keep_running=True)
    try:
        commit_room(operator, "B", "room B: the lab's names again, on tgt")
        before = server_state(host)
        refused = converge(operator, "--tags", "room", check=False)
        assert refused.returncode != 0
        out = refused.stdout
        assert f"target {IQN}seat-01 would be removed but has a live session" in out, out[-3000:]
        assert server_state(host) == before
    finally:
        client.stop("seat-01")
    wait_no_session(host.check_output, "seat-01")


def test_an_approval_on_the_server_is_pulled_before_the_next_converge(host, operator, token):
    # A machine nobody knows boots: discovery registers it; an operator approves it.
    host.check_output(f"curl -s -o /dev/null {API}/boot/{APPROVED_MAC}")
    body = shlex.quote(json.dumps({"name": "pc-new", "image": "lab-os", "groups": ["quiet"]}))
    approved = json.loads(
        host.check_output(
            f"curl -s -H @{token} -H 'Content-Type: application/json' -d {body} "
            f"{API}/api/discovered/{APPROVED_MAC}/approve"
        )
    )
    assert "commit" in approved, approved
    if approved.get("job_id"):  # its converge would run beside this test's
        host.run(f"curl -s -X POST -H @{token} {API}/api/jobs/{approved['job_id']}/cancel")
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline:
            job = json.loads(
                host.check_output(f"curl -s -H @{token} {API}/api/jobs/{approved['job_id']}")
            )
            if job["state"] not in ("pending", "running"):
                break
            time.sleep(2)
    before = server_state(host)
    assert before[0] == approved["commit"]

    refused = converge(operator, "--tags", "room", check=False)
    assert refused.returncode != 0
    assert f"{approved['commit'][:10]} 'Approve pc-new" in refused.stdout, refused.stdout[-3000:]
    assert f"git -C {operator} pull root@10.213.0.10:{SERVER_REPO} main" in refused.stdout
    assert server_state(host) == before

    # The README's step: an ordinary git pull from the server's repository.
    ssh = f"ssh -F {vm.write_ssh_config()}"
    env = {**os.environ, "GIT_SSH_COMMAND": ssh}
    pull = f"root@10.213.0.10:{SERVER_REPO}"  # as the refusal names it
    git(operator, "pull", "-q", "--no-rebase", "--no-edit", pull, "main", env=env)
    assert (operator / "host_vars/pc-new.yml").exists()
    assert git(operator, "merge-base", "--is-ancestor", approved["commit"], "HEAD") == ""


def test_room_b_converges_in_one_run_on_tgt_and_its_pcs_boot(host, operator):
    out = converge_room(operator)
    # The image left the inventory: kept (a golden image is never destroyed by a
    # converge) and named, with how to remove it.
    assert "kept, never destroyed by a converge: lab-os-b" in out, out[-3000:]
    assert served(host)["commit"] == git(operator, "rev-parse", "HEAD")
    assert set(served(host)["entries"]) == {"pc-bios", "pc-uefi", "pc-pxe", "pc-new"}
    lio = host.run("ls /sys/kernel/config/target/iscsi").stdout
    assert IQN not in lio, lio
    assert not host.service("rtslib-fb-targetctl").is_enabled
    assert host.service("tgt").is_running and host.service("tgt").is_enabled
    shown = host.check_output("tgtadm --lld iscsi --mode target --op show")
    for name in ("pc-bios", "pc-uefi", "pc-pxe", "pc-new"):
        assert f"{IQN}{name}" in shown, shown
    assert "seat-01" not in shown
    dropin = host.file("/etc/systemd/system/tgt.service.d/ggnet.conf").content_string
    assert "Environment=MALLOC_MMAP_THRESHOLD_=536870912" in dropin, dropin
    pcs = client.lab_pcs(operator)
    for name in ("pc-bios", "pc-uefi", "pc-pxe"):
        assert boot(pcs[name]) == (0, 1), name
    assert boot(pcs["pc-bios"]) == (0, 1)  # the reset on reboot, on tgt


def test_a_full_converge_after_the_room_changes_changes_nothing(operator):
    """The room runs left nothing undone, and the whole site.yml is idempotent on a room
    changed this much (molecule's own idempotence step would repeat this run)."""
    again = converge(operator).stdout
    assert changes(again)["boot1"] == 0, changed_tasks(again)
