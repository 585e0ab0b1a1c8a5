"""PID files count only while the process still names them: a reused PID is not ours."""

from __future__ import annotations

import subprocess
import sys

import pytest

from ggnet_lab import process

pytestmark = pytest.mark.unit


@pytest.fixture
def sleeper(tmp_path):
    pidfile = tmp_path / "x.pid"
    # The PID file's path in the argv is what makes the process recognisably ours.
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)", str(pidfile)])
    pidfile.write_text(f"{proc.pid}\n")
    yield proc, pidfile
    proc.kill()
    proc.wait()


def test_owned_pid_needs_the_pidfile_in_the_command_line(sleeper, tmp_path):
    proc, pidfile = sleeper
    assert process.owned_pid(pidfile) == proc.pid
    other = tmp_path / "other.pid"
    other.write_text(f"{proc.pid}\n")
    assert process.owned_pid(other) is None
    assert process.owned_pid(other, marker=str(pidfile)) == proc.pid


def test_garbage_or_missing_pidfiles_are_no_process(tmp_path):
    assert process.owned_pid(tmp_path / "missing.pid") is None
    (tmp_path / "bad.pid").write_text("not a pid\n")
    assert process.owned_pid(tmp_path / "bad.pid") is None


def test_stop_ends_the_process_and_removes_the_pidfile(sleeper):
    proc, pidfile = sleeper
    assert process.stop(pidfile, grace=5)
    assert proc.wait(timeout=5) is not None
    assert not pidfile.exists()
    assert process.stop(pidfile) is False  # nothing left to stop


def test_leases_of_live_sessions_count_and_dead_ones_are_dropped(sleeper, tmp_path, monkeypatch):
    from ggnet_lab import leases

    monkeypatch.setenv("GGNET_LAB_DIR", str(tmp_path / "lab"))
    proc, _ = sleeper
    leases.take()
    assert leases.holders() == {}  # only this process: not "another session"
    leases.take(proc.pid)
    assert list(leases.holders()) == [proc.pid]
    proc.kill()
    proc.wait()
    assert leases.holders() == {}
    assert not (tmp_path / "lab" / "leases" / str(proc.pid)).exists()
    leases.release()
    assert leases.holders(exclude_self=False) == {}
