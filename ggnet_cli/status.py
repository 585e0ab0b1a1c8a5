"""`ggnet status`: on a boot server, which inventory commit the boot path serves.

Read from the files the API and git keep, so it answers even when the API is down.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

HELP = "show which inventory commit this boot server serves the PCs from"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--json", action="store_true", help="print the result as JSON")


def gather(config: dict) -> dict:
    from ggnet.boot_entries import read_served
    from ggnet.inventory_repo import commit_of

    inventory = Path(config["inventory"])
    served_file = config.get("served_file")
    served = read_served(served_file) if served_file else None
    head = commit_of(inventory) if inventory.is_dir() else None
    served_commit = (served or {}).get("commit")
    return {
        "inventory": str(inventory),
        "repository_commit": head,
        "served_commit": served_commit,
        "pcs_served": len((served or {}).get("entries") or {}),
        "in_step": served is not None and served_commit == head,
    }


def run(args: argparse.Namespace) -> int:
    from ggnet_api import config as config_mod

    state = gather(config_mod.load())
    if args.json:
        print(json.dumps(state, indent=2))
    else:
        print(f"inventory:  {state['inventory']} at {state['repository_commit'] or '(not in git)'}")
        if state["served_commit"] is None and not state["pcs_served"]:
            print("boot path:  nothing served yet (is ggnet-api running? journalctl -u ggnet-api)")
        else:
            print(f"boot path:  {state['served_commit']} ({state['pcs_served']} PCs)")
        if not state["in_step"]:
            print(
                "the boot path does not serve the repository's commit yet: the API reloads "
                "within seconds; if it stays so, the inventory does not load (GET /api/status)"
            )
    return 0 if state["in_step"] else 1
