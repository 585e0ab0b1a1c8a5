"""`ggnet token create|list|revoke`: API tokens, kept in the API's database as hashes.

A new token is printed once, on this terminal; it is never stored or shown again.
"""

from __future__ import annotations

import argparse
import sys
import time

HELP = "API tokens: create --name N --role R | list | revoke ID"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--state-dir", help="the API's state directory (default: the API's setting)"
    )
    sub = parser.add_subparsers(dest="action", required=True, metavar="ACTION")
    create = sub.add_parser("create", help="make a token and print it once")
    create.add_argument(
        "--name", required=True, help="who or what uses it (shown in job and git history)"
    )
    create.add_argument("--role", required=True, choices=("viewer", "operator", "admin"))
    sub.add_parser("list", help="list tokens (names and roles, never the tokens)")
    revoke = sub.add_parser("revoke", help="revoke a token by id")
    revoke.add_argument("id", type=int)


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from ggnet_api import config
    from ggnet_api.auth import new_token
    from ggnet_api.db.database import Database

    cfg = config.load(**({"state_dir": args.state_dir} if args.state_dir else {}))
    db = Database(str(Path(cfg["state_dir"]) / "api.db"))
    if args.action == "create":
        if not args.name.strip() or len(args.name) > 64:
            print("--name: 1 to 64 characters", file=sys.stderr)
            return 2
        token = new_token()
        token_id = db.add_token(args.name.strip(), args.role, token)
        print(
            f"# token {token_id} ({args.role}) for {args.name}; shown once, keep it safe",
            file=sys.stderr,
        )
        print(token)
        return 0
    if args.action == "list":
        for row in db.tokens():
            state = "revoked" if row["revoked"] else "active"
            made = time.strftime("%Y-%m-%d %H:%M", time.localtime(row["created"]))
            print(f"{row['id']:>4}  {row['role']:<8}  {state:<7}  {made}  {row['name']}")
        return 0
    if not db.revoke_token(args.id):
        print(f"token {args.id}: no such active token", file=sys.stderr)
        return 1
    print(f"token {args.id} revoked")
    return 0
