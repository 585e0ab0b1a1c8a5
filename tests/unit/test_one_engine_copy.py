"""One process never holds two copies of an engine module.

The engine's files (module_utils/ggnet) are imported as `ggnet` everywhere outside the
Ansible modules.  Loaded a second time under another name (`ansible.module_utils.ggnet`
through a fallback, a file loaded by path), a class such as validate.Problem would
exist twice and `isinstance` or `is UNRESOLVED` would silently disagree.

The check runs a real ansible-playbook, as a controller does: playbooks/validate.yml
(the validate action plugin), a task templating through the ggnet filter plugin, and
the API's app factory imported into the same process.  Two small plugins written here
report every loaded module's file: a filter in the worker that runs the filter task
(it inherits what the main process loaded, the action plugin included), and a callback
in the main process at the end.
"""

from __future__ import annotations

import json
from collections import defaultdict
from pathlib import Path

import pytest
from ggnet_testing.playbook import REPO, run_playbook, task_result

pytestmark = pytest.mark.unit

ENGINE = REPO / "module_utils" / "ggnet"

# Both write {module name: its file} of sys.modules to the path they are given.
DUMP = """
import json
import sys


def dump(path, extra=()):
    for name in extra:
        __import__(name)
    files = {n: getattr(m, "__file__", None) for n, m in list(sys.modules.items())}
    with open(path, "w") as fh:
        json.dump(files, fh)
    return path
"""

FILTER = (
    DUMP
    + """

class FilterModule:
    def filters(self):
        return {"ggnet_test_dump_modules": dump}
"""
)

CALLBACK = (
    DUMP
    + """
import os

from ansible.plugins.callback import CallbackBase


class CallbackModule(CallbackBase):
    CALLBACK_VERSION = 2.0
    CALLBACK_TYPE = "aggregate"
    CALLBACK_NAME = "ggnet_test_dump_modules"
    CALLBACK_NEEDS_ENABLED = True

    def v2_playbook_on_stats(self, stats):
        # The API serves the same engine: its factory joins the controller's modules.
        dump(os.environ["GGNET_TEST_DUMP"], extra=["ggnet_api.app"])
"""
)

PLAYBOOK = """\
- name: Validate
  ansible.builtin.import_playbook: {validate}

- name: The filter plugin, then what this worker holds
  hosts: localhost
  gather_facts: false
  tasks:
    - name: Template through the ggnet filters
      ansible.builtin.debug:
        msg: "{{{{ 'pc-01' | ggnet_target_iqn }}}} {{{{ dump | ggnet_test_dump_modules }}}}"
"""


def engine_names(files: dict[str, str | None]) -> dict[Path, list[str]]:
    """Each engine file and the module names it is loaded under."""
    names: dict[Path, list[str]] = defaultdict(list)
    for name, file in files.items():
        if file and Path(file).resolve().is_relative_to(ENGINE):
            names[Path(file).resolve()].append(name)
    return names


def test_engine_modules_are_loaded_once_by_a_controller_run(tmp_path):
    (tmp_path / "filter").mkdir()
    (tmp_path / "filter" / "ggnet_test_dump.py").write_text(FILTER)
    (tmp_path / "callback").mkdir()
    (tmp_path / "callback" / "ggnet_test_dump_modules.py").write_text(CALLBACK)
    playbook = tmp_path / "play.yml"
    playbook.write_text(PLAYBOOK.format(validate=REPO / "playbooks" / "validate.yml"))
    worker, main = tmp_path / "worker.json", tmp_path / "main.json"
    data, output = run_playbook(
        [str(playbook), "-e", json.dumps({"dump": str(worker)})],
        env={
            "ANSIBLE_FILTER_PLUGINS": f"{REPO / 'filter_plugins'}:{tmp_path / 'filter'}",
            "ANSIBLE_CALLBACK_PLUGINS": str(tmp_path / "callback"),
            "ANSIBLE_CALLBACKS_ENABLED": "ansible.posix.json,ggnet_test_dump_modules",
            "GGNET_TEST_DUMP": str(main),
        },
        timeout=300,
    )
    assert not task_result(data, "localhost").get("failed"), output  # the validation
    for dump, loaded in (
        (
            worker,
            [REPO / "action_plugins" / "ggnet_validate.py", REPO / "filter_plugins" / "ggnet.py"],
        ),
        (main, [REPO / "action_plugins" / "ggnet_validate.py", REPO / "ggnet_api" / "app.py"]),
    ):
        files = json.loads(dump.read_text())
        # The plugins and the API really were loaded here (else this proves nothing).
        assert set(loaded) <= {Path(f).resolve() for f in files.values() if f}, dump.name
        seen = engine_names(files)
        twice = {str(f.relative_to(REPO)): n for f, n in seen.items() if len(n) > 1}
        assert not twice, f"{dump.name}: engine files loaded under two names: {twice}"
