"""How the `ggnet` command runs ansible-playbook: this checkout's ansible.cfg, this
installation's ansible-playbook, and results as one JSON document on stdout."""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

JSON_CALLBACK = "ansible.posix.json"


def ansible_playbook() -> str:
    """The ansible-playbook beside this Python (the venv's), else the one on PATH."""
    beside = Path(sys.executable).parent / "ansible-playbook"
    if beside.is_file():
        return str(beside)
    found = shutil.which("ansible-playbook")
    if found is None:
        raise FileNotFoundError("ansible-playbook not found beside this Python nor on PATH")
    return found


def ansible_env(repo: Path, **extra: str) -> dict[str, str]:
    """The environment for ansible-playbook run from REPO: its ansible.cfg (an explicit
    ANSIBLE_CONFIG wins), the JSON stdout callback and no other callback -- another
    one printing to stdout (profile_tasks) would break the document."""
    env = dict(os.environ)
    env.setdefault("ANSIBLE_CONFIG", str(repo / "ansible.cfg"))
    env.update(
        ANSIBLE_STDOUT_CALLBACK=JSON_CALLBACK,
        ANSIBLE_CALLBACKS_ENABLED=JSON_CALLBACK,
        ANSIBLE_LOCALHOST_WARNING="false",
        ANSIBLE_INVENTORY_UNPARSED_WARNING="false",
        PATH=f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}",
        **extra,
    )
    return env
