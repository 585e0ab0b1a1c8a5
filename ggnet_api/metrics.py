"""/metrics: Prometheus exposition of real values only.

Counts and histograms of jobs and boots are read from SQLite at scrape time (a few
aggregate queries), so they survive restarts and never disagree with the API's own
answers.  What needs a subprocess (zfs, tgtadm) is read by Live's collector thread on
an interval and only copied here: a scrape never forks.  Request and authentication
counters live in this process (one gunicorn worker, see serve_cmd).

With a room of 1,000 PCs the exposition is ~6,000 lines, most of them per-client
series.  prometheus_client's generic formatting (a Sample object, label-name
validation and escaping for every line) cost two thirds of a scrape, so the families
read from SQLite and the collector's sample are written here as text by _Text, a small
writer of the text format (version 0.0.4): HELP and TYPE once per family, `_total` on
counters, label values escaped.  The per-client block of the collector's sample
(writeback bytes, iSCSI traffic) only changes when the collector thread runs: it is
rendered once per Sample object (Live swaps the Sample whole, never mutates it) and
reused until the next one.  Everything read from SQLite is read at every scrape.
prometheus_client keeps the in-process counters (requests, authentication failures).
"""

from __future__ import annotations

import math
import threading
from typing import Any

from prometheus_client import CollectorRegistry, Counter, generate_latest

JOB_BUCKETS = (1, 5, 15, 30, 60, 120, 300, 600, 1800, 3600)
BOOT_BUCKETS = (0.5, 1, 2, 5, 10, 20, 30, 60, 120, 300)
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


def _histogram(db, table: str, value: str, where: str, buckets, group: str):
    """[(group value, (cumulative bucket counts, count, sum))] in one query, sorted.

    Each row is counted in its first bucket only (one CASE, one COUNT per group and
    bucket); the cumulative counts are summed up here."""
    first = " ".join(f"WHEN {value} <= {b} THEN {i}" for i, b in enumerate(buckets))
    sql = (
        f"SELECT {group} AS g, CASE {first} ELSE {len(buckets)} END AS b, COUNT(*), "
        f"TOTAL({value}) FROM {table} WHERE {where} GROUP BY g, b"
    )
    acc: dict[Any, tuple[list[int], list[float]]] = {}
    for g, b, n, s in db.conn().execute(sql):
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


# One pass over the boots of inventory machines: the count of each (client, result)
# and, for the `ok` group, the duration of the latest boot that has one.  SQLite takes
# a bare column (duration) from the row that gives the query's only max() its value.
MACHINE_BOOTS_SQL = (
    "SELECT client, result, COUNT(*), "
    "MAX(CASE WHEN result = 'ok' AND duration IS NOT NULL THEN id END), duration "
    "FROM boots WHERE client IS NOT NULL GROUP BY client, result ORDER BY client, result"
)


def machine_boots(db) -> tuple[list[tuple[str, str, int]], list[tuple[str, float]]]:
    """([(client, result, count)], [(client, latest ok duration)]), sorted by client."""
    counts: list[tuple[str, str, int]] = []
    last: list[tuple[str, float]] = []
    for client, result, n, last_ok, duration in db.conn().execute(MACHINE_BOOTS_SQL):
        counts.append((client, result, n))
        if last_ok is not None:
            last.append((client, duration))
    return counts, last


def _api_families(t: _Text, db, live) -> None:
    name = t.family("ggnet_jobs", "counter", "Finished jobs by playbook and result")
    t.samples(
        name,
        ("playbook", "result"),
        db.conn().execute(
            "SELECT playbook, state, COUNT(*) FROM jobs WHERE finished IS NOT NULL "
            "GROUP BY playbook, state ORDER BY playbook, state"
        ),
    )

    name = t.family("ggnet_jobs_active", "gauge", "Jobs queued or running")
    counts = dict(
        db.conn().execute(
            "SELECT state, COUNT(*) FROM jobs WHERE state IN ('queued', 'running') GROUP BY state"
        )
    )
    t.samples(name, ("state",), [(s, counts.get(s, 0)) for s in ("queued", "running")])

    name = t.family("ggnet_job_duration_seconds", "histogram", "Duration of finished jobs")
    jobs = _histogram(
        db,
        "jobs",
        "(finished - started)",
        "finished IS NOT NULL AND started IS NOT NULL",
        JOB_BUCKETS,
        "playbook",
    )
    t.histogram(name, "playbook", JOB_BUCKETS, jobs)

    name = t.family("ggnet_boots", "counter", "Boot requests by result")
    t.samples(
        name,
        ("result",),
        db.conn().execute("SELECT result, COUNT(*) FROM boots GROUP BY result ORDER BY result"),
    )

    name = t.family(
        "ggnet_boot_duration_seconds",
        "histogram",
        "From the boot request to the last stage reported (finished boots), by image",
    )
    boots = _histogram(
        db,
        "boots",
        "duration",
        "duration IS NOT NULL AND result = 'ok'",
        BOOT_BUCKETS,
        "COALESCE(image, '')",
    )
    t.histogram(name, "image", BOOT_BUCKETS, boots)

    counts_by_client, last = machine_boots(db)
    name = t.family(
        "ggnet_machine_boots", "counter", "Boot requests of each inventory machine by result"
    )
    t.samples(name, ("client", "result"), counts_by_client)
    name = t.family(
        "ggnet_machine_last_boot_duration_seconds",
        "gauge",
        "Duration of each machine's latest finished boot",
    )
    t.one_label(name, "client", last)

    name = t.family("ggnet_clients", "gauge", "Clients of the inventory by state")
    t.samples(name, ("state",), sorted(live.client_states().items()))

    name = t.family("ggnet_discovered_machines", "gauge", "Unknown machines waiting for approval")
    t.samples(
        name,
        (),
        [
            db.conn()
            .execute("SELECT COUNT(*) FROM discovered WHERE state = 'discovered'")
            .fetchone()
        ],
    )

    name = t.family(
        "ggnet_inventory_loaded_timestamp_seconds", "gauge", "When the inventory was last loaded"
    )
    t.samples(name, (), [(live.snapshot.loaded_at,)])


def render_sample(sample) -> str:
    """The families copied from one collector Sample (the per-client block among them)."""
    t = _Text()
    if sample.writeback_bytes is not None:
        name = t.family("ggnet_writeback_bytes", "gauge", "Bytes written to a client's writeback")
        t.one_label(name, "client", sorted(sample.writeback_bytes.items()))
    if sample.pools:
        pools = sorted(sample.pools.items())
        name = t.family("ggnet_pool_size_bytes", "gauge", "Pool size")
        t.one_label(name, "pool", [(p, size) for p, (size, _free) in pools])
        name = t.family("ggnet_pool_free_bytes", "gauge", "Pool free space")
        t.one_label(name, "pool", [(p, free) for p, (_size, free) in pools])
    if sample.traffic is not None:
        traffic = sorted(sample.traffic.items())
        name = t.family(
            "ggnet_iscsi_read_bytes",
            "counter",
            "Bytes a client read from its iSCSI target (LIO), since the API started",
        )
        t.one_label(name, "client", [(c, r) for c, (r, _w) in traffic])
        name = t.family(
            "ggnet_iscsi_write_bytes",
            "counter",
            "Bytes a client wrote to its iSCSI target (LIO), since the API started",
        )
        t.one_label(name, "client", [(c, w) for c, (_r, w) in traffic])
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

    def exposition(self) -> bytes:
        live = self.ext.live
        sample = live.sample
        t = _Text()
        _api_families(t, self.ext.db, live)
        return b"".join(
            (generate_latest(self.registry), t.text().encode(), self.sample_block(sample))
        )
