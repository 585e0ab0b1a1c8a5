"""The controller's half of bringing an inventory to a server (ggnet_inventory_sync's
action plugin): which files travel, packed so that the same files make the same
archive, and the git history when the inventory is a repository of its own."""

from __future__ import annotations

import io
import os
import tarfile
from pathlib import Path

from .inventory_repo import commit_of, run_git


def inventory_files(source: Path) -> list[str]:
    """The files of the inventory, relative to SOURCE: what git tracks or would track
    (its ignore rules apply) when SOURCE is in a work tree, else every file outside
    dot-directories."""
    listed = run_git(source, "ls-files", "-z", "--cached", "--others", "--exclude-standard")
    if listed.returncode == 0:
        names = {n for n in listed.stdout.split("\0") if n}
        return sorted(n for n in names if (source / n).is_file())
    found = []
    # Symbolic links are followed: an inventory may link its files from elsewhere
    # (molecule's does), and the server needs their contents.
    for dirpath, dirnames, filenames in os.walk(source, followlinks=True):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        for name in filenames:
            found.append(str((Path(dirpath) / name).relative_to(source)))
    return sorted(found)


def pack(source: Path, files: list[str], archive: Path) -> None:
    """A tar that depends only on the files' names and contents, so an unchanged
    inventory makes the same archive."""
    with tarfile.open(archive, "w", format=tarfile.PAX_FORMAT) as tar:
        for name in files:
            data = (source / name).read_bytes()  # through a link, if it is one
            info = tarfile.TarInfo(name)
            info.size, info.mode = len(data), 0o644
            tar.addfile(info, io.BytesIO(data))


def own_repository_head(source: Path) -> str | None:
    """SOURCE's HEAD commit when SOURCE is the top of a git work tree with a commit."""
    top = run_git(source, "rev-parse", "--show-toplevel")
    if top.returncode != 0 or Path(top.stdout.strip()).resolve() != source.resolve():
        return None
    return commit_of(source)


def bundle(source: Path, into: Path) -> None:
    """SOURCE's history up to HEAD as a git bundle (ValueError when git fails)."""
    made = run_git(source, "bundle", "create", "-q", str(into), "HEAD")
    if made.returncode != 0:
        raise ValueError(f"git bundle in {source} failed: {made.stderr.strip()[:300]}")
