"""ggnet.files.converge, the engine of the ggnet_files module: plan every entry, change
nothing when one is wrong, converge the rest in one pass, and a second pass is a no-op."""

from __future__ import annotations

import grp
import hashlib
import os
import pwd
import stat

import pytest
from ggnet.files import FileError, converge

pytestmark = pytest.mark.unit

ME = pwd.getpwuid(os.getuid()).pw_name
MY_GROUP = grp.getgrgid(os.getgid()).gr_name


def _mode(path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


def test_a_list_converges_in_one_pass_and_the_second_pass_changes_nothing(tmp_path):
    entries = [
        {"path": str(tmp_path / "etc"), "state": "directory", "mode": "2751"},
        {"path": str(tmp_path / "etc/a.conf"), "content": "a = 1\n", "mode": "0640"},
        {"path": str(tmp_path / "etc/log"), "state": "touch", "mode": "0600", "owner": ME},
        {"path": str(tmp_path / "gone"), "state": "absent"},
    ]
    (tmp_path / "gone").mkdir()
    (tmp_path / "gone/x").write_text("x")
    changes, needed = converge(entries)
    assert needed == []
    assert [c.changed for c in changes] == [True, True, True, True]
    assert _mode(tmp_path / "etc") == 0o2751
    assert (tmp_path / "etc/a.conf").read_text() == "a = 1\n"
    assert _mode(tmp_path / "etc/a.conf") == 0o640
    assert (tmp_path / "etc/log").read_bytes() == b""
    assert not (tmp_path / "gone").exists()

    again, _ = converge(entries)
    assert [c.actions for c in again] == [[], [], [], []]


def test_touch_never_truncates_and_a_mode_change_keeps_the_content(tmp_path):
    log = tmp_path / "log"
    log.write_text("kept\n")
    os.chmod(log, 0o644)
    (change,), _ = converge([{"path": str(log), "state": "touch", "mode": "0640"}])
    assert change.actions == ["mode 0644 -> 0640"]
    assert log.read_text() == "kept\n"
    assert _mode(log) == 0o640


def test_check_mode_reports_the_change_and_makes_none(tmp_path):
    target = tmp_path / "a.conf"
    target.write_text("old\n")
    (change,), _ = converge([{"path": str(target), "content": "new\n"}], check_mode=True)
    assert change.actions == ["content"]
    assert (change.before, change.after) == ("old\n", "new\n")
    assert target.read_text() == "old\n"


def test_a_secret_has_no_diff(tmp_path):
    (change,), _ = converge(
        [{"path": str(tmp_path / "chap"), "content": "s3cret\n", "secret": True}]
    )
    assert change.changed
    assert change.before is None and change.after is None


def test_a_failing_validate_changes_nothing_anywhere_and_names_the_path(tmp_path):
    first = tmp_path / "first.conf"
    bad = tmp_path / "bad.conf"
    entries = [
        {"path": str(first), "content": "fine\n"},
        {"path": str(bad), "content": "broken\n", "validate": "grep -q fine %s"},
    ]
    with pytest.raises(FileError, match=r"bad\.conf: the new content fails its check"):
        converge(entries)
    assert not first.exists()
    assert not bad.exists()
    assert list(tmp_path.iterdir()) == []


def test_a_passing_validate_writes(tmp_path):
    good = tmp_path / "good.conf"
    converge([{"path": str(good), "content": "fine\n", "validate": "grep -q fine %s"}])
    assert good.read_text() == "fine\n"


@pytest.mark.parametrize(
    ("entry", "message"),
    [
        ({"path": "relative/x", "content": "x"}, "must be an absolute path"),
        ({"path": "/x", "state": "link"}, "state 'link' is not one of"),
        ({"path": "/x", "state": "file"}, "needs content"),
        ({"path": "/x", "state": "directory", "content": "x"}, "go with state file only"),
        ({"path": "/x", "content": "x", "mode": "rw-r"}, "mode 'rw-r' is not an octal mode"),
        ({"path": "/x", "content": "x", "recurse": True}, "recurse goes with state directory"),
        ({"path": "/x", "content": "x", "validate": "true"}, "must contain %s"),
    ],
)
def test_bad_entries_are_refused_by_name(entry, message):
    with pytest.raises(FileError, match=message):
        converge([entry])


def test_an_unknown_owner_is_refused_before_anything_changes(tmp_path):
    first = tmp_path / "first"
    with pytest.raises(FileError, match="owner 'no-such-user-ggnet' is not a user here"):
        converge(
            [
                {"path": str(first), "content": "x\n"},
                {"path": str(tmp_path / "second"), "content": "y\n", "owner": "no-such-user-ggnet"},
            ]
        )
    assert not first.exists()


def test_a_file_in_the_way_of_a_directory_is_refused(tmp_path):
    (tmp_path / "d").write_text("x")
    with pytest.raises(FileError, match="exists and is not a directory"):
        converge([{"path": str(tmp_path / "d"), "state": "directory"}])


def test_a_path_listed_twice_is_refused(tmp_path):
    with pytest.raises(FileError, match="listed twice"):
        converge(
            [
                {"path": str(tmp_path / "a"), "content": "1"},
                {"path": str(tmp_path / "a/"), "content": "2"},
            ]
        )


def test_large_bytes_are_asked_for_only_when_the_checksum_differs(tmp_path):
    data = os.urandom(4096)
    digest = hashlib.sha1(data).hexdigest()
    target = tmp_path / "big.bin"
    other = tmp_path / "small"
    entries = [
        {"path": str(other), "content": "x\n"},
        {"path": str(target), "checksum": digest, "mode": "0644"},
    ]
    changes, needed = converge(entries)
    assert needed == [str(target)]
    assert [c.actions for c in changes] == [["create file"], ["create file"]]
    assert not other.exists(), "nothing changes while bytes are missing"

    sent = tmp_path / "sent"
    sent.write_bytes(data)
    _, needed = converge(entries, transferred={str(target): str(sent)})
    assert needed == []
    assert target.read_bytes() == data

    again, needed = converge(entries)
    assert needed == [] and not any(c.changed for c in again)


def test_a_server_side_source_is_copied_and_compared(tmp_path):
    source = tmp_path / "ipxe.efi"
    source.write_bytes(b"\x00\x01binary")
    target = tmp_path / "tftp/ipxe.efi"
    entries = [{"path": str(target), "source": str(source), "mode": "0644"}]
    (change,), _ = converge(entries)
    assert change.actions == ["create file"]
    assert target.read_bytes() == b"\x00\x01binary"
    (change,), _ = converge(entries)
    assert not change.changed


def test_recurse_gives_a_directory_s_contents_its_owner_and_group(tmp_path):
    top = tmp_path / "state"
    (top / "jobs").mkdir(parents=True)
    (top / "jobs/1.json").write_text("{}")
    if os.getuid() == 0:  # a file left another user's, as a root-run API left them
        os.chown(top / "jobs/1.json", 65534, 65534)
    entry = {
        "path": str(top),
        "state": "directory",
        "recurse": True,
        "owner": ME,
        "group": MY_GROUP,
        "mode": "0700",
    }
    (change,), _ = converge([entry])
    assert change.changed
    assert _mode(top) == 0o700
    assert os.stat(top / "jobs/1.json").st_uid == os.getuid()
    again, _ = converge([entry])
    assert not again[0].changed


def test_a_check_whose_program_the_same_list_installs_runs_after_it(tmp_path):
    check = tmp_path / "bin/check-tokens"
    tokens = tmp_path / "tokens"
    entries = [
        {"path": str(check), "content": "#!/bin/sh\ngrep -q '^pc-' \"$1\"\n", "mode": "0755"},
        {"path": str(tokens), "content": "pc-1: 10.0.0.1:5901\n", "validate": f"{check} %s"},
    ]
    converge(entries)
    assert tokens.read_text() == "pc-1: 10.0.0.1:5901\n"
    entries[1]["content"] = "not a token line\n"
    with pytest.raises(FileError, match="fails its check"):
        converge(entries)
    assert tokens.read_text() == "pc-1: 10.0.0.1:5901\n"
