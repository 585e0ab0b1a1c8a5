"""The Flask app factory.  `create_app(overrides)` wires the state every blueprint
reads from app.extensions["ggnet"]: settings, SQLite, the inventory snapshot and live
state, the job runner, metrics and the authentication-failure limiter.

The job runner and the collector are threads of this process, so the API is served
by ONE gunicorn worker with threads (serve_cmd); a second worker would run a second
job queue against the same database.
"""

from __future__ import annotations

import atexit
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from flask import Flask, jsonify, request
from werkzeug.exceptions import HTTPException

from ggnet_api import config as config_mod
from ggnet_api.auth import FailureLimiter
from ggnet_api.db import Database
from ggnet_api.jobs import JobRunner
from ggnet_api.live import Live
from ggnet_api.metrics import Metrics

log = logging.getLogger(__name__)


@dataclass
class Ggnet:
    config: dict[str, Any]
    db: Database
    live: Live
    jobs: JobRunner
    limiter: FailureLimiter
    metrics: Metrics | None = None
    started: bool = False

    def close(self) -> None:
        """Stop the threads this app started (tests, and the end of the process)."""
        if self.started:
            self.started = False
            self.jobs.stop()
            self.live.stop()


def create_app(overrides: dict[str, Any] | None = None) -> Flask:
    cfg = config_mod.load(**(overrides or {}))
    state_dir = Path(cfg["state_dir"])
    state_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    db = Database(str(state_dir / "api.db"))
    live = Live(cfg, db)
    jobs = JobRunner(db, cfg, secrets=live.secrets)
    ext = Ggnet(
        cfg,
        db,
        live,
        jobs,
        FailureLimiter(int(cfg["auth_fail_limit"]), float(cfg["auth_fail_window"])),
    )
    ext.metrics = Metrics(ext)

    app = Flask(__name__)
    app.config["MAX_CONTENT_LENGTH"] = int(cfg["max_body_bytes"])
    app.json.sort_keys = False
    app.extensions["ggnet"] = ext

    from ggnet_api.blueprints import ALL

    for bp in ALL:
        app.register_blueprint(bp)

    @app.after_request
    def count(resp):
        rule = request.url_rule.rule if request.url_rule is not None else "unmatched"
        ext.metrics.requests.labels(
            endpoint=rule, method=request.method, status=str(resp.status_code)
        ).inc()
        return resp

    @app.errorhandler(HTTPException)
    def http_error(exc: HTTPException):
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
        return jsonify(error="internal error; see the API's log"), 500

    if cfg["background"]:
        live.reload()
        live.start()
        jobs.start()
        ext.started = True
        atexit.register(ext.close)
    return app


def wsgi() -> Flask:
    """gunicorn's entry point: `gunicorn 'ggnet_api.app:wsgi()'`."""
    logging.basicConfig(level=os.environ.get("GGNET_API_LOG_LEVEL", "INFO"))
    return create_app()
