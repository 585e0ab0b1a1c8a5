#!/usr/bin/python
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
---
module: ggnet_packages
short_description: Install the Debian packages that are missing, asking dpkg first
description:
  - Asks dpkg which of O(names) are installed (one C(dpkg-query)) and runs
    C(apt-get install) only for the missing ones (recommends as apt's configuration
    says, as ansible.builtin.apt does by default).
  - A run where everything is installed never opens apt's cache.
  - Supports check mode.
version_added: "0.2.0"
author: ggnet
options:
  names:
    description: Package names.
    type: list
    elements: str
    required: true
  update_cache:
    description: Run C(apt-get update) first, only when something is missing.
    type: bool
    default: false
"""

EXAMPLES = r"""
- name: Install dnsmasq and the iPXE binaries
  ggnet_packages:
    names: [dnsmasq-base, ipxe]
"""

RETURN = r"""
installed:
  description: The packages that were (or, in check mode, would be) installed.
  returned: always
  type: list
  elements: str
"""

from ansible.module_utils.basic import AnsibleModule
from ansible.module_utils.ggnet.debian_packages import (
    QUERY_FORMAT,
    PackageError,
    check_names,
    missing,
)
from ansible.module_utils.ggnet.host_os import C_LOCALE

# dpkg-query's answer in the C locale (parsed), apt never asking.
C_ENV = {**C_LOCALE, "DEBIAN_FRONTEND": "noninteractive"}


def main() -> None:
    module = AnsibleModule(
        argument_spec={
            "names": {"type": "list", "elements": "str", "required": True},
            "update_cache": {"type": "bool", "default": False},
        },
        supports_check_mode=True,
    )
    module.run_command_environ_update = C_ENV
    try:
        names = check_names(module.params["names"])
    except PackageError as exc:
        module.fail_json(msg=str(exc))
    if not names:
        module.exit_json(changed=False, installed=[])
    # Exit 1 only says some package is unknown to dpkg: that one is missing.
    _rc, out, _err = module.run_command(["dpkg-query", "-W", "-f=" + QUERY_FORMAT, "--", *names])
    todo = missing(names, out)
    if not todo or module.check_mode:
        module.exit_json(changed=bool(todo), installed=todo)
    apt_get = module.get_bin_path("apt-get", required=True)
    if module.params["update_cache"]:
        rc, out, err = module.run_command([apt_get, "update", "-q"])
        if rc != 0:
            module.fail_json(
                msg=f"apt-get update failed (exit {rc}): {(err or out).strip()[-2000:]}"
            )
    rc, out, err = module.run_command([apt_get, "install", "-y", "-q", "--", *todo])
    if rc != 0:
        module.fail_json(
            msg=f"apt-get install {' '.join(todo)} failed (exit {rc}): {(err or out).strip()[-2000:]}; "
            "check the server's apt sources (apt-get update) and run again",
        )
    module.exit_json(changed=True, installed=todo)


if __name__ == "__main__":
    main()
