#!/usr/bin/python
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
---
module: ggnet_units
short_description: Enable and start (or disable and stop) several systemd units in one run
description:
  - Reads every listed unit with one C(systemctl show), reloads systemd only when it
    reports a changed or new unit file, then runs each of enable, disable, start and
    stop once for all the units that need it.
  - Restarts are not its business: handlers restart a unit whose configuration changed.
  - Supports check mode.
version_added: "0.2.0"
author: ggnet
options:
  units:
    description: The units, in the order they are started.
    type: list
    elements: dict
    required: true
    suboptions:
      name: {description: Unit name with its suffix., type: str, required: true}
      enabled: {description: Started at boot., type: bool, default: true}
      state:
        description: Running or not; null leaves it as it is (a unit only enabled or disabled).
        type: str
        choices: [started, stopped]
        default: started
"""

EXAMPLES = r"""
- name: Enable and start the API and its privileged helper
  ggnet_units:
    units:
      - {name: ggnet-privd.service}
      - {name: ggnet-api.service}
"""

RETURN = r"""
actions:
  description: The verbs run (or that would run), one per unit.
  returned: always
  type: list
  elements: str
  sample: [enable ggnet-api.service, start ggnet-api.service]
daemon_reloaded:
  description: Whether systemd was reloaded first (a unit file had changed).
  returned: always
  type: bool
"""

from ansible.module_utils.basic import AnsibleModule
from ansible.module_utils.ggnet.host_os import C_LOCALE
from ansible.module_utils.ggnet.systemd_units import (
    PROPERTIES,
    UnitError,
    Wanted,
    needs_reload,
    parse_show,
    plan,
)

# systemctl's answers in the C locale (parsed), never through a pager.
C_ENV = {**C_LOCALE, "SYSTEMD_PAGER": ""}


def main() -> None:
    module = AnsibleModule(
        argument_spec={"units": {"type": "list", "elements": "dict", "required": True}},
        supports_check_mode=True,
    )
    module.run_command_environ_update = C_ENV
    systemctl = module.get_bin_path("systemctl", required=True)

    def run(*args: str) -> str:
        rc, out, err = module.run_command([systemctl, *args])
        if rc != 0:
            module.fail_json(
                msg=f"systemctl {' '.join(args)} failed (exit {rc}): {(err or out).strip()}"
            )
        return out

    try:
        wanted = [Wanted.parse(raw) for raw in module.params["units"]]
        names = [w.name for w in wanted]

        def show() -> list[dict[str, str]]:
            return parse_show(run("show", "--property=" + ",".join(PROPERTIES), "--", *names))

        shown = show()
        reloaded = False
        if needs_reload(shown) and not module.check_mode:
            run("daemon-reload")
            reloaded = True
            shown = show()
        todo = plan(wanted, shown)
    except UnitError as exc:
        module.fail_json(msg=str(exc))
    if not module.check_mode:
        for verb in ("disable", "stop", "enable", "start"):
            units = getattr(todo, verb)
            if units:
                run(verb, "--", *units)
    module.exit_json(changed=todo.changed, actions=todo.actions(), daemon_reloaded=reloaded)


if __name__ == "__main__":
    main()
