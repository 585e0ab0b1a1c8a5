"""Safe image updates in the lab: a new version is boot-tested on the server, then
rolled out to the canary PC first, and promoted or rolled back from its boots.

Everything is the lab's own: the operator writes bootprog's disk over pc-bios's
writeback (in maintenance) and applies it, which makes a candidate; the boot test is
the image job on the VM, whose qemu boots the candidate inside the VM (nested TCG,
BIOS) through a throwaway LIO target; the canary is pc-uefi (inventory/lab,
`ggnet_rollout`), a real UEFI PC, and the rollout decides in the VM's API from the boot
path's own records.  A version is known by the counter its disk starts with (bootprog
prints `count=N`): 30, 40 and 50 below; the image as imported starts at 0.

The lab counts a canary boot as healthy once its OS reported (`healthy_at: os`).
bootprog has no network stack, so the report is sent by a STAND-IN for the PC's OS
(lab_room.report_os: the real pc/report_os.py from the PC's own address) after the
serial console shows the program booted and wrote.  A program that hangs reports
nothing, as a hung OS would not.

The tests run in file order and build on each other.  At the end the room is rolled
back to v1, the image as imported, for the tests after these.
"""

from __future__ import annotations

import gzip
import json
import shutil
import subprocess
import time
from pathlib import Path

import pytest
import yaml
from ggnet import layout
from ggnet.model import parse_duration, parse_size
from ggnet_bootprog import build as bp
from ggnet_testing import lab_room

from ggnet_lab import client, vm

REPO = Path(__file__).resolve().parents[3]

testinfra_hosts = [f"ssh://{vm.NAME}?ssh_config={vm.write_ssh_config()}"]

PCS = client.lab_pcs()
ALL = yaml.safe_load((REPO / "inventory/lab/group_vars/all.yml").read_text())
STORAGE, IMAGE_SIZE = ALL["ggnet_storage"], parse_size(ALL["ggnet_images"]["lab-os"]["size"])
IMAGE = "lab-os"
CANARY = "pc-uefi"
# The counters the versions' disks start with: what a PC's boot tells it booted.
HANGS, HANGS_ON_UEFI, GOOD = 30, 40, 50
# What the tests learn as they go: count -> version name.
VERSIONS: dict[int, str] = {}
# Seconds each step took, printed at the end (docs/storage.md quotes them).
APPLIED: dict[int, float] = {}
TESTED: dict[int, float] = {}
TIMES: dict[str, float] = {}
WITHIN = parse_duration(ALL["ggnet_rollout"]["os_report_within"])


@pytest.fixture(scope="module")
def auth(host):
    with lab_room.operator_token(host, "lab-rollout") as header:
        yield header


@pytest.fixture(scope="module")
def job(host, auth):
    return lab_room.job_runner(host, auth)


def image(host, auth) -> dict:
    return lab_room.api_get(host, auth, f"/api/images/{IMAGE}")


def version_view(host, auth, version: str) -> dict:
    return next(v for v in image(host, auth)["versions"] if v["name"] == version)


def wait_state(host, auth, version: str, want: str, timeout: float) -> float:
    """Seconds until the API shows `version` in state `want` (the collector reads ZFS
    every collect_interval)."""
    start = time.monotonic()
    seen = None
    while time.monotonic() - start < timeout:
        seen = version_view(host, auth, version).get("state")
        if seen == want:
            return time.monotonic() - start
        time.sleep(2)
    raise AssertionError(f"{IMAGE}@{version} is {seen}, not {want}, after {timeout:.0f} s")


def write_disk(tmp_path: Path, count: int, hang: tuple[str, ...]) -> None:
    """The operator's update: bootprog's disk (starting at `count`) over pc-bios's
    writeback on the VM, through its block device."""
    disk = bp.build_disk(tmp_path / f"v{count}.img", vm.MEDIA_IDENTITY, count, IMAGE_SIZE, hang)
    target = layout.writeback_backing(STORAGE, "pc-bios", "system")[0]
    wrote = subprocess.run(
        vm.ssh_argv(
            f"gunzip | dd of={target} bs=1M oflag=direct status=none "
            f"&& blockdev --flushbufs {target}"
        ),
        input=gzip.compress(disk.read_bytes(), compresslevel=1),
        capture_output=True,
        timeout=300,
    )
    assert wrote.returncode == 0, wrote.stderr


def test_three_updates_are_applied_as_candidates_that_no_pc_boots(host, job, tmp_path):
    # The operator's way: pc-bios in maintenance, so that no reset (the one after its
    # last session ended, ggnet_api/boot_sessions.py) undoes the disk written over it.
    lab_room.wait_no_session(host.check_output, "pc-bios")
    assert job("machine", op="keep", client="pc-bios")["state"] == "successful"
    for count, hang in ((HANGS, ("bios", "uefi")), (HANGS_ON_UEFI, ("uefi",)), (GOOD, ())):
        write_disk(tmp_path, count, hang)
        start = time.monotonic()
        done = job("machine", op="apply", client="pc-bios", comment=f"lab rollout: count {count}")
        assert done["state"] == "successful", done
        APPLIED[count] = time.monotonic() - start
        newest = host.check_output(
            f"zfs list -H -t snapshot -o name -s createtxg -r {STORAGE['pool']}/images/{IMAGE}"
        ).split()[-1]
        VERSIONS[count] = newest.split("@", 1)[1]
        state = host.check_output(f"zfs get -H -o value ggnet:state {newest}")
        assert state == "candidate", (count, newest, state)
    assert job("machine", op="release", client="pc-bios")["state"] == "successful"
    assert len(set(VERSIONS.values())) == 3, VERSIONS


def boot_test_job(host, auth, count: int, want: str) -> dict:
    """The version's boot test as the API starts it (an image job); its record, once
    the API shows the version in state `want` (the collector reads ZFS every few
    seconds: right after the job it may not have read the record yet)."""
    version = VERSIONS[count]
    start = time.monotonic()
    started = host.check_output(
        f"curl -s -X POST -H @{auth} {lab_room.LAB_API}/api/images/{IMAGE}/versions/"
        f"{version}/boot-test"
    )
    job = json.loads(started)
    assert "id" in job, started
    done = lab_room.wait_job(host, auth, job)
    TESTED[count] = time.monotonic() - start
    assert done["state"] == "successful", done
    wait_state(host, auth, version, want, 60)
    return version_view(host, auth, version)["boot_test"]


def boot_test_here(host, count: int) -> dict:
    """The version's boot test run on the server at once (`ggnet images boot-test`,
    the same code without the job's playbook): its record."""
    start = time.monotonic()
    ran = host.run(f"ggnet images --json boot-test {IMAGE} {VERSIONS[count]}")
    TESTED[count] = time.monotonic() - start
    assert ran.rc in (0, 1), ran.stdout + ran.stderr
    return json.loads(ran.stdout)["boot_test"]


def test_a_version_that_hangs_is_rejected_by_its_boot_test(host, auth):
    record = boot_test_job(host, auth, HANGS, "rejected")
    version = VERSIONS[HANGS]
    assert record["passed"] is False and record["firmware"] == "bios", record
    assert "login" in record["stages"] and "marker" not in record["stages"], record
    # The operator sees what the VM's screen showed: a PNG.
    png = host.run(
        f"curl -s -H @{auth} {lab_room.LAB_API}/api/images/{IMAGE}/versions/"
        f"{version}/screenshot | head -c 8 | od -An -c"
    )
    assert "P   N   G" in png.stdout, png.stdout


def events(host, auth, done: dict) -> str:
    """A job's events as the API serves them (the failed task's message is in them)."""
    return host.check_output(f"curl -s -H @{auth} {lab_room.LAB_API}/api/jobs/{done['id']}/events")


def test_a_rejected_version_cannot_be_promoted(host, auth, job):
    version = VERSIONS[HANGS]
    done = job("image", op="state", image=IMAGE, version=version, state="promoted")
    assert done["state"] == "failed", done
    assert f"{IMAGE}@{version} is rejected" in events(host, auth, done)
    assert (
        host.check_output(
            f"zfs get -H -o value ggnet:state {STORAGE['pool']}/images/{IMAGE}@{version}"
        )
        == "rejected"
    )


def test_a_version_that_hangs_only_on_uefi_passes_its_boot_test_on_bios(host, auth):
    for count in (HANGS_ON_UEFI, GOOD):
        record = boot_test_here(host, count)
        assert record["passed"] is True and record["firmware"] == "bios", record
        stages = record["stages"]
        assert 0 <= stages["started"] <= stages["login"] <= stages["marker"], stages
        print(f"count {count}: stages {stages}")
        wait_state(host, auth, VERSIONS[count], "tested", 60)


def test_a_canary_set_naming_an_unknown_pc_is_refused_and_changes_nothing(host, tmp_path):
    inventory = tmp_path / "inventory"
    shutil.copytree(REPO / "inventory/lab", inventory)
    all_vars = yaml.safe_load((inventory / "group_vars/all.yml").read_text())
    all_vars["ggnet_rollout"]["canary"]["lab_pcs"]["machines"] = ["pc-99"]
    (inventory / "group_vars/all.yml").write_text(yaml.safe_dump(all_vars, sort_keys=False))
    before = host.check_output("cat /var/lib/ggnet-api/served.json")
    refused = lab_room.converge(inventory, check=False)
    assert refused.returncode != 0
    assert "ggnet_rollout.canary.lab_pcs.machines" in refused.stdout, refused.stdout[-3000:]
    assert "pc-99" in refused.stdout and "is not a PC of machine group lab_pcs" in refused.stdout
    assert all(n == 0 for n in lab_room.changes(refused.stdout).values()), refused.stdout[-3000:]
    assert host.check_output("cat /var/lib/ggnet-api/served.json") == before


def test_one_rollout_of_an_image_at_a_time(host, auth, job):
    first = job("image", op="state", image=IMAGE, version=VERSIONS[HANGS_ON_UEFI], state="canary")
    assert first["state"] == "successful", first
    second = job("image", op="state", image=IMAGE, version=VERSIONS[GOOD], state="canary")
    assert second["state"] == "failed", second
    assert "is already in canary: one rollout of an image at a time" in events(host, auth, second)
    assert version_view(host, auth, VERSIONS[GOOD])["state"] == "tested"


def test_the_uefi_canary_fails_and_the_version_is_rolled_back_before_any_other_pc_gets_it(
    host, auth
):
    version = VERSIONS[HANGS_ON_UEFI]
    view = image(host, auth)
    assert (view["canary"], view["canary_clients"]) == (version, [CANARY]), view
    start = time.monotonic()
    hung = lab_room.boot_lines(PCS[CANARY], report=True)
    assert [(ln.kind, ln.fw) for ln in hung] == [("HANG", "uefi")], hung
    # Meanwhile the rest of the room, pc-pxe on UEFI too, boots the promoted version.
    assert lab_room.boot(PCS["pc-pxe"], report=True) == (0, 1)
    wait_state(host, auth, version, "rejected", 300)
    # The boot failed when os_report_within had passed without its OS's report.
    TIMES["failure -> rejected"] = time.monotonic() - start - WITHIN
    # The rollout's own job is the audit trail: an image job that rejected it.
    jobs = lab_room.api_get(host, auth, "/api/jobs?limit=20")["jobs"]
    acted = [
        j for j in jobs
        if j["kind"] == "image" and j.get("requested_by") == "rollout"
        and j["extravars"].get("version") == version
    ]  # fmt: skip
    assert [j["extravars"]["state"] for j in acted] == ["rejected"], jobs[:5]
    assert acted[0]["state"] == "successful", acted
    # The canary's next boot is the promoted version again.
    assert lab_room.boot(PCS[CANARY], report=True) == (0, 1)


def test_a_good_version_is_promoted_by_its_canary_and_then_every_pc_boots_it(host, auth, job):
    version = VERSIONS[GOOD]
    start = time.monotonic()
    canary = job("image", op="state", image=IMAGE, version=version, state="canary")
    assert canary["state"] == "successful", canary
    assert lab_room.boot(PCS[CANARY], report=True) == (GOOD, GOOD + 1)
    wait_state(host, auth, version, "promoted", 180)
    TIMES["apply -> promoted"] = APPLIED[GOOD] + TESTED[GOOD] + time.monotonic() - start
    assert image(host, auth)["served"] == version
    # What is promoted is what is served: the other PCs boot its disk.
    for name in ("pc-bios", "pc-pxe"):
        assert lab_room.boot(PCS[name]) == (GOOD, GOOD + 1), name


def test_rollback_goes_to_any_retained_version(host, auth, job):
    # Back past two newer versions to the image as imported, for the tests after these.
    done = job("image", op="rollback", image=IMAGE, version="v1")
    assert done["state"] == "successful", done
    current = host.check_output(
        f"zfs get -H -o value ggnet:current {STORAGE['pool']}/images/{IMAGE}"
    )
    assert current == "v1"
    assert {v["name"]: v["state"] for v in image(host, auth)["versions"]}[VERSIONS[GOOD]] == (
        "promoted"
    )
    print(
        "lab rollout timings (s):",
        {"apply": APPLIED, "boot test": TESTED, **TIMES},
    )
