"""The server's inventory repository, kept one with the operator's.

The API serves the boot path from a git repository on the server, and approvals commit
there.  Every converge brings the controller's inventory to it as a commit:

- When the operator's inventory is a git repository of its own (the documented way),
  the controller's history comes along (a git bundle), so the two share commits: the
  server's HEAD becomes the controller's HEAD, plus one sync commit when the working
  tree holds uncommitted edits.  A server commit the controller lacks (an approval not
  yet pulled) refuses the converge, with the `git pull` to run.  Earlier sync commits
  are not approvals: they only mirrored a working tree and are replaced.
- Otherwise (an inventory directory inside some other repository, as the lab's is),
  the tree is committed on top of the server's HEAD.  Approvals since the last sync
  refuse the converge unless the controller's tree already holds what they wrote.

Nothing is written before every check has passed.
"""

from __future__ import annotations

import shutil
import subprocess
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from .host_os import c_locale_env

# Marks a commit made by the sync (a mirror of the controller's tree), not by a person
# or an approval.
SYNC_TRAILER = "Ggnet-Sync: controller"
SYNCED_REF = "refs/ggnet/synced"
CONTROLLER_REF = "refs/ggnet/controller"
IDENTITY = ("ggnet-sync", "ggnet-sync@localhost")


class SyncError(Exception):
    """A refusal or failure, worded for the operator; nothing was changed."""


@dataclass
class SyncResult:
    changed: bool = False
    before: str | None = None
    commit: str | None = None
    mode: str = ""
    files: list[str] = field(default_factory=list)  # "added x", "modified y", "deleted z"
    actions: list[str] = field(default_factory=list)


def run_git(
    repo: Path | str, *args: str, env: Mapping[str, str] | None = None
) -> subprocess.CompletedProcess:
    """git in REPO, its messages in English and never a prompt; the caller reads the
    exit code."""
    return subprocess.run(
        ["git", "-C", str(repo), *args],
        capture_output=True,
        text=True,
        env=c_locale_env({"GIT_TERMINAL_PROMPT": "0", **(env or {})}),
    )


def commit_of(repo: Path | str, ref: str = "HEAD") -> str | None:
    """The commit REF names in the repository REPO is in; None outside git or when REF
    names none (a repository without a commit)."""
    proc = run_git(repo, "rev-parse", "-q", "--verify", f"{ref}^{{commit}}")
    return proc.stdout.strip() or None if proc.returncode == 0 else None


def _git(repo: Path | str, *args: str, env: Mapping[str, str] | None = None) -> str:
    """git as the sync (its commits' author): stdout, or SyncError."""
    name, email = IDENTITY
    ident = {"GIT_AUTHOR_NAME": name, "GIT_AUTHOR_EMAIL": email}
    ident |= {"GIT_COMMITTER_NAME": name, "GIT_COMMITTER_EMAIL": email}
    proc = run_git(repo, *args, env={**ident, **(env or {})})
    if proc.returncode != 0:
        raise SyncError(f"git {' '.join(args[:2])} in {repo} failed: {proc.stderr.strip()[:400]}")
    return proc.stdout.strip()


def _tree_of(repo: Path, files: Path) -> str:
    """The git tree of the directory FILES, written into REPO's object store (not its
    index, not its work tree)."""
    with tempfile.TemporaryDirectory() as tmp:
        env = {"GIT_INDEX_FILE": str(Path(tmp) / "index"), "GIT_WORK_TREE": str(files)}
        _git(repo, "add", "-A", "--", ".", env=env)
        return _git(repo, "write-tree", env=env)


def _commit(repo: Path, tree: str, parent: str | None, message: str) -> str:
    args = ["commit-tree", tree, "-m", message]
    if parent:
        args += ["-p", parent]
    return _git(repo, *args)


def _changed_files(repo: Path, old: str | None, new: str) -> list[str]:
    if old is None:
        return [f"added {p}" for p in _git(repo, "ls-tree", "-r", "--name-only", new).splitlines()]
    words = {"A": "added", "M": "modified", "D": "deleted", "T": "modified"}
    out = []
    for line in _git(repo, "diff", "--name-status", "--no-renames", old, new).splitlines():
        status, _, path = line.partition("\t")
        out.append(f"{words.get(status[:1], 'changed')} {path}")
    return out


def _foreign_commits(repo: Path, since: str | None, head: str) -> list[tuple[str, str]]:
    """(hash, subject) of the commits after SINCE up to HEAD not made by the sync."""
    spec = f"{since}..{head}" if since else head
    log = _git(repo, "log", "--format=%H%x00%s%x00%(trailers:only,unfold)%x01", spec)
    found = []
    for record in log.split("\x01"):
        record = record.strip("\n")
        if not record:
            continue
        sha, subject, trailers = [*record.split("\x00"), "", ""][:3]
        if SYNC_TRAILER not in trailers:
            found.append((sha, subject))
    return found


def _checkout(repo: Path, commit: str) -> None:
    """Make REPO's branch, index and work tree COMMIT (the API reads the work tree)."""
    _git(repo, "reset", "-q", "--hard", commit)
    _git(repo, "clean", "-q", "-f", "-d")


def _list(commits: Sequence[tuple[str, str]]) -> str:
    shown = [f"{sha[:10]} {subject!r}" for sha, subject in commits[:5]]
    more = f" and {len(commits) - 5} more" if len(commits) > 5 else ""
    return ", ".join(shown) + more


def sync(
    repo: Path,
    tree: Path,
    *,
    bundle: Path | None = None,
    head: str | None = None,
    source: str = "the controller's inventory",
    pull_from: str = "",
    check: bool = False,
) -> SyncResult:
    """Bring the inventory files in TREE (the controller's working tree) to REPO.

    BUNDLE and HEAD: the controller's history and its HEAD, when its inventory is a git
    repository.  PULL_FROM: how the controller reaches REPO (for the refusal's command).
    """
    result = SyncResult(mode="git" if bundle else "tree")
    fresh = not (repo / ".git").exists()
    if fresh:
        result.changed = True
        result.actions.append(f"create the repository {repo}")
        if check:
            return result
        repo.mkdir(parents=True, exist_ok=True)
        _git(repo, "init", "-q", "-b", "main")
    before = commit_of(repo, "HEAD")
    result.before = before
    if bundle is not None:
        if not head:
            raise SyncError("a bundle needs the controller's HEAD commit")
        _git(repo, "fetch", "-q", str(bundle), f"+HEAD:{CONTROLLER_REF}")
        if commit_of(repo, CONTROLLER_REF) != head:
            raise SyncError(f"the bundle from {source} does not hold its HEAD {head}")
        lacking = _foreign_commits(repo, CONTROLLER_REF, before) if before else []
        if lacking:
            branch = _git(repo, "symbolic-ref", "--short", "HEAD")
            raise SyncError(
                f"the server's inventory holds {len(lacking)} commit(s) that {source} "
                f"lacks: {_list(lacking)}. Pull them first (git -C {source} pull "
                f"{pull_from or '<server>:' + str(repo)} {branch}), then converge again. "
                "Nothing was changed."
            )
        base: str | None = head
    else:
        synced = commit_of(repo, SYNCED_REF)
        approvals = _foreign_commits(repo, synced, before) if before else []
        if approvals and synced is not None:
            missing = _not_in_tree(repo, synced, before or "", tree)
            if missing:
                raise SyncError(
                    f"the server's inventory holds {len(approvals)} commit(s) since the last "
                    f"converge that {source} lacks: {_list(approvals)} (files: "
                    f"{', '.join(missing)}). Copy those files from {pull_from or repo} into "
                    f"{source}, or keep the inventory in a git repository of its own "
                    "(README: the inventory in git). Nothing was changed."
                )
        base = before
    wanted_tree = _tree_of(repo, tree)
    if base is not None and _git(repo, "rev-parse", f"{base}^{{tree}}") == wanted_tree:
        new = base
    else:
        new = _commit(
            repo,
            wanted_tree,
            base,
            f"inventory as converged from {source}\n\n{SYNC_TRAILER}\n",
        )
    result.commit = new
    if new != before:
        result.changed = True
        result.files = _changed_files(repo, before, new)
        result.actions.append(f"move the server's inventory to {new[:10]}")
        if not check:
            _checkout(repo, new)
    if not check:
        _git(repo, "update-ref", SYNCED_REF, new)
    return result


def _not_in_tree(repo: Path, since: str, head: str, tree: Path) -> list[str]:
    """Files the commits SINCE..HEAD wrote that TREE does not hold as HEAD has them."""
    missing = []
    for line in _git(repo, "diff", "--name-status", "--no-renames", since, head).splitlines():
        status, _, path = line.partition("\t")
        local = tree / path
        if status.startswith("D"):
            if local.exists():
                missing.append(path)
            continue
        theirs = _git(repo, "rev-parse", f"{head}:{path}")
        ours = _git(repo, "hash-object", "--", str(local)) if local.is_file() else None
        if ours != theirs:
            missing.append(path)
    return missing


def unpack(archive: Path, into: Path) -> None:
    """The controller's tree, from the tar the action plugin made."""
    shutil.unpack_archive(str(archive), str(into), format="tar")
