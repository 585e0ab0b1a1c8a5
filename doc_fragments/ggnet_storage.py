# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Documentation of the options the ggnet storage modules share.

Modules use it with `extends_documentation_fragment`: `ggnet_storage` (storage,
images), `ggnet_storage.clients` and `ggnet_storage.sessions` (sessions, iscsi_backend,
iscsi_options).  ansible.cfg's doc_fragment_plugins points here.
"""

from __future__ import annotations


class ModuleDocFragment:
    DOCUMENTATION = r"""
options:
  storage:
    description:
      - The C(ggnet_storage) settings (pool, disk_format, reserve, writeback_quota,
        mountpoint, vdevs, prune_keep_versions, prune_idle).
    type: dict
    required: true
  images:
    description:
      - The C(ggnet_images) mapping, image name to C(size), C(kind), C(version), C(source).
    type: dict
    required: true
"""

    CLIENTS = r"""
options:
  clients:
    description:
      - Normalised clients (filter C(ggnet_clients)); uses name, image, game_disk,
        keep_writeback and target_iqn of each.
      - Their keys are checked by ggnet's storage code, not by suboptions here (one
        pass instead of Ansible's per-entry validation); a bad entry fails naming the
        client and the key.
    type: list
    elements: dict
    required: true
"""

    SESSIONS = r"""
options:
  sessions:
    description:
      - Live iSCSI sessions, target IQN to initiator IQNs; overrides O(iscsi_backend).
      - Given this way, nothing closes the clients' LUNs around a re-clone.
    type: dict
  iscsi_backend:
    description:
      - Read live sessions from this backend (lio or tgt) when O(sessions) is not given,
        and close a client's LUNs around a re-clone of its writeback.
    type: str
  iscsi_options:
    description:
      - How to reach the backend when reading sessions and closing LUNs; tgt only, for a
        tgtd that is not the default one (C(tgtd -C N), or one in a network namespace).
    type: dict
    suboptions:
      control_port:
        description: tgtd's control port (C(tgtadm -C)).
        type: int
      netns:
        description: Network namespace to run C(tgtadm) in (network only, mounts stay shared).
        type: str
"""
