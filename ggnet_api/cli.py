"""The `ggnet` command.  Each subcommand lives in its own module, which keeps its heavy
imports inside run() so that `ggnet --help` stays fast."""

from __future__ import annotations

import argparse
import importlib
import sys

# name -> (module, help).  The module provides add_arguments(parser) and run(args) -> int.
SUBCOMMANDS = {
    "validate": ("ggnet_api.validate_cmd", "check an inventory; exit 2 with one line per problem"),
    "lab": ("ggnet_lab.cli", "the built-in lab: up | status | boot CLIENT | down | demo"),
    "serve": ("ggnet_api.serve_cmd", "run the API under gunicorn (one worker, threads)"),
    "token": ("ggnet_api.token_cmd", "API tokens: create --name N --role R | list | revoke ID"),
    "preflight": (
        "ggnet_api.preflight_cmd",
        "check this boot server: pool, iSCSI, dnsmasq, TFTP, interface, API db, Prometheus",
    ),
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="ggnet", description="ggnet diskless-boot appliance")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name, (module_name, help_text) in SUBCOMMANDS.items():
        sp = sub.add_parser(name, help=help_text, description=help_text)
        try:
            module = importlib.import_module(module_name)
        except ImportError as exc:
            # One broken subcommand must not take the others down with it.
            sp.set_defaults(_run=_unavailable(name, exc))
            continue
        module.add_arguments(sp)
        sp.set_defaults(_run=module.run)
    return parser


def _unavailable(name: str, exc: ImportError):
    def run(_args) -> int:
        print(f"ggnet {name}: not available here ({exc}); run `make deps` first", file=sys.stderr)
        return 1

    return run


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args._run(args) or 0)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
