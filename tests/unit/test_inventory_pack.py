"""The controller half of ggnet_inventory_sync: which files travel, packed the same way
every time, and whether the inventory brings its own git history."""

from __future__ import annotations

import subprocess
import tarfile

import pytest
from ggnet.inventory_pack import inventory_files, own_repository_head, pack

pytestmark = pytest.mark.unit


def test_a_linked_inventory_travels_with_the_linked_files(tmp_path):
    real = tmp_path / "real"
    (real / "group_vars").mkdir(parents=True)
    (real / "group_vars" / "all.yml").write_text("ggnet_images: {}\n")
    (real / "hosts.yml").write_text("all: {}\n")
    inv = tmp_path / "inv"  # as molecule builds its inventory: links to the real files
    inv.mkdir()
    (inv / "hosts").symlink_to(real / "hosts.yml")
    (inv / "group_vars").symlink_to(real / "group_vars")
    (inv / ".cache").mkdir()
    (inv / ".cache" / "x").write_text("not inventory")
    assert inventory_files(inv) == ["group_vars/all.yml", "hosts"]
    one, two = tmp_path / "1.tar", tmp_path / "2.tar"
    pack(inv, inventory_files(inv), one)
    (real / "hosts.yml").touch()  # a new mtime, the same content
    pack(inv, inventory_files(inv), two)
    assert one.read_bytes() == two.read_bytes()
    with tarfile.open(one) as tar:
        member = tar.getmember("hosts")
        assert member.isfile() and tar.extractfile(member).read() == b"all: {}\n"


def test_only_an_inventory_that_is_its_own_repository_brings_history(tmp_path):
    outer = tmp_path / "project"
    (outer / "inventory").mkdir(parents=True)
    (outer / "inventory" / "hosts.yml").write_text("all: {}\n")
    (outer / "inventory" / "ignored.retry").write_text("x")
    (outer / ".gitignore").write_text("*.retry\n")

    def git(repo, *args):
        subprocess.run(
            ["git", "-C", str(repo), "-c", "user.name=t", "-c", "user.email=t@t", *args],
            check=True, capture_output=True,
        )  # fmt: skip

    git(outer, "init", "-q")
    assert own_repository_head(outer / "inventory") is None  # inside a bigger repository
    assert inventory_files(outer / "inventory") == ["hosts.yml"]  # git's ignore rules
    inv = outer / "inventory"
    git(inv, "init", "-q")
    assert own_repository_head(inv) is None  # no commit yet
    git(inv, "add", "-A")
    git(inv, "commit", "-qm", "room")
    assert own_repository_head(inv) is not None
