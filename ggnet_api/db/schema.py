"""The API's tables, and the changes a database made by an older version needs.

CREATE TABLE IF NOT EXISTS keeps an old table as it was, so create() adds the columns
and indexes added since.  The stats tables and their triggers are stats.py's.
"""

from __future__ import annotations

import sqlite3

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
    image TEXT,
    token_hash TEXT,
    -- An ok boot's session (boot_sessions.py): when it ended (the machine's next boot,
    -- or its target seen without an initiator), and the collection that first saw the
    -- target without one while the session was open.
    session_end REAL,
    session_gone_at REAL,
    -- The image version the boot path's reset gave the PC's system disk (NULL: not
    -- reset, e.g. in maintenance, or from before versions were recorded).
    version TEXT
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
-- Magic packets sent (ggnet_api/wakes.py): when, from which interface, by which job,
-- and the PC's first request after it (confirmed: its time, via: boot or dhcp).
CREATE TABLE IF NOT EXISTS wakes (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    client TEXT NOT NULL,
    mac TEXT NOT NULL,
    sent REAL NOT NULL,
    interface TEXT,
    job_id TEXT,
    confirmed REAL,
    via TEXT
);
CREATE INDEX IF NOT EXISTS wakes_mac ON wakes(mac, id);
-- How many times the API process has started with this database (/metrics' restarts).
CREATE TABLE IF NOT EXISTS api_starts (id INTEGER PRIMARY KEY CHECK (id = 1), n INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS tokens (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    name TEXT NOT NULL,
    role TEXT NOT NULL,
    hash TEXT NOT NULL UNIQUE,
    created REAL NOT NULL,
    revoked REAL,
    expires REAL
);
-- The web console's sign-ins (ggnet_api/web/sessions.py): a session's id is random and
-- only its SHA-256 is kept; it lives until `expires`, sign-out, or its token's revocation.
CREATE TABLE IF NOT EXISTS ui_sessions (
    hash TEXT PRIMARY KEY,
    token_id INTEGER NOT NULL REFERENCES tokens(id),
    created REAL NOT NULL,
    expires REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS ui_sessions_expires ON ui_sessions(expires);
"""


def create(conn: sqlite3.Connection) -> None:
    """The tables as this version wants them, from nothing or from an older database."""
    conn.executescript(SCHEMA)
    have = {r[1] for r in conn.execute("PRAGMA table_info(boots)")}
    if "image" not in have:
        conn.execute("ALTER TABLE boots ADD COLUMN image TEXT")
    # The SHA-256 of the token the boot's script carries (its callbacks must show it).
    if "token_hash" not in have:
        conn.execute("ALTER TABLE boots ADD COLUMN token_hash TEXT")
    for column in ("session_end", "session_gone_at"):
        if column not in have:
            conn.execute(f"ALTER TABLE boots ADD COLUMN {column} REAL")
    if "version" not in have:
        conn.execute("ALTER TABLE boots ADD COLUMN version TEXT")
    # A rollout reads the boots of one image version (ggnet_api/rollouts.py).
    conn.execute("CREATE INDEX IF NOT EXISTS boots_image_version ON boots(image, version, id)")
    conn.execute("CREATE INDEX IF NOT EXISTS boots_client ON boots(client, id)")
    # Tokens made before they could expire keep expires NULL: they never do.
    if "expires" not in {r[1] for r in conn.execute("PRAGMA table_info(tokens)")}:
        conn.execute("ALTER TABLE tokens ADD COLUMN expires REAL")
    # The scans /metrics once made at every scrape; the stats tables replace them.
    for name in ("boots_client_result", "boots_result_image", "boots_mac_result"):
        conn.execute(f"DROP INDEX IF EXISTS {name}")
    # A machine's latest ok boot, found from the top of its (client, 'ok') range.
    conn.execute("CREATE INDEX IF NOT EXISTS boots_client_result_id ON boots(client, result, id)")
