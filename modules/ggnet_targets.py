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
      chap_mutual_user: {description: The target's own CHAP user (mutual CHAP); defaults to the target IQN when a mutual secret is set., type: str}
      chap_mutual_secret: {description: "The target's own CHAP secret (mutual CHAP: the target authenticates to the initiator too); needs O(targets[].chap_secret), differs from it.", type: str}
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
    description:
      - Client name to its CHAP secret, or to its credentials as the C(ggnet_chap_credentials)
        filter gives them (C(secret), and C(mutual_user) with C(mutual_secret) for mutual
        CHAP), for clients with CHAP on (used with O(clients)).
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
  retire_only:
    description:
      - Apply only what takes disks away (targets no client wants, LUNs a client no
        longer has), so that the storage converge after it may destroy or replace
        them. Refusals are those of a full run. Nothing is persisted; the full run
        that follows storage persists the result.
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
from ansible.module_utils.ggnet.iscsi_converge import (
    MUTUALLY_EXCLUSIVE,
    REQUIRED_ONE_OF,
    argument_spec,
    converge,
)
from ansible.module_utils.ggnet.iscsi_types import IscsiError


def main():
    module = AnsibleModule(
        argument_spec=argument_spec(),
        mutually_exclusive=MUTUALLY_EXCLUSIVE,
        required_one_of=REQUIRED_ONE_OF,
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
