"""Approving a discovered machine: it becomes a client in the inventory, in git.

Ansible only counts a host as a member of a group where an inventory source says so;
a host_vars file alone adds nobody.  So an approval writes two files under the
inventory directory:

    host_vars/<name>.yml   the machine's variables (ggnet_mac, ggnet_image)
    approved.yml           an inventory source the API owns, listing approved machines
                           under ggnet_clients and under the machine groups chosen

The new inventory is validated (the same check as `ggnet validate`) before it is
committed.  Whatever fails after the files are written (validation, git, an exception
from the loader) puts the inventory back byte for byte, index included: a failed
approval must not leave a file that stops the API at its next start.  The commit
names the approver and holds only these two files.

A name Ansible gives a meaning of its own (all, ungrouped, localhost), a group's or a
server's is refused before anything is written: a host named like a group is a
different inventory, not one more machine.
"""

from __future__ import annotations

import contextlib
import os
import threading
from pathlib import Path
from typing import Any

import yaml
from ggnet.inventory import check
from ggnet.inventory_repo import run_git
from ggnet.net import check_iqn_name

APPROVED = "approved.yml"
# Ansible's implicit groups and its implicit localhost (under each of its names).
RESERVED = frozenset(("all", "ungrouped", "localhost", "127.0.0.1", "::1"))
_lock = threading.Lock()
_HEADER = (
    "# Machines approved through the ggnet API (discovery).  Written by the API; edit\n"
    "# host_vars/<name>.yml for their settings, or move them into hosts.yml by hand.\n"
)


class ApprovalError(Exception):
    def __init__(self, message: str, status: int = 400, problems: list[str] | None = None):
        super().__init__(message)
        self.status = status
        self.problems = problems or []


def check_request(body: dict[str, Any], snap, mac: str) -> tuple[str, str, list[str]]:
    unknown = sorted(set(body) - {"name", "image", "groups"})
    if unknown:
        raise ApprovalError(
            f"body: unknown field(s) {', '.join(unknown)}; send name, image and groups"
        )
    name, image, groups = body.get("name"), body.get("image"), body.get("groups", [])
    if not isinstance(name, str) or not name:
        raise ApprovalError("body.name: required, the machine's inventory name (e.g. pc-12)")
    try:
        check_iqn_name(name)
    except ValueError as exc:
        raise ApprovalError(f"body.name: {name[:64]!r} {exc}") from None
    if len(name) > 63:
        raise ApprovalError("body.name: at most 63 characters")
    if name in RESERVED:
        raise ApprovalError(f"body.name: {name!r} is reserved by Ansible; choose another name")
    if name in snap.groups:
        raise ApprovalError(f"body.name: {name!r} is a group of the inventory")
    if name == snap.server or name in snap.servers:
        raise ApprovalError(f"body.name: {name!r} is a boot server of the inventory")
    if name in snap.hosts:
        raise ApprovalError(f"body.name: {name!r} is already a host of the inventory", 409)
    if mac in snap.by_mac:
        raise ApprovalError(f"{mac} is already the MAC of {snap.by_mac[mac]}", 409)
    if not isinstance(image, str) or image not in snap.images:
        known = ", ".join(sorted(snap.images)) or "none"
        raise ApprovalError(
            f"body.image: {str(image)[:64]!r} is not in ggnet_images (known: {known})"
        )
    if not isinstance(groups, list) or not all(isinstance(g, str) for g in groups):
        raise ApprovalError("body.groups: a list of machine group names")
    bad = sorted(set(groups) - set(snap.machine_groups))
    if bad:
        known = ", ".join(snap.machine_groups) or "none"
        raise ApprovalError(
            f"body.groups: {', '.join(g[:64] for g in bad)} not a machine group (known: {known})"
        )
    return name, image, sorted(set(groups))


def _git(repo: Path, *args: str, env: dict[str, str] | None = None) -> str:
    proc = run_git(repo, *args, env=env)
    if proc.returncode != 0:
        raise ApprovalError(f"git {args[0]} failed: {proc.stderr.strip()[:300]}", 500)
    return proc.stdout.strip()


def approve(
    inventory_dir: str | os.PathLike[str],
    mac: str,
    name: str,
    image: str,
    groups: list[str],
    who: str,
    author: str,
    roles_dir: str | os.PathLike[str] | None = None,
) -> str:
    """Write, validate (knowing the role knobs of `roles_dir`) and commit; returns the
    commit id."""
    root = Path(inventory_dir)
    if not root.is_dir():
        raise ApprovalError(f"the inventory {root} is not a directory; approvals need one", 409)
    with _lock:
        try:
            repo = Path(_git(root, "rev-parse", "--show-toplevel"))
        except ApprovalError:
            raise ApprovalError(f"the inventory {root} is not in a git repository", 409) from None
        host_vars = root / "host_vars" / f"{name}.yml"
        approved = root / APPROVED
        if host_vars.exists():
            raise ApprovalError(f"body.name: {host_vars} exists already", 409)
        old_approved = approved.read_bytes() if approved.exists() else None
        data = yaml.safe_load(old_approved or b"") or {}
        clients = (
            data.setdefault("all", {}).setdefault("children", {}).setdefault("ggnet_clients", {})
        )
        clients.setdefault("hosts", {})[name] = None
        for group in groups:
            group_entry = clients.setdefault("children", {}).setdefault(group, {}) or {}
            clients["children"][group] = group_entry
            group_entry.setdefault("hosts", {})[name] = None
        made_dir = not host_vars.parent.exists()
        rel = [str(p.resolve().relative_to(repo.resolve())) for p in (host_vars, approved)]
        staged = False
        try:
            host_vars.parent.mkdir(exist_ok=True)
            host_vars.write_text(
                f"# Approved through the ggnet API by {who}, discovered as {mac}.\n"
                + yaml.safe_dump({"ggnet_mac": mac, "ggnet_image": image}, sort_keys=False),
                encoding="utf-8",
            )
            approved.write_text(_HEADER + yaml.safe_dump(data, sort_keys=True), encoding="utf-8")
            _validate(root, roles_dir)
            staged = True
            _git(repo, "add", "--", *rel)
            author_name, _, author_email = author.partition("<")
            ident = {
                "GIT_AUTHOR_NAME": author_name.strip(),
                "GIT_AUTHOR_EMAIL": author_email.rstrip(">").strip(),
                "GIT_COMMITTER_NAME": author_name.strip(),
                "GIT_COMMITTER_EMAIL": author_email.rstrip(">").strip(),
            }
            groups_text = ", ".join(groups) or "none"
            message = (
                f"Approve {name} ({mac}): image {image}, groups {groups_text}\n\n"
                f"Approved by {who} through the ggnet API (discovery).\n"
            )
            _git(repo, "commit", "-q", "-m", message, "--", *rel, env=ident)
        except BaseException:
            _restore(repo, rel, host_vars, approved, old_approved, made_dir, staged)
            raise
        return _git(repo, "rev-parse", "HEAD")


def _restore(
    repo: Path,
    rel: list[str],
    host_vars: Path,
    approved: Path,
    old_approved: bytes | None,
    made_dir: bool,
    staged: bool,
) -> None:
    """The inventory as it was before approve() wrote to it."""
    if staged:
        # The index entries back to HEAD's (a path HEAD lacks leaves the index).
        run_git(repo, "reset", "-q", "--", *rel)
    host_vars.unlink(missing_ok=True)
    if made_dir:
        with contextlib.suppress(OSError):
            host_vars.parent.rmdir()
    if old_approved is None:
        approved.unlink(missing_ok=True)
    else:
        approved.write_bytes(old_approved)


def _validate(root: Path, roles_dir: str | os.PathLike[str] | None) -> None:
    _inventory, lines, _problems = check(root, roles_dir=roles_dir)
    if lines:
        raise ApprovalError(
            "the inventory would not validate with this machine; nothing was committed",
            422,
            problems=lines[:20],
        )
