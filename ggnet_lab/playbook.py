"""Run one of ggnet's modules on the lab's boot server as a converge would: through
ansible-playbook, the lab inventory and ssh via the namespace.  Lab tests and benches
share this, so they exercise the module the way the playbooks do (its module_utils
shipped by Ansible, the VM's system python3 with rtslib-fb)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from . import paths, vm


def run_module(module: str, params: dict, workdir: Path, host: str = vm.NAME) -> dict:
    """MODULE with PARAMS on HOST; returns Ansible's result for that host (check its
    `failed`).  PARAMS may hold secrets: they go through a 0600 file in WORKDIR, never
    the command line."""
    root = paths.repo_root()
    argsfile = workdir / "args.json"
    argsfile.unlink(missing_ok=True)
    fd = os.open(argsfile, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as fh:
        json.dump(params, fh)
    playbook = workdir / "module.yml"
    playbook.write_text(
        f"- name: {module}\n  hosts: {host}\n  gather_facts: false\n  tasks:\n"
        f"    - name: {module}\n"
        f"      {module}: \"{{{{ lookup('ansible.builtin.file', args_file) | from_json }}}}\"\n"
    )
    env = {
        **os.environ,
        "ANSIBLE_CONFIG": str(root / "ansible.cfg"),
        "ANSIBLE_STDOUT_CALLBACK": "ansible.posix.json",
        "ANSIBLE_CALLBACKS_ENABLED": "ansible.posix.json",
    }
    proc = subprocess.run(
        [str(Path(sys.executable).parent / "ansible-playbook"), "-i", str(root / "inventory" / "lab"),
         str(playbook), "-e", f"args_file={argsfile}"],
        capture_output=True, text=True, env=env, cwd=root, timeout=900, check=False,
    )  # fmt: skip
    start = proc.stdout.find("{")
    if start < 0:
        raise RuntimeError(f"ansible-playbook gave no result: {proc.stdout}{proc.stderr}")
    return json.loads(proc.stdout[start:])["plays"][0]["tasks"][0]["hosts"][host]
