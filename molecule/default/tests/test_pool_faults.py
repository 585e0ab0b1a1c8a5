"""The storage engine on the lab VM's OpenZFS against the faults an operator meets: a
pool's device that is not there, devices that hold a pool that is not imported, and a
zvol held busy when a rollback needs its writeback re-cloned.  Each must fail with an
error that says what and where, and lose nothing.

Each test runs on a throwaway pool on a file in the VM (never the lab's ggpool), with
the engine that the API itself imports (its venv's python): real zpool, real zvols,
real udev.  A pool suspended under load is left to tests/unit/test_pool_guard.py: with
no redundancy only the device's return clears it, and a hang there would take the
shared lab VM with it."""

import json
import shlex

import pytest

from ggnet_lab import vm

testinfra_hosts = [f"ssh://{vm.NAME}?ssh_config={vm.write_ssh_config()}"]

PY = "/opt/ggnet/venv/bin/python"
WORK = "/var/tmp/ggnet-pool-faults"
POOL = "ggfault"
DISK = f"{WORK}/d0.img"
CFG = {"pool": POOL, "disk_format": "zvol", "reserve": "10%", "writeback_quota": "none"}
IMAGES = {"os": {"size": "16M", "kind": "system"}}
CLIENTS = [{"name": "pc-f1", "image": "os", "target_iqn": "iqn.2026-12.lab.ggnet:pc-f1"}]


def engine(host, body: str, **values) -> dict:
    """Run `body` (which sets `out`) in the VM's ggnet venv; its StorageError, if any,
    comes back as {"error": message}."""
    script = (
        "import json, sys\nfrom ggnet import storage\nfrom ggnet.zfs import Zfs\n"
        "v = json.loads(sys.argv[1])\nout = {}\n"
        "try:\n"
        + "".join(f"    {line}\n" for line in body.strip().splitlines())
        + "except storage.StorageError as exc:\n    out = {'error': str(exc)}\n"
        "print(json.dumps(out))\n"
    )
    cmd = f"{PY} -c {shlex.quote(script)} {shlex.quote(json.dumps(values))}"
    return json.loads(host.check_output(cmd))


def pool_listed(host) -> bool:
    return host.run(f"zpool list -H -o name {POOL}").rc == 0


@pytest.fixture
def work(host):
    host.check_output(f"rm -rf {WORK} && mkdir -p {WORK}")
    yield
    host.run(f"zpool destroy -f {POOL} 2>/dev/null; rm -rf {WORK}")


def test_a_pool_on_a_device_that_is_not_there_is_named_and_not_created(host, work):
    out = engine(
        host,
        "out = storage.converge_images(v['cfg'], v['images'], False).as_dict()",
        cfg={**CFG, "vdevs": [DISK]},
        images=IMAGES,
    )
    assert out["error"].startswith(f"ggnet_storage.vdevs: {DISK} not found on this server")
    assert "nothing was changed" in out["error"]
    assert not pool_listed(host)


def test_devices_that_hold_an_exported_pool_are_never_created_over(host, work):
    host.check_output(f"truncate -s 256M {DISK} && zpool create {POOL} {DISK}")
    host.check_output(f"zfs create -V 8M {POOL}/keep && udevadm settle")
    host.check_output(f"printf GGNET-KEEP | dd of=/dev/zvol/{POOL}/keep conv=fsync status=none")
    host.check_output(f"zpool export {POOL}")

    out = engine(
        host,
        "out = storage.converge_images(v['cfg'], v['images'], False).as_dict()",
        cfg={**CFG, "vdevs": [DISK]},
        images=IMAGES,
    )
    assert f"pool '{POOL}' is not imported" in out["error"]
    assert f"zpool import {POOL}" in out["error"]
    assert not pool_listed(host)  # neither created anew nor imported behind the operator

    host.check_output(f"zpool import -d {WORK} {POOL} && udevadm settle")
    kept = host.check_output(f"dd if=/dev/zvol/{POOL}/keep bs=10 count=1 status=none")
    assert kept == "GGNET-KEEP"


def test_a_zvol_held_busy_at_rollback_fails_clearly_and_keeps_its_disk(host, work):
    """A writeback on v2, the image rolled back to v1: the reset must re-clone the zvol.
    Held open by a process, it cannot be destroyed: the reset says which zvol, how to
    find the holder, and the disk still holds what the PC wrote.  Let go, the same
    reset re-clones it from v1."""
    host.check_output(f"truncate -s 256M {DISK}")
    cfg = {**CFG, "vdevs": [DISK]}
    args = {"cfg": cfg, "images": IMAGES, "clients": CLIENTS}
    assert "error" not in engine(
        host,
        "storage.converge_images(v['cfg'], v['images'], False)\n"
        "storage.snapshot_version(v['cfg'], 'os', 'v2', 'second', Zfs())\n"
        "storage.converge_writebacks(v['cfg'], v['images'], v['clients'], False, sessions={})",
        **args,
    )
    wb = f"/dev/zvol/{POOL}/writebacks/pc-f1/system"
    host.check_output(f"udevadm settle && printf GGNET-PCDATA | dd of={wb} conv=fsync status=none")
    origin = f"zfs get -H -o value origin {POOL}/writebacks/pc-f1/system"
    assert host.check_output(origin) == f"{POOL}/images/os@v2"
    assert "error" not in engine(
        host, "storage.rollback(v['cfg'], v['images'], 'os', 'v1')", **args
    )

    held = f"{WORK}/held"
    holder = host.run(
        f"sh -c 'exec 3<{wb}; touch {held}; exec sleep 120' >/dev/null 2>&1 & echo $!"
    )
    try:
        host.check_output(f"for i in $(seq 100); do [ -e {held} ] && break; sleep 0.1; done")
        out = engine(
            host,
            "out = storage.reset(v['cfg'], v['images'], v['clients'], 'pc-f1', sessions={}).as_dict()",
            **args,
        )
        assert f"{POOL}/writebacks/pc-f1/system is busy" in out["error"]
        assert f"fuser -v {wb}" in out["error"]
        assert host.check_output(origin) == f"{POOL}/images/os@v2"
        data = host.check_output(f"dd if={wb} bs=12 count=1 status=none")
        assert data == "GGNET-PCDATA"
    finally:
        pid = holder.stdout.strip()
        host.run(f"kill {pid}; while kill -0 {pid} 2>/dev/null; do sleep 0.1; done")

    out = engine(
        host,
        "out = storage.reset(v['cfg'], v['images'], v['clients'], 'pc-f1', sessions={}).as_dict()",
        **args,
    )
    assert "error" not in out, out
    assert host.check_output(origin) == f"{POOL}/images/os@v1"
