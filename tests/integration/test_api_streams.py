"""Event streams do not starve the boot path: gunicorn as `ggnet serve` runs it (its
default thread count) on 127.0.0.1, more streams asked for than it has threads, and
/boot/<mac> still answers.  Before the stream caps every stream held a thread until
its job ended, and /boot waited behind them."""

from __future__ import annotations

import argparse
import socket
import time
import urllib.request

import pytest
from ggnet_testing.api_project import make_project, serve_api, settings
from ggnet_testing.daemons import daemons_fixture  # noqa: F401  (a fixture)

from ggnet_cli import serve

pytestmark = pytest.mark.integration
MAC = "52:54:00:aa:00:01"  # pc-01 of the test project


def serve_threads() -> int:
    """The threads of `ggnet serve`'s one worker, as serve_api starts it."""
    parser = argparse.ArgumentParser()
    serve.add_arguments(parser)
    return parser.parse_args([]).threads


def test_boot_answers_while_more_streams_than_threads_are_asked_for(tmp_path, daemons):
    project, inv = make_project(tmp_path)
    cfg = settings(tmp_path, project, inv, auth_fail_limit=1_000_000)
    url, port, db, token = serve_api(daemons, tmp_path, cfg, "ci", "viewer")
    # A job that runs as long as the test, so its streams never end on their own; added
    # behind the runner's back once it is up (it takes only jobs submitted to it).
    job_id = "f" * 32
    db.add_job(job_id, "converge", "site.yml", {}, "ci")
    db.update_job(job_id, state="running", started=time.time())

    streams = []
    request = (
        f"GET /api/jobs/{job_id}/events HTTP/1.1\r\nHost: 127.0.0.1\r\n"
        f"Authorization: Bearer {token}\r\nAccept: text/event-stream\r\n"
        "Connection: close\r\n\r\n"
    ).encode()
    try:
        for _ in range(serve_threads() + 4):
            s = socket.create_connection(("127.0.0.1", port), timeout=10)
            s.sendall(request)
            streams.append(s)
        # Read each answer as a client does, and hang up on a refusal (an unread
        # connection keeps a thread of its own; that is not what is tested here).
        statuses = []
        for s in streams:
            s.settimeout(20)
            status = s.recv(64).split(b"\r\n", 1)[0]
            statuses.append(status)
            if b" 200 " not in status:
                s.close()
        # Some streams are served, the rest refused at once with 429, none left hanging.
        assert b"HTTP/1.1 200 OK" in statuses, statuses
        assert set(statuses) <= {b"HTTP/1.1 200 OK", b"HTTP/1.1 429 TOO MANY REQUESTS"}
        assert statuses.count(b"HTTP/1.1 200 OK") <= serve_threads() // 2
        started = time.monotonic()
        with urllib.request.urlopen(f"{url}/boot/{MAC}", timeout=30) as resp:
            text = resp.read().decode()
        assert resp.status == 200 and text.startswith("#!ipxe"), text[:200]
        print(f"/boot answered in {time.monotonic() - started:.3f} s")
    finally:
        for s in streams:
            s.close()
        db.update_job(job_id, state="canceled", finished=time.time())
