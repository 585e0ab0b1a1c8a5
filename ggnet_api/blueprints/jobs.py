"""Jobs: start an allow-listed playbook, follow it (JSON or server-sent events), cancel."""

from __future__ import annotations

import json
import re
import time

from flask import Blueprint, Response, jsonify, request, stream_with_context

from ggnet_api import auth
from ggnet_api.blueprints.common import ext, fail, int_arg, json_body
from ggnet_api.db.database import JOB_DONE
from ggnet_api.jobs import JobError

bp = Blueprint("jobs", __name__, url_prefix="/api")

_JOB_ID = re.compile(r"^[0-9a-f]{32}$")
STATES = ("queued", "running", *JOB_DONE)


def _job_or_404(job_id: str) -> dict:
    if not _JOB_ID.match(job_id):
        fail(404, f"job {job_id[:40]!r}: no such job (job ids are 32 hex digits)")
    job = ext().db.job(job_id)
    if job is None:
        fail(404, f"job {job_id}: no such job")
    return job


@bp.get("/playbooks")
@auth.require("viewer")
def playbooks():
    out = []
    for kind, spec in sorted(ext().config["playbooks"].items()):
        out.append(
            {
                "kind": kind,
                "playbook": spec["playbook"],
                "description": spec.get("description", ""),
                "extravars": {
                    k: {
                        key: v
                        for key, v in rule.items()
                        if key in ("type", "enum", "pattern", "required")
                    }
                    for k, rule in (spec.get("extravars") or {}).items()
                },
            }
        )
    return jsonify(playbooks=out)


@bp.post("/jobs")
@auth.require("operator")
def start():
    body = json_body()
    unknown = sorted(set(body) - {"kind", "extravars"})
    if unknown:
        fail(400, f"body: unknown field(s) {', '.join(unknown)}; send kind and extravars")
    if "extravars" in body and not isinstance(body["extravars"], dict):
        fail(400, "body.extravars: must be an object of variable names to values")
    kind = body.get("kind")
    if not isinstance(kind, str):
        fail(400, "body.kind: required, the job kind (see GET /api/playbooks)")
    try:
        job = ext().jobs.submit(kind, body.get("extravars"), auth.principal_name())
    except JobError as exc:
        fail(exc.status, f"body.{exc}" if str(exc).startswith(("kind", "extravars")) else str(exc))
    resp = jsonify(job)
    resp.status_code = 202
    resp.headers["Location"] = f"/api/jobs/{job['id']}"
    return resp


@bp.get("/jobs")
@auth.require("viewer")
def list_jobs():
    state = request.args.get("state")
    if state is not None and state not in STATES:
        fail(400, f"query parameter state: {state[:20]!r} is not one of {', '.join(STATES)}")
    return jsonify(jobs=ext().db.jobs(limit=int_arg("limit", 100, 1, 1000), state=state))


@bp.get("/jobs/<job_id>")
@auth.require("viewer")
def get_job(job_id: str):
    return jsonify(_job_or_404(job_id))


@bp.post("/jobs/<job_id>/cancel")
@auth.require("operator")
def cancel(job_id: str):
    _job_or_404(job_id)
    try:
        job = ext().jobs.cancel(job_id)
    except JobError as exc:
        fail(exc.status, str(exc))
    return jsonify(job), 202


@bp.get("/jobs/<job_id>/events")
@auth.require("viewer")
def events(job_id: str):
    _job_or_404(job_id)
    after = int_arg("after", 0, 0, 10**9)
    wants_stream = (
        "text/event-stream" in request.headers.get("Accept", "")
        or request.args.get("stream") == "1"
    )
    if not wants_stream:
        return jsonify(events=ext().db.events(job_id, after, int_arg("limit", 1000, 1, 10000)))
    last_id = request.headers.get("Last-Event-ID", "")
    if last_id.isdigit():
        after = int(last_id)
    return Response(
        stream_with_context(_stream(ext(), job_id, after)),
        content_type="text/event-stream",
        headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"},
    )


def _stream(e, job_id: str, after: int):
    idle_since = time.monotonic()
    while True:
        # State first, then events: events stored before the job ended are all read.
        state = e.db.job(job_id)["state"]
        batch = e.db.events(job_id, after, 500)
        for ev in batch:
            after = ev["seq"]
            yield f"id: {ev['seq']}\nevent: {ev['event']}\ndata: {json.dumps(ev)}\n\n"
        if batch:
            idle_since = time.monotonic()
            continue
        if state in JOB_DONE:
            yield f"event: end\ndata: {json.dumps({'state': state})}\n\n"
            return
        if time.monotonic() - idle_since > 15:
            idle_since = time.monotonic()
            yield ": still running\n\n"
        time.sleep(0.25)
