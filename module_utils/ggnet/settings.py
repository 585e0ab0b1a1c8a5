"""The inventory's settings: every key, its default and its vocabulary, written once.

Validation checks against these, the model and the layout apply them, the filter and
action plugins hand them to the roles and the preflight merged with the inventory,
and docs/inventory.md documents them (tests/unit/test_settings_docs.py keeps the two
in step).  Nothing here imports the rest of the engine, so every room can import it.
"""

from __future__ import annotations

import copy
import re
from collections.abc import Mapping
from typing import Any

SERVERS_GROUP = "ggnet_servers"
CLIENTS_GROUP = "ggnet_clients"

DEFAULT_IQN_PREFIX = "iqn.2025-01.lan.ggnet"

# Vocabularies: the first entry of a choice with a default is not necessarily it.
DHCP_MODES = ("full", "proxy")
DISK_FORMATS = ("zvol", "file")
BACKENDS = ("lio", "tgt")
BOOT_MODES = ("auto", "bios", "uefi")
IMAGE_KINDS = ("system", "data")
LAB_FIRMWARES = ("bios", "uefi-ipxe", "uefi-pxe")
# The Windows initiator's limits on a CHAP secret.
CHAP_MIN, CHAP_MAX = 12, 16

# A ZFS pool name as ggnet accepts it: ZFS allows more, but the name is also used in
# paths, IQNs and URLs.  Names ZFS reserves for vdev types are refused as well.
POOL_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9_.:-]*$")
POOL_RESERVED = ("mirror", "raidz", "draid", "spare", "log", "cache", "special", "dedup")
# One component of a dataset name (an image, a version, a client), by the same reasoning.
DATASET_COMPONENT = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.:-]*$")

# Keys whose values are never shown, not even in an error message: a key holding one of
# the markers anywhere (chap_secret, vault_password), or one of the words as a whole
# _-separated word (ansible_become_pass; a marker "pass" would also hide `compass`).
SECRET_MARKERS = ("secret", "password", "token", "passphrase")
SECRET_WORDS = ("pass", "passwd")

# Production runs OpenZFS, whose zvols LIO exports as block backstores; `file` is for
# ZFS without zvols (zfs-fuse, as in the lab), which must say so in its inventory.
DEFAULTS: dict[str, dict[str, Any]] = {
    "ggnet_network": {"dhcp_mode": "full"},
    "ggnet_storage": {
        "pool": "ggpool",
        "disk_format": "zvol",
        "reserve": "10%",
        "writeback_quota": "40G",
        "prune_keep_versions": 3,
        "prune_idle": "7d",
    },
    "ggnet_iscsi": {
        "backend": "lio",
        "chap": False,
        "chap_mutual": False,
        "iqn_prefix": DEFAULT_IQN_PREFIX,
    },
    # Safe image updates (ggnet.rollout): a version in canary is promoted after
    # promote_after ok canary boots whose p95 boot time is within boot_time_ratio of
    # the previous version's, rolled back at max_failures failed ones, and paused
    # when fewer than promote_after came within patience.  A canary boot is ok at
    # iPXE's hand-over to the disk (healthy_at: handover) or only once the booted OS
    # reported (os: pc/report_os.py), within os_report_within of its start.
    "ggnet_rollout": {
        "promote_after": 3,
        "max_failures": 1,
        "boot_time_ratio": 1.2,
        "patience": "2h",
        "healthy_at": "handover",
        "os_report_within": "10m",
    },
    # The boot test of a candidate version (ggnet.storage.boot_test_job): a throwaway
    # VM boots it through the real target with `firmware`, `memory` MiB of RAM, and
    # passes when its serial console shows `marker` (a regular expression) within
    # `timeout`.  A server setting: set it in group_vars/ggnet_servers.yml.
    "ggnet_boot_test": {
        "firmware": "bios",
        "timeout": "5m",
        "marker": r"GGNET-BOOT\b",
        "memory": 256,
    },
}
CLIENT_DEFAULTS: dict[str, Any] = {
    "ggnet_boot": "auto",
    "ggnet_keep_writeback": False,
    "ggnet_game_disk": None,
    "ggnet_ip": None,
}

CLIENT_KEYS = frozenset(
    {
        "ggnet_mac",
        "ggnet_image",
        "ggnet_ip",
        "ggnet_boot",
        "ggnet_game_disk",
        "ggnet_keep_writeback",
        "ggnet_server",
        "ggnet_console_vnc",
        "ggnet_chap_secret",
        "ggnet_node_group",
        # A BMC to power the PC through (ggnet.redfish).
        "ggnet_bmc",
    }
)
# The server settings; all but ggnet_images are mappings with DEFAULTS.  ggnet_images
# and ggnet_rollout are read by the clients too (set them in group_vars/all.yml).
SETTINGS_KEYS = ("ggnet_network", "ggnet_storage", "ggnet_iscsi", "ggnet_images", "ggnet_rollout")
ROLLOUT_KEY = "ggnet_rollout"
# canary: machine group -> its canary set {machines: [PC names], share: "10%"}.
ROLLOUT_KEYS = frozenset(
    {
        "promote_after",
        "max_failures",
        "boot_time_ratio",
        "patience",
        "healthy_at",
        "os_report_within",
        "canary",
    }
)
CANARY_KEYS = frozenset({"machines", "share"})
BOOT_TEST_KEY = "ggnet_boot_test"
BOOT_TEST_KEYS = frozenset({"firmware", "timeout", "marker", "memory"})
BOOT_TEST_FIRMWARES = ("bios", "uefi")
# Node groups of a fleet: a mapping name -> {region, priority, capacity, servers}, read
# from the servers (group_vars/ggnet_servers.yml); a client group names one with
# ggnet_node_group.  Without it an inventory places PCs with ggnet_server, as always.
NODE_GROUPS_KEY = "ggnet_node_groups"
NODE_GROUP_KEYS = frozenset({"region", "priority", "capacity", "servers"})
# capacity: the most PCs one server of the group carries (a server holds about 40-60).
NODE_GROUP_DEFAULTS: dict[str, Any] = {"priority": 0, "capacity": 60}
# Extension keys that only the built-in lab reads.
EXTENSION_PREFIXES = ("ggnet_lab_",)

NETWORK_KEYS = frozenset(
    {"interface", "server_ip", "subnet", "dhcp_mode", "dhcp_range", "gateway", "dns_servers"}
)
STORAGE_KEYS = frozenset(
    {
        "pool",
        "disk_format",
        "reserve",
        "writeback_quota",
        "mountpoint",
        "vdevs",
        "prune_keep_versions",
        "prune_idle",
    }
)
ISCSI_KEYS = frozenset({"backend", "chap", "chap_secret", "chap_mutual", "iqn_prefix"})
IMAGE_KEYS = frozenset({"size", "kind", "version", "description", "source"})


# How placement (ggnet.placement) scores a server for one more PC; lower is better.
# The score is the load ratio (PCs / capacity) plus: a penalty once CPU or memory is
# above its limit (the reference design's 80 % and 85 %), up to pool_weight for a full
# pool, up to priority_weight for the lowest priority of the group.  rebalance_margin
# says when a placed PC's server is "far over its share": a server of its group would
# carry it at a load ratio, and at a score, more than this much lower.  0.25 is a
# quarter of a server's capacity when the servers are alike.
PLACEMENT: dict[str, float] = {
    "cpu_limit": 80.0,
    "cpu_penalty": 0.5,
    "memory_limit": 85.0,
    "memory_penalty": 0.5,
    "pool_weight": 0.1,
    "priority_weight": 0.05,
    "rebalance_margin": 0.25,
}


def default(key: str, sub: str) -> Any:
    """The default of one setting, e.g. default("ggnet_storage", "reserve")."""
    return DEFAULTS[key][sub]


def merged(key: str, given: object) -> dict[str, Any]:
    """A settings mapping with the defaults under it (given None: the defaults).

    Raises TypeError when `given` is not a mapping; callers say where it came from."""
    result = copy.deepcopy(DEFAULTS.get(key, {}))
    if given is None:
        return result
    if not isinstance(given, Mapping):
        raise TypeError(f"{key} must be a mapping")
    result.update(given)
    return result


def is_secret_key(key: str) -> bool:
    """Whether the value of `key` (dotted: ggnet_iscsi.chap_secret) must stay hidden."""
    leaf = key.rsplit(".", 1)[-1].lower()
    if any(marker in leaf for marker in SECRET_MARKERS):
        return True
    return any(word in SECRET_WORDS for word in re.split(r"[_\W]+", leaf))
