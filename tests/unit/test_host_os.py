"""ggnet.host_os: every tool whose output ggnet reads runs in the one C locale, and one
test says what a block device is.  The tools here are real (env, git, a shell script
standing in for tgtadm); the environment they start from is set to German first."""

from __future__ import annotations

import os
import re
import stat
import threading
from pathlib import Path

import pytest
from ggnet import iscsi_tgt, iscsi_tgt_admin, preflight, zfs
from ggnet.host_os import C_LOCALE, c_locale_env, is_block_device, wait_block_device
from ggnet.inventory_repo import run_git
from ggnet.storage.images import ImageSpec, plan_images
from ggnet.storage.results import StorageError
from ggnet.storage.state import State

from ggnet_api import approval

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parents[2]
GERMAN = "de_DE.UTF-8"


@pytest.fixture
def german(monkeypatch):
    for name in ("LC_ALL", "LANG", "LC_MESSAGES", "LC_NUMERIC"):
        monkeypatch.setenv(name, GERMAN)
    # Set after ggnet was imported: the env is this process's as it is now.
    monkeypatch.setenv("GGNET_HOST_OS_PROBE", "late")


def _env_of(text: str) -> dict[str, str]:
    return dict(line.split("=", 1) for line in text.splitlines() if "=" in line)


def _in_c_locale(text: str) -> None:
    env = _env_of(text)
    assert (env.get("LC_ALL"), env.get("LANG")) == ("C", "C"), env
    assert env.get("GGNET_HOST_OS_PROBE") == "late"


def test_the_env_is_read_when_asked_and_extra_comes_on_top(german):
    env = c_locale_env({"GIT_TERMINAL_PROMPT": "0"})
    assert (env["LC_ALL"], env["LANG"], env["LC_NUMERIC"]) == ("C", "C", GERMAN)
    assert env["GGNET_HOST_OS_PROBE"] == "late" and env["GIT_TERMINAL_PROMPT"] == "0"
    assert os.environ["LC_ALL"] == GERMAN  # the process's own is left alone


def test_the_overlay_cannot_be_changed_by_a_caller():
    with pytest.raises(TypeError):
        C_LOCALE["LC_ALL"] = "de_DE.UTF-8"  # type: ignore[index]


def test_zfs_and_preflight_run_their_tools_in_the_c_locale(german):
    rc, out, _err = zfs.subprocess_runner(["env"])
    assert rc == 0
    _in_c_locale(out)
    rc, out, _err = preflight.subprocess_runner(["env"])
    assert rc == 0
    _in_c_locale(out)


def test_tgtadm_runs_in_the_c_locale(german, tmp_path):
    fake = tmp_path / "tgtadm"  # a fake tgtadm: prints the environment it was given
    fake.write_text("#!/bin/sh\nenv\n")
    fake.chmod(0o755)
    _in_c_locale(iscsi_tgt_admin.Tgtadm(binary=str(fake)).run("--op", "show"))


def test_git_of_the_inventory_and_of_an_approval_runs_in_the_c_locale(german, tmp_path):
    alias = ("-c", "alias.showenv=!env", "showenv")  # git runs the alias with its env
    proc = run_git(tmp_path, *alias)
    assert proc.returncode == 0, proc.stderr
    _in_c_locale(proc.stdout)
    assert _env_of(proc.stdout)["GIT_TERMINAL_PROMPT"] == "0"
    _in_c_locale(approval._git(tmp_path, *alias))


def test_a_remote_command_gets_the_same_overlay():
    from ggnet.replication import Endpoint

    argv = Endpoint.ssh("boot2").argv(["zfs", "list"])
    assert argv[-1] == "env " + " ".join(f"{k}={v}" for k, v in C_LOCALE.items()) + " zfs list"


PRODUCT = ("module_utils", "modules", "action_plugins", "filter_plugins", "ggnet_api",
           "ggnet_privd", "ggnet_cli")  # fmt: skip
HOME = "module_utils/ggnet/host_os.py"
# A locale or a block-device test written out in code: a "LC_ALL" key, an LC_ALL="C"
# keyword, an "LC_ALL=C" word of a command line; S_ISBLK.
STRAYS = {
    "C locale": re.compile(r"[\"']LC_ALL[\"']|\bLC_ALL\s*=\s*[\"']|[\"']LC_ALL="),
    "block test": re.compile(r"S_ISBLK"),
}


def _strays() -> list[tuple[str, str]]:
    found = []
    for top in PRODUCT:
        for path in sorted((ROOT / top).rglob("*.py")):
            rel = path.relative_to(ROOT).as_posix()
            text = path.read_text(encoding="utf-8")
            found += [(rel, what) for what, rx in STRAYS.items() if rel != HOME and rx.search(text)]
    return found


def test_the_locale_and_the_block_test_are_written_once():
    assert not _strays(), (
        f"use ggnet.host_os (C_LOCALE, c_locale_env, is_block_device): {_strays()}"
    )


@pytest.mark.parametrize(
    ("what", "text"),
    [
        ("C locale", 'env = {**os.environ, "LC_ALL": "C", "LANG": "C"}'),
        ("C locale", 'env=dict(os.environ, LC_ALL="C")'),
        ("C locale", 'shlex.join(["env", "LC_ALL=C", "LANG=C", *argv])'),
        ("block test", "return stat.S_ISBLK(os.stat(path).st_mode)"),
    ],
)
def test_the_scan_sees_a_second_one(what, text):
    assert STRAYS[what].search(text)


def _a_block_device() -> str:
    for entry in sorted(os.scandir("/dev"), key=lambda e: e.name):
        if stat.S_ISBLK(entry.stat(follow_symlinks=False).st_mode):
            return entry.path
    pytest.skip("no block device in /dev here")


def test_block_devices_and_everything_else(tmp_path):
    disk = tmp_path / "disk.img"
    disk.write_bytes(b"\0" * 512)
    assert is_block_device(_a_block_device())
    for path in (str(disk), str(tmp_path), "/dev/null", str(tmp_path / "missing")):
        assert not is_block_device(path), path
    with open(disk, "rb") as fh:
        assert not is_block_device(fh.fileno())
    assert not is_block_device(10**6)  # no such descriptor


def test_an_open_block_device_is_one(tmp_path):
    try:
        fd = os.open(_a_block_device(), os.O_RDONLY)
    except OSError as exc:
        pytest.skip(f"cannot open a block device here: {exc}")
    try:
        assert is_block_device(fd)
    finally:
        os.close(fd)


def test_a_tgt_lun_on_a_block_device_is_a_block_lun(tmp_path):
    disk = tmp_path / "disk.img"
    disk.write_bytes(b"\0" * 512)
    assert iscsi_tgt._kind(_a_block_device()) == "block"
    assert iscsi_tgt._kind(str(disk)) == iscsi_tgt._kind(str(tmp_path / "x")) == "file"


def _plan_import(source: str) -> list[str]:
    state = State({"pool": "ggpool", "disk_format": "file"}, True, {}, {}, {}, 0, 0)
    spec = ImageSpec("win11", None, "system", None, source)
    return [a.action for a in plan_images(state, {"win11": spec})]


def test_an_image_imports_from_a_file_or_a_block_device_only(tmp_path):
    disk = tmp_path / "disk.img"
    disk.write_bytes(b"\0" * 512)
    assert "create_image" in _plan_import(str(disk))
    assert "create_image" in _plan_import(_a_block_device())
    with pytest.raises(
        StorageError, match=re.escape("ggnet_images.win11.source: '/dev/null' is not a file")
    ):
        _plan_import("/dev/null")


def test_waiting_for_a_block_device_that_appears_late_and_one_that_never_does(tmp_path):
    link = tmp_path / "zvol"
    # udev makes the link after the clone returned: here, a thread after 0.3 s.
    timer = threading.Timer(0.3, lambda: link.symlink_to(_a_block_device()))
    timer.start()
    try:
        assert wait_block_device(str(link), timeout=10)
    finally:
        timer.cancel()
    assert not wait_block_device(str(tmp_path / "never"), timeout=0.3)
