"""Event streams do not starve the boot path: gunicorn as `ggnet serve` runs it (its
default thread count) on 127.0.0.1, more streams asked for than it has threads, and
/boot/<mac> still answers.  Before the stream caps every stream held a thread until
its job ended, and /boot waited behind them."""

from __future__ import annotations

import argparse
import contextlib
import socket
import sys
import time
import urllib.request
from pathlib import Path

import pytest
import yaml
from ggnet_testing.api_project import make_project, settings
from ggnet_testing.daemons import daemons_fixture, free_port, wait_for  # noqa: F401  (a fixture)

from ggnet_api.auth import new_token
from ggnet_api.db.database import Database
from ggnet_cli import serve

pytestmark = pytest.mark.integration
VENV_PYTHON = str(Path(sys.executable).parent / "python")
MAC = "52:54:00:aa:00:01"  # pc-01 of the test project


def serve_args(port: int) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    serve.add_arguments(parser)
    return parser.parse_args(["--bind", f"127.0.0.1:{port}"])


def test_boot_answers_while_more_streams_than_threads_are_asked_for(tmp_path, daemons):
    project, inv = make_project(tmp_path)
    cfg = settings(tmp_path, project, inv, auth_fail_limit=1_000_000)
    cfg_path = tmp_path / "api.yml"
    cfg_path.write_text(yaml.safe_dump(cfg))
    db = Database(str(Path(cfg["state_dir"]) / "api.db"))
    token = new_token()
    db.add_token("ci", "viewer", token)
    port = free_port()
    args = serve_args(port)
    argv = serve.gunicorn_argv(args, VENV_PYTHON)
    argv[-1:-1] = ["--env", f"GGNET_API_CONFIG={cfg_path}"]
    daemons.start(argv, tmp_path / "gunicorn.log", group=True)
    url = f"http://127.0.0.1:{port}"

    def up() -> bool:
        with contextlib.suppress(OSError):
            return urllib.request.urlopen(url + "/health", timeout=2).status == 200
        return False

    wait_for("the API", up, timeout=60)
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
        for _ in range(args.threads + 4):
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
        assert statuses.count(b"HTTP/1.1 200 OK") <= args.threads // 2
        started = time.monotonic()
        with urllib.request.urlopen(f"{url}/boot/{MAC}", timeout=30) as resp:
            text = resp.read().decode()
        assert resp.status == 200 and text.startswith("#!ipxe"), text[:200]
        print(f"/boot answered in {time.monotonic() - started:.3f} s")
    finally:
        for s in streams:
            s.close()
        db.update_job(job_id, state="canceled", finished=time.time())
