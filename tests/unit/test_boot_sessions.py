"""Boot sessions: ended by the next boot or by the target left without an initiator,
each counted once in ggnet_boot_session_duration_seconds, across restarts."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from ggnet_api import boot_sessions
from ggnet_api.collector import Sample
from ggnet_api.db import stats
from ggnet_api.db.database import Database

pytestmark = pytest.mark.unit

MAC, OTHER = "52:54:00:bb:00:01", "52:54:00:bb:00:02"
IQN = "iqn.2026-01.net.gg:pc-01"
SNAP = SimpleNamespace(
    by_mac={MAC: "pc-01", OTHER: "pc-02"},
    clients={
        "pc-01": {"mac": MAC, "target_iqn": IQN},
        "pc-02": {"mac": OTHER, "target_iqn": "iqn.2026-01.net.gg:pc-02"},
    },
)
H = boot_sessions.HANDOVER


def boot(db: Database, mac: str, started: float, result: str = "ok") -> int:
    cur = db.execute(
        "INSERT INTO boots (mac, client, kind, started, stage_at, result, duration) "
        "VALUES (?, ?, 'normal', ?, ?, ?, ?)",
        (mac, SNAP.by_mac[mac], started, started + 20, result, 20.0),
    )
    assert cur.lastrowid is not None
    return cur.lastrowid


def session_end(db: Database, boot_id: int) -> float | None:
    return db.one("SELECT session_end FROM boots WHERE id = ?", (boot_id,))["session_end"]


def histogram(db: Database) -> tuple[dict[int, int], float]:
    """(first bucket -> sessions, total seconds) as /metrics reads them."""
    rows = list(stats.boot_session_buckets(db))
    return {b: n for _, b, n, _ in rows}, sum(t for *_, t in rows)


def collect(db: Database, at: float, logged_in: bool | None) -> int:
    sessions = None if logged_in is None else {IQN: ["iqn.initiator"] if logged_in else []}
    return len(boot_sessions.observe(db, SNAP, Sample(at=at, sessions=sessions)))


@pytest.fixture
def db(tmp_path):
    return Database(str(tmp_path / "api.db"))


def test_the_next_boot_ends_an_ok_boots_session_once(db):
    first = boot(db, MAC, 1000.0)
    boot(db, OTHER, 1500.0)  # another machine's boot ends nothing of this one
    assert session_end(db, first) is None
    second = boot(db, MAC, 1000.0 + 7200, result="failed")
    assert session_end(db, first) == 8200.0
    # 2 h: in the (3600, 7200] bucket, index 5 of SESSION_BUCKETS.
    assert stats.SESSION_BUCKETS[5] == 7200
    assert histogram(db) == ({5: 1}, 7200.0)
    # A failed boot has no session: the boot after it ends nothing.
    boot(db, MAC, 9000.0)
    assert session_end(db, second) is None
    assert histogram(db) == ({5: 1}, 7200.0)


def test_a_target_gone_in_two_collections_ends_the_session_at_the_first(db):
    b = boot(db, MAC, 1000.0)
    assert collect(db, 1020.0 + H + 1, logged_in=True) == 0
    assert collect(db, 3000.0, logged_in=False) == 0  # once could be a gap
    assert session_end(db, b) is None
    assert collect(db, 3015.0, logged_in=False) == 1
    assert session_end(db, b) == 3000.0
    assert histogram(db) == ({4: 1}, 2000.0)  # (1800, 3600]
    # Ended: later collections and the next boot count nothing more.
    assert collect(db, 3030.0, logged_in=False) == 0
    boot(db, MAC, 5000.0)
    assert session_end(db, b) == 3000.0
    assert histogram(db) == ({4: 1}, 2000.0)


def test_a_target_back_with_an_initiator_keeps_the_session(db):
    b = boot(db, MAC, 1000.0)
    collect(db, 2000.0, logged_in=False)
    collect(db, 2015.0, logged_in=True)
    assert collect(db, 2030.0, logged_in=False) == 0  # a new first sighting
    assert session_end(db, b) is None
    assert collect(db, 2045.0, logged_in=False) == 1
    assert session_end(db, b) == 2030.0


def test_the_handover_and_an_unread_backend_end_nothing(db):
    b = boot(db, MAC, 1000.0)
    # Within HANDOVER of the last stage (stage_at 1020): iPXE's login gives way to the OS's.
    collect(db, 1021.0, logged_in=False)
    collect(db, 1020.0 + H - 1, logged_in=False)
    # The backend's sessions could not be read: nothing is known.
    collect(db, 1020.0 + H + 5, logged_in=None)
    collect(db, 1020.0 + H + 10, logged_in=None)
    assert session_end(db, b) is None
    assert histogram(db) == ({}, 0)


def test_a_restart_between_the_two_collections_keeps_the_first_sighting(tmp_path):
    path = str(tmp_path / "api.db")
    db = Database(path)
    b = boot(db, MAC, 1000.0)
    collect(db, 4000.0, logged_in=False)
    again = Database(path)  # the API started again: nothing of the first is in memory
    assert collect(again, 9000.0, logged_in=False) == 1
    assert session_end(again, b) == 4000.0
    assert histogram(again) == ({4: 1}, 3000.0)
    # A third start rebuilds nothing: the session stays counted once.
    assert histogram(Database(path)) == ({4: 1}, 3000.0)


def test_only_the_latest_boot_of_a_machine_has_an_open_session(db):
    boot(db, MAC, 1000.0, result="pending")
    # Made ok after a later boot came (a late stage report): that boot is the latest.
    later = boot(db, MAC, 1100.0)
    db.execute("UPDATE boots SET result = 'ok' WHERE id = 1")
    assert [r["id"] for r in db.open_sessions()] == [later]
