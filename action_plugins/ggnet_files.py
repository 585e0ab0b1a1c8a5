"""Render and read a role's files on the controller, then converge them all on the
server in one run of the ggnet_files module.

An action plugin because the templates and the role's files are on the controller.
Text up to INLINE_LIMIT travels inside the module's arguments; a larger or binary file
travels only as its checksum, and is sent (then the module run again) only when the
server's copy differs: a run that changes nothing is one module run, whatever the
files weigh.
"""

from __future__ import annotations

import hashlib
import os

# The template action's own variables (ansible_managed, template_path, ...), so a
# template renders here exactly as ansible.builtin.template renders it.
from ansible._internal._templating import _template_vars
from ansible.errors import AnsibleActionFail, AnsibleError
from ansible.module_utils.parsing.convert_bool import boolean
from ansible.plugins.action import ActionBase
from ansible.template import trust_as_template

DOCUMENTATION = r"""
module: ggnet_files
short_description: Converge a list of files and directories in one run
description:
  - See the module of the same name.  Each entry may also give C(template) (a template
    of the role, rendered with the task's variables) or C(src) (a file of the role, or
    a controller path) instead of C(content); C(only_if), a condition: an entry
    whose C(only_if) is false is left out (as a task's C(when) would leave it out);
    and C(paths) instead of C(path): one entry for each, alike in all else, each taking
    the file of its own name from C(src_dir) (on the controller) or C(source_dir) (on
    the server) where one is given.
options:
  files:
    description: The wanted paths (the module's suboptions, plus template and src).
    type: list
    elements: dict
    required: true
"""

INLINE_LIMIT = 256 * 1024


class ActionModule(ActionBase):
    TRANSFERS_FILES = True

    def run(self, tmp=None, task_vars=None):
        result = super().run(tmp, task_vars)
        task_vars = task_vars or {}
        raw = self._task.args.get("files")
        if not isinstance(raw, list):
            raise AnsibleActionFail("ggnet_files: files must be a list of entries")
        entries, local_files = [], {}
        for item in raw:
            if not isinstance(item, dict):
                raise AnsibleActionFail(f"ggnet_files: entry {item!r} is not a mapping")
            for one in _expand(item):
                entries.append(self._entry(one, task_vars, local_files))

        module_args = {"files": entries}
        outcome = self._execute_module(
            module_name="ggnet_files", module_args=module_args, task_vars=task_vars
        )
        needed = outcome.get("needs_transfer") or []
        if needed and not outcome.get("failed") and not self._task.check_mode:
            outcome = self._send_and_run(needed, local_files, module_args, task_vars)
        result.update(outcome)
        return result

    def _entry(self, item: dict, task_vars: dict, local_files: dict) -> dict:
        entry = {k: v for k, v in item.items() if k not in ("template", "src")}
        if "template" in item:
            entry["content"] = self._render(item["template"], entry.get("path"), task_vars)
        elif "src" in item:
            local = self._find(item["src"], entry.get("path"))
            data = _read(local)
            text = _small_text(data)
            if text is not None:
                entry["content"] = text
            else:
                entry["checksum"] = hashlib.sha1(data).hexdigest()
                local_files[entry.get("path")] = local
        return entry

    def _render(self, name: str, dest: str | None, task_vars: dict) -> str:
        try:
            source = self._find_needle("templates", name)
        except AnsibleError as exc:
            raise AnsibleActionFail(f"ggnet_files: {dest}: {exc}") from None
        searchpath = [*task_vars.get("ansible_search_path", []), os.path.dirname(source)]
        searchpath = [p for base in searchpath for p in (os.path.join(base, "templates"), base)]
        variables = dict(task_vars)
        variables.update(
            _template_vars.generate_ansible_template_vars(
                path=name,
                fullpath=source,
                dest_path=dest,
                include_ansible_managed="ansible_managed" not in variables,
            )
        )
        templar = self._templar.copy_with_new_env(
            searchpath=searchpath, available_variables=variables
        )
        data = trust_as_template(self._loader.get_text_file_contents(source))
        try:
            text = templar.template(data, escape_backslashes=False, overrides={})
        except AnsibleError as exc:
            raise AnsibleActionFail(f"ggnet_files: {dest}: template {name}: {exc}") from None
        return "" if text is None else str(text)

    def _find(self, name: str, dest: str | None) -> str:
        if os.path.isabs(name):
            return name
        try:
            return self._find_needle("files", name)
        except AnsibleError as exc:
            raise AnsibleActionFail(f"ggnet_files: {dest}: {exc}") from None

    def _send_and_run(self, needed, local_files, module_args, task_vars):
        remote_tmp = self._make_tmp_path()
        try:
            sent = {}
            for index, path in enumerate(needed):
                if path not in local_files:
                    raise AnsibleActionFail(
                        f"ggnet_files: {path}: the module asked for bytes the plugin does not hold"
                    )
                sent[path] = self._connection._shell.join_path(remote_tmp, f"file{index}")
                self._transfer_file(local_files[path], sent[path])
            self._fixup_perms2([remote_tmp, *sent.values()])
            return self._execute_module(
                module_name="ggnet_files",
                module_args={**module_args, "transferred": sent},
                task_vars=task_vars,
            )
        finally:
            self._remove_tmp_path(remote_tmp)


def _expand(item: dict) -> list[dict]:
    """An entry as the module takes them: none when its only_if is false; one per path
    of `paths`, each with the file of its name from `src_dir` (controller) or
    `source_dir` (server) where one is given."""
    if "only_if" in item and not boolean(item["only_if"], strict=False):
        return []
    item = {k: v for k, v in item.items() if k != "only_if"}
    if "paths" not in item:
        return [item]
    rest = {k: v for k, v in item.items() if k not in ("paths", "src_dir", "source_dir")}
    out = []
    for path in item["paths"]:
        one = {**rest, "path": path}
        for key, to in (("src_dir", "src"), ("source_dir", "source")):
            if item.get(key):
                one[to] = os.path.join(item[key], os.path.basename(path))
        out.append(one)
    return out


def _read(path: str) -> bytes:
    try:
        with open(path, "rb") as fh:
            return fh.read()
    except OSError as exc:
        raise AnsibleActionFail(f"ggnet_files: cannot read {path}: {exc.strerror}") from None


def _small_text(data: bytes) -> str | None:
    if len(data) > INLINE_LIMIT:
        return None
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        return None
