"""Validation of a whole ggnet inventory before anything changes.

validate() takes plain data (Ansible's `groups` and `hostvars`, plus where each value
was declared when known) and returns every Problem it finds; an empty list means the
inventory is valid.  No Ansible imports: the CLI, the validate action plugin and the
API share this one function.

Settings (ggnet_network, ggnet_storage, ggnet_iscsi, ggnet_images) are read from each
server: they describe what that server serves.  A problem whose value comes from a
group variable is reported once, naming the group and file, not once per host.
"""

# ruff: noqa: F401 (every name imported here is for callers)
from __future__ import annotations

from .problems import Problem
from .values import UNRESOLVED, plain
from .whole_inventory import role_knobs, validate
