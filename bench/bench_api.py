"""API latency with a room of 1,000 PCs, in-process (Flask test client, no network).

1. GET /metrics with 1,000 inventory clients, 10 boots of history each (10,000 rows),
   and a collector sample with every family the collector can fill: per-client
   writeback sizes, iSCSI traffic and LIO login counters (with login failures and
   session errors on some targets), targets total/active, storage counts, active DHCP
   leases, and the DHCP/TFTP counters of a dnsmasq log holding every PC's boot (read by
   the API's own DnsmasqLog), three ways:
   - `metrics`: the worst case, a morning boot storm scraped every 15 s: a new
     collector sample AND a boot (request + `sanboot` stage, through the real
     endpoints) before every scrape, so nothing rendered before can be reused.
     Goal: p99 <= 50 ms.
   - `metrics_new_sample`: a new collector sample before every scrape, no boot.
   - `metrics_same_sample`: nothing changed since the last scrape.
   Then the worst case again with 100 boots per PC (100,000 rows, a few months of
   history): the scrape must not grow with the boots table.
2. GET /boot/<mac> of a known PC without the writeback reset (reset_on_boot off; the
   reset's own cost is bench_storage's): the script, the boot row.  Each request comes
   from the PC's own address as proxy-DHCP mode proves it, by a neighbour table of
   the room's 1,000 PCs read at every request (the costliest of the three ways, see
   ggnet_api/boot_origin.py).  Goal: p99 <= 20 ms.
3. POST /api/jobs accepted into the queue (token check, allow-list, insert).
   Goal: p99 <= 50 ms.
4. `fleet_status`: GET /v1/status signed with the fleet key (a fresh signature per
   call, made outside the timing), the node agent's answer with the room's 1,000
   PCs and their boots.  Goal: p99 <= 20 ms.
5. `boot_with_streams`: GET /boot/<mac> over HTTP against a real gunicorn on 127.0.0.1
   started as `ggnet serve` starts it (its default 16 threads), first alone, then with
   64 event streams asked for on a running job (the API serves at most half its threads'
   worth and refuses the rest with 429, which the bench's client reads and hangs up on,
   as EventSource does).  Goal: /boot p99 with the streams within 2x of /boot alone.
   Its 2,000 requests come from one address for one MAC, far past the boot path's
   per-source and per-MAC limits (ggnet_api/rate_limit.py): that server's config
   raises boot_limit_source/boot_limit_mac so that nothing is refused.  The limiter
   still runs on every request (a token taken), so its cost stays in the figure.

Each figure is the wall time of one request in this process (time.perf_counter around
the test client's call), the garbage collector on, over METRICS_RUNS (BOOT_RUNS,
JOB_RUNS) requests; p99 is the nearest-rank 99th percentile.  The figures include
Flask's request handling and SQLite in WAL mode on this disk; they exclude HTTP
parsing and the socket (gunicorn adds ~1 ms on loopback).  The machine is shared (2
cores, other work running): single runs vary, percentiles over many requests do less.
"""

from __future__ import annotations

import argparse
import contextlib
import http.client
import os
import random
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

from bench.stats import percentile

CLIENTS = 1000
BOOTS_PER_CLIENT = 10
METRICS_RUNS = 400
LONG_HISTORY = 100  # boots per PC for the long-history run
BOOT_RUNS = 1000
JOB_RUNS = 300
STATUS_RUNS = 500
FLEET_KEY = "b" * 64
STREAMS = 64
HTTP_BOOT_RUNS = 1000
# The collector's families the room's sample must fill (checked in the scraped body).
SAMPLE_FAMILIES = (
    "ggnet_writeback_bytes{",
    "ggnet_iscsi_read_bytes_total{",
    "ggnet_iscsi_logins_total{",
    "ggnet_iscsi_login_failures_total{",
    "ggnet_iscsi_errors_total{",
    "ggnet_iscsi_targets ",
    "ggnet_iscsi_targets_active ",
    "ggnet_storage_images ",
    "ggnet_storage_image_versions ",
    "ggnet_storage_snapshots ",
    'ggnet_dhcp_messages_total{type="ack"} 1',
    'ggnet_dhcp_errors_total{kind="wrong_address"} ',
    'ggnet_tftp_requests_total{file="ipxe.efi"} ',
    'ggnet_tftp_errors_total{file="other",kind="not_found"} ',
    'ggnet_tftp_sent_bytes_total{file="snponly.efi"} ',
    "ggnet_dhcp_leases_active 1000",
)
# Far above the 2 * HTTP_BOOT_RUNS (+ warm-up) requests of boot_with_streams.
BENCH_BOOT_LIMIT = 100 * HTTP_BOOT_RUNS
BOOT_FILES = {"undionly.kpxe": 70_000, "snponly.efi": 220_000, "ipxe.efi": 1_000_000}


def _inventory(root: Path) -> None:
    (root / "group_vars").mkdir(parents=True)
    hosts = [
        f'            pc-{i:04d}: {{ggnet_mac: "52:54:00:{i >> 8 & 255:02x}:{i & 255:02x}:01"}}'
        for i in range(CLIENTS)
    ]
    (root / "hosts.yml").write_text(
        "all:\n  children:\n    ggnet_servers:\n      hosts:\n        boot1: {}\n"
        "    ggnet_clients:\n      children:\n        room:\n          hosts:\n"
        + "\n".join(hosts)
        + "\n"
    )
    (root / "group_vars" / "all.yml").write_text(
        "ggnet_network: {interface: eth1, server_ip: 10.213.0.10, subnet: 10.213.0.0/16,\n"
        "  dhcp_mode: proxy}\n"
        "ggnet_storage: {pool: ggbench, disk_format: file, reserve: 10%, writeback_quota: 1G}\n"
        "ggnet_iscsi: {backend: lio, chap: true, chap_secret: BenchChapSecret1}\n"
        "ggnet_images: {win11: {size: 64G, kind: system}, games: {size: 200G, kind: data}}\n"
        "ggnet_image: win11\nggnet_game_disk: games\n"
    )


def _address(i: int) -> str:
    """The address PC number i has in the bench's room (the neighbour table's entry)."""
    return f"10.213.{i >> 8 & 255}.{i & 255}"


def _neighbours(path: Path, macs: list[str]) -> None:
    """A /proc/net/arp of the room: every PC's address resolved to its MAC."""
    lines = ["IP address       HW type     Flags       HW address            Mask     Device"]
    lines += [f"{_address(i)} 0x1 0x2 {mac} * eth1" for i, mac in enumerate(macs)]
    path.write_text("\n".join(lines) + "\n")


def _dnsmasq_boot(mac: str, i: int, firmware: str) -> str:
    """What dnsmasq (proxy DHCP, its log file) writes for one PC's PXE boot."""
    ip = _address(i)
    tag = "Dec  6 07:59:01 dnsmasq-{}[812]: "
    dhcp, tftp = tag.format("dhcp"), tag.format("tftp")
    lines = [
        f"{dhcp}{1000 + i} PXE(eth1) {mac} proxy",
        f"{dhcp}{1000 + i} DHCPDISCOVER(eth1) {mac}",
        f"{dhcp}{1000 + i} DHCPOFFER(eth1) {ip} {mac}",
        f"{dhcp}{1000 + i} DHCPREQUEST(eth1) {ip} {mac}",
        f"{dhcp}{1000 + i} DHCPACK(eth1) {ip} {mac} pc-{i:04d}",
        f"{tftp}error 0 TFTP Aborted received from {ip}",
        f"{tftp}sent /srv/ggnet/tftp/{firmware} to {ip}",
    ]
    if i % 50 == 0:  # a few that went wrong
        lines.append(f"{dhcp}DHCPNAK(eth1) {ip} {mac} wrong address")
        lines.append(f"{tftp}file /srv/ggnet/tftp/pxelinux.0 not found for {ip}")
    if i % 97 == 0:
        lines.append(f"{tftp}failed sending /srv/ggnet/tftp/{firmware} to {ip}")
    return "\n".join(lines) + "\n"


def _target_stats(names: list[str], rng: random.Random) -> list[list]:
    """The collector's LIO login counters of every target ([client, series, label,
    value]); failures and errors on a few, as the collector sends only non-zero ones."""
    rows: list[list] = []
    for n in names:
        rows.append([n, "logins", "", rng.randrange(1, 40)])
        if rng.random() < 0.05:
            rows.append([n, "login_failures", "authenticate", rng.randrange(1, 5)])
        if rng.random() < 0.02:
            rows.append([n, "errors", "connection", rng.randrange(1, 3)])
    return rows


def _stats(samples: list[float]) -> dict[str, float]:
    ordered = sorted(samples)
    p99 = percentile(ordered, 99)
    return {
        "n": len(samples),
        "p50_ms": round(statistics.median(ordered) * 1000, 2),
        "p99_ms": round(p99 * 1000, 2),
        "max_ms": round(ordered[-1] * 1000, 2),
    }


def _timed(call) -> float:
    t = time.perf_counter()
    resp = call()
    elapsed = time.perf_counter() - t
    assert resp.status_code in (200, 202), (resp.status_code, resp.get_data(as_text=True)[:200])
    return elapsed


# The same scrapes measured by this file on the /metrics of commit cb70b64 (aggregates
# of the whole boots table at every scrape), 2026-11-23, for comparison; not re-run.
BEFORE = {
    "commit": "cb70b64",
    "metrics": {"n": 400, "p50_ms": 21.99, "p99_ms": 56.96, "max_ms": 74.56},
    "metrics_new_sample": {"n": 400, "p50_ms": 23.24, "p99_ms": 76.59, "max_ms": 100.21},
    "metrics_same_sample": {"n": 400, "p50_ms": 18.42, "p99_ms": 30.18, "max_ms": 31.75},
    "metrics_long_history": {"n": 400, "p50_ms": 100.2, "p99_ms": 292.14, "max_ms": 335.19},
    "boot_script": {"n": 1000, "p50_ms": 0.59, "p99_ms": 11.01, "max_ms": 22.7},
    "job_accept": {"n": 300, "p50_ms": 0.57, "p99_ms": 5.45, "max_ms": 8.66},
}


def _history(e, names: list[str], per_client: int, rng: random.Random) -> None:
    """per_client finished boots of every PC (8 in 10 ok), a day or more ago."""
    snap = e.inventory.snapshot
    now = time.time()
    rows = []
    for name in names:
        mac = snap.clients[name]["mac"]
        for b in range(per_client):
            result = rng.choice(["ok"] * 8 + ["failed", "timeout"])
            started = now - 86400 * (1 + b // 100) + (b % 100) * 600
            rows.append((mac, name, "normal", started, started + 9, result,
                         rng.uniform(5, 40) if result == "ok" else None, "win11"))  # fmt: skip
    with e.db.tx() as c:
        c.executemany(
            "INSERT INTO boots (mac, client, kind, started, stage_at, result, duration, image) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            rows,
        )


@contextlib.contextmanager
def room():
    """An app with the 1,000-PC inventory, 10,000 boots and a full collector sample:
    yields (app, ext, names, new_sample) where new_sample() stands for one collector
    run (fresh writeback sizes and traffic)."""
    from ggnet_api.app import create_app
    from ggnet_api.collector import Sample
    from ggnet_api.dnsmasq_log import DnsmasqLog, active_leases

    with tempfile.TemporaryDirectory(prefix="ggnet-bench-api-") as tmp:
        inv = Path(tmp) / "inventory"
        _inventory(inv)
        tftp_root = Path(tmp) / "tftp"
        tftp_root.mkdir()
        for file, size in BOOT_FILES.items():
            (tftp_root / file).write_bytes(b"\0" * size)
        dnsmasq_log = Path(tmp) / "dnsmasq.log"
        dnsmasq_log.write_text("")
        app = create_app(
            {
                "state_dir": f"{tmp}/state",
                "inventory": str(inv),
                "background": False,
                "reset_on_boot": False,
                "max_queued_jobs": JOB_RUNS + 10,
                "public_url": "http://10.213.0.10:8080",
                "lease_file": None,
                "neighbour_file": f"{tmp}/arp",
                "fleet_key": FLEET_KEY,
                "dnsmasq_log": str(dnsmasq_log),
                "tftp_root": str(tftp_root),
            }
        )
        e = app.extensions["ggnet"]
        try:
            t = time.perf_counter()
            assert e.inventory.reload(), e.inventory.load_error
            e.load_s = time.perf_counter() - t
            snap = e.inventory.snapshot
            assert len(snap.clients) == CLIENTS, (len(snap.clients), snap.problems[:3])
            names = sorted(snap.clients)
            _neighbours(Path(tmp) / "arp", [snap.clients[n]["mac"] for n in names])
            rng = random.Random(7)
            _history(e, names, BOOTS_PER_CLIENT, rng)
            macs = [snap.clients[n]["mac"] for n in names]
            # The API's own log follower, as the collector runs it: the room's morning
            # (every PC's DHCP and TFTP) is logged after it started, then one more boot
            # per collection.
            follower = DnsmasqLog(str(dnsmasq_log), str(tftp_root))
            follower.poll()
            firmwares = sorted(BOOT_FILES)
            with dnsmasq_log.open("a") as fh:
                for i, mac in enumerate(macs):
                    fh.write(_dnsmasq_boot(mac, i, firmwares[i % len(firmwares)]))
            # A lease file of the room's 1,000 PCs, for the leases gauge only (the app
            # keeps lease_file None: its boot origin check stays the neighbour table).
            leases = Path(tmp) / "dnsmasq.leases"
            until = int(time.time()) + 43200
            leases.write_text(
                "".join(f"{until} {mac} {_address(i)} * *\n" for i, mac in enumerate(macs))
            )
            logged = iter(range(10**9))

            def new_sample() -> None:
                i = next(logged) % CLIENTS
                with dnsmasq_log.open("a") as fh:
                    fh.write(_dnsmasq_boot(macs[i], i, firmwares[i % len(firmwares)]))
                at = time.time()
                sessions = {snap.clients[n]["target_iqn"]: ["x"] for n in names[:800]}
                e.collector.sample = Sample(
                    at=at,
                    writeback_bytes={n: rng.randrange(1 << 30) for n in names},
                    pools={"ggbench": (4 << 40, 2 << 40)},
                    sessions=sessions,
                    traffic={n: (rng.randrange(1 << 34), rng.randrange(1 << 32)) for n in names},
                    storage_counts={"images": 2, "versions": 14, "snapshots": 16},
                    targets_total=CLIENTS,
                    targets_active=len(sessions),
                    target_stats=_target_stats(names, rng),
                    dnsmasq=follower.poll().rows(),
                    leases=active_leases(str(leases), at),
                )

            new_sample()
            yield app, e, names, new_sample
        finally:
            e.close()


def _scrapes(client, before) -> list[float]:
    """METRICS_RUNS timed scrapes, before() run untimed before each."""
    out = []
    for _ in range(METRICS_RUNS):
        before()
        out.append(_timed(lambda: client.get("/metrics")))
    return out


def fleet_status(client) -> dict:
    """STATUS_RUNS signed GET /v1/status, each signed anew (untimed), against goal."""
    from ggnet_api.fleet_signing import sign

    def call():
        headers = sign(FLEET_KEY, "GET", "/v1/status")
        return _timed(lambda: client.get("/v1/status", headers=headers))

    call()  # warm-up
    s = _stats([call() for _ in range(STATUS_RUNS)])
    return {**s, "goal": "p99 <= 20 ms", "met": s["p99_ms"] <= 20}


def run() -> dict:
    from ggnet_api.auth import new_token

    with room() as (app, e, names, new_sample):
        snap = e.inventory.snapshot
        client = app.test_client()
        operator = new_token()
        e.db.add_token("bench", "operator", operator)
        auth = {"Authorization": f"Bearer {operator}"}
        macs = [snap.clients[n]["mac"] for n in names]
        booted = iter(range(10**9))

        def storm() -> None:
            # The collector ran (every collect_interval, 15 s, as often as Prometheus
            # scrapes) and one more PC booted, through the real endpoints.
            new_sample()
            i = next(booted) % CLIENTS
            mac, own = macs[i], {"REMOTE_ADDR": _address(i)}
            script = client.get(f"/boot/{mac}", environ_base=own).get_data(as_text=True)
            token = script.split("&token=", 1)[1].split()[0]
            stage = client.get(f"/boot/{mac}/stage?name=sanboot&token={token}", environ_base=own)
            assert stage.status_code == 200, stage.get_data(as_text=True)

        client.get("/metrics")  # warm-up (imports, statement cache)
        cold = _scrapes(client, storm)
        fresh = _scrapes(client, new_sample)
        # A second Prometheus, a manual curl: nothing changed since the last scrape.
        warm = _scrapes(client, lambda: None)
        body = client.get("/metrics").get_data()
        missing = [f for f in SAMPLE_FAMILIES if f"\n{f}".encode() not in body]
        assert not missing, f"families absent from the scraped body: {missing}"

        _history(e, names, LONG_HISTORY - BOOTS_PER_CLIENT, random.Random(8))
        rows = e.db.one("SELECT COUNT(*) AS n FROM boots")["n"]
        client.get("/metrics")
        long_history = _scrapes(client, storm)

        def boot(i: int):
            resp = client.get(f"/boot/{macs[i]}", environ_base={"REMOTE_ADDR": _address(i)})
            assert "sanboot" in resp.get_data(as_text=True)  # the PC's own script
            return resp

        boots = [_timed(lambda i=i % CLIENTS: boot(i)) for i in range(BOOT_RUNS)]

        jobs = [
            _timed(lambda: client.post("/api/jobs", json={"kind": "converge"}, headers=auth))
            for _ in range(JOB_RUNS)
        ]
        status = fleet_status(client)
        load_s = e.load_s

    m, b, j = _stats(cold), _stats(boots), _stats(jobs)
    lh = _stats(long_history)
    return {
        "clients": CLIENTS,
        "inventory_load_s": round(load_s, 2),
        "measured": (
            "wall time of each request around Flask's test client in one process, GC on; "
            "p50 = median, p99 = nearest-rank 99th percentile, max = slowest; "
            "see bench/bench_api.py's docstring for what changes before each scrape"
        ),
        "metrics": {
            **m,
            "bytes": len(body),
            "lines": body.count(b"\n"),
            "goal": "p99 <= 50 ms",
            "met": m["p99_ms"] <= 50,
            "note": "a new collector sample and one more boot before every scrape "
            f"({BOOTS_PER_CLIENT} boots per PC of history)",
        },
        "metrics_new_sample": _stats(fresh),
        "metrics_same_sample": _stats(warm),
        "metrics_long_history": {
            **lh,
            "boots_rows": rows,
            "goal": "p99 <= 50 ms",
            "met": lh["p99_ms"] <= 50,
            "note": "as `metrics`, with the boots table grown to boots_rows",
        },
        "before": BEFORE,
        "boot_script": {**b, "goal": "p99 <= 20 ms (no reset)", "met": b["p99_ms"] <= 20},
        "job_accept": {**j, "goal": "p99 <= 50 ms", "met": j["p99_ms"] <= 50},
        "fleet_status": status,
        "boot_with_streams": boot_with_streams(),
    }


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _http_boots(port: int, mac: str) -> list[float]:
    """HTTP_BOOT_RUNS timed GET /boot/<mac> on one kept-alive connection."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    out = []
    try:
        for _ in range(HTTP_BOOT_RUNS):
            t = time.perf_counter()
            conn.request("GET", f"/boot/{mac}")
            resp = conn.getresponse()
            body = resp.read()
            out.append(time.perf_counter() - t)
            assert resp.status == 200 and body.startswith(b"#!ipxe"), (resp.status, body[:200])
    finally:
        conn.close()
    return out


def boot_with_streams() -> dict:
    """/boot over HTTP to `ggnet serve`'s gunicorn, alone and beside STREAMS streams."""
    import yaml

    from ggnet_api.auth import new_token
    from ggnet_api.db.database import Database
    from ggnet_cli import serve

    with tempfile.TemporaryDirectory(prefix="ggnet-bench-streams-") as tmp:
        inv = Path(tmp) / "inventory"
        _inventory(inv)
        cfg = {
            "state_dir": f"{tmp}/state",
            "inventory": str(inv),
            "reset_on_boot": False,
            "public_url": "http://10.213.0.10:8080",
            "collect_interval": 3600.0,
            # One source asking one PC's script 2,000 times: see the docstring.
            "boot_limit_source": BENCH_BOOT_LIMIT,
            "boot_limit_mac": BENCH_BOOT_LIMIT,
        }
        cfg_path = Path(tmp) / "api.yml"
        cfg_path.write_text(yaml.safe_dump(cfg))
        db = Database(f"{tmp}/state/api.db")
        # Sixteen viewers: the per-token cap alone would leave the total cap untried.
        tokens = [new_token() for _ in range(16)]
        for i, token in enumerate(tokens):
            db.add_token(f"bench-{i}", "viewer", token)
        parser = argparse.ArgumentParser()
        serve.add_arguments(parser)
        port = _free_port()
        args = parser.parse_args(["--bind", f"127.0.0.1:{port}"])
        argv = serve.gunicorn_argv(args, sys.executable)
        argv[-1:-1] = ["--env", f"GGNET_API_CONFIG={cfg_path}"]
        log = open(Path(tmp) / "gunicorn.log", "w")  # noqa: SIM115 (closed below)
        proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        streams: list[socket.socket] = []
        try:
            deadline = time.monotonic() + 120
            while True:
                try:
                    urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2).read()
                    break
                except OSError:
                    if time.monotonic() > deadline or proc.poll() is not None:
                        raise RuntimeError("the API did not come up") from None
                    time.sleep(0.2)
            mac = "52:54:00:00:00:01"  # pc-0000
            _http_boots(port, mac)  # warm-up: imports, the snapshot, statement caches
            alone = _stats(_http_boots(port, mac))
            # A job that runs all along (added behind the runner's back: it runs only
            # what is submitted), so no stream ends on its own.
            job_id = "e" * 32
            db.add_job(job_id, "converge", "site.yml", {}, "bench")
            db.update_job(job_id, state="running", started=time.time())
            for i in range(STREAMS):
                request = (
                    f"GET /api/jobs/{job_id}/events HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                    f"Authorization: Bearer {tokens[i % len(tokens)]}\r\n"
                    "Accept: text/event-stream\r\n\r\n"
                ).encode()
                sock = socket.create_connection(("127.0.0.1", port), timeout=30)
                sock.sendall(request)
                streams.append(sock)
            statuses: dict[str, int] = {}
            for sock in streams:
                status = sock.recv(64).split(b"\r\n", 1)[0].decode()
                code = status.split(" ")[1] if " " in status else status
                statuses[code] = statuses.get(code, 0) + 1
                if code != "200":
                    sock.close()
            beside = _stats(_http_boots(port, mac))
        finally:
            for sock in streams:
                sock.close()
            db.update_job("e" * 32, state="canceled", finished=time.time())
            os.killpg(proc.pid, 15)
            try:
                proc.wait(40)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, 9)
                proc.wait()
            log.close()
    ratio = round(beside["p99_ms"] / alone["p99_ms"], 2)
    return {
        "measured": (
            "wall time of each GET /boot/<mac> on one kept-alive HTTP connection to gunicorn "
            f"({args.threads} threads, as `ggnet serve`) on 127.0.0.1, reset_on_boot off"
        ),
        "threads": args.threads,
        "boot_limits": (
            f"boot_limit_source = boot_limit_mac = {BENCH_BOOT_LIMIT} per "
            "boot_limit_window (default 60 s): the limiter runs, never refuses"
        ),
        "streams_asked": STREAMS,
        "streams_answered": statuses,
        "boot_alone": alone,
        "boot_beside_streams": beside,
        "p99_ratio": ratio,
        "goal": "p99 beside the streams <= 2x p99 alone",
        "met": ratio <= 2,
    }
