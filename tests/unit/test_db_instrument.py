"""Every statement the Database runs is counted, timed and its errors classed."""

from __future__ import annotations

import sqlite3

import pytest

from ggnet_api.db import instrument
from ggnet_api.db.database import Database

pytestmark = pytest.mark.unit


@pytest.fixture
def stats(monkeypatch):
    fresh = instrument.QueryStats()
    monkeypatch.setattr(instrument, "STATS", fresh)
    return fresh


def test_statements_of_every_path_are_counted(tmp_path, stats):
    db = Database(str(tmp_path / "api.db"))
    before = stats.snapshot()[0]
    db.add_job("j1", "converge", "site.yml", {}, "t")  # Connection.execute
    db.job("j1")  # one()
    db.last_results()  # a cursor of its own
    with db.tx() as c:  # BEGIN IMMEDIATE ... COMMIT
        c.execute("SELECT 1")
    after = stats.snapshot()[0]
    added = {k: after[k] - before[k] for k in after if after[k] != before[k]}
    assert added == {"insert": 1, "select": 3, "begin": 1, "commit": 1}


def test_errors_are_counted_by_class_and_still_raised(tmp_path, stats):
    db = Database(str(tmp_path / "api.db"))
    with pytest.raises(sqlite3.OperationalError):
        db.query("SELECT * FROM no_such_table")
    db.add_token("a", "admin", "tok")
    with pytest.raises(sqlite3.IntegrityError):
        db.add_token("b", "admin", "tok")  # the same hash
    errors = stats.snapshot()[1]
    assert errors["OperationalError"] == 1
    assert errors["IntegrityError"] == 1


def test_durations_fall_in_their_buckets():
    s = instrument.QueryStats()
    for seconds in (0.00005, 0.0001, 0.002, 100.0):
        s.observe("SELECT 1", seconds, None)
    _q, _e, cum, count, total = s.snapshot()
    assert count == 4
    assert total == pytest.approx(100.00215)
    # le=0.0001 holds both first (a bound holds its own value), le=0.005 the third.
    assert cum[0] == 2
    assert cum[instrument.BUCKETS.index(0.005)] == 3
    assert cum[-1] == 3  # 100 s is beyond the last bound: only in +Inf (count)


@pytest.mark.parametrize(
    "sql, kind",
    [
        ("  select 1", "select"),
        ("WITH x AS (SELECT 1) SELECT * FROM x", "select"),
        ("INSERT OR IGNORE INTO t VALUES (1)", "insert"),
        ("VACUUM", "other"),
        ("", "other"),
    ],
)
def test_statement_kind(sql, kind):
    assert instrument.statement_kind(sql) == kind


def test_starts_are_persisted(tmp_path):
    db = Database(str(tmp_path / "api.db"))
    assert db.record_start() == 1
    assert Database(str(tmp_path / "api.db")).record_start() == 2
