"""What is promoted is what is served: a rollout through the API's real boot path
(GET /boot/<mac>, its reset of the PC's writeback on a real zfs-fuse pool, its stage
callbacks and boot records), checked by the origin of each PC's writeback, not only
by the recorded states.

The API runs in-process (no privd socket) with reset_on_boot on and a private tgtd
(tgt_netns) as the backend whose LUNs a re-clone closes; the only thing not
run as in production is the job runner: the rollback decision's job is run as
ansible-playbook playbooks/image.yml with the extra-vars the runner was handed."""

from __future__ import annotations

import json
import re
import sys
import time

import pytest
from ggnet import layout, storage
from ggnet.zfs import Zfs
from ggnet_testing.api_project import LOCAL, NETWORK, hosts_yml, inventory_app
from ggnet_testing.playbook import run_playbook, task_result
from ggnet_testing.tgt_netns import tgt_in_netns
from ggnet_testing.zfs_pool import pool_fixture, storage_cfg, zfs_daemon_fixture  # noqa: F401  (fixtures)

pytestmark = pytest.mark.integration

IMAGES = {"os": {"size": "32M", "kind": "system"}}
PCS = {f"pc-0{i}": (f"52:54:00:dd:00:0{i}", f"10.213.0.10{i}") for i in (1, 2, 3)}
HOSTS = hosts_yml(
    "children:\n  vip:\n    hosts:\n"
    + "".join(
        f'      {name}: {{ggnet_mac: "{mac}", ggnet_ip: {ip}}}\n' for name, (mac, ip) in PCS.items()
    ),
    f"{LOCAL}, ansible_python_interpreter: {sys.executable}",
)
TOKEN = re.compile(r"/stage\?name=sanboot&token=([A-Za-z0-9_-]+)")


@pytest.fixture
def room(pool, tmp_path):
    cfg = storage_cfg(pool)
    all_vars = (
        NETWORK
        + "ggnet_storage: "
        + json.dumps(cfg)
        + "\n"
        + "ggnet_iscsi: {backend: tgt, chap: false}\n"
        + "ggnet_images: "
        + json.dumps(IMAGES)
        + "\n"
        + "ggnet_image: os\n"
        + "ggnet_rollout: {promote_after: 2, max_failures: 1, "
        + "canary: {vip: {machines: [pc-03]}}}\n"
    )
    # A version change at boot closes the PC's LUNs around the re-clone: on a private
    # tgtd (no targets: there is nothing to close, but the backend is asked for real).
    with tgt_in_netns(tmp_path) as tgt:
        app = inventory_app(
            tmp_path,
            HOSTS,
            all_vars,
            reset_on_boot=True,
            rollout_auto=True,
            iscsi_options={"control_port": tgt.control_port, "netns": tgt.netns},
        )
        e = app.extensions["ggnet"]
        clients = list(e.inventory.snapshot.clients.values())
        storage.converge_images(cfg, IMAGES, check=False)
        storage.converge_writebacks(cfg, IMAGES, clients, check=False, sessions={})
        time.sleep(1.05)  # writebacks are judged untouched by mtime against their creation
        yield cfg, app, clients
        e.close()


def boot(app, name: str, result: str = "sanboot") -> str:
    """One boot of `name` through the boot path, ended by its stage callback (sanboot:
    ok, failed: failed); the version its writeback is a clone of afterwards."""
    mac, ip = PCS[name]
    client = app.test_client()
    resp = client.get(f"/boot/{mac}", environ_base={"REMOTE_ADDR": ip})
    assert resp.status_code == 200 and "sanboot" in resp.text, resp.text
    token = TOKEN.search(resp.text).group(1)
    stage = client.get(
        f"/boot/{mac}/stage?name={result}&token={token}", environ_base={"REMOTE_ADDR": ip}
    )
    assert stage.status_code == 200, stage.text
    cfg = app.extensions["ggnet"].inventory.snapshot.storage
    dataset = layout.writeback_dataset(cfg, name, "system")
    return Zfs().get([dataset], ["origin"])[dataset]["origin"].split("@")[1]


def test_a_rollout_through_the_boot_path(room):
    cfg, app, clients = room
    e = app.extensions["ggnet"]
    assert {c["name"]: c["canary"] for c in clients} == {
        "pc-01": False,
        "pc-02": False,
        "pc-03": True,
    }
    disk = layout.writeback_backing(cfg, "pc-01", "system")[0]
    with open(disk, "r+b") as f:
        f.write(b"V2")
    storage.apply_writeback(cfg, IMAGES, clients, "pc-01", "driver", sessions={})
    # a candidate: served to nobody, not even a canary
    assert boot(app, "pc-03") == "v1"

    storage.set_state(cfg, IMAGES, "os", "v2", "tested")  # its boot test passed
    storage.set_state(cfg, IMAGES, "os", "v2", "canary")
    # v1's boot times are the baseline; the canary pc-03 boots v2, twice ok
    assert [boot(app, n) for n in ("pc-02", "pc-03", "pc-03")] == ["v1", "v2", "v2"]
    rows = e.db.query("SELECT client, version, result FROM boots ORDER BY id")
    assert [(r["client"], r["version"], r["result"]) for r in rows][-3:] == [
        ("pc-02", "v1", "ok"),
        ("pc-03", "v2", "ok"),
        ("pc-03", "v2", "ok"),
    ]
    e.collector.sample = e.privileged.sample()  # the collector's real zfs read
    submitted = []
    e.jobs.submit = lambda kind, extravars, by, wait=True: (  # stands in for the runner
        submitted.append(extravars) or {"id": "job"}
    )
    e.rollouts.tick()
    decision = e.rollouts.latest["os"]["decision"]
    # boot durations here are milliseconds: compare only that a decision was reached
    assert decision["ok"] == 2 and decision["action"] in ("promote", "pause"), decision
    if decision["action"] == "promote":
        assert submitted == [{"op": "state", "image": "os", "version": "v2", "state": "promoted"}]

    # a failed canary boot: its very callback makes the rollout roll v2 back
    submitted.clear()
    boot(app, "pc-03", "failed")
    assert e.rollouts.latest["os"]["decision"]["action"] == "rollback"
    assert submitted == [{"op": "state", "image": "os", "version": "v2", "state": "rejected"}]
    # what the job runs: playbooks/image.yml, validation included, as the runner would
    inventory = e.config["inventory"]
    extra = ["-e", json.dumps(submitted[0])]
    data, output = run_playbook(["-i", inventory, "playbooks/image.yml", *extra], timeout=300)
    result = task_result(data, "boot1", "Run the operation")
    assert result.get("changed") and not result.get("failed"), output
    assert [a["action"] for a in result["actions"]] == ["set_state"], result
    # the canary's next boot script comes with v1 again; nobody else ever had v2
    assert [boot(app, n) for n in ("pc-03", "pc-02")] == ["v1", "v1"]
    versions = e.db.query("SELECT DISTINCT client FROM boots WHERE version = 'v2'")
    assert [r["client"] for r in versions] == ["pc-03"]

    # promoted, every PC boots it
    with open(disk, "r+b") as f:
        f.write(b"V3")
    storage.apply_writeback(cfg, IMAGES, clients, "pc-01", "fixed", sessions={})
    storage.set_state(cfg, IMAGES, "os", "v3", "promoted")
    assert [boot(app, n) for n in PCS] == ["v3", "v3", "v3"]
