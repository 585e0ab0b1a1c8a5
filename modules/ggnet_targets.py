#!/usr/bin/python
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
---
module: ggnet_targets
short_description: Reconcile every ggnet client's iSCSI target in one call (LIO or tgt)
description:
  - Takes the whole desired set of targets (one per client), reads what the backend
    has, plans creations, changes and removals, applies them (or only reports them in
    check mode) and persists the result where the backend restores it at boot.
  - C(lio) works on configfs through rtslib-fb and saves with rtslib's saveconfig to
    the file Debian's C(rtslib-fb-targetctl) service restores. C(tgt) works through
    tgtadm and writes a tgt configuration file (mode 0600) under C(/etc/tgt/conf.d).
  - Each target gets the client's disks as LUNs (tgt numbers them from 1, LIO from 0),
    an ACL for the client's initiator IQN only, and CHAP when a secret is given.
  - Each target offers ggnet's iSCSI login keys (larger data segments and bursts,
    InitialR2T=No); a drifted key is set again even under a live session, since keys
    only apply at the next login.
  - A target with a live session is neither changed nor removed unless O(force=true);
    the refusal names the connected initiator. Nothing is applied when any target is
    refused.
  - Targets whose IQN does not start with the ggnet prefix are never removed.
version_added: "0.1.0"
author: ggnet
options:
  backend:
    description: Which iSCSI target implementation to configure.
    type: str
    required: true
    choices: [lio, tgt]
  targets:
    description:
      - The desired targets as plain data. Mutually exclusive with O(clients).
    type: list
    elements: dict
    suboptions:
      name: {description: Client name (for messages and configuration comments)., type: str}
      target_iqn: {description: IQN of the target., type: str, required: true}
      initiator_iqn: {description: The only initiator IQN admitted by the ACL., type: str, required: true}
      luns:
        description: Disks in LUN order (system disk first).
        type: list
        elements: dict
        required: true
        suboptions:
          path: {description: Backing file or block device., type: str, required: true}
          kind: {description: Backstore kind., type: str, choices: [file, block], default: file}
      chap_user: {description: CHAP user name; defaults to the initiator IQN when a secret is set., type: str}
      chap_secret: {description: CHAP secret (12-16 characters); CHAP is off without it., type: str}
  clients:
    description:
      - Normalised client dicts (the C(ggnet_clients) filter); their LUNs are derived
        from O(storage) by ggnet's layout. Mutually exclusive with O(targets).
    type: list
    elements: dict
  storage:
    description: The C(ggnet_storage) settings, used with O(clients).
    type: dict
    default: {}
  chap_secrets:
    description: Client name to CHAP secret, for clients with CHAP on (used with O(clients)).
    type: dict
    default: {}
  iqn_prefix:
    description:
      - The ggnet IQN prefix. Targets under it that no client wants are removed;
        targets outside it are left alone.
    type: str
  force:
    description: Change or remove targets that have live sessions (dropping them).
    type: bool
    default: false
  persist:
    description: Save the resulting configuration for the next boot or service start.
    type: bool
    default: true
  control_port:
    description: tgt only; the control port of tgtd (C(tgtd -C)).
    type: int
  netns:
    description: tgt only; network namespace tgtd listens in (tests).
    type: str
  conf_path:
    description: tgt only; the configuration file written.
    type: path
    default: /etc/tgt/conf.d/ggnet.conf
  savefile:
    description: lio only; where the configuration is saved for the restore service.
    type: path
    default: /etc/rtslib-fb-target/saveconfig.json
  portal:
    description: lio only; address the portal of new targets listens on.
    type: str
    default: 0.0.0.0
  port:
    description: lio only; TCP port of that portal.
    type: int
    default: 3260
notes:
  - Supports check mode and diff mode. CHAP secrets are masked in diffs and never returned.
"""

EXAMPLES = r"""
- name: One target per client on tgt, with CHAP
  ggnet_targets:
    backend: tgt
    iqn_prefix: iqn.2025-01.lan.ggnet
    targets:
      - name: pc-01
        target_iqn: iqn.2025-01.lan.ggnet:target.pc-01
        initiator_iqn: iqn.2025-01.lan.ggnet:initiator.pc-01
        luns:
          - {path: /ggpool/writebacks/pc-01/system/disk.img, kind: file}
        chap_secret: "{{ vault_chap_secret }}"
"""

RETURN = r"""
actions:
  description: What was (or, in check mode, would be) done, in order.
  returned: always
  type: list
  elements: dict
  sample: [{op: create_target, target: "iqn.2025-01.lan.ggnet:target.pc-01"}]
sessions:
  description: Live sessions found, target IQN to initiator IQNs.
  returned: always
  type: dict
persisted:
  description: Whether the saved configuration changed.
  returned: always
  type: bool
targets:
  description: Number of targets wanted.
  returned: always
  type: int
"""

from ansible.module_utils.basic import AnsibleModule
from ansible.module_utils.ggnet import iscsi_lio, iscsi_tgt
from ansible.module_utils.ggnet.iscsi import (
    IscsiError,
    desired_targets,
    diff,
    make_driver,
    plan,
    targets_from_clients,
)
from ansible.module_utils.ggnet.net import target_iqn
from ansible.module_utils.ggnet.settings import BACKENDS


def managed_prefix(iqn_prefix):
    # Whatever the derivation puts before a client's name marks a ggnet target; with no
    # iqn_prefix that is the default prefix's, so targets someone else made on the same
    # server are never taken for ggnet's and removed.
    return target_iqn("x", iqn_prefix)[:-1]


def driver_for(params):
    persist = params["persist"]
    return make_driver(
        params["backend"],
        control_port=params["control_port"],
        netns=params["netns"],
        conf_path=params["conf_path"] if persist else None,
        savefile=params["savefile"] if persist else None,
        portal=params["portal"],
        port=params["port"],
    )


def converge(params, check_mode, driver=None):
    """The whole run, apart from AnsibleModule: returns the result or raises IscsiError."""
    if params.get("clients") is not None:
        specs = targets_from_clients(
            params["clients"], params.get("storage") or {}, params.get("chap_secrets") or {}
        )
    else:
        specs = params.get("targets") or []
    wanted = desired_targets(specs)
    driver = driver or driver_for(params)
    found, live = driver.read()
    actions, refused = plan(
        params["backend"],
        wanted,
        found,
        live,
        force=params["force"],
        managed_prefix=managed_prefix(params.get("iqn_prefix")),
    )
    if refused:
        raise IscsiError("; ".join(refused) + ". Nothing was changed.")
    if actions and not check_mode:
        driver.apply(actions, wanted, found, force=params["force"])
    persisted = False
    if params["persist"]:
        persisted = driver.persist(wanted, check_mode=check_mode or False)
    return {
        "changed": bool(actions) or persisted,
        "actions": [a.describe() for a in actions],
        "sessions": live,
        "persisted": persisted,
        "targets": len(wanted),
        "diff": diff(wanted, found, actions),
    }


def argument_spec():
    """The module's options; also read by the bench, which calls converge() directly."""
    lun_spec = {
        "path": {"type": "str", "required": True},
        "kind": {"type": "str", "choices": ["file", "block"], "default": "file"},
    }
    target_spec = {
        "name": {"type": "str"},
        "target_iqn": {"type": "str", "required": True},
        "initiator_iqn": {"type": "str", "required": True},
        "luns": {"type": "list", "elements": "dict", "required": True, "options": lun_spec},
        "chap_user": {"type": "str"},
        "chap_secret": {"type": "str", "no_log": True},
    }
    return {
        "backend": {"type": "str", "required": True, "choices": list(BACKENDS)},
        "targets": {"type": "list", "elements": "dict", "options": target_spec},
        "clients": {"type": "list", "elements": "dict"},
        "storage": {"type": "dict", "default": {}},
        "chap_secrets": {"type": "dict", "default": {}, "no_log": True},
        "iqn_prefix": {"type": "str"},
        "force": {"type": "bool", "default": False},
        "persist": {"type": "bool", "default": True},
        "control_port": {"type": "int"},
        "netns": {"type": "str"},
        "conf_path": {"type": "path", "default": iscsi_tgt.DEFAULT_CONF},
        "savefile": {"type": "path", "default": iscsi_lio.DEFAULT_SAVEFILE},
        "portal": {"type": "str", "default": "0.0.0.0"},
        "port": {"type": "int", "default": 3260},
    }


def main():
    module = AnsibleModule(
        argument_spec=argument_spec(),
        mutually_exclusive=[("targets", "clients")],
        required_one_of=[("targets", "clients")],
        supports_check_mode=True,
    )
    try:
        result = converge(module.params, module.check_mode)
    except IscsiError as exc:
        module.fail_json(msg=str(exc))
    except Exception as exc:  # layout errors and the like: same rule, a clear message
        module.fail_json(msg=f"ggnet_targets: {type(exc).__name__}: {exc}")
    module.exit_json(**result)


if __name__ == "__main__":
    main()
