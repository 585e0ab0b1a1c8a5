#!/usr/bin/python
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Ansible module: one operation on images' versions (rollback, state, prune, delete,
boot_test)."""

from __future__ import annotations

DOCUMENTATION = r"""
---
module: ggnet_image_op
short_description: Roll an image back, move a version's state, prune, delete or boot-test a version
description:
  - C(rollback) points O(image) at any retained O(version) (older or newer), which becomes
    promoted; nothing is destroyed, clients get it at their next reset. Refused for a
    rejected version, and when the inventory pins another version.
  - C(state) moves O(version) to O(state) (candidate, tested, canary, promoted, rejected):
    promoted also makes it what PCs boot; canary gives it to the canary PCs (one rollout
    of an image at a time; a candidate only with O(force): the boot test makes it
    tested first); rejected is final. Refused when the move is not allowed.
  - C(prune) re-clones writebacks idle longer than O(idle) (not in maintenance, no live
    session), then destroys versions older than the newest O(keep_versions) that no
    writeback depends on and no client boots.
  - C(delete) destroys one version; refused while writebacks depend on it unless O(force).
  - C(boot_test) boots O(version) (a candidate, or a tested version again) in a
    throwaway VM on the server, from a throwaway clone through a throwaway target of
    the server's iSCSI backend; passed makes it tested, failed rejected, and the result
    (passed, reason, stage times, screenshot path) is kept with the version. Refused
    while another boot test of the image runs. Target and clone are always removed.
options:
  op:
    description: The operation.
    type: str
    required: true
    choices: [rollback, state, prune, delete, boot_test]
  image:
    description: The image (rollback, state, delete, boot_test).
    type: str
  version:
    description: The version (rollback, state, delete, boot_test).
    type: str
  state:
    description: The state to move the version to (state).
    type: str
    choices: [tested, canary, promoted, rejected]
  keep_versions:
    description: Versions to keep per image (prune); default C(ggnet_storage.prune_keep_versions) or 3.
    type: int
  idle:
    description: Idle time after which a writeback is re-cloned (prune), e.g. C(12h), C(7d); default C(ggnet_storage.prune_idle) or 7d.
    type: str
  clients:
    description:
      - Normalised clients (filter C(ggnet_clients)); only prune uses them, to find the
        idle writebacks. Checked as for M(ggnet_writebacks).
    type: list
    elements: dict
    default: []
  force:
    description:
      - Delete a version even when writebacks depend on it (they are destroyed).
      - Give a candidate to the canary PCs (state) although no boot test passed it.
    type: bool
    default: false
  boot_test:
    description:
      - The C(ggnet_boot_test) settings (firmware, timeout, marker, memory) for boot_test.
    type: dict
    default: {}
  iqn_prefix:
    description: C(ggnet_iscsi.iqn_prefix), from which the boot test's target and initiator are named.
    type: str
  portal:
    description:
      - Where the boot test's VM reaches the target (address:port).
      - With LIO the throwaway target listens there, so it must be the address the room's targets use.
      - Default O(server_ip):3260, where the PCs reach theirs (127.0.0.1:3260 without O(server_ip)).
    type: str
  server_ip:
    description: C(ggnet_network.server_ip), the address of the PCs' targets.
    type: str
  state_dir:
    description: Where boot tests keep their lock and screenshots (C(<state_dir>/<image>/<version>.png)).
    type: path
    default: /var/lib/ggnet/boot-tests
extends_documentation_fragment:
  - ggnet_storage
  - ggnet_storage.sessions
attributes:
  check_mode:
    support: full
  diff_mode:
    support: full
author: ggnet
"""

EXAMPLES = r"""
- name: Roll win11 back to v2
  ggnet_image_op:
    op: rollback
    image: win11
    version: v2
    storage: "{{ ggnet_storage }}"
    images: "{{ ggnet_images }}"

- name: Give win11 v4 to the canary PCs
  ggnet_image_op:
    op: state
    image: win11
    version: v4
    state: canary
    storage: "{{ ggnet_storage }}"
    images: "{{ ggnet_images }}"
"""

RETURN = r"""
actions:
  description: What was (or would be) done.
  returned: always
  type: list
  elements: dict
state:
  description: The version's state after a boot test.
  returned: op=boot_test, not in check mode
  type: str
boot_test:
  description: The boot test's result as kept with the version (passed, reason, stages, at, firmware, screenshot, state).
  returned: op=boot_test, not in check mode
  type: dict
"""

from ansible.module_utils.basic import AnsibleModule
from ansible.module_utils.ggnet import iscsi
from ansible.module_utils.ggnet.boot_test_knobs import parse_knobs
from ansible.module_utils.ggnet.storage import delete_version, prune, rollback, set_state
from ansible.module_utils.ggnet.storage.boot_test_job import Setup, boot_test
from ansible.module_utils.ggnet.storage.module_glue import (
    SESSION_ARGS,
    STORAGE_ARGS,
    iscsi_options,
    run_module,
    sessions_and_closer,
)
from ansible.module_utils.ggnet.storage.results import StorageError


def main():
    module = AnsibleModule(
        argument_spec={
            "op": {
                "type": "str",
                "required": True,
                "choices": ["rollback", "state", "prune", "delete", "boot_test"],
            },
            "image": {"type": "str"},
            "version": {"type": "str"},
            "state": {"type": "str", "choices": ["tested", "canary", "promoted", "rejected"]},
            "keep_versions": {"type": "int"},
            "idle": {"type": "str"},
            **STORAGE_ARGS,
            "clients": {"type": "list", "elements": "dict", "default": []},
            **SESSION_ARGS,
            "force": {"type": "bool", "default": False},
            "boot_test": {"type": "dict", "default": {}},
            "iqn_prefix": {"type": "str"},
            "portal": {"type": "str"},
            "server_ip": {"type": "str"},
            "state_dir": {"type": "path", "default": "/var/lib/ggnet/boot-tests"},
        },
        required_if=[
            ("op", "rollback", ("image", "version")),
            ("op", "delete", ("image", "version")),
            ("op", "state", ("image", "version", "state")),
            ("op", "boot_test", ("image", "version", "iscsi_backend")),
        ],
        supports_check_mode=True,
    )
    p = module.params
    check = module.check_mode

    def operation():
        if p["op"] == "rollback":
            return rollback(p["storage"], p["images"], p["image"], p["version"], check=check)
        elif p["op"] == "state":
            return set_state(
                p["storage"], p["images"], p["image"], p["version"], p["state"], check=check,
                force=p["force"],
            )  # fmt: skip
        elif p["op"] == "boot_test":
            knobs, problems = parse_knobs(p["boot_test"])
            if problems:
                raise StorageError(
                    "; ".join(f"{key}: {msg} (value: {value!r})" for key, value, msg in problems)
                )
            setup = Setup(
                backend=p["iscsi_backend"],
                portal=p["portal"] or iscsi.portal(p["server_ip"]),
                iscsi_options=iscsi_options(p["iscsi_options"]),
                state_dir=p["state_dir"],
                knobs=knobs,
                **({"iqn_prefix": p["iqn_prefix"]} if p["iqn_prefix"] else {}),
            )
            return boot_test(
                p["storage"], p["images"], p["image"], p["version"], setup, check=check
            )
        elif p["op"] == "delete":
            return delete_version(
                p["storage"], p["images"], p["image"], p["version"], check=check, force=p["force"]
            )
        else:
            sessions, closer = sessions_and_closer(p)
            return prune(
                p["storage"], p["images"], p["clients"], keep_versions=p["keep_versions"],
                idle=p["idle"], check=check, sessions=sessions, closer=closer,
            )  # fmt: skip

    run_module(module, operation)


if __name__ == "__main__":
    main()
