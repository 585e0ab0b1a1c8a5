# ggnet's one implementation of its inventory, ZFS and iSCSI logic.  Plain Python:
# Ansible modules import it as ansible.module_utils.ggnet, the API and CLI as `ggnet`.
# Inside this package, import siblings relatively (from .net import ...) so both work.
