"""/metrics' own text writer against prometheus_client: what its parser reads back from
our exposition must be what prometheus_client's generate_latest would have said about
the same data (names, types, HELP, labels, values), and the collector's per-client
block must follow every new Sample while SQLite-backed families stay live."""

from __future__ import annotations

import math

import pytest
from ggnet_testing.api_project import STORAGE, hosts_yml, inventory_app, iscsi_yml
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily
from prometheus_client.parser import text_string_to_metric_families

from ggnet_api import metrics as m
from ggnet_api.boot_service import count_client_states
from ggnet_api.collector import Sample
from ggnet_api.db import stats

pytestmark = pytest.mark.unit

HOSTS = hosts_yml(
    """\
    hosts:
      pc-01: {ggnet_mac: "52:54:00:bb:00:01"}
      pc-02: {ggnet_mac: "52:54:00:bb:00:02"}
      pc-03: {ggnet_mac: "52:54:00:bb:00:03", ggnet_keep_writeback: true}
    """,
    server="",
)
ALL = (
    "ggnet_network: {interface: eth1, server_ip: 10.213.0.10, subnet: 10.213.0.0/24, "
    "dhcp_mode: proxy}\n"
    + STORAGE
    + iscsi_yml(None, backend="lio")
    + "ggnet_images: {win11: {size: 64M, kind: system}, lin: {size: 64M, kind: system}}\n"
    + "ggnet_image: win11\n"
)
WEIRD = 'we"ird\\name\nwith {braces}, = and é'
# (mac, client, result, duration, image): ids ascend in this order.
BOOTS = [
    ("52:54:00:bb:00:01", "pc-01", "ok", 5.0, "win11"),
    ("52:54:00:bb:00:01", "pc-01", "ok", 10.0, "win11"),  # on a bucket bound
    ("52:54:00:bb:00:01", "pc-01", "ok", None, "win11"),  # ok without a duration
    ("52:54:00:bb:00:01", "pc-01", "failed", 0.0, "win11"),
    ("52:54:00:bb:00:02", "pc-02", "timeout", None, "lin"),
    ("52:54:00:bb:00:02", "pc-02", "ok", 400.0, "lin"),  # beyond the last bucket
    ("52:54:00:bb:00:99", None, "ok", 0.0, None),  # discovery of an unknown PC
]
# (id, playbook, state, started, finished)
JOBS = [
    ("j1", "site.yml", "successful", 100.0, 130.0),
    ("j2", "site.yml", "failed", 100.0, 101.0),
    ("j3", WEIRD, "successful", 100.0, 5000.0),
    ("j4", "site.yml", "running", 100.0, None),
    ("j5", "site.yml", "queued", None, None),
]


def parse(text: str) -> dict:
    """{family: (type, help, {(sample name, sorted labels): value})}"""
    out = {}
    for fam in text_string_to_metric_families(text):
        assert fam.name not in out, f"{fam.name} twice"
        samples = {}
        for s in fam.samples:
            key = (s.name, tuple(sorted(s.labels.items())))
            assert key not in samples, f"{key} twice"
            samples[key] = s.value
        out[fam.name] = (fam.type, fam.documentation, samples)
    return out


def assert_same(ours: dict, reference: dict) -> None:
    assert sorted(ours) == sorted(reference)
    for name, (kind, doc, samples) in reference.items():
        assert ours[name][:2] == (kind, doc), name
        assert sorted(ours[name][2]) == sorted(samples), name
        for key, value in samples.items():
            assert math.isclose(ours[name][2][key], value, rel_tol=1e-12), (key, value)


def test_writer_round_trips_through_the_parser():
    t = m._Text()
    name = t.family("x_events", "counter", "Help with a \\ backslash\nand a newline")
    t.samples(name, ("kind", "result"), [(WEIRD, "ok", 3), ("plain", "", 2**40)])
    name = t.family("x_level", "gauge", "Unlabelled")
    t.samples(name, (), [(0.1 + 0.2,)])
    name = t.family("x_per_client", "gauge", "One label")
    t.one_label(name, "client", [("a", 1.5), (WEIRD, -2), ("big", 123456789012.0)])
    name = t.family("x_odd", "gauge", "Non-finite values")
    t.samples(name, ("v",), [("nan", math.nan), ("inf", math.inf), ("ninf", -math.inf)])
    name = t.family("x_seconds", "histogram", "A histogram")
    t.histogram(name, "image", (0.5, 10), [(WEIRD, ([1, 2], 3, 20.5))])
    name = t.family("x_empty", "counter", "No samples yet")
    text = t.text()

    got = parse(text)
    nan = got["x_odd"][2].pop(("x_odd", (("v", "nan"),)))
    assert math.isnan(nan)
    assert got == {
        "x_events": (
            "counter",
            "Help with a \\ backslash\nand a newline",
            {
                ("x_events_total", (("kind", WEIRD), ("result", "ok"))): 3.0,
                ("x_events_total", (("kind", "plain"), ("result", ""))): float(2**40),
            },
        ),
        "x_level": ("gauge", "Unlabelled", {("x_level", ()): 0.1 + 0.2}),
        "x_per_client": (
            "gauge",
            "One label",
            {
                ("x_per_client", (("client", "a"),)): 1.5,
                ("x_per_client", (("client", WEIRD),)): -2.0,
                ("x_per_client", (("client", "big"),)): 123456789012.0,
            },
        ),
        "x_odd": (
            "gauge",
            "Non-finite values",
            {
                ("x_odd", (("v", "inf"),)): math.inf,
                ("x_odd", (("v", "ninf"),)): -math.inf,
            },
        ),
        "x_seconds": (
            "histogram",
            "A histogram",
            {
                ("x_seconds_bucket", (("image", WEIRD), ("le", "0.5"))): 1.0,
                ("x_seconds_bucket", (("image", WEIRD), ("le", "10.0"))): 2.0,
                ("x_seconds_bucket", (("image", WEIRD), ("le", "+Inf"))): 3.0,
                ("x_seconds_count", (("image", WEIRD),)): 3.0,
                ("x_seconds_sum", (("image", WEIRD),)): 20.5,
            },
        ),
        "x_empty": ("counter", "No samples yet", {}),
    }
    # HELP and TYPE once per family, counters' series end in _total.
    assert text.count("# TYPE x_events_total counter\n") == 1
    assert text.count("# HELP ") == text.count("# TYPE ") == 6


@pytest.fixture
def ext(tmp_path):
    app = inventory_app(tmp_path, HOSTS, ALL)
    e = app.extensions["ggnet"]
    with e.db.tx() as c:
        for i, (mac, client, result, duration, image) in enumerate(BOOTS):
            c.execute(
                "INSERT INTO boots (mac, client, kind, started, stage_at, result, duration, image) "
                "VALUES (?, ?, 'normal', ?, ?, ?, ?, ?)",
                (mac, client, 1000.0 + i, 1000.0 + i, result, duration, image),
            )
        for job_id, playbook, state, started, finished in JOBS:
            c.execute(
                "INSERT INTO jobs (id, kind, playbook, state, created, started, finished) "
                "VALUES (?, 'converge', ?, ?, 1.0, ?, ?)",
                (job_id, playbook, state, started, finished),
            )
    e.collector.sample = Sample(
        at=1234.5,
        writeback_bytes={"pc-02": 2**33 + 1, "pc-01": 4096},
        pools={"ggtest": (2**40, 2**39)},
        sessions={"iqn.a": ["i1", "i2"], "iqn.b": []},
        traffic={"pc-01": (1700, 450), "pc-02": (0, 0)},
        errors={"iscsi": "tgtadm: boom"},
    )
    yield e
    e.close()


def reference(e) -> bytes:
    """The fixture's families as prometheus_client renders them, written out by hand
    from BOOTS, JOBS and the sample (not from SQL)."""

    class Fixture:
        def collect(self):
            jobs = CounterMetricFamily(
                "ggnet_jobs", "Finished jobs by playbook and result", labels=["playbook", "result"]
            )
            jobs.add_metric(["site.yml", "successful"], 1)
            jobs.add_metric(["site.yml", "failed"], 1)
            jobs.add_metric([WEIRD, "successful"], 1)
            yield jobs
            active = GaugeMetricFamily(
                "ggnet_jobs_active", "Jobs queued or running", labels=["state"]
            )
            active.add_metric(["queued"], 1)
            active.add_metric(["running"], 1)
            yield active
            jd = HistogramMetricFamily(
                "ggnet_job_duration_seconds", "Duration of finished jobs", labels=["playbook"]
            )
            # site.yml: 30 s and 1 s; WEIRD: 4900 s (beyond the last bucket).
            cum = [1, 1, 1, 2, 2, 2, 2, 2, 2, 2]
            jd.add_metric(["site.yml"], _b(m.JOB_BUCKETS, cum, 2), 31.0)
            jd.add_metric([WEIRD], _b(m.JOB_BUCKETS, [0] * 10, 1), 4900.0)
            yield jd
            boots = CounterMetricFamily("ggnet_boots", "Boot requests by result", labels=["result"])
            boots.add_metric(["ok"], 5)
            boots.add_metric(["failed"], 1)
            boots.add_metric(["timeout"], 1)
            yield boots
            bd = HistogramMetricFamily(
                "ggnet_boot_duration_seconds",
                "From the boot request to the last stage reported (finished boots), by image",
                labels=["image"],
            )
            bd.add_metric([""], _b(m.BOOT_BUCKETS, [1] * 10, 1), 0.0)
            bd.add_metric(["lin"], _b(m.BOOT_BUCKETS, [0] * 10, 1), 400.0)
            bd.add_metric(["win11"], _b(m.BOOT_BUCKETS, [0, 0, 0, 1, 2, 2, 2, 2, 2, 2], 2), 15.0)
            yield bd
            bs = HistogramMetricFamily(
                "ggnet_boot_session_duration_seconds",
                "How long a machine stayed booted: from an ok boot to its next boot or to its "
                "iSCSI target left without an initiator (finished sessions)",
            )
            # pc-01's three ok boots, each ended by the next boot a second later; pc-02's
            # and the unknown PC's ok boots are still on.
            bs.add_metric([], _b(m.SESSION_BUCKETS, [3] * 10, 3), 3.0)
            yield bs
            mb = CounterMetricFamily(
                "ggnet_machine_boots",
                "Boot requests of each inventory machine by result",
                labels=["client", "result"],
            )
            for client, result, n in [
                ("pc-01", "ok", 3),
                ("pc-01", "failed", 1),
                ("pc-02", "timeout", 1),
                ("pc-02", "ok", 1),
            ]:
                mb.add_metric([client, result], n)
            yield mb
            last = GaugeMetricFamily(
                "ggnet_machine_last_boot_duration_seconds",
                "Duration of each machine's latest finished boot",
                labels=["client"],
            )
            last.add_metric(["pc-01"], 10.0)  # the later ok boot has no duration
            last.add_metric(["pc-02"], 400.0)
            yield last
            clients = GaugeMetricFamily(
                "ggnet_clients", "Clients of the inventory by state", labels=["state"]
            )
            clients.add_metric(["booted"], 1)  # pc-02
            clients.add_metric(["failed"], 1)  # pc-01's last boot
            clients.add_metric(["maintenance"], 1)  # pc-03
            yield clients
            disc = GaugeMetricFamily(
                "ggnet_discovered_machines", "Unknown machines waiting for approval"
            )
            disc.add_metric([], 0)
            yield disc
            inv = GaugeMetricFamily(
                "ggnet_inventory_loaded_timestamp_seconds", "When the inventory was last loaded"
            )
            inv.add_metric([], e.inventory.snapshot.loaded_at)
            yield inv
            wb = GaugeMetricFamily(
                "ggnet_writeback_bytes", "Bytes written to a client's writeback", labels=["client"]
            )
            wb.add_metric(["pc-01"], 4096)
            wb.add_metric(["pc-02"], 2**33 + 1)
            yield wb
            size = GaugeMetricFamily("ggnet_pool_size_bytes", "Pool size", labels=["pool"])
            size.add_metric(["ggtest"], 2**40)
            yield size
            free = GaugeMetricFamily("ggnet_pool_free_bytes", "Pool free space", labels=["pool"])
            free.add_metric(["ggtest"], 2**39)
            yield free
            for what, verb, values in (
                ("read", "read from", (1700, 0)),
                ("write", "wrote to", (450, 0)),
            ):
                fam = CounterMetricFamily(
                    f"ggnet_iscsi_{what}_bytes",
                    f"Bytes a client {verb} its iSCSI target (LIO), since the API started",
                    labels=["client"],
                )
                fam.add_metric(["pc-01"], values[0])
                fam.add_metric(["pc-02"], values[1])
                yield fam
            sess = GaugeMetricFamily("ggnet_iscsi_sessions", "Logged-in iSCSI initiators")
            sess.add_metric([], 2)
            yield sess
            errors = GaugeMetricFamily(
                "ggnet_collector_errors",
                "1 when the last collection of a source failed",
                labels=["source"],
            )
            errors.add_metric(["storage"], 0)
            errors.add_metric(["iscsi"], 1)
            yield errors
            at = GaugeMetricFamily(
                "ggnet_collector_last_run_timestamp_seconds", "When the collector last ran"
            )
            at.add_metric([], 1234.5)
            yield at

    registry = CollectorRegistry(auto_describe=False)
    registry.register(Fixture())
    return generate_latest(e.metrics.registry) + generate_latest(registry)


def _b(bounds, cum, n):
    return [(str(float(b)), c) for b, c in zip(bounds, cum, strict=True)] + [("+Inf", n)]


def test_exposition_reads_back_as_prometheus_client_would_render_it(ext):
    ext.metrics.requests.labels(endpoint="/metrics", method="GET", status="200").inc()
    ours = ext.metrics.exposition().decode()
    assert_same(without_live(parse(ours)), without_live(parse(reference(ext).decode())))
    assert "tgtadm: boom" not in ours


def without_live(families: dict) -> dict:
    """Leave out what moves between two renders (CPU time, uptime, the statements run);
    tests/unit/test_metrics_families.py checks those."""
    live = ("process_", "ggnet_api_db_", "ggnet_api_uptime", "ggnet_api_restarts")
    return {k: v for k, v in families.items() if not k.startswith(live)}


def test_sample_block_follows_each_collector_run_and_sql_stays_live(ext):
    first = ext.metrics.exposition().decode()
    assert ext.metrics.sample_block(ext.collector.sample) is ext.metrics.sample_block(
        ext.collector.sample
    )
    # A boot between two scrapes of the same sample is counted at once.
    ext.db.add_boot("52:54:00:bb:00:02", "pc-02", "normal", result="failed", image="lin")
    second = parse(ext.metrics.exposition().decode())
    assert (
        second["ggnet_machine_boots"][2][
            ("ggnet_machine_boots_total", (("client", "pc-02"), ("result", "failed")))
        ]
        == 1.0
    )
    assert second["ggnet_clients"][2][("ggnet_clients", (("state", "failed"),))] == 2.0
    # The collector ran: the new sizes and traffic are served, the old ones gone.
    ext.collector.sample = Sample(
        at=2000.0, writeback_bytes={"pc-01": 1}, traffic={"pc-01": (9, 8)}
    )
    third = parse(ext.metrics.exposition().decode())
    assert third["ggnet_writeback_bytes"][2] == {
        ("ggnet_writeback_bytes", (("client", "pc-01"),)): 1.0
    }
    assert third["ggnet_iscsi_read_bytes"][2] == {
        ("ggnet_iscsi_read_bytes_total", (("client", "pc-01"),)): 9.0
    }
    assert "ggnet_pool_size_bytes" not in third and "ggnet_iscsi_sessions" not in third
    assert 'ggnet_writeback_bytes{client="pc-02"}' in first


# -- the stats tables (db.py's triggers) against the rows they summarise -----------------


def _expected_stats(db) -> dict:
    """What each stats table must hold, worked out in Python from boots and jobs."""
    boots = db.query("SELECT * FROM boots ORDER BY id")
    jobs = db.query("SELECT * FROM jobs")

    def bucket(value, bounds):
        return next((i for i, b in enumerate(bounds) if value <= b), len(bounds))

    def add(acc, key, value=0.0):
        n, total = acc.get(key, (0, 0.0))
        acc[key] = (n + 1, total + value)

    counts, durations, last, last_ok, job_counts, job_durations = {}, {}, {}, {}, {}, {}
    results = {}
    for b in boots:
        add(results, (b["result"],))
        add(counts, (int(b["client"] is not None), b["client"] or "", b["result"]))
        if b["result"] == "ok" and b["duration"] is not None:
            add(durations, (b["image"] or "", bucket(b["duration"], m.BOOT_BUCKETS)), b["duration"])
            if b["client"] is not None:
                last_ok[b["client"]] = (b["id"], b["duration"])
        last[b["mac"]] = (b["id"], b["result"])
    for j in jobs:
        if j["finished"] is not None:
            add(job_counts, (j["playbook"], j["state"]))
            if j["started"] is not None:
                d = j["finished"] - j["started"]
                add(job_durations, (j["playbook"], bucket(d, m.JOB_BUCKETS)), d)
    return {
        "stats_boot_results": results,
        "stats_boot_counts": counts,
        "stats_boot_durations": durations,
        "stats_job_counts": job_counts,
        "stats_job_durations": job_durations,
        "stats_boot_last": last,
        "stats_boot_last_ok": last_ok,
    }


def _stats(db) -> dict:
    keys = {
        "stats_boot_results": "result",
        "stats_boot_counts": "known, client, result",
        "stats_boot_durations": "image, bucket",
        "stats_job_counts": "playbook, state",
        "stats_job_durations": "playbook, bucket",
    }
    out = {}
    for table, cols in keys.items():
        out[table] = {
            tuple(r[:-2]): (r[-2], r[-1])
            for r in db.conn().execute(f"SELECT {cols}, n, total FROM {table} WHERE n > 0")
        }
    out["stats_boot_last"] = {
        mac: (i, result)
        for mac, i, result in db.conn().execute(
            "SELECT mac, id, result FROM stats_boot_last WHERE id IS NOT NULL"
        )
    }
    out["stats_boot_last_ok"] = {
        c: (i, d)
        for c, i, d in db.conn().execute(
            "SELECT client, id, duration FROM stats_boot_last_ok WHERE id IS NOT NULL"
        )
    }
    return out


def assert_stats_match(db) -> None:
    got, want = _stats(db), _expected_stats(db)
    assert sorted(got) == sorted(want)
    for table, rows in want.items():
        assert sorted(got[table]) == sorted(rows), table
        for key, (a, b) in rows.items():
            ga, gb = got[table][key]
            assert ga == a, (table, key)
            if isinstance(b, float):
                assert math.isclose(gb, b, rel_tol=1e-9, abs_tol=1e-9), (table, key)
            else:
                assert gb == b, (table, key)


def _generation(db) -> int:
    return db.one("SELECT generation FROM stats_state")["generation"]


def test_stats_follow_every_insert_update_and_delete(tmp_path):
    import random

    from ggnet_api.db.database import Database

    db = Database(str(tmp_path / "api.db"))
    rng = random.Random(3)
    macs = [f"52:54:00:00:00:{i:02x}" for i in range(6)]
    clients = ["pc-a", "pc-b", WEIRD, None]
    results = ["pending", "ok", "failed", "timeout", "refused"]
    durations = [None, 0.0, 0.5, 10.0, 59.9, 301.0, 12.25]
    for _ in range(400):
        ids = [r["id"] for r in db.query("SELECT id FROM boots ORDER BY id")]
        action = rng.random()
        if action < 0.4 or not ids:
            db.execute(
                "INSERT INTO boots (mac, client, kind, started, stage_at, result, duration, image) "
                "VALUES (?, ?, 'normal', 0, 0, ?, ?, ?)",
                (
                    rng.choice(macs),
                    rng.choice(clients),
                    rng.choice(results),
                    rng.choice(durations),
                    rng.choice(["win11", "lin", None]),
                ),
            )
        elif action < 0.85:
            column, values = rng.choice(
                [
                    ("result", results),
                    ("duration", durations),
                    ("client", clients),
                    ("mac", macs),
                    ("image", ["win11", "lin", None]),
                ]
            )
            # The newest rows most often: they are the latest boot of a MAC or machine.
            target = rng.choice([*ids[-3:], *ids[-3:], *ids])
            db.execute(f"UPDATE boots SET {column} = ? WHERE id = ?", (rng.choice(values), target))
        else:
            # Deleting the newest row too: the latest boot of a MAC goes back one.
            db.execute("DELETE FROM boots WHERE id = ?", (rng.choice([max(ids), *ids]),))
        job = f"j{rng.randrange(20)}"
        started = rng.choice([None, 100.0])
        finished = rng.choice([None, 100.5, 160.0, 9000.0])
        db.execute(
            "INSERT INTO jobs (id, kind, playbook, state, created, started, finished) "
            "VALUES (?, 'converge', ?, ?, 1, ?, ?) ON CONFLICT (id) DO UPDATE SET "
            "playbook = excluded.playbook, state = excluded.state, started = excluded.started, "
            "finished = excluded.finished",
            (
                job,
                rng.choice(["site.yml", WEIRD]),
                rng.choice(["running", "successful"]),
                started,
                finished,
            ),
        )
        if rng.random() < 0.05:
            db.execute("DELETE FROM jobs WHERE id = ?", (job,))
        assert_stats_match(db)
    assert db.one("SELECT COUNT(*) AS n FROM boots")["n"] > 50


def test_stats_are_built_for_an_existing_database_and_the_generation_moves_on(tmp_path):
    from ggnet_api.db.database import Database

    path = str(tmp_path / "api.db")
    db = Database(path)
    db.add_boot("52:54:00:bb:00:01", "pc-01", "normal", result="ok", image="win11")
    db.execute("UPDATE boots SET duration = 7.5")
    before = _generation(db)
    # A database from before the stats: its rows are counted when it is opened.
    for name, kind in (
        db.conn()
        .execute(
            "SELECT name, type FROM sqlite_master WHERE name LIKE 'stats\\_%' ESCAPE '\\' "
            "ORDER BY type = 'table'"
        )
        .fetchall()
    ):
        db.execute(f"DROP {kind} {name}")
    db.execute(
        "INSERT INTO boots (mac, client, kind, started, result, duration) "
        "VALUES ('52:54:00:bb:00:02', 'pc-02', 'normal', 0, 'failed', NULL)"
    )
    again = Database(path)
    assert_stats_match(again)
    assert again.last_results() == {"52:54:00:bb:00:01": "ok", "52:54:00:bb:00:02": "failed"}
    # Other stats (another version of ggnet) are replaced, and the generation never
    # comes back to a value a running API may have cached.
    again.execute("UPDATE stats_state SET version = 'older', generation = ?", (before + 5,))
    third = Database(path)
    assert third.one("SELECT version FROM stats_state")["version"] == stats.STATS_VERSION
    assert _generation(third) > before + 5
    assert_stats_match(third)


def test_a_stage_report_moves_the_generation_a_waiting_pc_does_not(ext):
    db = ext.db
    boot = db.add_boot("52:54:00:bb:00:01", "pc-01", "normal", image="win11")
    g = _generation(db)
    db.execute("UPDATE boots SET stage_at = 5000 WHERE id = ?", (boot,))
    db.execute("UPDATE boots SET result = result WHERE id = ?", (boot,))
    assert _generation(db) == g
    db.execute("UPDATE boots SET result = 'ok', duration = 3 WHERE id = ?", (boot,))
    assert _generation(db) > g


def test_stats_block_is_reused_until_the_data_or_the_inventory_change(ext, tmp_path):
    import threading

    from ggnet_api.db.database import Database

    snap = ext.inventory.snapshot
    first = ext.metrics.stats_block(snap)
    assert ext.metrics.stats_block(snap) is first
    # A write through another connection (another thread, the CLI) is seen at once.
    other = Database(ext.db.path)
    worker = threading.Thread(
        target=other.add_boot,
        args=("52:54:00:bb:00:02", "pc-02", "normal"),
        kwargs={"result": "refused", "image": "lin"},
    )
    worker.start()
    worker.join()
    second = parse(ext.metrics.exposition().decode())
    assert (
        second["ggnet_machine_boots"][2][
            ("ggnet_machine_boots_total", (("client", "pc-02"), ("result", "refused")))
        ]
        == 1.0
    )
    assert second["ggnet_boots"][2][("ggnet_boots_total", (("result", "refused"),))] == 1.0
    # A job that starts moves the active jobs.
    ext.db.update_job("j5", state="running", started=200.0)
    third = parse(ext.metrics.exposition().decode())
    assert third["ggnet_jobs_active"][2][("ggnet_jobs_active", (("state", "running"),))] == 2.0
    # A new inventory with the same rows: its clients and load time are served.
    data = {k: getattr(snap, k) for k in snap.__dataclass_fields__}
    clients = {k: v for k, v in snap.clients.items() if k != "pc-03"}
    ext.inventory.set(type(snap)(**{**data, "clients": clients, "loaded_at": 99.0}))
    fourth = parse(ext.metrics.exposition().decode())
    assert ("ggnet_clients", (("state", "maintenance"),)) not in fourth["ggnet_clients"][2]
    assert fourth["ggnet_inventory_loaded_timestamp_seconds"][2] == {
        ("ggnet_inventory_loaded_timestamp_seconds", ()): 99.0
    }
    # Discovered machines are read at every scrape (no generation moves for them).
    ext.db.execute(
        "INSERT INTO discovered (mac, first_seen, last_seen) VALUES ('52:54:00:cc:00:01', 1, 1)"
    )
    fifth = parse(ext.metrics.exposition().decode())
    assert fifth["ggnet_discovered_machines"][2] == {("ggnet_discovered_machines", ()): 1.0}


def _fresh_stats(e) -> bytes:
    """The stats block rendered from nothing (every row read)."""
    with e.db.reading():
        generation = stats.generation(e.db)
        return m.StatsRenderer().render(e.db, e.inventory.snapshot, generation).encode()


def test_stats_block_patched_from_changed_rows_is_what_a_fresh_render_says(ext):
    import random

    rng = random.Random(11)
    db = ext.db
    clients = {"52:54:00:bb:00:01": "pc-01", "52:54:00:bb:00:02": WEIRD, "52:54:00:bb:00:03": None}
    assert ext.metrics.stats_block(ext.inventory.snapshot) == _fresh_stats(ext)
    # A machine's one ok boot: its latest duration comes, then goes when the boot fails.
    only = db.add_boot("52:54:00:bb:00:04", "pc-04", "normal", result="ok")
    db.execute("UPDATE boots SET duration = 4.25 WHERE id = ?", (only,))
    assert b'duration_seconds{client="pc-04"} 4.25' in ext.metrics.stats_block(
        ext.inventory.snapshot
    )
    db.execute("UPDATE boots SET result = 'failed' WHERE id = ?", (only,))
    assert b'client="pc-04"} 4.25' not in ext.metrics.stats_block(ext.inventory.snapshot)
    assert b'{client="pc-04",result="failed"} 1.0' in ext.metrics.stats_block(
        ext.inventory.snapshot
    )
    assert b'{client="pc-04",result="ok"}' not in ext.metrics.stats_block(ext.inventory.snapshot)
    for _ in range(120):
        ids = [r["id"] for r in db.query("SELECT id FROM boots ORDER BY id")]
        action = rng.random()
        if action < 0.4:
            mac = rng.choice(sorted(clients))
            boot = db.add_boot(mac, clients[mac], "normal", image=rng.choice(["win11", "lin"]))
            if rng.random() < 0.7:
                db.execute(
                    "UPDATE boots SET result = ?, duration = ? WHERE id = ?",
                    (rng.choice(["ok", "failed"]), rng.choice([None, 3.5, 42.0]), boot),
                )
        elif action < 0.8:
            # A machine's only ok boot turning failed takes its latest duration away.
            db.execute(
                "UPDATE boots SET result = ? WHERE id = ?",
                (rng.choice(["ok", "failed", "timeout"]), rng.choice(ids[-4:])),
            )
        else:
            db.execute("DELETE FROM boots WHERE id = ?", (rng.choice(ids[-4:]),))
        if rng.random() < 0.2:
            db.execute(
                "UPDATE jobs SET state = ?, finished = ? WHERE id = 'j4'",
                rng.choice([("running", None), ("successful", 150.0)]),
            )
        assert ext.metrics.stats_block(ext.inventory.snapshot) == _fresh_stats(ext)
        states = parse(ext.metrics.exposition().decode())["ggnet_clients"][2]
        assert {k[1][0][1]: v for k, v in states.items()} == count_client_states(
            ext.inventory.snapshot, ext.db.last_results()
        )
    text = ext.metrics.exposition().decode()
    assert parse(text)["ggnet_machine_boots"]  # still parses, families whole
