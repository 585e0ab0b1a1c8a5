"""Run one of ggnet's modules the way a converge does: through ansible-playbook.

The one runner for tests, benches and the lab.  On localhost (the default) the module
runs under this venv's Python, so it sees the same libraries as the test; on a lab host
(`inventory=` the lab's, `connection=None`) Ansible ships it over ssh as the playbooks
do.  Parameters may hold secrets: they reach Ansible through a 0600 file in WORKDIR,
never the command line.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

from ggnet_lab import vm

REPO = Path(__file__).resolve().parents[2]
VENV_BIN = Path(sys.executable).parent
ANSIBLE_PLAYBOOK = VENV_BIN / "ansible-playbook"
LAB_INVENTORY = REPO / "inventory" / "lab"


def ansible_env(**extra: str) -> dict[str, str]:
    """The environment for ansible-playbook: the repo's ansible.cfg, results as JSON."""
    return {
        **os.environ,
        "ANSIBLE_CONFIG": str(REPO / "ansible.cfg"),
        "ANSIBLE_STDOUT_CALLBACK": "ansible.posix.json",
        "ANSIBLE_CALLBACKS_ENABLED": "ansible.posix.json",
        "ANSIBLE_LOCALHOST_WARNING": "false",
        "ANSIBLE_INVENTORY_UNPARSED_WARNING": "false",
        "PATH": f"{VENV_BIN}:{os.environ['PATH']}",
        **extra,
    }


def run_playbook(
    argv: list[str],
    *,
    check: bool = False,
    diff: bool = False,
    verbosity: int = 0,
    timeout: float = 900,
    env: dict[str, str] | None = None,
) -> tuple[dict, str]:
    """ansible-playbook ARGV (inventory, playbook, extra vars) with the JSON callback,
    ENV added to its environment; returns what the callback printed and the whole
    output (for secret checks)."""
    cmd = [str(ANSIBLE_PLAYBOOK), *argv]
    if check:
        cmd.append("--check")
    if diff:
        cmd.append("--diff")
    if verbosity:
        cmd.append("-" + "v" * verbosity)
    proc = subprocess.run(
        cmd,
        capture_output=True,
        text=True,
        env=ansible_env(**(env or {})),
        cwd=REPO,
        timeout=timeout,
        check=False,
    )
    output = proc.stdout + proc.stderr
    # -v and warnings may print before the JSON document.
    start = proc.stdout.find("{")
    if start < 0:
        raise RuntimeError(f"ansible-playbook printed no JSON (rc {proc.returncode}):\n{output}")
    return json.loads(proc.stdout[start:]), output


def task_result(data: dict, host: str, task: str | None = None) -> dict:
    """HOST's result of the task named TASK (default: the first task of the first play)."""
    for play in data["plays"]:
        for entry in play["tasks"]:
            if task is None or entry["task"]["name"] == task:
                return entry["hosts"][host]
    raise LookupError(f"no task {task!r} ran on {host}")


def run_module(
    module: str,
    params: dict,
    workdir: Path,
    *,
    host: str = "localhost",
    inventory: Path | None = None,
    connection: str | None = "local",
    check: bool = False,
    diff: bool = False,
    verbosity: int = 0,
    timeout: float = 900,
) -> tuple[dict, str]:
    """MODULE with PARAMS on HOST; returns Ansible's result for HOST (check its
    `failed`) and the whole output.

    Without INVENTORY, HOST alone is the inventory.  A `local` connection runs the
    module under this Python; None leaves the connection to the inventory.
    """
    fd, name = tempfile.mkstemp(dir=workdir, prefix="args-", suffix=".json")  # mode 0600
    argsfile = Path(name)
    with os.fdopen(fd, "w") as fh:
        json.dump(params, fh)
    playbook = workdir / f"run-{module}.yml"
    playbook.write_text(
        f"- name: {module}\n  hosts: {host}\n  gather_facts: false\n  tasks:\n"
        f"    - name: {module}\n"
        f"      {module}: \"{{{{ lookup('ansible.builtin.file', args_file) | from_json }}}}\"\n"
    )
    argv = ["-i", str(inventory) if inventory else f"{host},"]
    if connection:
        argv += ["-c", connection]
    if connection == "local":
        argv += ["-e", f"ansible_python_interpreter={sys.executable}"]
    argv += [str(playbook), "-e", f"args_file={argsfile}"]
    try:
        data, output = run_playbook(
            argv, check=check, diff=diff, verbosity=verbosity, timeout=timeout
        )
    finally:
        argsfile.unlink(missing_ok=True)
    return task_result(data, host), output


def run_on_lab(module: str, params: dict, workdir: Path, host: str = vm.NAME) -> dict:
    """MODULE on a host of the lab inventory (the boot server by default), over ssh via
    the lab's namespace as its converge runs: its module_utils shipped by Ansible, the
    VM's own python3.  Returns the host's result."""
    result, _ = run_module(
        module, params, workdir, host=host, inventory=LAB_INVENTORY, connection=None
    )
    return result
