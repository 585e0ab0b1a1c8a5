#!/usr/bin/python
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Ansible module: one writeback per client disk, for all clients in one call."""

from __future__ import annotations

DOCUMENTATION = r"""
---
module: ggnet_writebacks
short_description: Create, keep or replace every client's writeback clones in one call
description:
  - For every client of O(clients), one clone of its image's booted version (system disk)
    and one of its game disk's, each with the C(writeback_quota).
  - A writeback whose version changed is re-cloned only when its client is known to be
    off (no iSCSI session) and not in maintenance; otherwise it is listed in C(pending)
    and the client gets the new version at its next reset.
  - Writebacks of clients no longer listed are destroyed, except those in maintenance
    (refused unless O(force)).
  - Below the pool's reserve no writeback is created and the module fails.
extends_documentation_fragment:
  - ggnet_storage
  - ggnet_storage.clients
  - ggnet_storage.sessions
options:
  force:
    description: Destroy writebacks of removed clients even in maintenance.
    type: bool
    default: false
attributes:
  check_mode:
    support: full
  diff_mode:
    support: full
author: ggnet
"""

EXAMPLES = r"""
- name: Writebacks of every client
  ggnet_writebacks:
    storage: "{{ ggnet_storage }}"
    images: "{{ ggnet_images }}"
    clients: "{{ groups | ggnet_clients(hostvars) }}"
    iscsi_backend: "{{ ggnet_iscsi.backend }}"
"""

RETURN = r"""
actions:
  description: Writebacks created, replaced, re-quota'd or destroyed.
  returned: always
  type: list
  elements: dict
pending:
  description: Writebacks waiting for their client's next reset to get a new version, and why.
  returned: always
  type: list
  elements: dict
"""

from ansible.module_utils.basic import AnsibleModule
from ansible.module_utils.ggnet.storage import converge_writebacks
from ansible.module_utils.ggnet.storage.module_glue import (
    SESSION_ARGS,
    STORAGE_ARGS,
    run_module,
    sessions_and_closer,
)


def main():
    module = AnsibleModule(
        argument_spec={
            **STORAGE_ARGS,
            "clients": {"type": "list", "elements": "dict", "required": True},
            **SESSION_ARGS,
            "force": {"type": "bool", "default": False},
        },
        supports_check_mode=True,
    )
    p = module.params
    sessions, closer = sessions_and_closer(p)

    def operation():
        return converge_writebacks(
            p["storage"], p["images"], p["clients"], module.check_mode, sessions, p["force"],
            closer=closer,
        )  # fmt: skip

    run_module(module, operation)


if __name__ == "__main__":
    main()
