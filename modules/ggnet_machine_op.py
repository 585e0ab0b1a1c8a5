#!/usr/bin/python
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Ansible module: one operation on one client's writeback (reset, keep, release, apply)."""

from __future__ import annotations

DOCUMENTATION = r"""
---
module: ggnet_machine_op
short_description: Reset, keep, release or apply one client's writeback
description:
  - C(reset) re-clones the client's disks from its image's booted version (no change when
    they are untouched and current). Refused for a client in maintenance or with a live
    iSCSI session unless O(force).
  - C(keep) puts the client in maintenance (its writeback survives reboots); C(release)
    ends it (unless the inventory's C(ggnet_keep_writeback) still says true).
  - C(apply) turns the client's writeback into a new version of its image, with
    O(comment); refused while the client has a live iSCSI session, and when the
    sessions cannot be read.
options:
  op:
    description: The operation.
    type: str
    required: true
    choices: [reset, keep, release, apply]
  client:
    description: The client's inventory name.
    type: str
    required: true
  comment:
    description: What changed, recorded on the new version (apply).
    type: str
  version:
    description: Name of the new version (apply); default the next C(vN).
    type: str
  disk:
    description: Which disk to apply.
    type: str
    default: system
    choices: [system, game]
  promote:
    description:
      - Make the applied version promoted at once (apply), so every PC boots it at its next
        reset. Without it the new version is a candidate that no PC boots until it is
        rolled out or promoted (C(playbooks/image.yml -e op=state)).
    type: bool
    default: false
  force:
    description: Reset even a client in maintenance or with a live session.
    type: bool
    default: false
extends_documentation_fragment:
  - ggnet_storage
  - ggnet_storage.clients
  - ggnet_storage.sessions
attributes:
  check_mode:
    support: full
  diff_mode:
    support: full
author: ggnet
"""

EXAMPLES = r"""
- name: Apply pc-01's writeback as a new version
  ggnet_machine_op:
    op: apply
    client: pc-01
    comment: "GPU driver 560"
    storage: "{{ ggnet_storage }}"
    images: "{{ ggnet_images }}"
    clients: "{{ groups | ggnet_clients(hostvars) }}"
    iscsi_backend: "{{ ggnet_iscsi.backend }}"
"""

RETURN = r"""
actions:
  description: What was (or would be) done.
  returned: always
  type: list
  elements: dict
version:
  description: The version created by (or already made by) apply; a candidate unless promote.
  returned: when op is apply
  type: str
"""

from ansible.module_utils.basic import AnsibleModule
from ansible.module_utils.ggnet.storage import apply_writeback, reset, set_keep
from ansible.module_utils.ggnet.storage.module_glue import (
    SESSION_ARGS,
    STORAGE_ARGS,
    run_module,
    sessions_and_closer,
)


def main():
    module = AnsibleModule(
        argument_spec={
            "op": {
                "type": "str",
                "required": True,
                "choices": ["reset", "keep", "release", "apply"],
            },
            "client": {"type": "str", "required": True},
            **STORAGE_ARGS,
            "clients": {"type": "list", "elements": "dict", "required": True},
            "comment": {"type": "str"},
            "version": {"type": "str"},
            "disk": {"type": "str", "default": "system", "choices": ["system", "game"]},
            "promote": {"type": "bool", "default": False},
            **SESSION_ARGS,
            "force": {"type": "bool", "default": False},
        },
        required_if=[("op", "apply", ("comment",))],
        supports_check_mode=True,
    )
    p = module.params
    check = module.check_mode
    sessions, closer = sessions_and_closer(p)
    common = {"check": check}

    def operation():
        if p["op"] == "reset":
            return reset(
                p["storage"], p["images"], p["clients"], p["client"],
                force=p["force"], sessions=sessions, closer=closer, **common,
            )  # fmt: skip
        elif p["op"] in ("keep", "release"):
            return set_keep(p["storage"], p["clients"], p["client"], p["op"] == "keep", **common)
        else:
            return apply_writeback(
                p["storage"], p["images"], p["clients"], p["client"], p["comment"],
                version=p["version"], disk=p["disk"], sessions=sessions, closer=closer,
                promote=p["promote"], **common,
            )  # fmt: skip

    run_module(module, operation)


if __name__ == "__main__":
    main()
