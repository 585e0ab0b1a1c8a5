"""The API's state in SQLite: jobs and their events, boots, discovered machines, tokens.

Every statement the API runs is a named method here (the stats /metrics reads are in
stats.py): the blueprints, the job runner and the collector say what they want, never
how it is stored.  query(), one() and execute() stay for tests and one-off tools.

One connection per thread (sqlite3 connections must not be shared across threads), in
WAL mode so readers (SSE streams, /metrics) never wait on the job runner's writes.
Tokens are stored as SHA-256 hashes: they are random 256-bit strings, so a plain hash
is enough and lets a lookup be one indexed query.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import sqlite3
import threading
import time
from collections.abc import Iterable, Iterator
from typing import Any

from ggnet_api import auth
from ggnet_api.db import instrument, schema, stats

JOB_DONE = ("successful", "failed", "canceled", "interrupted", "error")
BOOT_STAGES = ("requested", "script", "san", "os")


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def _new_id(cur: sqlite3.Cursor) -> int:
    """The id of the row an INSERT just added (lastrowid is None only before one)."""
    assert cur.lastrowid is not None
    return cur.lastrowid


class Database:
    def __init__(self, path: str):
        self.path = path
        self._local = threading.local()
        directory = os.path.dirname(path)
        if directory:
            os.makedirs(directory, mode=0o700, exist_ok=True)
        schema.create(self.conn())
        with self.tx() as c:
            stats.install_stats(c)
        os.chmod(path, 0o600)

    def conn(self) -> sqlite3.Connection:
        c = getattr(self._local, "conn", None)
        if c is None:
            c = sqlite3.connect(
                self.path, timeout=30, isolation_level=None, factory=instrument.Connection
            )
            c.row_factory = sqlite3.Row
            c.execute("PRAGMA journal_mode=WAL")
            c.execute("PRAGMA synchronous=NORMAL")
            c.execute("PRAGMA busy_timeout=30000")
            self._local.conn = c
        return c

    def tx(self):
        return _Tx(self.conn())

    @contextlib.contextmanager
    def reading(self) -> Iterator[None]:
        """One read transaction (unless one is open already): every read in it sees
        the database as it was at the first."""
        conn = self.conn()
        own = not conn.in_transaction
        if own:
            conn.execute("BEGIN")
        try:
            yield
        finally:
            if own:
                conn.execute("COMMIT")

    def query(self, sql: str, args: Iterable[Any] = ()) -> list[dict[str, Any]]:
        return [dict(r) for r in self.conn().execute(sql, tuple(args)).fetchall()]

    def one(self, sql: str, args: Iterable[Any] = ()) -> dict[str, Any] | None:
        row = self.conn().execute(sql, tuple(args)).fetchone()
        return dict(row) if row is not None else None

    def execute(self, sql: str, args: Iterable[Any] = ()) -> sqlite3.Cursor:
        return self.conn().execute(sql, tuple(args))

    def count(self, sql: str, args: Iterable[Any] = ()) -> int:
        """The n of a `SELECT COUNT(*) AS n ...`, which always answers one row."""
        row = self.one(sql, args)
        assert row is not None
        return row["n"]

    def record_start(self) -> int:
        """The API process started once more with this database: how many times now."""
        with self.tx() as c:
            c.execute("INSERT OR IGNORE INTO api_starts (id, n) VALUES (1, 0)")
            c.execute("UPDATE api_starts SET n = n + 1 WHERE id = 1")
            return c.execute("SELECT n FROM api_starts WHERE id = 1").fetchone()[0]

    def ping(self) -> None:
        """Raises when the database cannot be read."""
        self.one("SELECT 1 AS ok")

    # -- wakes (ggnet_api/wakes.py) ------------------------------------------------------

    def add_wake(
        self, client: str, mac: str, sent: float, interface: str, job_id: str | None
    ) -> None:
        self.execute(
            "INSERT INTO wakes (client, mac, sent, interface, job_id) VALUES (?, ?, ?, ?, ?)",
            (client, mac, sent, interface, job_id),
        )

    def confirm_wake(self, mac: str, sent: float, at: float, via: str) -> float | None:
        """Mark the MAC's latest wake (sent at `sent`) confirmed at `at`: the seconds
        from its packet, or None when it is not that wake or already confirmed."""
        with self.tx() as c:
            row = c.execute(
                "SELECT id, sent, confirmed FROM wakes WHERE mac = ? ORDER BY id DESC LIMIT 1",
                (mac,),
            ).fetchone()
            if row is None or row[2] is not None or row[1] != sent:
                return None
            c.execute("UPDATE wakes SET confirmed = ?, via = ? WHERE id = ?", (at, via, row[0]))
        return at - sent

    def last_wake(self, mac: str) -> dict[str, Any] | None:
        return self.one("SELECT * FROM wakes WHERE mac = ? ORDER BY id DESC LIMIT 1", (mac,))

    def last_wakes(self) -> dict[str, dict[str, Any]]:
        """The latest wake of every MAC that has one."""
        rows = self.query(
            "SELECT w.* FROM wakes w JOIN (SELECT mac, MAX(id) AS id FROM wakes GROUP BY mac) l "
            "ON w.id = l.id"
        )
        return {r["mac"]: r for r in rows}

    def pending_wakes(self, since: float) -> list[dict[str, Any]]:
        """Each MAC's latest wake when it is unconfirmed and sent after `since`."""
        return [
            w for w in self.last_wakes().values() if w["confirmed"] is None and w["sent"] > since
        ]

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

    def jobs(
        self,
        limit: int = 100,
        state: str | None = None,
        before: tuple[float, str] | None = None,
    ) -> list[dict[str, Any]]:
        """Newest first; `before` (created, id) of the last job of a page starts the next
        (id breaks ties, so a page boundary never skips or repeats a job)."""
        where: list[str] = []
        args: list[Any] = []
        if state:
            where.append("state = ?")
            args.append(state)
        if before is not None:
            where.append("(created < ? OR (created = ? AND id < ?))")
            args += [before[0], before[0], before[1]]
        sql = "SELECT * FROM jobs"
        if where:
            sql += " WHERE " + " AND ".join(where)
        rows = self.query(sql + " ORDER BY created DESC, id DESC LIMIT ?", (*args, limit))
        for row in rows:
            row["extravars"] = json.loads(row["extravars"])
        return rows

    def count_jobs(self, state: str) -> int:
        return self.count("SELECT COUNT(*) AS n FROM jobs WHERE state = ?", (state,))

    def job_counts(self) -> dict[str, int]:
        """state -> how many jobs are in it."""
        rows = self.query("SELECT state, COUNT(*) AS n FROM jobs GROUP BY state")
        return {r["state"]: r["n"] for r in rows}

    def update_job(self, job_id: str, **fields: Any) -> None:
        keys = ", ".join(f"{k} = ?" for k in fields)
        self.execute(f"UPDATE jobs SET {keys} WHERE id = ?", (*fields.values(), job_id))

    def start_queued_job(self, job_id: str) -> bool:
        """Mark a queued job running; False when it is no longer queued (cancelled)."""
        cur = self.execute(
            "UPDATE jobs SET state = 'running', started = ?, detail = NULL "
            "WHERE id = ? AND state = 'queued'",
            (time.time(), job_id),
        )
        return cur.rowcount > 0

    def note_queued_job(self, job_id: str, detail: str) -> None:
        """Why a queued job has not started (what it waits for)."""
        self.execute(
            "UPDATE jobs SET detail = ? WHERE id = ? AND state = 'queued'", (detail, job_id)
        )

    def cancel_queued_job(self, job_id: str, detail: str) -> bool:
        """Mark a queued job canceled; False when it is no longer queued (it started)."""
        cur = self.execute(
            "UPDATE jobs SET state = 'canceled', finished = ?, detail = ? "
            "WHERE id = ? AND state = 'queued'",
            (time.time(), detail, job_id),
        )
        return cur.rowcount > 0

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
        token: str | None = None,
        version: str | None = None,
    ) -> int:
        """A new boot; `token` (the one its script carries) is stored as its SHA-256;
        `version` is the image version the PC was given."""
        now = time.time()
        duration = 0.0 if result != "pending" else None
        token_hash = hash_token(token) if token is not None else None
        cur = self.execute(
            "INSERT INTO boots (mac, client, kind, started, stage_at, result, detail, duration, "
            "image, token_hash, version) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (mac, client, kind, now, now, result, detail, duration, image, token_hash, version),
        )
        return _new_id(cur)

    def version_boots(
        self, image: str, version: str, since: float = 0.0, limit: int = 1000
    ) -> list[dict[str, Any]]:
        """The latest boots (newest first, at most `limit`) that got `image`@`version`
        from `since` on: client, result, duration, stage, started (a rollout's evidence)."""
        return self.query(
            "SELECT client, result, duration, stage, started FROM boots WHERE image = ? AND "
            "version = ? AND started >= ? ORDER BY id DESC LIMIT ?",
            (image, version, since, limit),
        )

    def boot(self, boot_id: int) -> dict[str, Any] | None:
        return self.one("SELECT * FROM boots WHERE id = ?", (boot_id,))

    def last_boot(self, mac: str, discovery: bool = True) -> dict[str, Any] | None:
        """The latest boot of a MAC; with discovery=False, the latest that is not an
        unknown PC's wait for approval."""
        where = "" if discovery else " AND kind != 'discovery'"
        return self.one(
            f"SELECT * FROM boots WHERE mac = ?{where} ORDER BY id DESC LIMIT 1", (mac,)
        )

    def recent_boots(self, mac: str, limit: int = 20) -> list[dict[str, Any]]:
        return self.query(
            "SELECT id, kind, started, stage, result, duration, detail FROM boots "
            "WHERE mac = ? ORDER BY id DESC LIMIT ?",
            (mac, limit),
        )

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

    def touch_boot(self, boot_id: int, at: float) -> None:
        """The boot asked again at `at` (stage_at moves, nothing else)."""
        self.execute("UPDATE boots SET stage_at = ? WHERE id = ?", (at, boot_id))

    def set_boot_stage(
        self,
        boot_id: int,
        stage: str,
        at: float,
        result: str,
        duration: float | None,
        detail: str | None,
    ) -> None:
        self.execute(
            "UPDATE boots SET stage = ?, stage_at = ?, result = ?, duration = ?, detail = ? "
            "WHERE id = ?",
            (stage, at, result, duration, detail, boot_id),
        )

    def expire_boots(self, before: float) -> None:
        """Boots of PCs still pending with no stage since `before` become `timeout`."""
        self.execute(
            "UPDATE boots SET result = 'timeout' "
            "WHERE result = 'pending' AND kind != 'discovery' AND stage_at < ?",
            (before,),
        )

    def open_sessions(self) -> list[dict[str, Any]]:
        """The latest boot of every MAC when it is ok and its session is still open:
        id, mac, stage_at, session_gone_at (boot_sessions.py)."""
        return self.query(
            "SELECT b.id, b.mac, b.stage_at, b.session_gone_at FROM stats_boot_last l "
            "JOIN boots b ON b.id = l.id WHERE l.result = 'ok' AND b.session_end IS NULL"
        )

    def update_sessions(
        self, gone: list[tuple[float, int]], back: list[int], ended: list[int]
    ) -> None:
        """In one transaction: (time, boot id) of sessions whose target was first seen
        without an initiator; boot ids whose target has one again; boot ids whose
        session ended when it was first seen without one (set once: a session is
        counted once)."""
        with self.tx() as c:
            c.executemany(
                "UPDATE boots SET session_gone_at = ? WHERE id = ? AND session_end IS NULL",
                gone,
            )
            c.executemany(
                "UPDATE boots SET session_gone_at = NULL WHERE id = ?", [(i,) for i in back]
            )
            c.executemany(
                "UPDATE boots SET session_end = session_gone_at WHERE id = ? "
                "AND session_end IS NULL AND session_gone_at IS NOT NULL",
                [(i,) for i in ended],
            )

    # -- discovered machines ------------------------------------------------------------

    def discovered(self, mac: str) -> dict[str, Any] | None:
        return self.one("SELECT * FROM discovered WHERE mac = ?", (mac,))

    def discovered_list(
        self,
        state: str | None = None,
        limit: int = 100,
        after: tuple[float, str] | None = None,
    ) -> list[dict[str, Any]]:
        """Discovered machines (all, or those in `state`), oldest first: at most `limit`,
        from past `after`, the (first_seen, mac) of the last row of the page before."""
        where: list[str] = []
        args: list[Any] = []
        if state is not None:
            where.append("state = ?")
            args.append(state)
        if after is not None:
            where.append("(first_seen, mac) > (?, ?)")
            args += list(after)
        clause = f"WHERE {' AND '.join(where)} " if where else ""
        return self.query(
            f"SELECT * FROM discovered {clause}ORDER BY first_seen, mac LIMIT ?", (*args, limit)
        )

    def count_discovered(self, state: str | None = None) -> int:
        if state is None:
            return self.count("SELECT COUNT(*) AS n FROM discovered")
        return self.count("SELECT COUNT(*) AS n FROM discovered WHERE state = ?", (state,))

    def add_discovered(self, mac: str, at: float, cap: int | None = None) -> bool:
        """Add a discovered machine unless `cap` of them are listed already; True when
        the MAC is listed afterwards.  The count and the insert are one write
        transaction, so concurrent requests cannot pass the cap together."""
        with self.tx() as c:
            c.execute(
                "INSERT OR IGNORE INTO discovered (mac, first_seen, last_seen, facts) "
                "SELECT ?, ?, ?, '{}' WHERE ? IS NULL OR (SELECT COUNT(*) FROM discovered) < ?",
                (mac, at, at, cap, cap),
            )
            row = c.execute("SELECT 1 FROM discovered WHERE mac = ?", (mac,)).fetchone()
        return row is not None

    def seen_discovered(
        self, mac: str, at: float, facts: dict | None = None, report: dict | None = None
    ) -> None:
        """The machine was seen at `at`; the facts or the report it sent replace the old."""
        sets: list[str] = ["last_seen = ?"]
        args: list[Any] = [at]
        if facts is not None:
            sets.append("facts = ?")
            args.append(json.dumps(facts))
        if report is not None:
            sets.append("report = ?")
            args.append(json.dumps(report))
        self.execute(f"UPDATE discovered SET {', '.join(sets)} WHERE mac = ?", (*args, mac))

    def approve_discovered(self, mac: str, name: str, by: str, job_id: str | None) -> None:
        self.execute(
            "UPDATE discovered SET state = 'approved', name = ?, approved_by = ?, "
            "approved_at = ?, job_id = ? WHERE mac = ?",
            (name, by, time.time(), job_id, mac),
        )

    def forget_discovered(self, mac: str) -> None:
        self.execute("DELETE FROM discovered WHERE mac = ?", (mac,))

    def forget_discovered_many(
        self, seen_before: float | None = None, state: str | None = None
    ) -> int:
        """Forget the machines matching every filter given (seen_before: not seen since;
        state: in it); how many were forgotten."""
        where: list[str] = []
        args: list[Any] = []
        if seen_before is not None:
            where.append("last_seen < ?")
            args.append(seen_before)
        if state is not None:
            where.append("state = ?")
            args.append(state)
        clause = f" WHERE {' AND '.join(where)}" if where else ""
        return self.execute(f"DELETE FROM discovered{clause}", args).rowcount

    # -- retention ----------------------------------------------------------------------

    def prune_boots(self, before: float, keep: dict[str, str], batch: int = 5000) -> int:
        """Delete the boots started before `before`, except the latest boot of each MAC
        of `keep` (client name -> MAC: the inventory's machines) and each of those
        clients' latest finished ok boot: the Machines view and /metrics read them.
        The stats keep their totals (a counter counts boots ever made, not boots kept);
        a MAC left without boots leaves the stats too.  In batches, so the boot path
        never waits long for the write lock.  Returns how many boots were deleted."""
        macs, names = json.dumps(sorted(set(keep.values()))), json.dumps(sorted(keep))
        # Boot ids grow with time: the scan in id order stops at the first boot young
        # enough to stay, past the few kept latest ones and what goes now (no index
        # on started for the boot path to keep up).
        row = self.one("SELECT id FROM boots WHERE started >= ? ORDER BY id LIMIT 1", (before,))
        below = row["id"] if row is not None else 1 << 62
        deleted = 0
        while True:
            with self.tx() as c:
                c.execute("UPDATE stats_state SET pruning = 1")
                n = c.execute(
                    "DELETE FROM boots WHERE id IN (SELECT id FROM boots WHERE id < ? "
                    "AND started < ? AND id NOT IN (SELECT id FROM stats_boot_last "
                    "WHERE id IS NOT NULL AND mac IN (SELECT value FROM json_each(?))) "
                    "AND id NOT IN (SELECT id FROM stats_boot_last_ok WHERE id IS NOT NULL "
                    "AND client IN (SELECT value FROM json_each(?))) ORDER BY id LIMIT ?)",
                    (below, before, macs, names, batch),
                ).rowcount
                c.execute("UPDATE stats_state SET pruning = 0")
            deleted += n
            if n < batch:
                break
        if deleted:
            with self.tx() as c:
                stats.drop_emptied(c)
        return deleted

    def prune_discovered(self, before: float) -> int:
        """Forget the discovered machines not seen since `before`; how many."""
        return self.forget_discovered_many(seen_before=before)

    # -- tokens -------------------------------------------------------------------------

    def add_token(self, name: str, role: str, token: str, expires: float | None = None) -> int:
        """A new token's id.  ValueError for a name that is not one printable line
        (it ends up in commit messages and host_vars comments) or an unknown role."""
        name = auth.check_token_name(name)
        if role not in auth.ROLES:
            raise ValueError(f"token role {role!r}: one of {', '.join(auth.ROLES)}")
        cur = self.execute(
            "INSERT INTO tokens (name, role, hash, created, expires) VALUES (?, ?, ?, ?, ?)",
            (name, role, hash_token(token), time.time(), expires),
        )
        return _new_id(cur)

    def token(self, token: str) -> dict[str, Any] | None:
        """The token's id, name, role and expiry (None: never), unless it is unknown or
        revoked; whether it has expired is the caller's to judge."""
        return self.one(
            "SELECT id, name, role, expires FROM tokens WHERE hash = ? AND revoked IS NULL",
            (hash_token(token),),
        )

    def tokens(self) -> list[dict[str, Any]]:
        """Every token made, revoked ones too; never the token or its hash."""
        return self.query(
            "SELECT id, name, role, created, revoked, expires FROM tokens ORDER BY id"
        )

    def revoke_token(self, token_id: int) -> bool:
        """False when there is no such token, or it is revoked already.  The token's
        console sessions end with it."""
        with self.tx() as c:
            cur = c.execute(
                "UPDATE tokens SET revoked = ? WHERE id = ? AND revoked IS NULL",
                (time.time(), token_id),
            )
            c.execute("DELETE FROM ui_sessions WHERE token_id = ?", (token_id,))
        return cur.rowcount > 0

    # -- console sessions ---------------------------------------------------------------

    def add_ui_session(self, session_hash: str, token_id: int, now: float, expires: float) -> None:
        """A new console session; the expired ones go at the same time (so the table
        holds at most the sessions still valid, and those made since)."""
        with self.tx() as c:
            c.execute("DELETE FROM ui_sessions WHERE expires <= ?", (now,))
            c.execute(
                "INSERT INTO ui_sessions (hash, token_id, created, expires) VALUES (?, ?, ?, ?)",
                (session_hash, token_id, now, expires),
            )

    def ui_session(self, session_hash: str) -> dict[str, Any] | None:
        """The session with its token's id, name, role and expiry, unless there is no
        such session or its token is revoked; whether either expired is the caller's
        to judge."""
        return self.one(
            "SELECT s.created, s.expires AS session_expires, t.id, t.name, t.role, t.expires "
            "FROM ui_sessions s JOIN tokens t ON t.id = s.token_id "
            "WHERE s.hash = ? AND t.revoked IS NULL",
            (session_hash,),
        )

    def end_ui_session(self, session_hash: str) -> None:
        self.execute("DELETE FROM ui_sessions WHERE hash = ?", (session_hash,))

    def machine_jobs(self, client: str, limit: int = 20) -> list[dict[str, Any]]:
        """The machine jobs (reset, keep, release, apply) of one client, newest first."""
        rows = self.query(
            "SELECT * FROM jobs WHERE kind = 'machine' "
            "AND json_extract(extravars, '$.client') = ? ORDER BY created DESC, id DESC LIMIT ?",
            (client, limit),
        )
        for row in rows:
            row["extravars"] = json.loads(row["extravars"])
        return rows


class _Tx:
    """BEGIN IMMEDIATE ... COMMIT, or ROLLBACK on an exception."""

    def __init__(self, conn: sqlite3.Connection):
        self.c = conn

    def __enter__(self) -> sqlite3.Connection:
        self.c.execute("BEGIN IMMEDIATE")
        return self.c

    def __exit__(self, exc_type, exc, tb) -> None:
        self.c.execute("ROLLBACK" if exc_type else "COMMIT")
