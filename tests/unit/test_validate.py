"""Validation of whole inventories: the corpus of invalid ones, and the shipped ones.

Each directory under tests/unit/invalid/ is a small inventory plus expected.txt, one
fragment per line that must appear in some problem line.  "!fragment" must appear in
no line (secrets), "=N fragment" in exactly N lines (a group variable is reported
once, not once per host).
"""

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from ggnet import validate as validation
from ggnet.inventory import REPO_ROOT

from ggnet_cli.validate import check

pytestmark = pytest.mark.unit

CORPUS = Path(__file__).parent / "invalid"
CASES = sorted(p.name for p in CORPUS.iterdir() if (p / "expected.txt").is_file())
# These go through the installed `ggnet` command as a subprocess; the rest in-process.
CLI_CASES = ["mac-duplicate-other-notation", "yaml-broken-hosts", "chap-secret-short"]
GGNET = Path(sys.executable).parent / "ggnet"


@pytest.fixture(autouse=True)
def _lab_dir(tmp_path, monkeypatch):
    # The lab inventory's CHAP secret is a password lookup that writes its file under
    # ggnet_lab_dir: keep that out of the real lab state.
    monkeypatch.setenv("GGNET_LAB_DIR", str(tmp_path / "lab"))


def _snapshot(root: Path) -> dict[str, str]:
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


def _assert_expected(case: str, lines: list[str]) -> None:
    assert lines, f"{case}: the inventory was accepted"
    text = "\n".join(lines)
    for fragment in (CORPUS / case / "expected.txt").read_text().splitlines():
        if not fragment.strip():
            continue
        if fragment.startswith("!"):
            assert fragment[1:] not in text, f"{case}: {fragment[1:]!r} must not appear:\n{text}"
        elif fragment.startswith("="):
            count, frag = fragment[1:].split(" ", 1)
            found = sum(frag in line for line in lines)
            assert found == int(count), f"{case}: {frag!r} in {found} lines:\n{text}"
        else:
            assert any(fragment in line for line in lines), f"{case}: no {fragment!r} in:\n{text}"


def test_the_corpus_is_big_enough():
    assert len(CASES) >= 25


@pytest.mark.parametrize("case", CASES)
def test_invalid_inventory_is_rejected_with_the_expected_message(case):
    before = _snapshot(CORPUS / case)
    _inventory, lines, _problems = check(CORPUS / case)
    _assert_expected(case, lines)
    assert _snapshot(CORPUS / case) == before, "validation changed the inventory"


@pytest.mark.parametrize("case", CLI_CASES)
def test_cli_exits_2_with_one_line_per_problem(case, tmp_path):
    before = _snapshot(CORPUS / case)
    result = subprocess.run(
        [str(GGNET), "validate", "-i", str(CORPUS / case)],
        capture_output=True,
        text=True,
        cwd=tmp_path,  # any directory: the repo's ansible.cfg must still apply
        check=False,
    )
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert lines[-1].endswith("problem(s); nothing was changed")
    _assert_expected(case, lines[:-1])
    assert result.stdout == ""
    assert _snapshot(CORPUS / case) == before


@pytest.mark.parametrize("name", ["lab", "example"])
def test_shipped_inventories_are_valid(name):
    inventory, lines, _ = check(REPO_ROOT / "inventory" / name)
    assert lines == []
    assert inventory.servers and inventory.clients


@pytest.mark.parametrize(
    ("name", "summary"),
    [
        ("lab", "1 server(s), 3 client(s), 2 image(s)"),
        ("example", "1 server(s), 40 client(s), 3 image(s)"),
    ],
)
def test_cli_exits_0_on_the_shipped_inventories(name, summary, tmp_path):
    result = subprocess.run(
        [str(GGNET), "validate", "-i", str(REPO_ROOT / "inventory" / name)],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert summary in result.stdout


def test_cli_json_output(tmp_path):
    result = subprocess.run(
        [str(GGNET), "validate", "--json", "-i", str(CORPUS / "chap-secret-long")],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        check=False,
    )
    assert result.returncode == 2
    data = json.loads(result.stdout)
    assert data["valid"] is False
    assert data["problems"][0]["key"] == "ggnet_iscsi.chap_secret"
    assert "waytoolong" not in result.stdout


def test_default_inventory_comes_from_ansible_inventory(monkeypatch):
    from ggnet_cli.inventory import default_inventory

    monkeypatch.setenv("ANSIBLE_INVENTORY", "/somewhere/site")
    assert default_inventory() == Path("/somewhere/site")
    monkeypatch.delenv("ANSIBLE_INVENTORY")
    monkeypatch.delenv("GGNET_API_CONFIG", raising=False)
    assert default_inventory() == REPO_ROOT / "inventory" / "lab"


def test_on_a_boot_server_the_default_inventory_is_the_apis(monkeypatch, tmp_path):
    # `ggnet preflight` from the service (ExecStartPre, the metrics timer) has no -i.
    from ggnet_cli.inventory import default_inventory

    settings = tmp_path / "api.yml"
    settings.write_text("inventory: /var/lib/ggnet/inventory\n")
    monkeypatch.delenv("ANSIBLE_INVENTORY", raising=False)
    monkeypatch.setenv("GGNET_API_CONFIG", str(settings))
    assert default_inventory() == Path("/var/lib/ggnet/inventory")


def test_loader_gives_plain_templated_data():
    from ggnet.inventory import load_inventory

    inventory = load_inventory(REPO_ROOT / "inventory" / "lab")
    assert set(inventory.servers) == {"boot1"}
    assert set(inventory.clients) == {"pc-bios", "pc-uefi", "pc-pxe"}
    assert inventory.groups["lab_pcs"] == ["pc-bios", "pc-pxe", "pc-uefi"]
    pc = inventory.clients["pc-pxe"]
    assert pc["ggnet_lab_firmware"] == "uefi-pxe"
    assert pc["ggnet_image"] == "lab-os"  # from group_vars/lab_pcs.yml
    assert type(pc["ggnet_mac"]) is str  # not Ansible's tagged str
    assert pc["ggnet_lab_dir"] == os.environ["GGNET_LAB_DIR"]  # the lookup was templated
    assert len(pc["ggnet_iscsi"]["chap_secret"]) == 16
    assert inventory.origins["pc-pxe"]["ggnet_image"] == "group_vars/lab_pcs.yml:2"


def test_validate_takes_plain_dicts_and_merges_shared_problems():
    groups = {
        "all": ["boot1", "a", "b"],
        "ggnet_servers": ["boot1"],
        "ggnet_clients": ["a", "b"],
        "room": ["a", "b"],
    }
    settings = {
        "ggnet_network": {
            "interface": "eth0",
            "server_ip": "10.0.0.1",
            "subnet": "10.0.0.0/24",
            "dhcp_mode": "proxy",
        },
        "ggnet_images": {"os": {"size": "1G", "kind": "system"}},
    }
    hostvars = {
        "boot1": dict(settings),
        "a": {**settings, "ggnet_mac": "52:54:00:00:00:0a", "ggnet_image": "nope"},
        "b": {**settings, "ggnet_mac": "52:54:00:00:00:0b", "ggnet_image": "nope"},
    }
    origins = {h: {"ggnet_image": "group_vars/room.yml:1"} for h in ("a", "b")}
    problems = validation.validate({"groups": groups, "hostvars": hostvars, "origins": origins})
    assert [str(p) for p in problems] == [
        "group room (group_vars/room.yml:1): ggnet_image: unknown image on server boot1 "
        "(known: os) (value: nope)"
    ]
    # Without origins each host reports its own problem.
    problems = validation.validate({"groups": groups, "hostvars": hostvars})
    assert [p.where for p in problems] == ["a", "b"]


def test_role_knobs_are_accepted(tmp_path):
    (tmp_path / "r" / "defaults").mkdir(parents=True)
    (tmp_path / "r" / "defaults" / "main.yml").write_text("ggnet_r_port: 80\nother: 1\n")
    assert validation.role_knobs(tmp_path) == {"ggnet_r_port"}


def test_an_installed_engine_knows_role_knobs_from_the_roles_it_is_given(tmp_path):
    """A boot server's engine is installed apart from its roles: an approval there
    validated without the roles' knobs and refused every inventory that set one (the
    lab sets ggnet_grafana_* in group_vars)."""
    import shutil

    from ggnet.inventory import check as check_inventory

    inventory = tmp_path / "inventory"
    shutil.copytree(REPO_ROOT / "inventory" / "lab", inventory)
    key = "ggnet_grafana_apt_repository_url"
    assert key in (inventory / "group_vars" / "ggnet_servers.yml").read_text()
    (tmp_path / "no-roles").mkdir()
    _inv, without, _problems = check_inventory(inventory, roles_dir=tmp_path / "no-roles")
    assert any(key in line and "unknown ggnet key" in line for line in without), without
    _inv, with_roles, _problems = check_inventory(inventory, roles_dir=REPO_ROOT / "roles")
    assert not any(key in line for line in with_roles), with_roles
