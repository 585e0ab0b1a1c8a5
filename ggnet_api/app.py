"""The Flask app factory.  `create_app(overrides)` wires the state every blueprint
reads from app.extensions["ggnet"]: settings, SQLite, the current inventory snapshot,
the collector's latest sample, the boot service, the job runner, metrics and the
authentication-failure limiter.

What needs root is asked of ggnet-privd, or done in this process without a
`privd_socket` (ggnet_api/privileged.py).

The job runner, the inventory watcher and the collector are threads of this process,
so the API is served by ONE gunicorn worker with threads (ggnet_cli/serve.py); a
second worker would run a second job queue against the same database.
"""

from __future__ import annotations

import atexit
import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from flask import Flask, jsonify, request
from flask.json.provider import DefaultJSONProvider
from werkzeug.exceptions import HTTPException

from ggnet_api import boot_sessions
from ggnet_api import config as config_mod
from ggnet_api import tracing as tracing_mod
from ggnet_api.boot_service import BootService
from ggnet_api.collector import Collector
from ggnet_api.db.database import Database
from ggnet_api.jobs import JobRunner
from ggnet_api.locks import Locks
from ggnet_api.metrics import Metrics
from ggnet_api.periodic import Periodic
from ggnet_api.privileged import Privileged, privileged
from ggnet_api.rate_limit import RateLimiter
from ggnet_api.rollouts import Rollouts
from ggnet_api.snapshot import CurrentInventory
from ggnet_api.wakes import Wakes

if TYPE_CHECKING:
    from ggnet_api.tracing_otel import Tracing

log = logging.getLogger(__name__)

# The methods counted by name (RFC 9110's and PATCH); any other is counted as "other".
_METHODS = frozenset(
    ("GET", "HEAD", "POST", "PUT", "DELETE", "CONNECT", "OPTIONS", "TRACE", "PATCH")
)


@dataclass
class Ggnet:
    config: dict[str, Any]
    db: Database
    inventory: CurrentInventory
    collector: Collector
    boot: BootService
    jobs: JobRunner
    limiter: RateLimiter
    privileged: Privileged
    metrics: Metrics | None = None
    background: Periodic | None = None
    # None: tracing is off (the `tracing` setting; ggnet_api/tracing.py).
    tracing: Tracing | None = None
    rollouts: Rollouts | None = None
    wakes: Wakes | None = None

    def start(self) -> None:
        """Load the inventory, then start the threads: inventory watcher, collector, jobs."""
        self.inventory.reload()
        self.background = Periodic()
        self.background.every(
            float(self.config["inventory_poll"]),
            self.inventory.reload_if_changed,
            "ggnet-inventory",
        )
        self.background.every(
            float(self.config["collect_interval"]), self._collect, "ggnet-collector"
        )
        self.background.every(
            float(self.config["retention_interval"]), self.prune, "ggnet-retention"
        )
        self.jobs.start()

    def prune(self, now: float | None = None) -> tuple[int, int]:
        """The retention pass: (boots, discovered machines) deleted."""
        now = time.time() if now is None else now
        boots = discovered = 0
        keep = config_mod.seconds(self.config, "boot_retention")
        snap = self.inventory.snapshot
        # Without an inventory every machine would look unknown and lose its latest boot.
        if keep and snap.loaded_at:
            machines = {n: c["mac"] for n, c in snap.clients.items()}
            boots = self.db.prune_boots(now - keep, machines)
        keep = config_mod.seconds(self.config, "discovered_retention")
        if keep:
            discovered = self.db.prune_discovered(now - keep)
        if boots or discovered:
            log.info("retention: %d boots and %d discovered machines deleted", boots, discovered)
        return boots, discovered

    def _collect(self) -> None:
        sample = self.collector.sample = self.privileged.sample()
        ended: list[str] = []
        try:
            ended = boot_sessions.observe(self.db, self.inventory.snapshot, sample)
        except Exception:  # the boots' expiry below must still run
            log.exception("following the boot sessions failed")
        # A PC woken by a magic packet whose DHCP dnsmasq logged: its wake is confirmed
        # (timed at this read of the log; a boot request timed earlier wins).
        if self.wakes is not None:
            for mac in sample.dhcp_macs or ():
                self.wakes.seen(mac, sample.at, "dhcp")
        self.boot.expire(self.db)
        # Their next boot then only checks their writebacks (BootService).
        for name in ended:
            self.boot.reset_after_session(name)
        if self.rollouts is not None:
            # Every collection brings the versions' states: the rollouts decide on them.
            self.rollouts.tick()

    def close(self) -> None:
        """Stop the threads this app started (tests, and the end of the process)."""
        if self.background is not None:
            background, self.background = self.background, None
            self.jobs.stop()
            background.stop()
        if self.tracing is not None:
            self.tracing.shutdown()  # what the jobs' last spans left in the queue


def create_app(overrides: dict[str, Any] | None = None) -> Flask:
    cfg = config_mod.load(**(overrides or {}))
    state_dir = Path(cfg["state_dir"])
    state_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    db = Database(str(state_dir / "api.db"))
    inventory = CurrentInventory(cfg)
    locks = Locks()  # jobs and the boot path's resets: one at a time per PC and image
    collector = Collector(cfg, inventory)
    tracing = tracing_mod.setup(cfg)
    root = privileged(cfg, inventory, collector)
    root.tracing = tracing
    wakes = Wakes(db, float(cfg["wake_timeout"]))
    ext = Ggnet(
        cfg,
        db,
        inventory,
        collector,
        BootService(cfg, inventory, root, locks, tracing=tracing),
        JobRunner(
            db,
            cfg,
            root,
            locks=locks,
            snapshot=lambda: inventory.snapshot,
            tracing=tracing,
            wakes=wakes,
        ),
        # Failed authentications per client address; 10000 addresses at the most.
        RateLimiter(int(cfg["auth_fail_limit"]), float(cfg["auth_fail_window"]), 10000),
        root,
        tracing=tracing,
        wakes=wakes,
    )
    metrics = ext.metrics = Metrics(ext)
    wakes.observe = metrics.observe_wake
    ext.rollouts = Rollouts(ext)

    app = Flask(__name__)
    app.config["MAX_CONTENT_LENGTH"] = int(cfg["max_body_bytes"])
    assert isinstance(app.json, DefaultJSONProvider)  # Flask's own, which has sort_keys
    app.json.sort_keys = False
    app.extensions["ggnet"] = ext
    if tracing is not None:
        tracing.instrument(app)  # first, so the request's span holds every other hook

    from ggnet_api import web
    from ggnet_api.blueprints import ALL

    for bp in (*ALL, web.bp):
        app.register_blueprint(bp)

    @app.after_request
    def count(resp):
        # Every label from a bounded set, whatever a client sends: the routes' rules
        # (not the path), the standard methods, the status codes werkzeug can answer.
        rule = request.url_rule.rule if request.url_rule is not None else "unmatched"
        method = request.method if request.method in _METHODS else "other"
        metrics.requests.labels(endpoint=rule, method=method, status=str(resp.status_code)).inc()
        return resp

    @app.errorhandler(HTTPException)
    def http_error(exc: HTTPException):
        if request.path.startswith("/ui/") or request.path == "/ui":
            return web.views.http_error_page(exc)  # the console answers pages
        if exc.code == 413:
            message = f"body: larger than the {cfg['max_body_bytes']} bytes this API accepts"
        elif exc.code == 404:
            message = f"{request.path[:100]}: no such endpoint (see /api/openapi.yml)"
        elif exc.code == 405:
            message = f"{request.method} is not allowed on {request.path[:100]}"
        else:
            message = exc.description or exc.name
        # Keep what werkzeug put in the headers (Allow on a 405).
        headers = {k: v for k, v in exc.get_response().headers.items() if k.lower() == "allow"}
        if request.path.startswith("/boot"):
            headers["Content-Type"] = "text/plain; charset=utf-8"
            return message + "\n", exc.code, headers
        return jsonify(error=message), exc.code, headers

    @app.errorhandler(Exception)
    def internal(exc: Exception):
        # The message is logged, never answered: it may quote a path or a value.
        log.exception("unhandled error on %s %s", request.method, request.path)
        if request.path.startswith("/ui/"):
            return web.views.internal_error_page()
        if request.path.startswith("/boot"):  # iPXE shows text, not JSON
            text = "ggnet: internal error of the boot server; see the API's log\n"
            return text, 500, {"Content-Type": "text/plain; charset=utf-8"}
        return jsonify(error="internal error; see the API's log"), 500

    if cfg["background"]:
        ext.start()
        atexit.register(ext.close)
    return app


def wsgi() -> Flask:
    """gunicorn's entry point: `gunicorn 'ggnet_api.app:wsgi()'`."""
    logging.basicConfig(level=os.environ.get("GGNET_API_LOG_LEVEL", "INFO"))
    return create_app()
