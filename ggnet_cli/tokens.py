"""`ggnet token create|list|revoke`: API tokens, kept in the API's database as hashes.

A new token is printed once, on this terminal; it is never stored or shown again.
Run as root, it acts as the owner of the API's database (the account the API runs
as): SQLite files root created (api.db-wal, api.db-shm) would lock the API out.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ggnet_api.db.database import Database

HELP = "API tokens: create --name N --role R [--expires 30d] | list | revoke ID"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.epilog = (
        "Run as root, it switches to the owner of the API's database (its directory's "
        "owner before the database exists) first, so the API's account can still "
        "open every file SQLite writes."
    )
    parser.add_argument(
        "--state-dir", help="the API's state directory (default: the API's setting)"
    )
    sub = parser.add_subparsers(dest="action", required=True, metavar="ACTION")
    create = sub.add_parser("create", help="make a token and print it once")
    create.add_argument(
        "--name", required=True, help="who or what uses it (shown in job and git history)"
    )
    create.add_argument("--role", required=True, choices=("viewer", "operator", "admin"))
    create.add_argument(
        "--expires",
        metavar="DURATION",
        help="refuse the token after this long, e.g. 12h, 30d or 8w (default: never)",
    )
    sub.add_parser("list", help="list tokens (names, roles, expiry; never the tokens)")
    revoke = sub.add_parser("revoke", help="revoke a token by id")
    revoke.add_argument("id", type=int)


def run(args: argparse.Namespace) -> int:
    from ggnet_api.auth import check_token_name

    if args.action == "create":
        # Checked before the database is opened: a refused token leaves nothing behind.
        try:
            name = check_token_name(args.name)
            lifetime = _lifetime(args.expires)
        except ValueError as exc:
            print(f"ggnet token create: {exc}", file=sys.stderr)
            return 2
        return _create(_database(args), name, args.role, lifetime)
    if args.action == "list":
        return _list(_database(args))
    db = _database(args)
    if not db.revoke_token(args.id):
        print(f"token {args.id}: no such active token", file=sys.stderr)
        return 1
    print(f"token {args.id} revoked")
    return 0


def _database(args: argparse.Namespace) -> Database:
    from ggnet_api import config
    from ggnet_api.db.database import Database

    cfg = config.load(**({"state_dir": args.state_dir} if args.state_dir else {}))
    path = Path(cfg["state_dir"]) / "api.db"
    become_owner_of(path)
    return Database(str(path))


def become_owner_of(path: Path) -> None:
    """As root, become the user and group owning PATH (or, before it exists, its
    directory), with no supplementary groups; anyone else, or root's own files: stay."""
    if os.geteuid() != 0:
        return
    for candidate in (path, path.parent):
        if candidate.exists():
            st = candidate.stat()
            break
    else:
        return
    if st.st_uid == 0:
        return
    # Groups first: after setuid there is no privilege left to change them.
    os.setgroups([])
    os.setgid(st.st_gid)
    os.setuid(st.st_uid)


def _create(db: Database, name: str, role: str, lifetime: int | None) -> int:
    from ggnet_api.auth import new_token

    token = new_token()
    expires = None if lifetime is None else time.time() + lifetime
    token_id = db.add_token(name, role, token, expires)
    until = "never expires" if expires is None else f"expires {_when(expires)}"
    print(
        f"# token {token_id} ({role}) for {name}, {until}; shown once, keep it safe",
        file=sys.stderr,
    )
    print(token)
    return 0


def _list(db: Database) -> int:
    from ggnet_api.auth import printable_name

    now = time.time()
    for row in db.tokens():
        if row["revoked"]:
            state = "revoked"
        elif row["expires"] is not None and row["expires"] <= now:
            state = "expired"
        else:
            state = "active"
        expiry = "never" if row["expires"] is None else _when(row["expires"])
        print(
            f"{row['id']:>4}  {row['role']:<8}  {state:<7}  {_when(row['created'])}  "
            f"expires {expiry:<16}  {printable_name(row['name'])}"
        )
    return 0


def _lifetime(text: str | None) -> int | None:
    """Seconds a new token lives (None: for ever), in the engine's duration words."""
    if text is None:
        return None
    from ggnet.model import parse_duration

    try:
        seconds = parse_duration(text)
    except ValueError as exc:
        raise ValueError(f"--expires {text!r} {exc}") from None
    if seconds <= 0:
        raise ValueError(f"--expires {text!r}: a token must live longer than 0 s")
    return seconds


def _when(stamp: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M", time.localtime(stamp))
