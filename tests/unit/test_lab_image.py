"""The image recipe: its hash decides rebuilds, the mirror comes from the host's apt."""

from __future__ import annotations

import pytest

from ggnet_lab import image

pytestmark = pytest.mark.unit


def _recipe_dir(tmp_path, text="suite: bookworm\n", script="echo build\n"):
    d = tmp_path / "recipes"
    d.mkdir(exist_ok=True)
    (d / "bootserver.yml").write_text(text)
    (d / "build-rootfs.sh").write_text(script)
    return d


def test_recipe_hash_is_stable_and_follows_every_recipe_file(tmp_path):
    d = _recipe_dir(tmp_path)
    first = image.recipe_hash(d)
    assert first == image.recipe_hash(d)
    (d / "bootserver.yml").write_text("suite: bookworm\npackages: [git]\n")
    second = image.recipe_hash(d)
    assert second != first
    (d / "build-rootfs.sh").write_text("echo build differently\n")
    assert image.recipe_hash(d) != second


def test_recipe_hash_sees_a_renamed_file(tmp_path):
    d = _recipe_dir(tmp_path)
    before = image.recipe_hash(d)
    (d / "build-rootfs.sh").rename(d / "build.sh")
    assert image.recipe_hash(d) != before


def test_the_shipped_recipe_loads_and_carries_what_the_roles_need():
    recipe = image.load_recipe()
    for package in (
        "linux-image-amd64",
        "openssh-server",
        "python3",
        "linux-headers-amd64",  # zfs-dkms compiles against it on the host
        "zfs-dkms",
        "zfsutils-linux",
        "tgt",
        "targetcli-fb",
        "python3-rtslib-fb",
        "dnsmasq",
        "ipxe",
        "dbus",
    ):
        assert package in recipe["packages"]
    # zfs-fuse and OpenZFS both ship /sbin/zfs: the image has one of them.
    assert "zfs-fuse" not in recipe["packages"]
    assert "contrib" in recipe["components"]  # OpenZFS lives there
    assert "dnsmasq.service" in recipe["disable"]
    assert "tgt.service" in recipe["disable"]
    assert "serial-getty@ttyS0.service" in recipe["mask"]


def test_recipe_errors_name_the_file_and_the_key(tmp_path):
    bad = tmp_path / "r.yml"
    bad.write_text("suite: bookworm\npackages: git\n")
    with pytest.raises(image.ImageError, match=r"r\.yml.*lacks"):
        image.load_recipe(bad)
    bad.write_text(
        "suite: bookworm\npackages: git\ndisable: []\nmask: []\nroot_free_mib: 1\n"
        "hostname: b\naddress: 10.0.0.1/24\n"
    )
    with pytest.raises(image.ImageError, match="'packages' must be a list"):
        image.load_recipe(bad)
    bad.write_text("- a list\n")
    with pytest.raises(image.ImageError, match="must be a mapping"):
        image.load_recipe(bad)


def _apt(tmp_path):
    apt = tmp_path / "apt"
    (apt / "sources.list.d").mkdir(parents=True)
    return apt


def test_mirror_from_deb822_sources(tmp_path):
    apt = _apt(tmp_path)
    (apt / "sources.list.d" / "debian.sources").write_text(
        "Types: deb\n# a comment\nURIs: http://mirror.example/debian\n"
        "Suites: bookworm bookworm-updates\nComponents: main\n\n"
        "Types: deb\nURIs: http://mirror.example/debian-security\n"
        "Suites: bookworm-security\nComponents: main\n"
    )
    assert image.debian_mirror("bookworm", apt) == "http://mirror.example/debian"


def test_mirror_skips_disabled_and_source_only_stanzas(tmp_path):
    apt = _apt(tmp_path)
    (apt / "sources.list.d" / "a.sources").write_text(
        "Types: deb-src\nURIs: http://src.example/debian\nSuites: bookworm\n\n"
        "Enabled: no\nTypes: deb\nURIs: http://off.example/debian\nSuites: bookworm\n\n"
        "Types: deb\nURIs: http://on.example/debian\nSuites: bookworm\n"
    )
    assert image.debian_mirror("bookworm", apt) == "http://on.example/debian"


def test_mirror_from_one_line_sources_list_with_options(tmp_path):
    apt = _apt(tmp_path)
    (apt / "sources.list").write_text(
        "# deb http://commented.example/debian bookworm main\n"
        "deb-src http://src.example/debian bookworm main\n"
        "deb [arch=amd64 signed-by=/k.gpg] http://line.example/debian bookworm main\n"
    )
    assert image.debian_mirror("bookworm", apt) == "http://line.example/debian"


def test_no_mirror_says_where_it_looked(tmp_path):
    apt = _apt(tmp_path)
    (apt / "sources.list").write_text("deb http://x.example/debian trixie main\n")
    with pytest.raises(image.ImageError, match=r"no apt source for 'bookworm'.*sources"):
        image.debian_mirror("bookworm", apt)


def test_cache_dir_follows_the_environment(tmp_path, monkeypatch):
    monkeypatch.setenv("GGNET_LAB_CACHE", str(tmp_path))
    img = image.cached_image()
    assert img.directory == tmp_path / image.recipe_hash()
    assert not img.complete()
    img.directory.mkdir()
    for name in ("root.img", "vmlinuz", "initrd.img"):
        (img.directory / name).write_text("x")
    assert not img.complete()  # a build that died before its end marker
    (img.directory / image.DONE).write_text("built")
    assert img.complete()


def test_build_env_passes_the_recipe_to_the_script(tmp_path):
    recipe = image.load_recipe()
    env = image.build_env(recipe, tmp_path / "root", tmp_path, "http://m.example/debian")
    assert env["MIRROR"] == "http://m.example/debian"
    assert env["PACKAGES"].split() == recipe["packages"]
    assert env["APT_COMPONENTS"] == ",".join(recipe["components"])
    assert env["ADDRESS"] == "10.213.0.10/24"
