"""`ggnet images`: on a boot server, each image's versions with their states, the
version the PCs boot and the version in canary, read from the pool itself.

The rollout's decision over the canary's boots is the API's (GET /api/images, and
ggnet_image_rollout on /metrics): it reads the boot path's records.
"""

from __future__ import annotations

import argparse
import json
from typing import Any

HELP = "list the images' versions with their states and what the PCs boot"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--json", action="store_true", help="print the result as JSON")


def gather(snap: Any, state: Any) -> list[dict[str, Any]]:
    """One row per image of the inventory: its versions (name, state, created, comment),
    the version the PCs boot (served), the canary PCs' version (canary) and the canary
    PCs of the image."""
    from ggnet.storage.images import effective_version, image_specs

    specs = image_specs(snap.images)
    rows: list[dict[str, Any]] = []
    for name in sorted(specs):
        image = state.images.get(name)
        if image is None:
            rows.append({"image": name, "versions": [], "served": None, "canary": None})
            continue
        served = effective_version(image, specs[name])
        canary = effective_version(image, specs[name], canary=True)
        rows.append(
            {
                "image": name,
                "versions": [
                    {
                        "name": v.name,
                        "state": v.state,
                        "created": v.created,
                        "comment": v.comment,
                    }
                    for v in image.versions
                ],
                "served": served.name if served else None,
                "canary": canary.name if canary and canary != served else None,
                "canary_pcs": sorted(
                    n
                    for n, c in snap.clients.items()
                    if c.get("canary") and name in (c.get("image"), c.get("game_disk"))
                ),
            }
        )
    return rows


def text(rows: list[dict[str, Any]]) -> str:
    lines = []
    for row in rows:
        head = f"{row['image']}: PCs boot {row['served'] or '(nothing)'}"
        if row["canary"]:
            pcs = ", ".join(row["canary_pcs"]) or "no PC in a canary set"
            head += f"; canary {row['canary']} on {pcs}"
        lines.append(head)
        for v in row["versions"]:
            mark = "*" if v["name"] == row["served"] else "c" if v["name"] == row["canary"] else " "
            lines.append(
                f"  {mark} {v['name']:<12} {v['state']:<10} {v['created'][:19]}  {v['comment'] or ''}"
            )
        if not row["versions"]:
            lines.append("    (not on the pool yet: converge the storage role)")
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    from ggnet import storage
    from ggnet.inventory import load_inventory
    from ggnet.zfs import Zfs

    from ggnet_api import config as config_mod
    from ggnet_api.snapshot import build_snapshot

    config = config_mod.load()
    inv = load_inventory(config["inventory"])
    snap = build_snapshot(inv.groups, inv.hostvars, config.get("server"))
    state = storage.read_state(snap.storage, Zfs(), writebacks=storage.NO_WRITEBACKS)
    rows = gather(snap, state)
    print(json.dumps(rows, indent=2) if args.json else text(rows))
    return 0
