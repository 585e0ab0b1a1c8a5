"""/metrics: Prometheus exposition of real values only.

Counts and histograms of jobs and boots come from SQLite, so they survive restarts and
never disagree with the API's own answers: from the stats tables that db.py's triggers
keep (a table the size of the room, never the boot history).  What needs a subprocess
(zfs, tgtadm) is read by the collector thread on an interval and only copied here:
a scrape never forks.  Request and authentication counters live in this process (one
gunicorn worker, see ggnet_cli/serve.py).

With a room of 1,000 PCs the exposition is ~6,000 lines, most of them per-client
series.  prometheus_client's generic formatting (a Sample object, label-name
validation and escaping for every line) cost two thirds of a scrape, so the families
read from SQLite and the collector's sample are written here as text by _Text, a small
writer of the text format (version 0.0.4): HELP and TYPE once per family, `_total` on
counters, label values escaped.  Both big blocks are rendered only when their source
changed: the collector's once per Sample object (the collector swaps the Sample
whole, never mutates it), the stats once per stats generation (every change to them moves it) and
inventory snapshot.  prometheus_client keeps the in-process counters.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Iterable
from typing import Any

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Histogram,
    ProcessCollector,
    generate_latest,
)

from ggnet_api.boot_service import client_state
from ggnet_api.db import instrument, stats
from ggnet_api.db.stats import BOOT_BUCKETS, JOB_BUCKETS, SESSION_BUCKETS
from ggnet_api.wakes import VIA, WAKE_BUCKETS

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
        head, esc, out = f'{name}{{{label}="', escape_label, self.parts.append
        for k, v in items:
            f = float(v)
            # f - f is 0 only for a finite f: number()'s call saved on 3,000 lines.
            out(f'{head}{esc(k)}"}} {f!r}\n' if f - f == 0 else f'{head}{esc(k)}"}} {number(f)}\n')

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


# -- what is read from SQLite (db/stats.py) ------------------------------------------------


def _histogram(rows, buckets) -> list[tuple[Any, tuple[list[int], int, float]]]:
    """[(group, (cumulative bucket counts, count, sum))] from stats rows of
    (group, first bucket, n, total), sorted by group."""
    acc: dict[Any, tuple[list[int], list[float]]] = {}
    for g, b, n, s in rows:
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


def _small_families(db) -> str:
    """Jobs and the boot totals: a few rows, read whole at every render."""
    t = _Text()
    name = t.family("ggnet_jobs", "counter", "Finished jobs by playbook and result")
    t.samples(name, ("playbook", "result"), stats.job_counts(db))

    name = t.family("ggnet_jobs_active", "gauge", "Jobs queued or running")
    counts = stats.active_jobs(db)
    t.samples(name, ("state",), [(s, counts.get(s, 0)) for s in ("queued", "running")])

    name = t.family("ggnet_job_duration_seconds", "histogram", "Duration of finished jobs")
    t.histogram(
        name, "playbook", JOB_BUCKETS, _histogram(stats.job_duration_buckets(db), JOB_BUCKETS)
    )

    name = t.family("ggnet_boots", "counter", "Boot requests by result")
    t.samples(name, ("result",), stats.boot_results(db))

    name = t.family(
        "ggnet_boot_duration_seconds",
        "histogram",
        "From the boot request to the last stage reported (finished boots), by image",
    )
    t.histogram(
        name, "image", BOOT_BUCKETS, _histogram(stats.boot_duration_buckets(db), BOOT_BUCKETS)
    )

    name = t.family(
        "ggnet_boot_session_duration_seconds",
        "histogram",
        "How long a machine stayed booted: from an ok boot to its next boot or to its "
        "iSCSI target left without an initiator (finished sessions)",
    )
    sessions = _histogram(stats.boot_session_buckets(db), SESSION_BUCKETS)
    cum, n, total = sessions[0][1] if sessions else ([0] * len(SESSION_BUCKETS), 0, 0.0)
    les = [number(b) for b in SESSION_BUCKETS] + ["+Inf"]
    t.samples(f"{name}_bucket", ("le",), zip(les, [*cum, n], strict=True))
    t.samples(f"{name}_count", (), [(n,)])
    t.samples(f"{name}_sum", (), [(total,)])
    return t.text()


class _Lines:
    """One per-machine family kept as a line per key, patched from the changed rows."""

    def __init__(self) -> None:
        self.lines: dict[Any, str] = {}
        self._order: list | None = []

    def set(self, key, line: str | None) -> None:
        if line is None:
            if self.lines.pop(key, None) is not None:
                self._order = None
            return
        if key not in self.lines:
            self._order = None
        self.lines[key] = line

    def text(self) -> str:
        if self._order is None:
            self._order = sorted(self.lines)
        return "".join(map(self.lines.__getitem__, self._order))


class StatsRenderer:
    """The families read from the stats tables (db.py's triggers keep them): nothing
    here changes unless stats_state.generation does.  The per-machine families are
    patched from the rows whose `gen` is past the last render, so a scrape during a
    boot storm formats the machines that booted, not the room."""

    MACHINE_BOOTS = "ggnet_machine_boots_total"
    LAST_DURATION = "ggnet_machine_last_boot_duration_seconds"

    def __init__(self) -> None:
        self.generation = -1
        self.machine_boots = _Lines()
        self.last_duration = _Lines()
        # Clients by state (what count_client_states counts), kept per MAC: the MACs
        # whose latest boot changed are counted again, the room only with a new snapshot.
        self.snap: Any = None
        self.clients_of: dict[str, list[dict]] = {}
        self.state_of: dict[str, list[str]] = {}
        self.states: dict[str, int] = {}

    def _client_states(self, db, snap, since: int) -> None:
        if snap is not self.snap:
            self.snap, self.clients_of, self.state_of, self.states = snap, {}, {}, {}
            for c in snap.clients.values():
                self.clients_of.setdefault(c["mac"], []).append(c)
            last = db.last_results()
            changed: Iterable[tuple[str, Any]] = [(mac, last.get(mac)) for mac in self.clients_of]
        else:
            changed = stats.last_results_since(db, since)
        for mac, result in changed:  # result None: no boot (left) of that MAC
            clients = self.clients_of.get(mac)
            if clients is None:
                continue
            for old in self.state_of.get(mac, ()):
                self.states[old] -= 1
            last_boot = None if result is None else {"result": result}
            self.state_of[mac] = [client_state(c, last_boot) for c in clients]
            for new in self.state_of[mac]:
                self.states[new] = self.states.get(new, 0) + 1

    def render(self, db, snap, generation: int) -> str:
        """Call within one read transaction, `generation` read in it."""
        since, esc, out = self.generation, escape_label, []
        for client, result, n in stats.machine_boots_since(db, since):
            self.machine_boots.set(
                (client, result),
                f'{self.MACHINE_BOOTS}{{client="{esc(client)}",result="{esc(result)}"}} '
                f"{float(n)!r}\n"
                if n > 0
                else None,
            )
        for client, duration in stats.last_ok_durations_since(db, since):
            self.last_duration.set(
                client,
                None
                if duration is None
                else f'{self.LAST_DURATION}{{client="{esc(client)}"}} {number(duration)}\n',
            )
        self._client_states(db, snap, since)
        self.generation = generation

        out.append(_small_families(db))
        t = _Text()
        t.family(
            "ggnet_machine_boots", "counter", "Boot requests of each inventory machine by result"
        )
        t.parts.append(self.machine_boots.text())
        t.family(
            "ggnet_machine_last_boot_duration_seconds",
            "gauge",
            "Duration of each machine's latest finished boot",
        )
        t.parts.append(self.last_duration.text())
        name = t.family("ggnet_clients", "gauge", "Clients of the inventory by state")
        t.samples(name, ("state",), sorted((k, n) for k, n in self.states.items() if n))
        name = t.family(
            "ggnet_inventory_loaded_timestamp_seconds",
            "gauge",
            "When the inventory was last loaded",
        )
        t.samples(name, (), [(snap.loaded_at,)])
        out.append(t.text())
        return "".join(out)


def render_discovered(db) -> str:
    """Read at every scrape: discovered rows change without moving the stats
    generation, and the table is bounded (max_discovered)."""
    t = _Text()
    name = t.family("ggnet_discovered_machines", "gauge", "Unknown machines waiting for approval")
    t.samples(name, (), stats.waiting_discovered(db))
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
    if sample.targets_total is not None:
        name = t.family(
            "ggnet_iscsi_targets", "gauge", "iSCSI targets the inventory's clients have"
        )
        t.samples(name, (), [(sample.targets_total,)])
        name = t.family(
            "ggnet_iscsi_targets_active", "gauge", "iSCSI targets with a logged-in initiator"
        )
        t.samples(name, (), [(sample.targets_active or 0,)])
    if sample.target_stats is not None:
        _target_stats(t, sample.target_stats)
    if sample.storage_counts is not None:
        for key, name, doc in (
            ("images", "ggnet_storage_images", "Images in the pool"),
            ("versions", "ggnet_storage_image_versions", "Versions of the pool's images"),
            ("snapshots", "ggnet_storage_snapshots", "ZFS snapshots below the images root"),
        ):
            t.samples(t.family(name, "gauge", doc), (), [(sample.storage_counts.get(key, 0),)])
    if sample.versions and "storage" not in sample.errors:
        name = t.family(
            "ggnet_image_version_state",
            "gauge",
            "1 for each image version in its state (candidate, tested, canary, promoted, rejected)",
        )
        t.samples(
            name,
            ("image", "version", "state"),
            [
                (image, v["name"], v.get("state") or "promoted", 1)
                for image, versions in sorted(sample.versions.items())
                for v in versions
            ],
        )
    if sample.dnsmasq is not None:
        _dnsmasq(t, sample.dnsmasq)
    if sample.leases is not None:
        name = t.family(
            "ggnet_dhcp_leases_active", "gauge", "Unexpired leases in dnsmasq's lease file"
        )
        t.samples(name, (), [(sample.leases,)])
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


def _target_stats(t: _Text, rows: list[list]) -> None:
    """LIO's per-target counters: rows of [client, series, label, value], a line per row
    written here (a room's 1,000 targets: the generic samples() cost 4 us a line)."""
    esc, out = escape_label, t.parts.append
    for series, label, name, doc in (
        ("logins", "", "ggnet_iscsi_logins", "Accepted iSCSI logins to a client's target (LIO)"),
        (
            "login_failures",
            "reason",
            "ggnet_iscsi_login_failures",
            "Refused iSCSI logins to a client's target by reason (LIO)",
        ),
        ("errors", "kind", "ggnet_iscsi_errors", "iSCSI session errors of a client's target (LIO)"),
    ):
        name = t.family(name, "counter", doc)
        for client, s, lv, v in rows:
            if s != series:
                continue
            second = f',{label}="{lv}"' if label else ""
            out(f'{name}{{client="{esc(client)}"{second}}} {number(v)}\n')


def _dnsmasq(t: _Text, rows: dict[str, list[list]]) -> None:
    """DnsmasqCounters.rows(): counted from dnsmasq's log since the API started."""
    for key, name, labels, doc in (
        ("dhcp", "ggnet_dhcp_messages", ("type",), "DHCP messages dnsmasq logged, by type"),
        ("dhcp_errors", "ggnet_dhcp_errors", ("kind",), "DHCP requests refused, by reason"),
        ("tftp_requests", "ggnet_tftp_requests", ("file",), "Finished TFTP transfers by file"),
        ("tftp_errors", "ggnet_tftp_errors", ("file", "kind"), "TFTP errors by file and kind"),
        ("tftp_bytes", "ggnet_tftp_sent_bytes", ("file",), "Bytes of boot files sent by TFTP"),
    ):
        t.samples(t.family(name, "counter", doc), labels, rows.get(key, []))


def render_database() -> str:
    """The API's own SQLite statements (db/instrument.py): a few lines, every scrape."""
    queries, errors, cum, count, total = instrument.STATS.snapshot()
    t = _Text()
    name = t.family("ggnet_api_db_queries", "counter", "SQLite statements run, by statement")
    t.samples(name, ("statement",), sorted(queries.items()))
    name = t.family("ggnet_api_db_errors", "counter", "SQLite statements that failed, by error")
    t.samples(name, ("error",), sorted(errors.items()))
    name = t.family(
        "ggnet_api_db_query_duration_seconds", "histogram", "Time of a statement's execute call"
    )
    les = [number(b) for b in instrument.BUCKETS] + ["+Inf"]
    t.samples(f"{name}_bucket", ("le",), zip(les, [*cum, count], strict=True))
    t.samples(f"{name}_count", (), [(count,)])
    t.samples(f"{name}_sum", (), [(total,)])
    return t.text()


def render_tracing(tracing: Any) -> str:
    """The tracing's own counts (tracing on only): spans written or sent, and spans
    dropped by reason (the queue was full, the export failed, a span too large)."""
    exported, dropped = tracing.stats()
    t = _Text()
    name = t.family(
        "ggnet_api_trace_spans_exported",
        "counter",
        "Spans written to the trace file or sent over OTLP",
    )
    t.samples(name, (), [(exported,)])
    name = t.family("ggnet_api_trace_spans_dropped", "counter", "Spans dropped, by reason")
    t.samples(name, ("reason",), sorted(dropped.items()))
    return t.text()


class Metrics:
    def __init__(self, ext: Any):
        self.ext = ext
        self.registry = CollectorRegistry(auto_describe=False)
        # process_start_time_seconds, CPU, memory and descriptors (Linux /proc).
        ProcessCollector(registry=self.registry)
        self.started = time.time()
        # Persisted in SQLite: a restart's cause (crash, upgrade, systemd) does not
        # matter, and the count survives the restart that it counts.
        self.restarts = ext.db.record_start() - 1
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
        self.boot_foreign = Counter(
            "ggnet_boot_foreign_requests",
            "Requests for a known PC's boot script from an address not the PC's own",
            registry=self.registry,
        )
        self.boot_rate_limited = Counter(
            "ggnet_boot_rate_limited",
            "Boot-path requests refused (429) by the rate limit per source or per MAC",
            ["by"],
            registry=self.registry,
        )
        for by in ("source", "mac"):
            self.boot_rate_limited.labels(by=by)
        self.rollout_actions = Counter(
            "ggnet_rollout_actions",
            "Image jobs the rollouts started by themselves, by decision (promote, rollback)",
            ["action"],
            registry=self.registry,
        )
        for action in ("promote", "rollback"):
            self.rollout_actions.labels(action=action)
        self.wake_seconds = Histogram(
            "ggnet_wake_to_request_seconds",
            "From a wake's magic packet to the PC's first request that reached the server, "
            "by what it was (boot: GET /boot/<mac>; dhcp: a DHCP message in dnsmasq's log, "
            "timed when the log was read)",
            ["via"],
            buckets=WAKE_BUCKETS,
            registry=self.registry,
        )
        for via in VIA:
            self.wake_seconds.labels(via=via)
        # (the Sample object, its rendered block): the object itself is the key, so a
        # new collector run always misses even if Python reuses an id().
        self._sample_block: tuple[Any, bytes] | None = None
        # ((stats generation, inventory Snapshot), the rendered stats families).
        self._stats_block: tuple[tuple[int, Any], bytes] | None = None
        self._stats = StatsRenderer()
        self._lock = threading.Lock()

    def observe_wake(self, seconds: float, via: str) -> None:
        self.wake_seconds.labels(via=via).observe(seconds)

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
        if cached is not None and _same(cached[0], stats.generation(db), snap):
            return cached[1]
        with self._lock:
            cached = self._stats_block
            if cached is not None and _same(cached[0], stats.generation(db), snap):
                return cached[1]
            # One read transaction: the generation is the one of the rows read, so a
            # write committed meanwhile moves it past what is cached here.
            with db.reading():
                generation = stats.generation(db)
                text = self._stats.render(db, snap, generation)
                cached = ((generation, snap), text.encode())
            self._stats_block = cached
        return cached[1]

    def exposition(self) -> bytes:
        snap, sample = self.ext.inventory.snapshot, self.ext.collector.sample
        return b"".join(
            (
                generate_latest(self.registry),
                self.process_block().encode(),
                self.stats_block(snap),
                render_discovered(self.ext.db).encode(),
                self.sample_block(sample),
            )
        )

    def process_block(self) -> str:
        t = _Text()
        name = t.family("ggnet_api_uptime_seconds", "gauge", "Seconds since the API started")
        t.samples(name, (), [(time.time() - self.started,)])
        name = t.family(
            "ggnet_api_restarts",
            "counter",
            "Times the API started again with this database (every start but the first)",
        )
        t.samples(name, (), [(self.restarts,)])
        self._rollouts(t)
        text = t.text() + render_database()
        if self.ext.tracing is not None:
            text += render_tracing(self.ext.tracing)
        return text

    def _rollouts(self, t: _Text) -> None:
        """The rollouts' latest decisions: one series per image in a rollout, the
        decision (wait, pause, promote, rollback) as a label; alert on pause/rollback."""
        rollouts = getattr(self.ext, "rollouts", None)
        latest = rollouts.latest if rollouts is not None else {}
        if not any(view.get("decision") for view in latest.values()):
            return
        name = t.family(
            "ggnet_image_rollout",
            "gauge",
            "1 for each image version in canary, labelled with the rollout's decision",
        )
        t.samples(
            name,
            ("image", "version", "action"),
            [
                (image, view["canary"], view["decision"]["action"], 1)
                for image, view in sorted(latest.items())
                if view.get("decision")
            ],
        )


def _same(key: tuple[int, Any], generation: int, snap) -> bool:
    return key[0] == generation and key[1] is snap
