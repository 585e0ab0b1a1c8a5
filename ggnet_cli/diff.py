"""`ggnet diff`: what the inventory and the boot servers disagree on, per PC.

Runs `ansible-playbook playbooks/site.yml --check --diff` of the whole room (nothing
changes: check mode) and summarises its JSON document (ggnet_cli.drift).  Exit 0 when
nothing differs, 1 when something does (as diff(1)), 2 when the run could not tell.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ggnet_cli.inventory import add_inventory_argument

HELP = "what the inventory and the servers disagree on, per PC (a --check --diff converge)"
EXIT_SAME = 0
EXIT_DIFFERS = 1
EXIT_ERROR = 2
# How often the waiting prints that the run is still going.
PROGRESS_EVERY = 30.0
PLAYBOOK = Path("playbooks") / "site.yml"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_inventory_argument(parser)
    parser.add_argument(
        "--limit",
        metavar="SERVERS",
        help="only these boot servers (comma-separated, as ansible-playbook --limit)",
    )
    parser.add_argument(
        "--room",
        action="store_true",
        help="compare only what PCs, images and the iSCSI backend touch (site.yml's "
        "room tag): writebacks, targets, DHCP entries, the boot path; a few times faster",
    )
    parser.add_argument("--json", action="store_true", help="print the report as JSON")


def run(args: argparse.Namespace) -> int:
    from ggnet.inventory import REPO_ROOT

    from ggnet_cli.drift import render, summarise
    from ggnet_cli.inventory import default_inventory

    playbook = REPO_ROOT / PLAYBOOK
    if not playbook.is_file():
        return _error(f"{playbook} not found: run ggnet diff from a checkout of ggnet")
    path = Path(args.inventory) if args.inventory is not None else default_inventory()
    inventory, problems = _load(path)
    if inventory is None or problems:
        for line in problems:
            print(line, file=sys.stderr)
        return _error(
            f"{len(problems)} problem(s) in {path}; fix them (ggnet validate -i {path}) "
            "and run ggnet diff again"
        )
    servers = _selected(list(inventory.servers), args.limit)
    cmd = [_ansible_playbook(), "-i", str(path), str(playbook), "--check", "--diff"]
    if args.limit:
        # The first play validates the inventory on localhost: a limit must keep it.
        cmd += ["--limit", f"localhost,{args.limit}"]
    if args.room:
        cmd += ["--tags", "room"]
    print(f"running site.yml --check on {servers}...", file=sys.stderr)
    started = time.monotonic()
    rc, stdout, stderr = run_playbook(cmd, REPO_ROOT, _progress(started))
    print(f"site.yml --check took {time.monotonic() - started:.0f}s", file=sys.stderr)

    document = parse_document(stdout)
    if document is None:
        print(stderr.strip() or stdout.strip(), file=sys.stderr)
        return _error(f"ansible-playbook printed no result (exit {rc}); see above")
    report = summarise(document, inventory.clients, _iqn_of(inventory.hostvars))
    if args.json:
        print(json.dumps({"inventory": str(path), **report.as_dict()}, indent=2))
    if report.failures or rc != 0:
        if not args.json:
            print(failure_text(report.failures, path, rc, stderr), file=sys.stderr)
        return EXIT_ERROR
    if not args.json:
        print(render(report))
    return EXIT_DIFFERS if report.differs else EXIT_SAME


def _error(message: str) -> int:
    print(f"ggnet diff: {message}", file=sys.stderr)
    return EXIT_ERROR


def _load(path: Path) -> tuple[Any, list[str]]:
    from ggnet.inventory import check

    inventory, lines, _ = check(path)
    return inventory, lines


def _selected(servers: list[str], limit: str | None) -> str:
    """The servers the run covers, as the progress line names them."""
    if not limit:
        chosen = servers
    else:
        parts = [p.strip() for p in limit.split(",") if p.strip()]
        if not all(p in servers for p in parts):
            return f"the servers matching --limit {limit}"
        chosen = parts
    return f"{len(chosen)} server(s) ({', '.join(chosen)})" if chosen else "no server"


def _ansible_playbook() -> str:
    from ggnet_cli.ansible_env import ansible_playbook

    return ansible_playbook()


def _progress(started: float) -> Callable[[], None]:
    def tick() -> None:
        print(f"  still running ({time.monotonic() - started:.0f}s)", file=sys.stderr)

    return tick


def run_playbook(cmd: list[str], repo: Path, tick: Callable[[], None]) -> tuple[int, str, str]:
    """CMD under the JSON callback from REPO; TICK every PROGRESS_EVERY seconds while it
    runs (the callback prints only at the end).  Returns exit code, stdout, stderr."""
    from ggnet_cli.ansible_env import ansible_env

    proc = subprocess.Popen(
        cmd,
        cwd=repo,
        env=ansible_env(repo),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    while True:
        try:
            stdout, stderr = proc.communicate(timeout=PROGRESS_EVERY)
        except subprocess.TimeoutExpired:
            tick()  # communicate() again loses no output
            continue
        return proc.returncode, stdout, stderr


def parse_document(stdout: str) -> dict[str, Any] | None:
    """The callback's document: the JSON object after any warning printed before it."""
    lines = stdout.splitlines(keepends=True)
    for i, line in enumerate(lines):
        if line.startswith("{"):
            try:
                document = json.loads("".join(lines[i:]))
            except ValueError:
                return None
            return document if isinstance(document, dict) and "plays" in document else None
    return None


def _iqn_of(hostvars: dict[str, dict[str, Any]]) -> Callable[[str, str], str | None]:
    """(server, PC) -> the IQN that server gives the PC's target, by the engine's rule
    and the server's iqn_prefix."""
    from ggnet.model import settings
    from ggnet.net import target_iqn

    def iqn_of(server: str, name: str) -> str | None:
        prefix = settings(hostvars.get(server, {}), "ggnet_iscsi").get("iqn_prefix")
        try:
            return target_iqn(name, prefix)
        except ValueError:
            return None

    return iqn_of


def failure_text(failures: list[Any], inventory: Path, rc: int, stderr: str) -> str:
    """Which host and task stopped the run, its message, and what to do next."""
    if not failures:
        tail = "\n".join(stderr.strip().splitlines()[-10:])
        return (
            f"{tail}\nggnet diff: ansible-playbook exited {rc}: see above; fix it and run "
            "ggnet diff again"
        ).lstrip()
    lines = ["ggnet diff: the check run failed, so the report is incomplete:"]
    for f in failures:
        msg = "\n    ".join(f.msg.splitlines())
        lines.append(f"  {f.host}: {f.task}: {msg}")
        if f.unreachable:
            lines.append(
                f"  next: {f.host} is unreachable: make `ansible -i {inventory} -m ping "
                f"{f.host}` answer, then run ggnet diff again"
            )
        else:
            lines.append(
                "  next: a converge would stop here too: fix what the message says (in the "
                "inventory or on the server), then run ggnet diff again"
            )
    lines.append("nothing was changed (check mode)")
    return "\n".join(lines)
