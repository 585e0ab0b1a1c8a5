"""`ggnet validate`: check a whole inventory; exit 0 when valid, 2 with one line per problem."""

from __future__ import annotations

import argparse
import json
import sys

from ggnet_cli.inventory import add_inventory_argument

HELP = "check an inventory; exit 2 with one line per problem"
EXIT_OK = 0
EXIT_INVALID = 2


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_inventory_argument(parser)
    parser.add_argument("--json", action="store_true", help="print the result as JSON")
    parser.add_argument(
        "--vault-password-file",
        action="append",
        metavar="FILE",
        help="vault password file for encrypted variables (as ansible-playbook)",
    )


def check(path=None, vault_password_files=None):
    """(inventory or None, problems as lines, Problems) for the inventory at path."""
    from ggnet.inventory import check as check_inventory

    from ggnet_cli.inventory import default_inventory

    return check_inventory(path if path is not None else default_inventory(), vault_password_files)


def run(args: argparse.Namespace) -> int:
    inventory, lines, problems = check(args.inventory, args.vault_password_file)
    if args.json:
        result = {
            "valid": not lines,
            "inventory": str(inventory.path) if inventory else args.inventory,
            "problems": [p.as_dict() for p in problems] if problems else lines,
        }
        if inventory is not None:
            result["summary"] = _summary(inventory)
        print(json.dumps(result, indent=2))
        return EXIT_INVALID if lines else EXIT_OK
    if lines:
        for line in lines:
            print(line, file=sys.stderr)
        print(f"{len(lines)} problem(s); nothing was changed", file=sys.stderr)
        return EXIT_INVALID
    summary = _summary(inventory)
    print(
        f"{inventory.path}: valid: {summary['servers']} server(s), {summary['clients']} "
        f"client(s), {summary['images']} image(s)"
    )
    return EXIT_OK


def _summary(inventory) -> dict[str, int]:
    images: set[str] = set()
    for hostvars in inventory.servers.values():
        if isinstance(hostvars.get("ggnet_images"), dict):
            images.update(hostvars["ggnet_images"])
    return {
        "servers": len(inventory.servers),
        "clients": len(inventory.clients),
        "images": len(images),
    }
