"""Pack the controller's inventory (and its history, when it is a git repository of its
own) and run the ggnet_inventory_sync module on the server with it.

An action plugin because half of the work is on the controller: the files and the git
history live there, the repository the API serves from lives on the server.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from ansible.errors import AnsibleActionFail
from ansible.plugins.action import ActionBase
from ggnet import boot_entries
from ggnet.inventory_pack import bundle, inventory_files, own_repository_head, pack

DOCUMENTATION = r"""
module: ggnet_inventory_sync
short_description: Bring the controller's inventory to the server's repository as a commit
description:
  - See the module of the same name; this plugin packs what it needs on the controller.
options:
  source:
    description: The controller's inventory directory (default the play's C(inventory_dir)).
    type: path
  path:
    description: The server's inventory repository.
    type: path
    required: true
  clients:
    description: The PCs placed on this server (the C(ggnet_clients) filter), whose
      boot-path entries are compared with what the API serves.
    type: list
    elements: dict
    default: []
  served_file:
    description: The API's served-entries file on the server.
    type: path
"""


class ActionModule(ActionBase):
    TRANSFERS_FILES = True

    def run(self, tmp=None, task_vars=None):
        result = super().run(tmp, task_vars)
        task_vars = task_vars or {}
        args = self._task.args
        source = Path(args.get("source") or task_vars.get("inventory_dir") or "").resolve()
        dest = str(args.get("path") or "")
        if not dest:
            raise AnsibleActionFail(
                "ggnet_inventory_sync: path (the server's repository) is required"
            )
        if not source.is_dir():
            raise AnsibleActionFail(f"ggnet_inventory_sync: source {source} is not a directory")
        if str(source) == os.path.normpath(dest):
            # A job on the server converging from the server's own repository.
            result.update(changed=False, skipped_reason="the inventory is the server's own")
            return result
        head = own_repository_head(source)
        entries = boot_entries.entries(args.get("clients") or [])
        user = task_vars.get("ansible_user") or "root"
        host = task_vars.get("ansible_host") or task_vars.get("inventory_hostname")
        module_args = {
            "path": dest,
            "source": str(source),
            "pull_from": f"{user}@{host}:{dest}",
            "entries": entries,
        }
        if args.get("served_file"):
            module_args["served_file"] = args["served_file"]
        remote_tmp = self._make_tmp_path()
        try:
            with tempfile.TemporaryDirectory(prefix="ggnet-inventory-") as local:
                archive = Path(local) / "inventory.tar"
                pack(source, inventory_files(source), archive)
                module_args["archive"] = self._connection._shell.join_path(
                    remote_tmp, "inventory.tar"
                )
                self._transfer_file(str(archive), module_args["archive"])
                remote_files = [module_args["archive"]]
                if head:
                    history = Path(local) / "inventory.bundle"
                    try:
                        bundle(source, history)
                    except ValueError as exc:
                        raise AnsibleActionFail(str(exc)) from None
                    module_args["bundle"] = self._connection._shell.join_path(
                        remote_tmp, "inventory.bundle"
                    )
                    module_args["head"] = head
                    self._transfer_file(str(history), module_args["bundle"])
                    remote_files.append(module_args["bundle"])
                self._fixup_perms2([remote_tmp, *remote_files])
                result.update(
                    self._execute_module(
                        module_name="ggnet_inventory_sync",
                        module_args=module_args,
                        task_vars=task_vars,
                    )
                )
        finally:
            self._remove_tmp_path(remote_tmp)
        return result
