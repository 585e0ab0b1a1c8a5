"""The API's state in SQLite: jobs and their events, boots, discovered machines, tokens.

One connection per thread (sqlite3 connections must not be shared across threads), in
WAL mode so readers (SSE streams, /metrics) never wait on the job runner's writes.
Tokens are stored as SHA-256 hashes: they are random 256-bit strings, so a plain hash
is enough and lets a lookup be one indexed query.
"""

from __future__ import annotations

import hashlib
import json
import os
import sqlite3
import threading
import time
from collections.abc import Iterable
from typing import Any

SCHEMA = """
CREATE TABLE IF NOT EXISTS jobs (
    id TEXT PRIMARY KEY,
    kind TEXT NOT NULL,
    playbook TEXT NOT NULL,
    extravars TEXT NOT NULL DEFAULT '{}',
    state TEXT NOT NULL,
    rc INTEGER,
    created REAL NOT NULL,
    started REAL,
    finished REAL,
    requested_by TEXT,
    pid INTEGER,
    detail TEXT
);
CREATE INDEX IF NOT EXISTS jobs_state ON jobs(state);
CREATE INDEX IF NOT EXISTS jobs_created ON jobs(created);
CREATE TABLE IF NOT EXISTS job_events (
    job_id TEXT NOT NULL,
    seq INTEGER NOT NULL,
    event TEXT NOT NULL,
    host TEXT,
    task TEXT,
    stdout TEXT,
    created REAL NOT NULL,
    PRIMARY KEY (job_id, seq)
);
CREATE TABLE IF NOT EXISTS boots (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    mac TEXT NOT NULL,
    client TEXT,
    kind TEXT NOT NULL,
    started REAL NOT NULL,
    stage TEXT NOT NULL DEFAULT 'requested',
    stage_at REAL,
    result TEXT NOT NULL DEFAULT 'pending',
    duration REAL,
    detail TEXT,
    image TEXT
);
CREATE INDEX IF NOT EXISTS boots_mac ON boots(mac, id);
CREATE INDEX IF NOT EXISTS boots_result ON boots(result);
CREATE TABLE IF NOT EXISTS discovered (
    mac TEXT PRIMARY KEY,
    first_seen REAL NOT NULL,
    last_seen REAL NOT NULL,
    facts TEXT NOT NULL DEFAULT '{}',
    report TEXT,
    state TEXT NOT NULL DEFAULT 'discovered',
    name TEXT,
    approved_by TEXT,
    approved_at REAL,
    job_id TEXT
);
CREATE TABLE IF NOT EXISTS tokens (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    name TEXT NOT NULL,
    role TEXT NOT NULL,
    hash TEXT NOT NULL UNIQUE,
    created REAL NOT NULL,
    revoked REAL
);
"""

JOB_DONE = ("successful", "failed", "canceled", "interrupted", "error")
BOOT_STAGES = ("requested", "script", "san", "os")


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


class Database:
    def __init__(self, path: str):
        self.path = path
        self._local = threading.local()
        directory = os.path.dirname(path)
        if directory:
            os.makedirs(directory, mode=0o700, exist_ok=True)
        self.conn().executescript(SCHEMA)
        self._migrate()
        os.chmod(path, 0o600)

    def _migrate(self) -> None:
        """Columns added since a database was first made (CREATE IF NOT EXISTS keeps
        an old table as it was)."""
        have = {r["name"] for r in self.query("PRAGMA table_info(boots)")}
        if "image" not in have:
            self.execute("ALTER TABLE boots ADD COLUMN image TEXT")
        self.execute("CREATE INDEX IF NOT EXISTS boots_client ON boots(client, id)")
        # Covering indexes for /metrics' aggregates (the rowid is the id): per-machine
        # counts and latest durations, the boot-duration histogram, the latest result
        # of every MAC are each a walk of one index, never of the table.
        for name, cols in (
            ("boots_client_result", "client, result, duration"),
            ("boots_result_image", "result, image, duration"),
            ("boots_mac_result", "mac, id, result"),
        ):
            self.execute(f"CREATE INDEX IF NOT EXISTS {name} ON boots({cols})")

    def conn(self) -> sqlite3.Connection:
        c = getattr(self._local, "conn", None)
        if c is None:
            c = sqlite3.connect(self.path, timeout=30, isolation_level=None)
            c.row_factory = sqlite3.Row
            c.execute("PRAGMA journal_mode=WAL")
            c.execute("PRAGMA synchronous=NORMAL")
            c.execute("PRAGMA busy_timeout=30000")
            self._local.conn = c
        return c

    def tx(self):
        return _Tx(self.conn())

    def query(self, sql: str, args: Iterable[Any] = ()) -> list[dict[str, Any]]:
        return [dict(r) for r in self.conn().execute(sql, tuple(args)).fetchall()]

    def one(self, sql: str, args: Iterable[Any] = ()) -> dict[str, Any] | None:
        row = self.conn().execute(sql, tuple(args)).fetchone()
        return dict(row) if row is not None else None

    def execute(self, sql: str, args: Iterable[Any] = ()) -> sqlite3.Cursor:
        return self.conn().execute(sql, tuple(args))

    # -- jobs ---------------------------------------------------------------------------

    def add_job(
        self, job_id: str, kind: str, playbook: str, extravars: dict, requested_by: str
    ) -> None:
        self.execute(
            "INSERT INTO jobs (id, kind, playbook, extravars, state, created, requested_by) "
            "VALUES (?, ?, ?, ?, 'queued', ?, ?)",
            (job_id, kind, playbook, json.dumps(extravars), time.time(), requested_by),
        )

    def job(self, job_id: str) -> dict[str, Any] | None:
        row = self.one("SELECT * FROM jobs WHERE id = ?", (job_id,))
        if row is not None:
            row["extravars"] = json.loads(row["extravars"])
        return row

    def jobs(self, limit: int = 100, state: str | None = None) -> list[dict[str, Any]]:
        if state:
            rows = self.query(
                "SELECT * FROM jobs WHERE state = ? ORDER BY created DESC LIMIT ?", (state, limit)
            )
        else:
            rows = self.query("SELECT * FROM jobs ORDER BY created DESC LIMIT ?", (limit,))
        for row in rows:
            row["extravars"] = json.loads(row["extravars"])
        return rows

    def update_job(self, job_id: str, **fields: Any) -> None:
        keys = ", ".join(f"{k} = ?" for k in fields)
        self.execute(f"UPDATE jobs SET {keys} WHERE id = ?", (*fields.values(), job_id))

    def add_event(self, job_id: str, seq: int, event: dict[str, Any]) -> None:
        self.execute(
            "INSERT OR IGNORE INTO job_events (job_id, seq, event, host, task, stdout, created) "
            "VALUES (?, ?, ?, ?, ?, ?, ?)",
            (
                job_id,
                seq,
                event["event"],
                event.get("host"),
                event.get("task"),
                event.get("stdout"),
                time.time(),
            ),
        )

    def events(self, job_id: str, after: int = 0, limit: int = 1000) -> list[dict[str, Any]]:
        return self.query(
            "SELECT seq, event, host, task, stdout, created FROM job_events "
            "WHERE job_id = ? AND seq > ? ORDER BY seq LIMIT ?",
            (job_id, after, limit),
        )

    # -- boots --------------------------------------------------------------------------

    def add_boot(
        self,
        mac: str,
        client: str | None,
        kind: str,
        result: str = "pending",
        detail: str | None = None,
        image: str | None = None,
    ) -> int:
        now = time.time()
        duration = 0.0 if result != "pending" else None
        cur = self.execute(
            "INSERT INTO boots (mac, client, kind, started, stage_at, result, detail, duration, image) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (mac, client, kind, now, now, result, detail, duration, image),
        )
        return int(cur.lastrowid)

    def boot(self, boot_id: int) -> dict[str, Any] | None:
        return self.one("SELECT * FROM boots WHERE id = ?", (boot_id,))

    def last_boots(self) -> dict[str, dict[str, Any]]:
        """The latest boot of every MAC."""
        rows = self.query(
            "SELECT b.* FROM boots b JOIN (SELECT mac, MAX(id) AS id FROM boots GROUP BY mac) l "
            "ON b.id = l.id"
        )
        return {r["mac"]: r for r in rows}

    def last_results(self) -> dict[str, str]:
        """The result of the latest boot of every MAC (what client states need)."""
        # SQLite takes the bare column from the row that gives max() its value.
        return {
            mac: result
            for mac, _id, result in self.conn().execute(
                "SELECT mac, MAX(id), result FROM boots GROUP BY mac"
            )
        }

    # -- tokens -------------------------------------------------------------------------

    def add_token(self, name: str, role: str, token: str) -> int:
        cur = self.execute(
            "INSERT INTO tokens (name, role, hash, created) VALUES (?, ?, ?, ?)",
            (name, role, hash_token(token), time.time()),
        )
        return int(cur.lastrowid)

    def token(self, token: str) -> dict[str, Any] | None:
        return self.one(
            "SELECT id, name, role FROM tokens WHERE hash = ? AND revoked IS NULL",
            (hash_token(token),),
        )


class _Tx:
    """BEGIN IMMEDIATE ... COMMIT, or ROLLBACK on an exception."""

    def __init__(self, conn: sqlite3.Connection):
        self.c = conn

    def __enter__(self) -> sqlite3.Connection:
        self.c.execute("BEGIN IMMEDIATE")
        return self.c

    def __exit__(self, exc_type, exc, tb) -> None:
        self.c.execute("ROLLBACK" if exc_type else "COMMIT")
