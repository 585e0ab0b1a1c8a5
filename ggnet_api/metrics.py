"""/metrics: Prometheus exposition of real values only.

Counts and histograms of jobs and boots come from SQLite, so they survive restarts and
never disagree with the API's own answers: from the stats tables that db.py's triggers
keep (a table the size of the room, never the boot history).  What needs a subprocess
(zfs, tgtadm) is read by Live's collector thread on an interval and only copied here:
a scrape never forks.  Request and authentication counters live in this process (one
gunicorn worker, see serve_cmd).

With a room of 1,000 PCs the exposition is ~6,000 lines, most of them per-client
series.  prometheus_client's generic formatting (a Sample object, label-name
validation and escaping for every line) cost two thirds of a scrape, so the families
read from SQLite and the collector's sample are written here as text by _Text, a small
writer of the text format (version 0.0.4): HELP and TYPE once per family, `_total` on
counters, label values escaped.  Both big blocks are rendered only when their source
changed: the collector's once per Sample object (Live swaps the Sample whole, never
mutates it), the stats once per stats generation (every change to them moves it) and
inventory snapshot.  prometheus_client keeps the in-process counters.
"""

from __future__ import annotations

import math
import threading
from typing import Any

from prometheus_client import CollectorRegistry, Counter, generate_latest

from ggnet_api.db import BOOT_BUCKETS, JOB_BUCKETS

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
# The *_created series double every counter and no dashboard of ours reads them.
# prometheus-client < 0.17 (Debian bookworm has 0.16) cannot turn them off: harmless.
try:
    from prometheus_client import disable_created_metrics
except ImportError:  # pragma: no cover - depends on the installed version
    pass
else:
    disable_created_metrics()


# -- the text format ---------------------------------------------------------------------


def escape_label(value: Any) -> str:
    """A label value as the text format wants it between double quotes."""
    s = str(value)
    if "\\" in s or '"' in s or "\n" in s:
        s = s.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
    return s


def escape_help(text: str) -> str:
    return text.replace("\\", "\\\\").replace("\n", "\\n")


def number(value: float) -> str:
    """A sample value: Go's ParseFloat reads Python's repr of a float back exactly."""
    f = float(value)
    if math.isfinite(f):
        return repr(f)
    if math.isnan(f):
        return "NaN"
    return "+Inf" if f > 0 else "-Inf"


class _Text:
    """Families written straight into a list of strings."""

    def __init__(self) -> None:
        self.parts: list[str] = []

    def family(self, name: str, kind: str, doc: str) -> str:
        """HELP and TYPE of a family; returns the series name (counters get _total)."""
        if kind == "counter":
            name += "_total"
        self.parts.append(f"# HELP {name} {escape_help(doc)}\n# TYPE {name} {kind}\n")
        return name

    def samples(self, name: str, labels: tuple[str, ...], rows) -> None:
        """rows: (label values..., value) tuples, in the order of `labels`."""
        n = len(labels)
        pairs = ",".join(f'{k}="{{}}"' for k in labels)
        line = (f"{name}{{{{{pairs}}}}} {{}}\n" if labels else f"{name} {{}}\n").format
        self.parts.extend(line(*[escape_label(v) for v in row[:n]], number(row[n])) for row in rows)

    def one_label(self, name: str, label: str, items) -> None:
        """The per-client fast path: items are (label value, value) pairs."""
        head = f'{name}{{{label}="'
        self.parts.extend(f'{head}{escape_label(k)}"}} {number(v)}\n' for k, v in items)

    def histogram(self, name: str, label: str, buckets, groups) -> None:
        """groups: {label value: (cumulative bucket counts, count, sum)}."""
        les = [number(b) for b in buckets] + ["+Inf"]
        out = self.parts.append
        for key, (cum, n, total) in groups:
            lv = escape_label(key)
            for le, c in zip(les, [*cum, n], strict=True):
                out(f'{name}_bucket{{{label}="{lv}",le="{le}"}} {number(c)}\n')
            out(f'{name}_count{{{label}="{lv}"}} {number(n)}\n')
            out(f'{name}_sum{{{label}="{lv}"}} {number(total)}\n')

    def text(self) -> str:
        return "".join(self.parts)


# -- what is read from SQLite ---------------------------------------------------------------


def _rows(db, sql: str, args=()):
    """The rows as plain tuples, one at a time: each is gone before the next comes, so
    a scrape of thousands of rows leaves the garbage collector's counts where they
    were (fetchall() would hold them all and trigger collections, a full one now and
    then: tens of milliseconds with the inventory in memory)."""
    cur = db.conn().cursor()
    cur.row_factory = None
    return cur.execute(sql, args)


def _histogram(db, table: str, buckets) -> list[tuple[Any, tuple[list[int], int, float]]]:
    """[(group, (cumulative bucket counts, count, sum))] from a stats table of
    (group, first bucket, n, total) rows, sorted by group."""
    acc: dict[Any, tuple[list[int], list[float]]] = {}
    for g, b, n, s in _rows(db, f"SELECT * FROM {table} WHERE n > 0"):
        counts, total = acc.setdefault(g, ([0] * (len(buckets) + 1), [0.0]))
        counts[b] += n
        total[0] += s
    out = []
    for g, (counts, total) in sorted(acc.items()):
        cum, running = [], 0
        for c in counts:
            running += c
            cum.append(running)
        out.append((g, (cum[:-1], running, total[0])))
    return out


def render_stats(db, live, snap) -> str:
    """The families read from the stats tables (db.py's triggers keep them) and from
    the jobs' states: nothing here changes unless stats_state.generation does."""
    t = _Text()
    name = t.family("ggnet_jobs", "counter", "Finished jobs by playbook and result")
    t.samples(
        name,
        ("playbook", "result"),
        _rows(db, "SELECT playbook, state, n FROM stats_job_counts WHERE n > 0 ORDER BY 1, 2"),
    )

    name = t.family("ggnet_jobs_active", "gauge", "Jobs queued or running")
    counts = dict(
        _rows(
            db,
            "SELECT state, COUNT(*) FROM jobs WHERE state IN ('queued', 'running') GROUP BY state",
        )
    )
    t.samples(name, ("state",), [(s, counts.get(s, 0)) for s in ("queued", "running")])

    name = t.family("ggnet_job_duration_seconds", "histogram", "Duration of finished jobs")
    t.histogram(name, "playbook", JOB_BUCKETS, _histogram(db, "stats_job_durations", JOB_BUCKETS))

    name = t.family("ggnet_boots", "counter", "Boot requests by result")
    t.samples(
        name,
        ("result",),
        _rows(
            db,
            "SELECT result, SUM(n) FROM stats_boot_counts GROUP BY result "
            "HAVING SUM(n) > 0 ORDER BY result",
        ),
    )

    name = t.family(
        "ggnet_boot_duration_seconds",
        "histogram",
        "From the boot request to the last stage reported (finished boots), by image",
    )
    t.histogram(name, "image", BOOT_BUCKETS, _histogram(db, "stats_boot_durations", BOOT_BUCKETS))

    name = t.family(
        "ggnet_machine_boots", "counter", "Boot requests of each inventory machine by result"
    )
    esc = escape_label
    t.parts.extend(
        f'{name}{{client="{esc(c)}",result="{esc(r)}"}} {float(n)!r}\n'
        for c, r, n in _rows(
            db,
            "SELECT client, result, n FROM stats_boot_counts WHERE known AND n > 0 ORDER BY 1, 2",
        )
    )
    name = t.family(
        "ggnet_machine_last_boot_duration_seconds",
        "gauge",
        "Duration of each machine's latest finished boot",
    )
    t.one_label(
        name,
        "client",
        _rows(db, "SELECT client, duration FROM stats_boot_last_ok ORDER BY client"),
    )

    name = t.family("ggnet_clients", "gauge", "Clients of the inventory by state")
    # Of live.snapshot, which may already be newer than `snap`: the block is then
    # cached under the older one and rendered again at the next scrape, never stale.
    t.samples(name, ("state",), sorted(live.client_states().items()))

    name = t.family(
        "ggnet_inventory_loaded_timestamp_seconds", "gauge", "When the inventory was last loaded"
    )
    t.samples(name, (), [(snap.loaded_at,)])
    return t.text()


def render_discovered(db) -> str:
    """Read at every scrape: discovered rows change without moving the stats
    generation, and the table is bounded (max_discovered)."""
    t = _Text()
    name = t.family("ggnet_discovered_machines", "gauge", "Unknown machines waiting for approval")
    t.samples(name, (), _rows(db, "SELECT COUNT(*) FROM discovered WHERE state = 'discovered'"))
    return t.text()


def render_sample(sample) -> str:
    """The families copied from one collector Sample (the per-client block among them)."""
    t = _Text()
    if sample.writeback_bytes is not None:
        name = t.family("ggnet_writeback_bytes", "gauge", "Bytes written to a client's writeback")
        wb = sample.writeback_bytes
        t.one_label(name, "client", ((c, wb[c]) for c in sorted(wb)))
    if sample.pools:
        pools = sorted(sample.pools.items())
        name = t.family("ggnet_pool_size_bytes", "gauge", "Pool size")
        t.one_label(name, "pool", [(p, size) for p, (size, _free) in pools])
        name = t.family("ggnet_pool_free_bytes", "gauge", "Pool free space")
        t.one_label(name, "pool", [(p, free) for p, (_size, free) in pools])
    if sample.traffic is not None:
        traffic, clients = sample.traffic, sorted(sample.traffic)
        name = t.family(
            "ggnet_iscsi_read_bytes",
            "counter",
            "Bytes a client read from its iSCSI target (LIO), since the API started",
        )
        t.one_label(name, "client", ((c, traffic[c][0]) for c in clients))
        name = t.family(
            "ggnet_iscsi_write_bytes",
            "counter",
            "Bytes a client wrote to its iSCSI target (LIO), since the API started",
        )
        t.one_label(name, "client", ((c, traffic[c][1]) for c in clients))
    if sample.sessions is not None:
        name = t.family("ggnet_iscsi_sessions", "gauge", "Logged-in iSCSI initiators")
        t.samples(name, (), [(sum(len(v) for v in sample.sessions.values()),)])
    name = t.family(
        "ggnet_collector_errors", "gauge", "1 when the last collection of a source failed"
    )
    t.samples(
        name, ("source",), [(s, 1 if s in sample.errors else 0) for s in ("storage", "iscsi")]
    )
    if sample.at:
        name = t.family(
            "ggnet_collector_last_run_timestamp_seconds", "gauge", "When the collector last ran"
        )
        t.samples(name, (), [(sample.at,)])
    return t.text()


class Metrics:
    def __init__(self, ext: Any):
        self.ext = ext
        self.registry = CollectorRegistry(auto_describe=False)
        self.requests = Counter(
            "ggnet_api_requests",
            "API requests by endpoint, method and status",
            ["endpoint", "method", "status"],
            registry=self.registry,
        )
        self.auth_failures = Counter(
            "ggnet_api_auth_failures",
            "Failed authentications by reason",
            ["reason"],
            registry=self.registry,
        )
        for reason in ("missing", "malformed", "invalid", "forbidden", "rate_limited"):
            self.auth_failures.labels(reason=reason)
        # (the Sample object, its rendered block): the object itself is the key, so a
        # new collector run always misses even if Python reuses an id().
        self._sample_block: tuple[Any, bytes] | None = None
        # ((stats generation, inventory Snapshot), the rendered stats families).
        self._stats_block: tuple[tuple[int, Any], bytes] | None = None
        self._lock = threading.Lock()

    def sample_block(self, sample) -> bytes:
        cached = self._sample_block
        if cached is not None and cached[0] is sample:
            return cached[1]
        with self._lock:  # concurrent scrapes of a new sample render it once
            cached = self._sample_block
            if cached is None or cached[0] is not sample:
                cached = (sample, render_sample(sample).encode())
                self._sample_block = cached
        return cached[1]

    def stats_block(self, snap) -> bytes:
        """The stats families, rendered again only when the generation or the inventory
        snapshot moved since the last scrape."""
        db = self.ext.db
        cached = self._stats_block
        if cached is not None and _same(cached[0], _generation(db), snap):
            return cached[1]
        with self._lock:
            cached = self._stats_block
            if cached is not None and _same(cached[0], _generation(db), snap):
                return cached[1]
            conn = db.conn()
            # One read transaction: the generation is the one of the rows read, so a
            # write committed meanwhile moves it past what is cached here.
            own = not conn.in_transaction
            if own:
                conn.execute("BEGIN")
            try:
                key = (_generation(db), snap)
                cached = (key, render_stats(db, self.ext.live, snap).encode())
            finally:
                if own:
                    conn.execute("COMMIT")
            self._stats_block = cached
        return cached[1]

    def exposition(self) -> bytes:
        live = self.ext.live
        snap, sample = live.snapshot, live.sample
        return b"".join(
            (
                generate_latest(self.registry),
                self.stats_block(snap),
                render_discovered(self.ext.db).encode(),
                self.sample_block(sample),
            )
        )


def _generation(db) -> int:
    return db.conn().execute("SELECT generation FROM stats_state").fetchone()[0]


def _same(key: tuple[int, Any], generation: int, snap) -> bool:
    return key[0] == generation and key[1] is snap
