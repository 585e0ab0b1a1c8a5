# ggnet's one implementation of its inventory, ZFS and iSCSI logic.  Plain Python:
# Ansible modules import it as ansible.module_utils.ggnet, the API and CLI as `ggnet`.
# Inside this package, import siblings relatively (from .net import ...) so both work.

# The one place of ggnet's version (pyproject.toml reads it; the fleet status reports it).
__version__ = "0.1.0"
