"""playbooks/validate.yml stops a site-like run before any task runs on any host.

A throwaway playbook imports validate.yml and then, on ggnet_servers (connection
local), touches a marker file.  With an invalid inventory the marker must not exist
afterwards; with a valid one it must (so the test can fail).  The same run exercises
the filter plugins inside real Ansible templating.
"""

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from ggnet.inventory import REPO_ROOT

pytestmark = pytest.mark.integration

ANSIBLE_PLAYBOOK = Path(sys.executable).parent / "ansible-playbook"
CORPUS = REPO_ROOT / "tests" / "unit" / "invalid"

PLAYBOOK = """\
- name: Validate
  ansible.builtin.import_playbook: {validate}

- name: Something that changes a server
  hosts: ggnet_servers
  gather_facts: false
  tasks:
    - name: Show the client model through the filter plugins
      ansible.builtin.debug:
        msg: >-
          {{{{ groups | ggnet_clients(hostvars) | map(attribute='mac') | join(',') }}}}
          {{{{ 'AA-BB-CC-00-00-01' | ggnet_mac }}}}
          {{{{ 'pc-01' | ggnet_target_iqn }}}}
          {{{{ '64G' | ggnet_size_bytes }}}}
          {{{{ '10.9.0.21' | ggnet_in_subnet('10.9.0.0/24') }}}}
    - name: Touch the marker
      ansible.builtin.file:
        path: {marker}
        state: touch
        mode: "0644"
"""


def _run(tmp_path: Path, case: str, fix=None) -> tuple[subprocess.CompletedProcess, Path]:
    inventory = tmp_path / "inventory"
    shutil.copytree(CORPUS / case, inventory)
    (inventory / "expected.txt").unlink()
    hosts = inventory / "hosts.yml"
    text = hosts.read_text().replace(
        "boot1: {ansible_host: 10.9.0.10}",
        "boot1: {ansible_host: 10.9.0.10, ansible_connection: local, "
        f"ansible_python_interpreter: {sys.executable}}}",
    )
    if fix:
        text = fix(text)
    hosts.write_text(text)
    marker = tmp_path / "marker"
    playbook = tmp_path / "site.yml"
    playbook.write_text(
        PLAYBOOK.format(validate=REPO_ROOT / "playbooks" / "validate.yml", marker=marker)
    )
    env = {**os.environ, "ANSIBLE_CONFIG": str(REPO_ROOT / "ansible.cfg"), "NO_COLOR": "1"}
    result = subprocess.run(
        [str(ANSIBLE_PLAYBOOK), "-i", str(inventory), str(playbook)],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env=env,
        check=False,
        timeout=300,
    )
    return result, marker


def test_an_invalid_inventory_stops_the_run_before_any_host_is_touched(tmp_path):
    result, marker = _run(tmp_path, "ip-in-dynamic-range")
    out = result.stdout + result.stderr
    assert result.returncode != 0
    assert "pc-02 (hosts.yml:9): ggnet_ip: is inside the dynamic range" in out
    assert "Something that changes a server" not in out
    assert not marker.exists()


def test_a_secret_is_never_shown_by_the_play(tmp_path):
    result, marker = _run(tmp_path, "chap-secret-short")
    out = result.stdout + result.stderr
    assert result.returncode != 0
    assert "(hidden, 9 characters)" in out
    assert "tooshort9" not in out
    assert not marker.exists()


def test_a_valid_inventory_runs_through(tmp_path):
    # The same inventory with the fixed address moved out of the dynamic range.
    result, marker = _run(
        tmp_path, "ip-in-dynamic-range", fix=lambda t: t.replace("10.9.0.150", "10.9.0.22")
    )
    out = result.stdout + result.stderr
    assert result.returncode == 0, out
    assert marker.exists()
    assert "52:54:00:00:00:01,52:54:00:00:00:02" in out
    assert "aa:bb:cc:00:00:01" in out
    assert "iqn.2025-01.lan.ggnet:target.pc-01" in out
    assert "68719476736" in out
