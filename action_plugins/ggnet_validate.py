"""Validate the whole inventory on the controller; fail with one line per problem.

An action plugin rather than a module: the inventory lives on the controller, and
nothing needs to travel to (or run on) any host.
"""

from __future__ import annotations

DOCUMENTATION = r"""
module: ggnet_validate
short_description: Validate the whole ggnet inventory before anything changes
description:
  - Reads every host's variables from the play's C(hostvars) and C(groups), runs ggnet's
    validate() (module_utils/ggnet/validate/, shared with C(ggnet validate) and the API)
    and fails with one line per problem.
  - Runs on the controller only. CHAP secrets are never shown.
options:
  extra_keys:
    description: Further ggnet_* variable names to accept (role knobs are found by
      reading roles/*/defaults/main.yml next to the playbooks).
    type: list
    elements: str
    default: []
"""

RETURN = r"""
problems:
  description: One line per problem, C(<where>: <key>: <what is wrong> (value: <value>)).
  returned: always
  type: list
  elements: str
clients:
  description: Number of clients validated.
  returned: always
  type: int
"""

from pathlib import Path

from ansible.errors import AnsibleError
from ansible.plugins.action import ActionBase
from ggnet.inventory import collect_origins
from ggnet.settings import is_secret_key
from ggnet.validate import UNRESOLVED, Problem, plain, role_knobs, validate


class ActionModule(ActionBase):
    TRANSFERS_FILES = False
    _requires_connection = False

    def run(self, tmp=None, task_vars=None):
        result = super().run(tmp, task_vars)
        task_vars = task_vars or {}
        extra = list(self._task.args.get("extra_keys") or [])
        # The repo's roles, wherever the playbook that imports validate.yml lives.
        roles_dir = Path(__file__).resolve().parent.parent / "roles"
        extra.extend(role_knobs(roles_dir))

        groups = {g: list(h) for g, h in task_vars.get("groups", {}).items()}
        hostvars_all = task_vars.get("hostvars", {})
        root = _inventory_root(task_vars.get("ansible_inventory_sources") or [])

        load_problems: list[Problem] = []
        hostvars: dict = {}
        origins: dict = {}
        for host in groups.get("all", []):
            view = hostvars_all[host]
            own: dict = {}
            raw_for_origin: dict = {}
            for key in view:
                # Only ggnet's own variables matter, and only they are templated here
                # (connection variables of other hosts are none of validation's business).
                if not key.startswith("ggnet_"):
                    continue
                raw = view.raw_get(key) if hasattr(view, "raw_get") else view[key]
                raw_for_origin[key] = raw
                own[key] = self._resolve(view, key, host, load_problems)
            hostvars[host] = own
            origins[host] = collect_origins(raw_for_origin, root)
        for problem in load_problems:
            problem.origin = origins.get(problem.where, {}).get(problem.key)

        problems = validate(
            {"groups": groups, "hostvars": hostvars, "origins": origins, "problems": load_problems},
            extra_keys=extra,
        )
        lines = [str(p) for p in problems]
        result["problems"] = lines
        result["clients"] = len(groups.get("ggnet_clients", []))
        result["changed"] = False
        if lines:
            result["failed"] = True
            result["msg"] = (
                f"the inventory has {len(lines)} problem(s); nothing was changed:\n"
                + "\n".join(lines)
            )
        else:
            result["msg"] = f"inventory valid: {result['clients']} client(s)"
        return result

    @staticmethod
    def _resolve(view, key, host, problems):
        try:
            value = view[key]
        except AnsibleError as exc:
            shown = "(hidden)" if is_secret_key(key) else None
            reason = str(getattr(exc, "message", exc)).strip().splitlines()[0]
            problems.append(Problem(host, key, shown, f"cannot be resolved: {reason}"))
            return UNRESOLVED
        return plain(value)


def _inventory_root(sources):
    """The first inventory source as a directory, so origins read group_vars/all.yml:3."""
    for source in sources:
        path = Path(source)
        if path.exists():
            return path if path.is_dir() else path.parent
    return None
