"""The node agent of a fleet: what other boot servers ask this one (issue 18).

GET /v1/status is signed with the fleet key (ggnet_api/fleet_signing.py): its CPU,
memory and load, the pool's free space, the live iSCSI sessions, the PCs placed on
this server and how many of them booted, the image versions it holds with their
guids, and the ggnet version.  What needs zfs or the iSCSI backend comes from the
collector's latest sample: a call never forks.  GET /v1/metrics is /metrics, without
auth, for Prometheus scraping every server of a fleet under one prefix.

Without a fleet key the signed endpoints answer 503 saying to set one: a server
outside a fleet does not take signed calls at all.  Refusals count in
ggnet_api_auth_failures_total (reason fleet_<code>) and in the same per-address limit
as failed token logins; their log line names the reason, never a header's value.
"""

from __future__ import annotations

import functools
import logging
import os
import time
from collections.abc import Callable
from typing import Any

import ggnet
import psutil
from flask import Blueprint, current_app, jsonify, request

from ggnet_api import auth
from ggnet_api.blueprints import health
from ggnet_api.blueprints.common import ext, fail
from ggnet_api.boot_service import count_client_states
from ggnet_api.fleet_signing import REFUSALS, Refused, Verifier, signed_path

log = logging.getLogger(__name__)

bp = Blueprint("fleet", __name__, url_prefix="/v1")


@bp.record_once
def _verifier(state) -> None:
    cfg = state.app.extensions["ggnet"].config
    state.app.extensions["ggnet_fleet"] = Verifier(cfg["fleet_key"], cfg["fleet_key_previous"])
    for code in REFUSALS:
        state.app.extensions["ggnet"].metrics.auth_failures.labels(reason="fleet_" + code)
    # cpu_percent(None) measures since its previous call: this one starts the first span.
    psutil.cpu_percent(None)


def signed(view: Callable[..., Any]) -> Callable[..., Any]:
    """Run the view only for a call signed with the fleet key."""

    @functools.wraps(view)
    def inner(*args: Any, **kwargs: Any) -> Any:
        verifier: Verifier = current_app.extensions["ggnet_fleet"]
        if not verifier.enabled:
            fail(
                503,
                "fleet calls are off on this server: set fleet_key in the inventory "
                "(ggnet_api_settings: {fleet_key: ...}, vaulted) and converge",
            )
        who = request.remote_addr or "unknown"
        limited = auth.throttled(who)
        if limited is not None:
            return limited
        try:
            verifier.verify(
                request.method,
                signed_path(request.path, request.query_string),
                dict(request.headers.items()),
                request.get_data(cache=True),
            )
        except Refused as refused:
            ext().limiter.take(who)
            log.info("signed call to %s from %s refused: %s", request.path[:100], who, refused.code)
            return auth.deny(
                refused.status,
                "fleet_" + refused.code,
                refused.reason,
                challenge='Ggnet-HMAC realm="fleet"',
            )
        return view(*args, **kwargs)

    return inner


def _host() -> dict[str, Any]:
    """CPU, memory and load of this machine (psutil reads /proc: no fork)."""
    mem = psutil.virtual_memory()
    return {
        "cpus": psutil.cpu_count(),
        "cpu_percent": psutil.cpu_percent(None),
        "memory": {"total": mem.total, "available": mem.available, "percent": mem.percent},
        "load": list(os.getloadavg()),
    }


@bp.get("/status")
@signed
def status():
    e = ext()
    snap, sample = e.inventory.snapshot, e.collector.sample
    storage_read = "storage" not in sample.errors
    states = count_client_states(snap, e.db.last_results())
    return jsonify(
        server=snap.server,
        version=ggnet.__version__,
        at=time.time(),
        host=_host(),
        pools={name: {"size": size, "free": free} for name, (size, free) in sample.pools.items()},
        # None: not read (yet), or the backend could not be asked (collector.errors).
        iscsi_sessions=(
            sum(len(v) for v in sample.sessions.values()) if sample.sessions is not None else None
        ),
        clients={"placed": len(snap.clients), "booted": states.get("booted", 0)},
        images=(
            {
                name: [{"name": v["name"], "guid": v.get("guid")} for v in versions]
                for name, versions in sample.versions.items()
            }
            if storage_read
            else None
        ),
        inventory={"commit": snap.commit, "loaded_at": snap.loaded_at or None},
        collector={"at": sample.at or None, "errors": sorted(sample.errors)},
    )


# The same view as /metrics: Prometheus scrapes every server of a fleet under /v1.
bp.add_url_rule("/metrics", "metrics", health.metrics)
