"""Commands print only what they mean: no library warning opens a job or a command.

cryptography 51 began warning about DSA when Ansible imports its SSH code, and that
line then opened every job's event stream (its first event became `verbose`, not
`playbook_on_start`) and every `ggnet` command's output.  The lock pins a release that
does not; these tests fail if a lock update brings such a warning back.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.unit

REPO = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
WARNING_MARKERS = ("Warning:", "[WARNING]", "[DEPRECATION WARNING]")


def _env() -> dict[str, str]:
    env = dict(os.environ, ANSIBLE_CONFIG=str(REPO / "ansible.cfg"))
    env.pop("PYTHONWARNINGS", None)
    return env


def _stray(text: str) -> list[str]:
    return [line for line in text.splitlines() if any(m in line for m in WARNING_MARKERS)]


def test_ansible_controller_imports_raise_no_warning():
    # The SSH connection plugin is what every lab converge and server job loads.
    code = "import ansible.plugins.connection.ssh, ansible.cli.playbook, ansible_runner"
    proc = subprocess.run(
        [sys.executable, "-W", "error", "-c", code],
        capture_output=True,
        text=True,
        env=_env(),
        check=False,
    )
    assert proc.returncode == 0, proc.stderr


@pytest.mark.parametrize(
    "argv",
    [
        ["ansible-playbook", "playbooks/validate.yml"],
        ["ggnet", "validate", "-i", "inventory/lab"],
    ],
    ids=["ansible-playbook", "ggnet-validate"],
)
def test_commands_print_no_warning(argv):
    proc = subprocess.run(
        [str(BIN / argv[0]), *argv[1:]],
        cwd=REPO,
        capture_output=True,
        text=True,
        env=_env(),
        check=False,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert _stray(proc.stdout + proc.stderr) == []
