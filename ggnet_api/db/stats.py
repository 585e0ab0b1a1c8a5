"""Aggregates of boots and jobs kept by SQLite triggers, and the reads /metrics makes.

/metrics reports per-machine boot counts, latest durations and histograms of boots and
jobs.  Computed from the boots table at every scrape they cost a walk of its whole
history (never pruned: 1,000 PCs make ~700,000 boots a year).  Kept by triggers
instead, they are right whoever writes (this process, another, the CLI), survive
restarts, and a scrape reads a table the size of the room.  stats_state.generation
moves with every change to them, so a reader can tell whether what it rendered from
them is still current; every stats row carries the generation that last changed it
(`gen`), so a reader can read only the rows changed since (a boot storm changes a
few machines between two scrapes, not the room).  Rows are never deleted by the
triggers: a count falls to 0, a latest boot becomes NULL, and a reader of changes
sees that too.

A retention pass (Database.prune_boots) deletes old boots with stats_state.pruning
set: the counts and histograms keep what they counted (Prometheus counters must not
go down), only the latest-boot rows follow, and the rows of MACs left without any
boot are dropped (drop_emptied) so that fake MACs do not grow the stats either.
"""

from __future__ import annotations

import hashlib
import re
import sqlite3
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

# The generation the running trigger's changes will be under (the bump comes last).
_NEXT = "(SELECT generation + 1 FROM stats_state)"

JOB_BUCKETS = (1, 5, 15, 30, 60, 120, 300, 600, 1800, 3600)
BOOT_BUCKETS = (0.5, 1, 2, 5, 10, 20, 30, 60, 120, 300)
# Boot sessions, from a boot loop (a minute) to a machine left on (a day): 1, 5, 10 and
# 30 min, 1, 2, 4, 8, 12 and 24 h.
SESSION_BUCKETS = (60, 300, 600, 1800, 3600, 7200, 14400, 28800, 43200, 86400)
_SESSION = "MAX(0.0, r.session_end - r.started)"


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

    def remove(self, row: str, unless_pruning: bool = False) -> str:
        match = " AND ".join(f"{k} = {self._sub(e, row)}" for k, e in self.keys)
        pruning = " AND NOT (SELECT pruning FROM stats_state)" if unless_pruning else ""
        return (
            f"UPDATE stats_{self.name} SET n = n - 1, total = total - {self._sub(self.value, row)}, "
            f"gen = {_NEXT} WHERE {match} AND {self._sub(self.where, row)}{pruning};"
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
    # Finished boot sessions: an ok boot's session_end is set once (boot_sessions.py).
    _Sum(
        "boot_sessions",
        "boots",
        (("bucket", _bucket(_SESSION, SESSION_BUCKETS)),),
        "r.session_end IS NOT NULL",
        _SESSION,
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
    "boots": ("mac", "client", "result", "duration", "image", "session_end"),
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
        "CREATE TABLE stats_state (version TEXT NOT NULL, generation INTEGER NOT NULL, "
        "pruning INTEGER NOT NULL DEFAULT 0)",
        # id and result (duration) are NULL once no such boot is left.
        "CREATE TABLE stats_boot_last (mac TEXT PRIMARY KEY, id INTEGER, result TEXT, "
        "gen INTEGER NOT NULL) WITHOUT ROWID",
        "CREATE TABLE stats_boot_last_ok (client TEXT PRIMARY KEY, id INTEGER, duration REAL, "
        "gen INTEGER NOT NULL) WITHOUT ROWID",
    ]
    ddl += [s.table() for s in _SUMS]
    # A machine's next boot ends the session of its boot before, if that one was ok and
    # its session still open (the collector may have ended it already).
    ddl.append(
        "CREATE TRIGGER stats_boots_session_end AFTER INSERT ON boots BEGIN "
        "UPDATE boots SET session_end = MAX(NEW.started, started) WHERE id = "
        "(SELECT id FROM boots WHERE mac = NEW.mac AND id < NEW.id ORDER BY id DESC LIMIT 1) "
        "AND result = 'ok' AND session_end IS NULL; END"
    )
    bump = "UPDATE stats_state SET generation = generation + 1;"
    for source, watched in _WATCHED.items():
        sums = [s for s in _SUMS if s.source == source]
        latest = source == "boots"
        on_insert = [s.add("NEW") for s in sums] + ([_latest("NEW")] if latest else [])
        on_delete = [s.remove("OLD", unless_pruning=True) for s in sums] + (
            [_latest("OLD")] if latest else []
        )
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


def drop_emptied(c: sqlite3.Connection) -> None:
    """Forget the latest-boot rows of MACs without any boot left (after a retention
    pass); a reader of changes has no machine to tell about them."""
    c.execute("DELETE FROM stats_boot_last WHERE id IS NULL")


# -- what /metrics reads --------------------------------------------------------------
#
# Plain tuples, one at a time: each is gone before the next comes, so a scrape of
# thousands of rows leaves the garbage collector's counts where they were (fetchall()
# would hold them all and trigger collections, a full one now and then: tens of
# milliseconds with the inventory in memory).


def _rows(db: Any, sql: str, args: tuple = ()) -> Iterator[tuple]:
    cur = db.conn().cursor()
    cur.row_factory = None
    return cur.execute(sql, args)


def generation(db: Any) -> int:
    """Moves with every change to the stats tables."""
    return db.conn().execute("SELECT generation FROM stats_state").fetchone()[0]


def job_counts(db: Any) -> Iterator[tuple]:
    """(playbook, state, n) of finished jobs, sorted."""
    return _rows(db, "SELECT playbook, state, n FROM stats_job_counts WHERE n > 0 ORDER BY 1, 2")


def active_jobs(db: Any) -> dict[str, int]:
    """state -> count, of the jobs queued or running."""
    return dict(
        _rows(
            db,
            "SELECT state, COUNT(*) FROM jobs WHERE state IN ('queued', 'running') GROUP BY state",
        )
    )


def job_duration_buckets(db: Any) -> Iterator[tuple]:
    """(playbook, first bucket of JOB_BUCKETS, n, total seconds)."""
    return _rows(db, "SELECT playbook, bucket, n, total FROM stats_job_durations WHERE n > 0")


def boot_duration_buckets(db: Any) -> Iterator[tuple]:
    """(image, first bucket of BOOT_BUCKETS, n, total seconds) of ok boots."""
    return _rows(db, "SELECT image, bucket, n, total FROM stats_boot_durations WHERE n > 0")


def boot_session_buckets(db: Any) -> Iterator[tuple]:
    """('', first bucket of SESSION_BUCKETS, n, total seconds) of finished boot sessions."""
    return _rows(db, "SELECT '', bucket, n, total FROM stats_boot_sessions WHERE n > 0")


def boot_results(db: Any) -> Iterator[tuple]:
    """(result, n) of every boot, sorted by result."""
    return _rows(db, "SELECT result, n FROM stats_boot_results WHERE n > 0 ORDER BY result")


def last_results_since(db: Any, since: int) -> Iterator[tuple]:
    """(mac, result of its latest boot or None) of the MACs changed after generation `since`."""
    return _rows(db, "SELECT mac, result FROM stats_boot_last WHERE gen > ?", (since,))


def machine_boots_since(db: Any, since: int) -> Iterator[tuple]:
    """(client, result, n) of inventory machines, changed after generation `since`."""
    return _rows(
        db,
        "SELECT client, result, n FROM stats_boot_counts WHERE known = 1 AND gen > ?",
        (since,),
    )


def last_ok_durations_since(db: Any, since: int) -> Iterator[tuple]:
    """(client, duration of its latest ok boot or None), changed after generation `since`."""
    return _rows(db, "SELECT client, duration FROM stats_boot_last_ok WHERE gen > ?", (since,))


def waiting_discovered(db: Any) -> Iterator[tuple]:
    """One row: how many discovered machines wait for approval."""
    return _rows(db, "SELECT COUNT(*) FROM discovered WHERE state = 'discovered'")
