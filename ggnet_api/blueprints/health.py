"""/health for load balancers and the service check (no auth), /api/status (viewer),
/metrics for Prometheus (no auth: it carries counts, never names of secrets).

/health answers 503 `degraded` while the inventory on disk does not load (or none
ever did): the API still serves the last good snapshot, but what the operator wrote
is not what the room gets, and only a status code reaches every monitor (curl -f,
a blackbox probe, the service check) without parsing the body.  The load error itself
is on /api/status only: it may quote a line of the inventory, and /health has no auth.
"""

from __future__ import annotations

import time

from flask import Blueprint, Response, jsonify

from ggnet_api import auth
from ggnet_api.blueprints.common import ext
from ggnet_api.boot_service import count_client_states
from ggnet_api.metrics import CONTENT_TYPE

bp = Blueprint("health", __name__)


@bp.get("/health")
def health():
    e = ext()
    try:
        e.db.ping()
    except Exception:
        return jsonify(status="error", error="the API's database cannot be read"), 503
    trouble = e.inventory.trouble()
    if trouble is not None:
        snap = e.inventory.snapshot
        if e.inventory.load_error is None:
            reason = "no inventory loaded yet"
        elif snap.loaded_at:
            reason = "the inventory does not load; serving the last good one"
        else:
            reason = "the inventory does not load, and none has since the start"
        return jsonify(
            status="degraded",
            inventory={
                "error": f"{reason} (the load error is on /api/status)",
                "serving_commit": snap.commit,
                "serving_since": snap.loaded_at or None,
            },
        ), 503
    return jsonify(status="ok")


@bp.get("/metrics")
def metrics():
    return Response(ext().metrics.exposition(), content_type=CONTENT_TYPE)


@bp.get("/api/status")
@auth.require("viewer")
def status():
    e = ext()
    snap, sample = e.inventory.snapshot, e.collector.sample
    return jsonify(
        server=snap.server,
        inventory={
            "path": str(e.config["inventory"]),
            "commit": snap.commit,
            "loaded_at": snap.loaded_at or None,
            "error": e.inventory.trouble(),
            "problems": list(snap.problems),
            "clients": len(snap.clients),
            "images": len(snap.images),
        },
        jobs={
            "running": e.jobs.running(),
            "counts": e.db.job_counts(),
            "max_concurrent": e.config["max_concurrent_jobs"],
        },
        collector={
            "at": sample.at or None,
            "age_seconds": round(time.time() - sample.at, 1) if sample.at else None,
            "errors": sample.errors,
        },
        clients=count_client_states(snap, e.db.last_results()),
        discovered=e.db.count_discovered("discovered"),
    )


@bp.get("/api/openapi.yml")
@auth.require("viewer")
def openapi():
    from importlib.resources import files

    text = files("ggnet_api").joinpath("openapi.yml").read_text(encoding="utf-8")
    return Response(text, content_type="application/yaml")
