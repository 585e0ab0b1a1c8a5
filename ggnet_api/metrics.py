"""/metrics: Prometheus exposition of real values only.

Counts and histograms of jobs and boots are read from SQLite at scrape time (a few
aggregate queries), so they survive restarts and never disagree with the API's own
answers.  What needs a subprocess (zfs, tgtadm) is read by Live's collector thread on
an interval and only copied here: a scrape never forks.  Request and authentication
counters live in this process (one gunicorn worker, see serve_cmd).
"""

from __future__ import annotations

from typing import Any

from prometheus_client import CollectorRegistry, Counter, generate_latest
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
)

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


def _histogram(db, table: str, value: str, where: str, buckets, group: str | None):
    """{group value: (bucket counts cumulative, count, sum)} in one query."""
    cols = ", ".join(
        f"SUM(CASE WHEN {value} <= {b} THEN 1 ELSE 0 END) AS b{i}" for i, b in enumerate(buckets)
    )
    key = f"{group} AS g, " if group else "'' AS g, "
    sql = f"SELECT {key}{cols}, COUNT(*) AS n, COALESCE(SUM({value}), 0) AS s FROM {table} WHERE {where}"
    if group:
        sql += f" GROUP BY {group}"
    out = {}
    for row in db.query(sql):
        if not row["n"]:
            continue
        out[row["g"]] = (
            [row[f"b{i}"] or 0 for i in range(len(buckets))],
            row["n"],
            float(row["s"]),
        )
    return out


class ApiCollector:
    def __init__(self, ext):
        self.ext = ext

    def collect(self):
        db, live = self.ext.db, self.ext.live

        jobs = CounterMetricFamily(
            "ggnet_jobs", "Finished jobs by playbook and result", labels=["playbook", "result"]
        )
        for row in db.query(
            "SELECT playbook, state, COUNT(*) AS n FROM jobs WHERE finished IS NOT NULL GROUP BY playbook, state"
        ):
            jobs.add_metric([row["playbook"], row["state"]], row["n"])
        yield jobs

        active = GaugeMetricFamily("ggnet_jobs_active", "Jobs queued or running", labels=["state"])
        counts = {
            r["state"]: r["n"]
            for r in db.query(
                "SELECT state, COUNT(*) AS n FROM jobs WHERE state IN ('queued', 'running') GROUP BY state"
            )
        }
        for state in ("queued", "running"):
            active.add_metric([state], counts.get(state, 0))
        yield active

        hist = HistogramMetricFamily(
            "ggnet_job_duration_seconds", "Duration of finished jobs", labels=["playbook"]
        )
        for playbook, (cum, n, total) in _histogram(
            db,
            "jobs",
            "(finished - started)",
            "finished IS NOT NULL AND started IS NOT NULL",
            JOB_BUCKETS,
            "playbook",
        ).items():
            hist.add_metric([playbook], _buckets(JOB_BUCKETS, cum, n), total)
        yield hist

        boots = CounterMetricFamily("ggnet_boots", "Boot requests by result", labels=["result"])
        for row in db.query("SELECT result, COUNT(*) AS n FROM boots GROUP BY result"):
            boots.add_metric([row["result"]], row["n"])
        yield boots

        bh = HistogramMetricFamily(
            "ggnet_boot_duration_seconds",
            "From the boot request to the last stage reported (finished boots), by image",
            labels=["image"],
        )
        for image, (cum, n, total) in sorted(
            _histogram(
                db,
                "boots",
                "duration",
                "duration IS NOT NULL AND result = 'ok'",
                BOOT_BUCKETS,
                "COALESCE(image, '')",
            ).items()
        ):
            bh.add_metric([image], _buckets(BOOT_BUCKETS, cum, n), total)
        yield bh

        per = CounterMetricFamily(
            "ggnet_machine_boots",
            "Boot requests of each inventory machine by result",
            labels=["client", "result"],
        )
        for row in db.query(
            "SELECT client, result, COUNT(*) AS n FROM boots "
            "WHERE client IS NOT NULL GROUP BY client, result ORDER BY client, result"
        ):
            per.add_metric([row["client"], row["result"]], row["n"])
        yield per

        last = GaugeMetricFamily(
            "ggnet_machine_last_boot_duration_seconds",
            "Duration of each machine's latest finished boot",
            labels=["client"],
        )
        for row in db.query(
            "SELECT b.client, b.duration FROM boots b JOIN (SELECT client, MAX(id) AS id "
            "FROM boots WHERE client IS NOT NULL AND result = 'ok' AND duration IS NOT NULL "
            "GROUP BY client) l ON b.id = l.id ORDER BY b.client"
        ):
            last.add_metric([row["client"]], float(row["duration"]))
        yield last

        snap = live.snapshot
        clients = GaugeMetricFamily(
            "ggnet_clients", "Clients of the inventory by state", labels=["state"]
        )
        for state, n in sorted(live.client_states().items()):
            clients.add_metric([state], n)
        yield clients

        disc = GaugeMetricFamily(
            "ggnet_discovered_machines", "Unknown machines waiting for approval"
        )
        disc.add_metric(
            [], db.one("SELECT COUNT(*) AS n FROM discovered WHERE state = 'discovered'")["n"]
        )
        yield disc

        inv = GaugeMetricFamily(
            "ggnet_inventory_loaded_timestamp_seconds", "When the inventory was last loaded"
        )
        inv.add_metric([], snap.loaded_at)
        yield inv

        sample = live.sample
        if sample.writeback_bytes is not None:
            wb = GaugeMetricFamily(
                "ggnet_writeback_bytes", "Bytes written to a client's writeback", labels=["client"]
            )
            for name, size in sorted(sample.writeback_bytes.items()):
                wb.add_metric([name], size)
            yield wb
        if sample.pools:
            size = GaugeMetricFamily("ggnet_pool_size_bytes", "Pool size", labels=["pool"])
            free = GaugeMetricFamily("ggnet_pool_free_bytes", "Pool free space", labels=["pool"])
            for pool, (total, avail) in sorted(sample.pools.items()):
                size.add_metric([pool], total)
                free.add_metric([pool], avail)
            yield size
            yield free
        if sample.traffic is not None:
            rd = CounterMetricFamily(
                "ggnet_iscsi_read_bytes",
                "Bytes a client read from its iSCSI target (LIO), since the API started",
                labels=["client"],
            )
            wr = CounterMetricFamily(
                "ggnet_iscsi_write_bytes",
                "Bytes a client wrote to its iSCSI target (LIO), since the API started",
                labels=["client"],
            )
            for name, (r, w) in sorted(sample.traffic.items()):
                rd.add_metric([name], r)
                wr.add_metric([name], w)
            yield rd
            yield wr
        if sample.sessions is not None:
            sess = GaugeMetricFamily("ggnet_iscsi_sessions", "Logged-in iSCSI initiators")
            sess.add_metric([], sum(len(v) for v in sample.sessions.values()))
            yield sess
        errors = GaugeMetricFamily(
            "ggnet_collector_errors",
            "1 when the last collection of a source failed",
            labels=["source"],
        )
        for source in ("storage", "iscsi"):
            errors.add_metric([source], 1 if source in sample.errors else 0)
        yield errors
        if sample.at:
            at = GaugeMetricFamily(
                "ggnet_collector_last_run_timestamp_seconds", "When the collector last ran"
            )
            at.add_metric([], sample.at)
            yield at


def _buckets(bounds, cum, n):
    return [(str(float(b)), c) for b, c in zip(bounds, cum, strict=True)] + [("+Inf", n)]


class Metrics:
    def __init__(self, ext: Any):
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
        self.registry.register(ApiCollector(ext))

    def exposition(self) -> bytes:
        return generate_latest(self.registry)
