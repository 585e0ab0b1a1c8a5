"""`ggnet diff`: the drift report read from a check run's JSON document, and the command.

The documents in tests/unit/drift/ are what ansible-core 2.19's `ansible.posix.json`
callback printed for tiny playbooks run with --check --diff against a tmp directory
(only `invocation` and deprecation notes removed, tmp paths shortened):

- room.json: ggnet_writebacks, ggnet_targets and ggnet_inventory_sync tasks (stand-in
  modules that return the results given to them) and the netboot role's hosts-file
  template over a file holding the lab's three PCs: pc-bios renamed pc-one (same MAC),
  pc-pxe's MAC changed, pc-uefi's writeback pending, a stray target old-pc.
- common.json: a role's copy, a looped copy, a debug, a command skipped in check
  mode, a skipped task and a handler.
- failed.json / unreachable.json: the same play failing on a task, and on ssh.
"""

from __future__ import annotations

import copy
import json
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
from ggnet.inventory import REPO_ROOT, load_inventory

from ggnet_cli import diff, drift
from ggnet_cli.drift import Change, summarise

pytestmark = pytest.mark.unit

DOCS = Path(__file__).parent / "drift"
PREFIX = "iqn.2025-01.lan.ggnet"
ROOM_PCS = ["pc-one", "pc-pxe", "pc-uefi"]


def _doc(name: str) -> dict:
    return json.loads((DOCS / f"{name}.json").read_text())


def _iqn_of(server: str, name: str) -> str | None:
    return diff._iqn_of({server: {"ggnet_iscsi": {"iqn_prefix": PREFIX}}})(server, name)


def _texts(changes: list[Change]) -> list[str]:
    return [c.text() for c in changes]


def _task(name: str, path: str, result: dict, host: str = "boot1") -> dict:
    """One task entry as the callback writes it (lockstep strategy)."""
    span = {"start": "2026-12-06T08:49:29.004567Z", "end": "2026-12-06T08:49:30.541417Z"}
    return {
        "hosts": {host: {"_ansible_no_log": False, **result}},
        "task": {"duration": span, "id": "02fc-0007", "name": name, "path": path},
    }


def _play(*tasks: dict, hosts: tuple[str, ...] = ("boot1",)) -> dict:
    counts = {"changed": 0, "failures": 0, "ignored": 0, "ok": 1, "rescued": 0}
    return {
        "custom_stats": {},
        "global_custom_stats": {},
        "plays": [
            {
                "play": {
                    "duration": {"start": "2026-12-06T08:49:28Z", "end": "2026-12-06T08:49:32Z"},
                    "id": "02fc-0002",
                    "name": "Converge the boot servers",
                    "path": "/repo/playbooks/site.yml:8",
                },
                "tasks": list(tasks),
            }
        ],
        "stats": {h: {**counts, "skipped": 0, "unreachable": 0} for h in hosts},
    }


ISCSI_TASKS = "/repo/roles/ggnet_iscsi/tasks/main.yml:40"


def _targets(name: str, actions: list[dict], host: str = "boot1", **extra) -> dict:
    result = {"action": "ggnet_targets", "changed": bool(actions), "actions": actions}
    result.update(sessions={}, persisted=bool(actions), targets=len(actions), **extra)
    return _task(f"ggnet_iscsi : {name}", ISCSI_TASKS, result, host)


# --- the document of a room change ------------------------------------------------


def test_a_room_change_is_one_line_per_pc_in_four_columns():
    report = summarise(_doc("room"), ROOM_PCS, _iqn_of)

    stray = f"(not in the inventory) {PREFIX}:target.old-pc"
    assert sorted(report.pcs) == sorted(["pc-bios", "pc-one", "pc-pxe", "pc-uefi", stray])
    bios = report.pcs["pc-bios"]
    assert _texts(bios.writeback) == ["destroy (not in the inventory)"]  # both disks, once
    assert _texts(bios.target) == ["delete"]
    assert _texts(bios.dhcp) == ["remove (52:54:00:21:30:01 is now pc-one)"]
    assert _texts(bios.boot) == ["removed"]
    one = report.pcs["pc-one"]
    assert (_texts(one.writeback), _texts(one.target)) == (["create"], ["create"])
    assert (_texts(one.dhcp), _texts(one.boot)) == (
        ["add (52:54:00:21:30:01 was pc-bios)"],
        ["added"],
    )
    pxe = report.pcs["pc-pxe"]
    assert _texts(pxe.dhcp) == ["change (mac 52:54:00:21:30:03 -> 52:54:00:21:30:04)"]
    assert _texts(pxe.boot) == ["changed (image, mac)"]
    assert pxe.writeback == pxe.target == []
    uefi = report.pcs["pc-uefi"]
    assert _texts(uefi.writeback) == ["pending (system: in session)"]
    assert _texts(uefi.target) == ["change (remove_lun)"]
    assert uefi.dhcp == uefi.boot == []
    assert _texts(report.pcs[stray].target) == ["delete"]
    assert report.servers == [] and report.failures == [] and report.differs


def test_the_text_report_lines_up_the_columns_and_puts_stray_targets_last():
    lines = drift.render(summarise(_doc("room"), ROOM_PCS, _iqn_of)).splitlines()

    assert [line.split()[0] for line in lines] == [
        "pc-bios",
        "pc-one",
        "pc-pxe",
        "pc-uefi",
        "(not",
    ]
    bios = " ".join(lines[0].split())
    assert bios == (
        "pc-bios writeback: destroy (not in the inventory) target: delete "
        "DHCP: remove (52:54:00:21:30:01 is now pc-one) boot: removed"
    )
    assert len({line.index("target:") for line in lines}) == 1
    assert "writeback: -" in lines[-1]


def test_without_the_inventory_every_target_is_reported_by_its_iqn():
    report = summarise(_doc("room"))

    assert f"(not in the inventory) {PREFIX}:target.pc-one" in report.pcs
    assert report.pcs["pc-one"].target == []


def test_the_json_report_holds_every_change_with_its_server():
    data = summarise(_doc("room"), ROOM_PCS, _iqn_of).as_dict()

    assert data["differs"] is True and data["failed"] is False
    assert data["hosts"] == ["boot1"]
    bios = next(p for p in data["pcs"] if p["pc"] == "pc-bios")
    assert bios["target"] == [{"server": "boot1", "change": "delete", "detail": ""}]
    assert set(bios) == {"pc", "writeback", "target", "dhcp", "boot"}
    json.dumps(data)


# --- server-wide changes and the run's own noise ------------------------------------


def test_changes_of_no_pc_are_listed_per_server_and_task():
    report = summarise(_doc("common"))

    assert report.pcs == {}
    # The handler only follows the motd; the skipped command and task changed nothing.
    assert [s.text() for s in report.servers] == [
        "boot1: ggnet_common/Write the motd: changed",
        "boot1: ggnet_common/Write the images list: changed",
    ]
    assert drift.render(report).splitlines() == [
        "server-wide:",
        "  boot1: ggnet_common/Write the motd: changed",
        "  boot1: ggnet_common/Write the images list: changed",
    ]


def test_a_loop_counts_as_changed_when_one_item_did():
    document = _doc("common")
    looped = document["plays"][0]["tasks"][1]["hosts"]["boot1"]
    del looped["changed"]
    looped["results"][0]["changed"] = False

    assert "ggnet_common/Write the images list" in [s.task for s in summarise(document).servers]
    looped["results"][1]["changed"] = False
    assert "ggnet_common/Write the images list" not in [s.task for s in summarise(document).servers]


def test_nothing_differs():
    document = _play(
        _targets("Converge every client's target in one call", []),
        _task(
            "ggnet_storage : Converge the pool and its images",
            "/repo/roles/ggnet_storage/tasks/main.yml:8",
            {"action": "ggnet_images", "changed": False, "actions": []},
        ),
    )
    report = summarise(document, ROOM_PCS, _iqn_of)

    assert not report.differs
    assert drift.render(report) == "no drift: the servers match the inventory"


def test_images_are_server_wide_with_their_actions():
    image = {"action": "create_image", "target": "ggpool/images/win10", "detail": "zvol"}
    document = _play(
        _task(
            "ggnet_storage : Converge the pool and its images",
            "/repo/roles/ggnet_storage/tasks/main.yml:8",
            {"action": "ggnet_images", "changed": True, "actions": [image]},
        )
    )

    assert [s.text() for s in summarise(document).servers] == [
        "boot1: ggnet_storage/Converge the pool and its images: changed "
        "(create_image ggpool/images/win10)"
    ]


# --- targets -----------------------------------------------------------------------


def test_the_retire_phase_and_the_converge_merge_per_pc():
    iqn = f"{PREFIX}:target.pc-uefi"
    document = _play(
        _targets(
            "Retire ggnet's targets from the other backend",
            [{"op": "delete_target", "target": iqn}],
        ),
        _targets(
            "Converge every client's target in one call",
            [
                {"op": "create_target", "target": iqn},
                {"op": "add_lun", "target": iqn, "lun": 1, "path": "/dev/zvol/a", "kind": "block"},
            ],
        ),
    )

    report = summarise(document, ROOM_PCS, _iqn_of)
    assert _texts(report.pcs["pc-uefi"].target) == ["delete", "create"]
    assert report.servers == []


def test_iqns_follow_each_servers_prefix_and_name_the_server_when_several():
    other = "iqn.2024-06.example.room"

    def iqn_of(server: str, name: str) -> str | None:
        prefixes = {"boot1": {"iqn_prefix": PREFIX}, "boot2": {"iqn_prefix": other}}
        return diff._iqn_of({s: {"ggnet_iscsi": p} for s, p in prefixes.items()})(server, name)

    document = _play(
        _targets("Converge", [{"op": "delete_target", "target": f"{PREFIX}:target.pc-pxe"}]),
        _targets(
            "Converge", [{"op": "create_target", "target": f"{other}:target.pc-pxe"}], "boot2"
        ),
        hosts=("boot1", "boot2"),
    )
    document["plays"][0]["tasks"][0]["hosts"].update(document["plays"][0]["tasks"][1]["hosts"])
    del document["plays"][0]["tasks"][1]

    report = summarise(document, ["pc-pxe"], iqn_of)
    assert list(report.pcs) == ["pc-pxe"]
    assert "target: delete on boot1, create on boot2" in drift.render(report)


def test_a_saved_configuration_alone_is_a_server_wide_change():
    document = _play(_targets("Converge every client's target in one call", []))
    document["plays"][0]["tasks"][0]["hosts"]["boot1"].update(changed=True, persisted=True)

    assert [s.text() for s in summarise(document).servers] == [
        "boot1: ggnet_iscsi/Converge every client's target in one call: changed "
        "(saved configuration)"
    ]


# --- DHCP ------------------------------------------------------------------------


def _hosts_file(before: str, after: str) -> dict:
    result = {
        "action": "ansible.builtin.template",
        "changed": before != after,
        "diff": [
            {
                "after": after,
                "after_header": "/repo/roles/ggnet_netboot/templates/dnsmasq-hosts.conf.j2",
                "before": before,
                "before_header": "/etc/ggnet/dnsmasq-hosts.conf",
            }
        ],
    }
    path = "/repo/roles/ggnet_netboot/tasks/main.yml:56"
    return _play(_task(f"ggnet_netboot : {drift.DHCP_TASK}", path, result))


def test_dhcp_lines_added_removed_and_changed_per_pc():
    head = "# Ansible managed\n# Fixed addresses of the PCs with ggnet_ip: MAC, address, name.\n"
    before = head + "52:54:00:00:00:01,10.0.0.1,pc-a\n52:54:00:00:00:02,10.0.0.2,pc-b\n"
    after = head + "52:54:00:00:00:01,10.0.0.9,pc-a\n52:54:00:00:00:03,10.0.0.3,pc-c\n"

    report = summarise(_hosts_file(before, after))
    assert {name: _texts(pc.dhcp) for name, pc in report.pcs.items()} == {
        "pc-a": ["change (ip 10.0.0.1 -> 10.0.0.9)"],
        "pc-b": ["remove"],
        "pc-c": ["add"],
    }
    assert report.servers == []


def test_a_first_hosts_file_adds_every_pc():
    report = summarise(_hosts_file("", "# head\n52:54:00:00:00:01,10.0.0.1,pc-a\n"))

    assert _texts(report.pcs["pc-a"].dhcp) == ["add"]


def test_a_hosts_file_changed_only_in_its_header_is_server_wide():
    line = "52:54:00:00:00:01,10.0.0.1,pc-a\n"
    report = summarise(_hosts_file("# old header\n" + line, "# new header\n" + line))

    assert report.pcs == {}
    assert [s.task for s in report.servers] == [f"ggnet_netboot/{drift.DHCP_TASK}"]


# --- boot-path entries -----------------------------------------------------------------


def test_a_server_without_boot_entries_is_no_error():
    sync = {"action": "ggnet_inventory_sync", "changed": True, "commit": "abc123"}
    document = _play(_task("ggnet_api : Bring the inventory", "/repo/roles/ggnet_api/x:1", sync))

    report = summarise(document)
    assert report.pcs == {}
    assert [s.task for s in report.servers] == ["ggnet_api/Bring the inventory"]
    sync["boot_entries"] = {"added": [], "removed": [], "changed": {}}
    assert summarise(_play(_task("ggnet_api : B", "/r/x:1", sync))).pcs == {}


# --- failures ------------------------------------------------------------------------


def test_the_failing_task_is_named_with_its_message():
    report = summarise(_doc("failed"))

    assert [f.as_dict() for f in report.failures] == [
        {
            "host": "boot1",
            "task": "Fail",
            "msg": "the pool is full: free space",
            "unreachable": False,
        }
    ]


def test_an_unreachable_server_is_a_failure():
    (failure,) = summarise(_doc("unreachable")).failures

    assert failure.unreachable and failure.host == "boot1"
    assert "Connection refused" in failure.msg


def test_an_ignored_failure_stopped_nothing():
    document = _doc("failed")
    document["stats"]["boot1"].update(failures=0, ignored=1)

    assert summarise(document).failures == []


def test_a_failed_loop_names_its_items():
    result = {
        "action": "ansible.builtin.apt",
        "changed": False,
        "failed": True,
        "msg": "One or more items failed",
        "results": [
            {"item": "tgt", "_ansible_item_label": "tgt", "failed": False, "changed": False},
            {"item": "x", "_ansible_item_label": "x", "failed": True, "msg": "No package x"},
        ],
    }
    document = _play(_task("ggnet_iscsi : Install", ISCSI_TASKS, result))
    document["stats"]["boot1"]["failures"] = 1

    assert [f.msg for f in summarise(document).failures] == ["x: No package x"]


def test_reading_the_document_needs_neither_ansible_nor_the_engine():
    code = (
        "import sys, ggnet_cli.drift\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] in ('ggnet', 'ansible')))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


# --- the command ---------------------------------------------------------------------


@pytest.fixture(scope="module")
def lab_inventory(tmp_path_factory):
    # The lab inventory's CHAP secret is a password lookup writing under ggnet_lab_dir.
    mp = pytest.MonkeyPatch()
    mp.setenv("GGNET_LAB_DIR", str(tmp_path_factory.mktemp("lab")))
    yield load_inventory(REPO_ROOT / "inventory" / "lab")
    mp.undo()


@pytest.fixture
def ran(monkeypatch, lab_inventory):
    """Runs `ggnet diff` with the playbook's run replaced: set ran.answer to
    (exit code, stdout, stderr); ran.cmd is what it would have run."""

    ran = SimpleNamespace(answer=(0, "", ""), cmd=[])

    def fake_run(cmd, repo, tick):
        ran.cmd = cmd
        tick()
        return ran.answer

    monkeypatch.setattr(diff, "_load", lambda path: (lab_inventory, []))
    monkeypatch.setattr(diff, "run_playbook", fake_run)
    return ran


def _main(*argv: str) -> int:
    from ggnet_cli.main import main

    return main(["diff", "-i", str(REPO_ROOT / "inventory" / "lab"), *argv])


def _lab_room() -> str:
    """room.json against inventory/lab, whose PCs are pc-bios, pc-uefi and pc-pxe."""
    return json.dumps(_doc("room"))


def test_exit_1_when_something_differs(ran, capsys):
    ran.answer = (0, "[WARNING]: something first\n" + _lab_room(), "")

    assert _main() == diff.EXIT_DIFFERS
    out, err = capsys.readouterr()
    assert out.startswith("pc-bios ")
    assert "running site.yml --check on 1 server(s) (boot1)..." in err
    assert "still running" in err and "site.yml --check took" in err
    assert ran.cmd[1:] == [
        "-i",
        str(REPO_ROOT / "inventory" / "lab"),
        str(REPO_ROOT / "playbooks" / "site.yml"),
        "--check",
        "--diff",
    ]


def test_lab_pcs_map_their_targets_by_the_inventorys_prefix(ran, capsys):
    ran.answer = (0, _lab_room(), "")

    assert _main("--json") == diff.EXIT_DIFFERS
    data = json.loads(capsys.readouterr().out)
    names = [p["pc"] for p in data["pcs"]]
    assert "pc-bios" in names and "pc-uefi" in names
    assert data["inventory"].endswith("inventory/lab")


def test_exit_0_when_nothing_differs(ran, capsys):
    ran.answer = (0, json.dumps(_doc("common") | {"plays": []}), "")

    assert _main() == diff.EXIT_SAME
    assert capsys.readouterr().out.strip() == "no drift: the servers match the inventory"


def test_a_limit_keeps_the_validation_play(ran, capsys):
    ran.answer = (0, json.dumps(_play()), "")

    assert _main("--limit", "boot1") == diff.EXIT_SAME
    assert ran.cmd[-2:] == ["--limit", "localhost,boot1"]
    assert "on 1 server(s) (boot1)" in capsys.readouterr().err


def test_exit_2_with_the_failing_task_and_what_to_do(ran, capsys):
    ran.answer = (2, json.dumps(_doc("failed")), "")

    assert _main() == diff.EXIT_ERROR
    out, err = capsys.readouterr()
    assert out == ""
    assert "boot1: Fail: the pool is full: free space" in err
    assert "next: a converge would stop here too" in err
    assert "nothing was changed (check mode)" in err


def test_exit_2_for_an_unreachable_server_says_how_to_check_it(ran, capsys):
    ran.answer = (4, json.dumps(_doc("unreachable")), "")

    assert _main() == diff.EXIT_ERROR
    err = capsys.readouterr().err
    assert "next: boot1 is unreachable: make `ansible -i" in err and "-m ping boot1`" in err


def test_exit_2_with_json_still_prints_the_failures(ran, capsys):
    ran.answer = (2, json.dumps(_doc("failed")), "")

    assert _main("--json") == diff.EXIT_ERROR
    data = json.loads(capsys.readouterr().out)
    assert data["failed"] is True and data["failures"][0]["task"] == "Fail"


def test_exit_2_when_the_playbook_prints_no_document(ran, capsys):
    ran.answer = (1, "", "ERROR! the playbook: site.yml could not be found\n")

    assert _main() == diff.EXIT_ERROR
    err = capsys.readouterr().err
    assert "could not be found" in err and "printed no result (exit 1)" in err


def test_exit_2_when_the_run_fails_without_a_failed_task(ran, capsys):
    ran.answer = (1, json.dumps(_play()), "ERROR! something outside any task\n")

    assert _main() == diff.EXIT_ERROR
    assert "something outside any task" in capsys.readouterr().err


def test_an_invalid_inventory_stops_before_the_playbook(monkeypatch, capsys):
    monkeypatch.setattr(diff, "_load", lambda path: (None, ["inventory/x: inventory not found"]))
    monkeypatch.setattr(diff, "run_playbook", lambda *a: pytest.fail("the playbook ran"))

    assert _main() == diff.EXIT_ERROR
    err = capsys.readouterr().err
    assert "inventory not found" in err and "ggnet validate -i" in err


def test_the_run_ticks_while_the_playbook_runs(monkeypatch, tmp_path):
    monkeypatch.setattr(diff, "PROGRESS_EVERY", 0.05)
    ticks = []
    script = "import time, json; time.sleep(0.4); print(json.dumps({'plays': []}))"

    rc, out, _ = diff.run_playbook(
        [sys.executable, "-c", script], tmp_path, lambda: ticks.append(1)
    )
    assert (rc, diff.parse_document(out)) == (0, {"plays": []})
    assert ticks


def test_the_playbook_env_asks_for_the_json_document_only(monkeypatch):
    from ggnet_cli.ansible_env import ansible_env

    monkeypatch.delenv("ANSIBLE_CONFIG", raising=False)
    env = ansible_env(REPO_ROOT)
    assert (
        env["ANSIBLE_STDOUT_CALLBACK"] == env["ANSIBLE_CALLBACKS_ENABLED"] == "ansible.posix.json"
    )
    assert env["ANSIBLE_CONFIG"] == str(REPO_ROOT / "ansible.cfg")


def test_a_document_is_not_changed_by_reading_it():
    document = _doc("room")
    kept = copy.deepcopy(document)
    summarise(document, ROOM_PCS, _iqn_of)
    assert document == kept


def test_room_compares_only_the_room_tag(ran, capsys):
    ran.answer = (0, json.dumps(_play()), "")

    assert _main("--room") == diff.EXIT_SAME
    assert ran.cmd[-2:] == ["--tags", "room"]
