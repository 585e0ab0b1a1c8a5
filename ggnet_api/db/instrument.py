"""Counts, errors and durations of the statements the API runs on SQLite.

Database.conn() opens every connection with `factory=Connection`, so each
statement, whoever runs it (database.py, stats.py, a test), passes through one place:
Connection.execute / executemany / executescript and the cursors Connection.cursor()
makes.  What is timed is the execute call: sqlite3 prepares the statement and runs it to
its first row (all of a write); fetching the remaining rows of a SELECT is not in it.

A statement is counted by its first keyword (select, insert, ... ; a bounded label
set), an error by the sqlite3 exception's class.  The counts live in this process
(one gunicorn worker); a lock guards them, and the cost per statement is two clock
reads and a bisect.
"""

from __future__ import annotations

import bisect
import sqlite3
import threading
import time
from typing import Any

# Seconds: SQLite in WAL mode answers most statements in well under a millisecond; a
# write waiting on the lock can take up to busy_timeout (30 s).
BUCKETS = (0.0001, 0.0005, 0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1.0, 5.0, 30.0)
STATEMENTS = (
    "select",
    "insert",
    "update",
    "delete",
    "begin",
    "commit",
    "rollback",
    "create",
    "pragma",
    "other",
)
ERRORS = (
    "OperationalError",
    "IntegrityError",
    "ProgrammingError",
    "DatabaseError",
    "InterfaceError",
    "other",
)


def statement_kind(sql: str) -> str:
    word = sql.lstrip().split(None, 1)[0].lower() if sql.strip() else "other"
    if word == "with":
        return "select"  # our CTEs all read
    if word == "end":
        return "commit"
    return word if word in STATEMENTS else "other"


class QueryStats:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.queries = dict.fromkeys(STATEMENTS, 0)
        self.errors = dict.fromkeys(ERRORS, 0)
        self.buckets = [0] * (len(BUCKETS) + 1)  # per bucket, not cumulative
        self.count = 0
        self.sum = 0.0

    def observe(self, sql: str, seconds: float, error: BaseException | None) -> None:
        kind = statement_kind(sql)
        with self._lock:
            self.queries[kind] += 1
            self.buckets[bisect.bisect_left(BUCKETS, seconds)] += 1
            self.count += 1
            self.sum += seconds
            if error is not None:
                name = type(error).__name__
                self.errors[name if name in self.errors else "other"] += 1

    def snapshot(self) -> tuple[dict[str, int], dict[str, int], list[int], int, float]:
        """(queries by statement, errors by class, cumulative bucket counts, count, sum)."""
        with self._lock:
            cum, running = [], 0
            for c in self.buckets[:-1]:
                running += c
                cum.append(running)
            return dict(self.queries), dict(self.errors), cum, self.count, self.sum


# Every Database of this process counts here: /metrics reports the API's one database.
STATS = QueryStats()


def _timed(call, sql: str, *args: Any) -> Any:
    start = time.perf_counter()
    try:
        result = call(sql, *args)
    except BaseException as exc:
        STATS.observe(sql, time.perf_counter() - start, exc)
        raise
    STATS.observe(sql, time.perf_counter() - start, None)
    return result


class Cursor(sqlite3.Cursor):
    def execute(self, sql: str, parameters: Any = (), /) -> Cursor:
        return _timed(super().execute, sql, parameters)

    def executemany(self, sql: str, seq: Any, /) -> Cursor:
        return _timed(super().executemany, sql, seq)

    def executescript(self, script: str, /) -> Cursor:
        return _timed(super().executescript, script)


class Connection(sqlite3.Connection):
    """Connection.execute() and its siblings make a plain cursor inside C without
    calling cursor(): each is timed here, on a Cursor of ours."""

    def cursor(self, factory: Any = Cursor) -> Any:
        return super().cursor(factory)

    def execute(self, sql: str, parameters: Any = (), /) -> Cursor:
        return self.cursor().execute(sql, parameters)

    def executemany(self, sql: str, seq: Any, /) -> Cursor:
        return self.cursor().executemany(sql, seq)

    def executescript(self, script: str, /) -> Cursor:
        return self.cursor().executescript(script)
