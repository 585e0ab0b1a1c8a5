"""`ggnet images`: on a boot server, each image's versions with their states, the
version the PCs boot and the version in canary, read from the pool itself.

The rollout's decision over the canary's boots is the API's (GET /api/images, and
ggnet_image_rollout on /metrics): it reads the boot path's records.

`ggnet images boot-test IMAGE VERSION` runs the boot test of a version here, now
(ggnet.storage.boot_test_job, what image.yml -e op=boot_test and the API's job run):
passed makes it tested, failed rejected.  Exit 0 when it passed, 1 when it failed or
was refused.
"""

from __future__ import annotations

import argparse
import json
from typing import Any

HELP = "list the images' versions with their states and what the PCs boot; boot-test one"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--json", action="store_true", help="print the result as JSON")
    sub = parser.add_subparsers(dest="action", metavar="ACTION")
    test = sub.add_parser(
        "boot-test",
        help="boot a candidate version in a throwaway VM here: passed -> tested, failed -> rejected",
    )
    test.add_argument("image", metavar="IMAGE")
    test.add_argument("version", metavar="VERSION")
    # SUPPRESS: without it the subcommand's False would overwrite `ggnet images --json`.
    test.add_argument(
        "--json", action="store_true", default=argparse.SUPPRESS, help="print the result as JSON"
    )


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
                        "boot_test": v.boot_test,
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
            if v.get("boot_test"):
                lines.append(f"      boot test: {boot_test_line(v['boot_test'])}")
        if not row["versions"]:
            lines.append("    (not on the pool yet: converge the storage role)")
    return "\n".join(lines)


def boot_test_line(record: dict[str, Any]) -> str:
    """One line for a version's last boot test: verdict, when, stage times, reason."""
    stages = record.get("stages") or {}
    times = ", ".join(f"{k} {float(v):.1f} s" for k, v in stages.items())
    verdict = "passed" if record.get("passed") else "FAILED"
    out = f"{verdict} {str(record.get('at') or '')[:19]} ({record.get('firmware')})"
    out += f"; {times}" if times else ""
    return out + f": {record.get('reason')}"


def run_boot_test(args: argparse.Namespace) -> int:
    import sys

    from ggnet import iscsi
    from ggnet.boot_test_knobs import parse_knobs
    from ggnet.inventory import load_inventory
    from ggnet.layout import LayoutError
    from ggnet.storage import StorageError
    from ggnet.storage.boot_test_job import Setup, boot_test

    from ggnet_api import config as config_mod
    from ggnet_api.snapshot import build_snapshot, with_converged_targets

    config = config_mod.load()
    inv = load_inventory(config["inventory"])
    snap = with_converged_targets(
        build_snapshot(inv.groups, inv.hostvars, config.get("server")), config.get("targets_file")
    )
    knobs, problems = parse_knobs(
        (inv.hostvars.get(snap.server or "") or {}).get("ggnet_boot_test")
    )
    if problems:
        for key, value, message in problems:
            print(f"ggnet images boot-test: {key}: {message} (value: {value!r})", file=sys.stderr)
        return 1
    setup = Setup(
        backend=snap.iscsi_backend,
        iqn_prefix=snap.iscsi.get("iqn_prefix") or Setup.iqn_prefix,
        portal=iscsi.portal(snap.network.get("server_ip")),
        state_dir=config["boot_test_dir"],
        knobs=knobs,
    )
    try:
        result = boot_test(snap.storage, snap.images, args.image, args.version, setup)
    except (StorageError, LayoutError) as exc:
        print(f"ggnet images boot-test: {exc}", file=sys.stderr)
        return 1
    out = result.as_dict()
    record = out.get("boot_test") or {}
    if args.json:
        print(json.dumps(out, indent=2))
    else:
        for warning in out["warnings"]:
            print(f"warning: {warning}", file=sys.stderr)
        print(f"{args.image}@{args.version}: {out.get('state')}; {boot_test_line(record)}")
        if record.get("screenshot"):
            print(f"screenshot: {record['screenshot']}")
    return 0 if record.get("passed") else 1


def run(args: argparse.Namespace) -> int:
    if getattr(args, "action", None) == "boot-test":
        return run_boot_test(args)
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
