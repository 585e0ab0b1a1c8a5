"""ggnet_testing.playbook: one module through ansible-playbook on localhost."""

from __future__ import annotations

import pytest
from ggnet_testing.playbook import run_module

pytestmark = pytest.mark.unit


def test_a_module_runs_on_localhost_with_its_params_from_a_private_file(tmp_path):
    result, output = run_module("ansible.builtin.ping", {"data": "Private-1"}, tmp_path)
    assert result["ping"] == "Private-1" and not result.get("failed"), output
    # The parameters file is gone afterwards; only the generated playbook stays.
    assert [p.name for p in tmp_path.iterdir()] == ["run-ansible.builtin.ping.yml"]


def test_check_diff_and_verbosity_reach_ansible(tmp_path):
    target = tmp_path / "file.txt"
    params = {"dest": str(target), "content": "x\n"}
    result, output = run_module(
        "ansible.builtin.copy", params, tmp_path, check=True, diff=True, verbosity=2
    )
    assert result["changed"] and not target.exists(), output
    assert result["diff"], result  # --diff
    assert "ansible-playbook [core" in output  # -v prints the version banner
