"""The inventory a command reads when it is given no -i."""

from __future__ import annotations

import os
from pathlib import Path

from ggnet.inventory import REPO_ROOT


def default_inventory() -> Path:
    """ANSIBLE_INVENTORY; on a boot server (GGNET_API_CONFIG set, as the service and
    the installed `ggnet` command do) the API's own inventory; else the lab's."""
    env = os.environ.get("ANSIBLE_INVENTORY")
    if env:
        return Path(env.split(",")[0])
    if os.environ.get("GGNET_API_CONFIG"):
        from ggnet_api import config

        return Path(config.load()["inventory"])
    return REPO_ROOT / "inventory" / "lab"
