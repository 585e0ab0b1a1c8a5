"""The inventory a command reads when it is given no -i."""

from __future__ import annotations

import argparse
import os
from pathlib import Path


def add_inventory_argument(parser: argparse.ArgumentParser) -> None:
    """-i/--inventory, as every command that reads an inventory takes it."""
    parser.add_argument(
        "-i",
        "--inventory",
        metavar="INVENTORY",
        help="inventory directory or file (default: $ANSIBLE_INVENTORY; on a boot server "
        "the API's; else inventory/lab)",
    )


def default_inventory() -> Path:
    """ANSIBLE_INVENTORY; on a boot server (GGNET_API_CONFIG set, as the service and
    the installed `ggnet` command do) the API's own inventory; else the lab's."""
    env = os.environ.get("ANSIBLE_INVENTORY")
    if env:
        return Path(env.split(",")[0])
    if os.environ.get("GGNET_API_CONFIG"):
        from ggnet_api import config

        return Path(config.load()["inventory"])
    # Imported here: the engine's inventory loader brings Ansible, which `--help` and
    # the argument parsing of every command should not wait for.
    from ggnet.inventory import REPO_ROOT

    return REPO_ROOT / "inventory" / "lab"
