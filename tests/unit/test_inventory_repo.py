"""The server's inventory repository kept one with the operator's, with real git: a
converge brings the controller's tree as a commit, refuses over approvals the operator
has not pulled, and the documented `git pull` reconciles the two."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
from ggnet.inventory_repo import SYNC_TRAILER, SyncError, sync

pytestmark = pytest.mark.unit

HOSTS = "all:\n  children:\n    ggnet_clients:\n      hosts:\n        pc-01:\n"


def git(repo: Path, *args: str) -> str:
    proc = subprocess.run(
        ["git", "-C", str(repo), "-c", "user.name=op", "-c", "user.email=op@example.invalid",
         *args],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    return proc.stdout.strip()


def write(root: Path, files: dict[str, str]) -> None:
    for name, text in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(text)


def approve(server: Path, name: str) -> str:
    """What the API's approval does: a file and a commit on the server."""
    write(server, {f"host_vars/{name}.yml": "ggnet_mac: '52:54:00:00:00:09'\n"})
    git(server, "add", "host_vars")
    git(server, "commit", "-q", "-m", f"Approve {name}")
    return git(server, "rev-parse", "HEAD")


def bundle_of(operator: Path, tmp: Path) -> tuple[Path, str]:
    path = tmp / "inv.bundle"
    path.unlink(missing_ok=True)
    git(operator, "bundle", "create", "-q", str(path), "HEAD")
    return path, git(operator, "rev-parse", "HEAD")


def server_state(server: Path) -> tuple[str, str]:
    return git(server, "rev-parse", "HEAD"), git(server, "status", "--porcelain")


@pytest.fixture
def operator(tmp_path):
    """The operator's inventory, a git repository of its own."""
    repo = tmp_path / "operator"
    repo.mkdir()
    git(repo, "init", "-q", "-b", "main")
    write(repo, {"hosts.yml": HOSTS, "host_vars/pc-01.yml": "ggnet_mac: 5254.0000.0001\n"})
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "-m", "room")
    return repo


def test_tree_mode_commits_edits_and_a_second_sync_changes_nothing(tmp_path):
    tree, server = tmp_path / "tree", tmp_path / "server"
    write(tree, {"hosts.yml": HOSTS})
    first = sync(server, tree)
    assert first.changed and first.files == ["added hosts.yml"]
    assert (server / "hosts.yml").read_text() == HOSTS
    assert sync(server, tree).changed is False
    write(tree, {"host_vars/pc-01.yml": "ggnet_image: win\n"})
    second = sync(server, tree)
    assert second.changed and second.files == ["added host_vars/pc-01.yml"]
    assert SYNC_TRAILER in git(server, "log", "-1", "--format=%B")
    (tree / "host_vars/pc-01.yml").unlink()
    assert sync(server, tree).files == ["deleted host_vars/pc-01.yml"]
    assert not (server / "host_vars/pc-01.yml").exists()


def test_tree_mode_refuses_an_approval_the_tree_lacks_and_changes_nothing(tmp_path):
    tree, server = tmp_path / "tree", tmp_path / "server"
    write(tree, {"hosts.yml": HOSTS})
    sync(server, tree)
    approve(server, "pc-09")
    before = server_state(server)
    write(tree, {"hosts.yml": HOSTS + "        pc-02:\n"})
    with pytest.raises(SyncError, match=r"1 commit.*'Approve pc-09'.*host_vars/pc-09\.yml"):
        sync(server, tree)
    assert server_state(server) == before
    # The operator copies the approved file: the next converge goes through.
    write(tree, {"host_vars/pc-09.yml": (server / "host_vars/pc-09.yml").read_text()})
    done = sync(server, tree)
    assert done.changed and done.files == ["modified hosts.yml"]


def test_git_mode_shares_history_with_the_operator(operator, tmp_path):
    server = tmp_path / "server"
    bundle, head = bundle_of(operator, tmp_path)
    result = sync(server, operator, bundle=bundle, head=head)
    assert result.changed and result.commit == head  # the same commit, not a copy
    assert sync(server, operator, bundle=bundle, head=head).changed is False


def test_git_mode_refuses_unpulled_approvals_until_the_operator_pulls(operator, tmp_path):
    server = tmp_path / "server"
    bundle, head = bundle_of(operator, tmp_path)
    sync(server, operator, bundle=bundle, head=head)
    approval = approve(server, "pc-09")
    # The operator edits meanwhile and converges: refused, naming the approval and the pull.
    write(operator, {"host_vars/pc-01.yml": "ggnet_mac: 52-54-00-00-00-01\n"})
    git(operator, "commit", "-qam", "pc-01: MAC in dashes")
    bundle, head = bundle_of(operator, tmp_path)
    before = server_state(server)
    with pytest.raises(
        SyncError, match=rf"{approval[:10]} 'Approve pc-09'.*git -C {operator} pull srv:/inv main"
    ):
        sync(server, operator, bundle=bundle, head=head, source=str(operator), pull_from="srv:/inv")
    assert server_state(server) == before
    # The documented step: an ordinary git pull from the server's repository.
    git(operator, "pull", "-q", "--no-rebase", "--no-edit", str(server), "main")
    assert (operator / "host_vars/pc-09.yml").exists()
    bundle, head = bundle_of(operator, tmp_path)
    done = sync(server, operator, bundle=bundle, head=head)
    assert done.commit == head and (server / "host_vars/pc-01.yml").read_text().startswith(
        "ggnet_mac: 52-54"
    )
    assert git(server, "merge-base", "--is-ancestor", approval, "HEAD") == ""


def test_git_mode_mirrors_uncommitted_edits_without_calling_them_approvals(operator, tmp_path):
    server = tmp_path / "server"
    write(operator, {"host_vars/pc-02.yml": "ggnet_mac: 525400000002\n"})  # not committed
    bundle, head = bundle_of(operator, tmp_path)
    first = sync(server, operator, bundle=bundle, head=head)
    assert first.commit != head and (server / "host_vars/pc-02.yml").exists()
    assert git(server, "rev-parse", "HEAD~1") == head
    # Committed later (a different commit than the server's mirror): not refused.
    git(operator, "add", "-A")
    git(operator, "commit", "-qm", "pc-02")
    bundle, head = bundle_of(operator, tmp_path)
    assert sync(server, operator, bundle=bundle, head=head).commit == head


def test_check_mode_reports_and_writes_nothing(tmp_path):
    tree, server = tmp_path / "tree", tmp_path / "server"
    write(tree, {"hosts.yml": HOSTS})
    assert sync(server, tree, check=True).changed and not server.exists()
    sync(server, tree)
    write(tree, {"hosts.yml": HOSTS + "        pc-02:\n"})
    before = server_state(server)
    assert sync(server, tree, check=True).files == ["modified hosts.yml"]
    assert server_state(server) == before
