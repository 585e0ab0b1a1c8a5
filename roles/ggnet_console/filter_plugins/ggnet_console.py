"""The ggnet_console role's filter: websockify's token file from the inventory.

A thin wrapper over the ggnet engine's console room (module_utils/ggnet/console.py), which the API and the inventory
validation use as well.
"""

from __future__ import annotations

from ansible.errors import AnsibleFilterError
from ggnet import console

DOCUMENTATION = r"""
name: ggnet_console_token_file
short_description: websockify's token file for the clients' VNC endpoints
description:
  - Takes a list of client names and Ansible's hostvars; returns the token file text,
    one C(NAME: TARGET) line per client that has C(ggnet_console_vnc).
"""


def ggnet_console_token_file(names, hostvars, header=()):
    # hostvars is Ansible's lazy HostVars object: read only the one key of each client.
    endpoints = {name: hostvars[name].get("ggnet_console_vnc") for name in names}
    try:
        return console.token_file(endpoints, header)
    except ValueError as exc:
        raise AnsibleFilterError(f"ggnet_console_token_file: {exc}") from exc


class FilterModule:
    def filters(self):
        return {"ggnet_console_token_file": ggnet_console_token_file}
