"""The `ggnet` command.  Each subcommand lives in its own module, which provides HELP,
add_arguments(parser) and run(args) -> int, and keeps its heavy imports inside run()
so that `ggnet --help` stays fast.

The lab is an optional part: `ggnet lab` is there when this installation has the
ggnet_lab package (a developer's checkout) and absent on a boot server, which is
installed without it.  Nothing of the product imports the lab.
"""

from __future__ import annotations

import argparse
import importlib.util
import sys
from types import ModuleType

from ggnet_cli import diff, images, job, preflight, privd, serve, status, tokens, validate


def commands() -> dict[str, ModuleType]:
    """Command name -> its module, in the order `ggnet --help` lists them."""
    found = {"validate": validate, "diff": diff}
    if importlib.util.find_spec("ggnet_lab") is not None:
        from ggnet_lab import cli as lab

        found["lab"] = lab
    found.update(
        serve=serve,
        privd=privd,
        status=status,
        images=images,
        token=tokens,
        job=job,
        preflight=preflight,
    )
    return found


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="ggnet", description="ggnet diskless-boot appliance")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name, module in commands().items():
        sp = sub.add_parser(name, help=module.HELP, description=module.HELP)
        module.add_arguments(sp)
        sp.set_defaults(_run=module.run)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args._run(args) or 0)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
