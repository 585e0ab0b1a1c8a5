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
import re
import sqlite3
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass
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
        # The scans /metrics once made at every scrape; the stats tables replace them.
        for name in ("boots_client_result", "boots_result_image", "boots_mac_result"):
            self.execute(f"DROP INDEX IF EXISTS {name}")
        # A machine's latest ok boot, found from the top of its (client, 'ok') range.
        self.execute(
            "CREATE INDEX IF NOT EXISTS boots_client_result_id ON boots(client, result, id)"
        )
        with self.tx() as c:
            install_stats(c)

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
        cur = self.conn().cursor()
        cur.row_factory = None  # plain pairs, each freed as dict() takes it
        return dict(cur.execute("SELECT mac, result FROM stats_boot_last WHERE id IS NOT NULL"))

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


# -- stats: aggregates kept by triggers ------------------------------------------------
#
# /metrics reports per-machine boot counts, latest durations and histograms of boots and
# jobs.  Computed from the boots table at every scrape they cost a walk of its whole
# history (never pruned: 1,000 PCs make ~700,000 boots a year).  Kept by triggers
# instead, they are right whoever writes (this process, another, the CLI), survive
# restarts, and a scrape reads a table the size of the room.  stats_state.generation
# moves with every change to them, so a reader can tell whether what it rendered from
# them is still current; every stats row carries the generation that last changed it
# (`gen`), so a reader can read only the rows changed since (a boot storm changes a
# few machines between two scrapes, not the room).  Rows are never deleted by the
# triggers: a count falls to 0, a latest boot becomes NULL, and a reader of changes
# sees that too.

# The generation the running trigger's changes will be under (the bump comes last).
_NEXT = "(SELECT generation + 1 FROM stats_state)"

JOB_BUCKETS = (1, 5, 15, 30, 60, 120, 300, 600, 1800, 3600)
BOOT_BUCKETS = (0.5, 1, 2, 5, 10, 20, 30, 60, 120, 300)


def _bucket(value: str, bounds: tuple[float, ...]) -> str:
    """The index of the first bucket whose bound holds the value (len(bounds): +Inf)."""
    whens = " ".join(f"WHEN {value} <= {b!r} THEN {i}" for i, b in enumerate(bounds))
    return f"(CASE {whens} ELSE {len(bounds)} END)"


@dataclass(frozen=True)
class _Sum:
    """stats_<name>: (keys..., n, total) of the source rows where `where` holds, grouped
    by the key expressions; `r` in an expression is the source row (NEW, OLD, or the
    row of the table when the stats are rebuilt)."""

    name: str
    source: str
    keys: tuple[tuple[str, str], ...]
    where: str
    value: str = "0"

    def table(self) -> str:
        cols = ", ".join(k for k, _ in self.keys)
        return (
            f"CREATE TABLE stats_{self.name} ({cols}, n INTEGER NOT NULL, total REAL NOT NULL, "
            f"gen INTEGER NOT NULL, PRIMARY KEY ({cols})) WITHOUT ROWID"
        )

    def _sub(self, sql: str, row: str) -> str:
        return re.sub(r"\br\.", f"{row}.", sql)

    def add(self, row: str) -> str:
        cols = ", ".join(k for k, _ in self.keys)
        exprs = ", ".join(self._sub(e, row) for _, e in self.keys)
        return (
            f"INSERT INTO stats_{self.name} ({cols}, n, total, gen) "
            f"SELECT {exprs}, 1, {self._sub(self.value, row)}, {_NEXT} "
            f"WHERE {self._sub(self.where, row)} ON CONFLICT ({cols}) DO UPDATE SET "
            "n = n + 1, total = total + excluded.total, gen = excluded.gen;"
        )

    def remove(self, row: str) -> str:
        match = " AND ".join(f"{k} = {self._sub(e, row)}" for k, e in self.keys)
        return (
            f"UPDATE stats_{self.name} SET n = n - 1, total = total - {self._sub(self.value, row)}, "
            f"gen = {_NEXT} WHERE {match} AND {self._sub(self.where, row)};"
        )

    def rebuild(self) -> str:
        cols = ", ".join(k for k, _ in self.keys)
        exprs = ", ".join(e for _, e in self.keys)
        return (
            f"INSERT INTO stats_{self.name} ({cols}, n, total, gen) "
            f"SELECT {exprs}, COUNT(*), TOTAL({self.value}), "
            f"(SELECT generation FROM stats_state) FROM {self.source} AS r "
            f"WHERE {self.where} GROUP BY {', '.join(str(i + 1) for i in range(len(self.keys)))};"
        )


_SUMS = (
    _Sum("boot_results", "boots", (("result", "r.result"),), "1"),
    # Every boot by result; `known` rows are inventory machines' (client set).
    _Sum(
        "boot_counts",
        "boots",
        (
            ("known", "(r.client IS NOT NULL)"),
            ("client", "COALESCE(r.client, '')"),
            ("result", "r.result"),
        ),
        "1",
    ),
    _Sum(
        "boot_durations",
        "boots",
        (("image", "COALESCE(r.image, '')"), ("bucket", _bucket("r.duration", BOOT_BUCKETS))),
        "r.result = 'ok' AND r.duration IS NOT NULL",
        "r.duration",
    ),
    _Sum(
        "job_counts",
        "jobs",
        (("playbook", "r.playbook"), ("state", "r.state")),
        "r.finished IS NOT NULL",
    ),
    _Sum(
        "job_durations",
        "jobs",
        (("playbook", "r.playbook"), ("bucket", _bucket("(r.finished - r.started)", JOB_BUCKETS))),
        "r.finished IS NOT NULL AND r.started IS NOT NULL",
        "(r.finished - r.started)",
    ),
)
# The columns the stats read: an UPDATE that changes none of them changes no stats (a
# boot's stage_at, moved every few seconds by a PC waiting for approval).
_WATCHED = {
    "boots": ("mac", "client", "result", "duration", "image"),
    "jobs": ("playbook", "state", "started", "finished"),
}


def _latest(row: str) -> str:
    """Recompute the latest boot of the row's MAC and the latest ok boot (with a
    duration) of its machine: each is one step down an index."""
    last = f"FROM boots WHERE mac = {row}.mac ORDER BY id DESC LIMIT 1"
    ok = (
        f"FROM boots WHERE client = {row}.client AND result = 'ok' AND duration IS NOT NULL "
        "ORDER BY id DESC LIMIT 1"
    )
    return (
        "INSERT INTO stats_boot_last (mac, id, result, gen) "
        f"VALUES ({row}.mac, (SELECT id {last}), (SELECT result {last}), {_NEXT}) "
        "ON CONFLICT (mac) DO UPDATE SET id = excluded.id, result = excluded.result, "
        "gen = excluded.gen;"
        " INSERT INTO stats_boot_last_ok (client, id, duration, gen) "
        f"SELECT {row}.client, (SELECT id {ok}), (SELECT duration {ok}), {_NEXT} "
        f"WHERE {row}.client IS NOT NULL "
        "ON CONFLICT (client) DO UPDATE SET id = excluded.id, duration = excluded.duration, "
        "gen = excluded.gen;"
    )


def _stats_ddl() -> list[str]:
    ddl = [
        "CREATE TABLE stats_state (version TEXT NOT NULL, generation INTEGER NOT NULL)",
        # id and result (duration) are NULL once no such boot is left.
        "CREATE TABLE stats_boot_last (mac TEXT PRIMARY KEY, id INTEGER, result TEXT, "
        "gen INTEGER NOT NULL) WITHOUT ROWID",
        "CREATE TABLE stats_boot_last_ok (client TEXT PRIMARY KEY, id INTEGER, duration REAL, "
        "gen INTEGER NOT NULL) WITHOUT ROWID",
    ]
    ddl += [s.table() for s in _SUMS]
    bump = "UPDATE stats_state SET generation = generation + 1;"
    for source, watched in _WATCHED.items():
        sums = [s for s in _SUMS if s.source == source]
        latest = source == "boots"
        on_insert = [s.add("NEW") for s in sums] + ([_latest("NEW")] if latest else [])
        on_delete = [s.remove("OLD") for s in sums] + ([_latest("OLD")] if latest else [])
        on_update = [s.remove("OLD") for s in sums] + [s.add("NEW") for s in sums]
        if latest:
            on_update += [_latest("OLD"), _latest("NEW")]
        changed = " OR ".join(f"OLD.{c} IS NOT NEW.{c}" for c in watched)
        for event, when, body in (
            ("INSERT", "", on_insert),
            ("DELETE", "", on_delete),
            (f"UPDATE OF {', '.join(watched)}", f" WHEN {changed}", on_update),
        ):
            ddl.append(
                f"CREATE TRIGGER stats_{source}_{event.split()[0].lower()} AFTER {event} "
                f"ON {source}{when} BEGIN {' '.join(body)} {bump} END"
            )
    return ddl


def _stats_rebuild() -> list[str]:
    return [s.rebuild() for s in _SUMS] + [
        # SQLite takes a bare column from the row that gives the query's max() its value.
        "INSERT INTO stats_boot_last (mac, id, result, gen) SELECT mac, MAX(id), result, "
        "(SELECT generation FROM stats_state) FROM boots GROUP BY mac",
        "INSERT INTO stats_boot_last_ok (client, id, duration, gen) SELECT client, MAX(id), "
        "duration, (SELECT generation FROM stats_state) FROM boots WHERE client IS NOT NULL "
        "AND result = 'ok' AND duration IS NOT NULL GROUP BY client",
    ]


STATS_VERSION = hashlib.sha256("\n".join(_stats_ddl() + _stats_rebuild()).encode()).hexdigest()[:16]


def install_stats(c: sqlite3.Connection) -> None:
    """Create the stats tables and triggers and fill them from the data, unless this
    version of them is there already (call within a write transaction)."""
    have = c.execute(
        "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'stats_state'"
    ).fetchone()
    generation = 0
    if have:
        row = c.execute("SELECT version, generation FROM stats_state").fetchone()
        if row is not None and row[0] == STATS_VERSION:
            return
        # Past anything a running reader may have cached under the old stats.
        generation = row[1] + 1 if row is not None else 0
    old = c.execute(
        "SELECT type, name FROM sqlite_master WHERE type IN ('trigger', 'table') "
        "AND name LIKE 'stats\\_%' ESCAPE '\\' ORDER BY type = 'table'"
    ).fetchall()
    for kind, name in old:
        c.execute(f"DROP {kind.upper()} {name}")
    for sql in _stats_ddl():
        c.execute(sql)
    # First: the rebuilt rows carry this generation, past what any reader has seen.
    c.execute(
        "INSERT INTO stats_state (version, generation) VALUES (?, ?)", (STATS_VERSION, generation)
    )
    for sql in _stats_rebuild():
        c.execute(sql)


class _Tx:
    """BEGIN IMMEDIATE ... COMMIT, or ROLLBACK on an exception."""

    def __init__(self, conn: sqlite3.Connection):
        self.c = conn

    def __enter__(self) -> sqlite3.Connection:
        self.c.execute("BEGIN IMMEDIATE")
        return self.c

    def __exit__(self, exc_type, exc, tb) -> None:
        self.c.execute("ROLLBACK" if exc_type else "COMMIT")
