#!/usr/bin/python
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
---
module: ggnet_inventory_sync
short_description: Bring the controller's inventory to the server's repository as a commit
description:
  - Runs on the boot server through the action plugin of the same name, which packs the
    controller's inventory (and its git history when it is a repository of its own).
  - Commits the controller's tree to the server's inventory repository, where the API
    serves the boot path from and approvals commit; refuses when the server holds
    commits the controller lacks, naming them and the C(git pull) to run.
  - Reports, per PC, what the boot path serves differently (C(boot_entries)), from the
    API's served-entries file.
version_added: "0.2.0"
author: ggnet
options:
  path:
    description: The server's inventory repository (the API's inventory).
    type: path
    required: true
  archive:
    description: The controller's inventory tree as a tar file on the server.
    type: path
    required: true
  bundle:
    description: The controller's history (git bundle of HEAD) on the server, if any.
    type: path
  head:
    description: The controller's HEAD commit, with O(bundle).
    type: str
  source:
    description: The controller's inventory directory, for messages.
    type: str
    default: the controller's inventory
  pull_from:
    description: Where the controller pulls the server's repository from (for messages).
    type: str
    default: ""
  entries:
    description: The boot-path entries the controller's inventory gives this server's PCs.
    type: dict
    default: {}
  served_file:
    description: The API's served-entries file.
    type: path
attributes:
  check_mode:
    support: full
  diff_mode:
    support: full
"""

RETURN = r"""
commit:
  description: The commit the server's inventory is (or, in check mode, would be) at.
  returned: always
  type: str
before:
  description: The commit it was at before.
  returned: always
  type: str
files:
  description: Files added, modified or deleted, as C(added host_vars/pc-01.yml).
  returned: always
  type: list
  elements: str
boot_entries:
  description: PCs the boot path serves differently from the inventory - added, removed
    and changed (with the keys that differ).
  returned: always
  type: dict
"""

import tempfile
from pathlib import Path

from ansible.module_utils.basic import AnsibleModule
from ansible.module_utils.ggnet import boot_entries
from ansible.module_utils.ggnet.inventory_repo import SyncError, sync, unpack


def main():
    module = AnsibleModule(
        argument_spec={
            "path": {"type": "path", "required": True},
            "archive": {"type": "path", "required": True},
            "bundle": {"type": "path"},
            "head": {"type": "str"},
            "source": {"type": "str", "default": "the controller's inventory"},
            "pull_from": {"type": "str", "default": ""},
            "entries": {"type": "dict", "default": {}},
            "served_file": {"type": "path"},
        },
        required_together=[("bundle", "head")],
        supports_check_mode=True,
    )
    p = module.params
    with tempfile.TemporaryDirectory(prefix="ggnet-inventory-") as tmp:
        tree = Path(tmp)
        try:
            unpack(Path(p["archive"]), tree)
            result = sync(
                Path(p["path"]),
                tree,
                bundle=Path(p["bundle"]) if p["bundle"] else None,
                head=p["head"],
                source=p["source"],
                pull_from=p["pull_from"],
                check=module.check_mode,
            )
            served = boot_entries.read_served(p["served_file"]) if p["served_file"] else None
        except (SyncError, ValueError, OSError) as exc:
            module.fail_json(msg=str(exc))
    report = boot_entries.compare(p["entries"], (served or {}).get("entries") or {})
    module.exit_json(
        changed=result.changed,
        commit=result.commit,
        before=result.before,
        mode=result.mode,
        files=result.files,
        actions=result.actions,
        boot_entries=report,
        served_commit=(served or {}).get("commit"),
        diff={"before": f"{result.before}\n", "after": f"{result.commit}\n"},
    )


if __name__ == "__main__":
    main()
