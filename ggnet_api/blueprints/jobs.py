"""Jobs: start an allow-listed playbook, follow it (JSON or server-sent events), cancel.

An event stream holds one of gunicorn's request threads while it is open, so streams
are counted per token and in all (StreamSlots) and each ends after a lifetime with an
`event: reconnect`: threads stay free for /boot, and a browser's EventSource comes back
on its own with Last-Event-ID, from the event it saw last.
"""

from __future__ import annotations

import json
import re
import threading
import time
from typing import Any

from flask import Blueprint, Response, g, jsonify, request, stream_with_context

from ggnet_api import auth
from ggnet_api.blueprints.common import (
    accepted,
    cursor_arg,
    ext,
    fail,
    int_arg,
    json_body,
    page_cursor,
)
from ggnet_api.config import runs
from ggnet_api.db.database import JOB_DONE
from ggnet_api.jobs import JobError

bp = Blueprint("jobs", __name__, url_prefix="/api")


class StreamSlots:
    """The event streams open now, by token: taken before a stream starts, given
    back when its response is closed (its end, or the client gone)."""

    def __init__(self, per_token: int, total: int):
        self.per_token = per_token
        self.total = total
        self._mutex = threading.Lock()
        self._open: dict[Any, int] = {}

    def take(self, token: Any) -> str | None:
        """None when a slot was taken; else why not (for a 429)."""
        with self._mutex:
            mine = self._open.get(token, 0)
            if mine >= self.per_token:
                return (
                    f"this token has {mine} event streams open, the most one token may "
                    "(max_event_streams_per_token); close one, or poll "
                    "GET /api/jobs/{id}/events?after=N"
                )
            if sum(self._open.values()) >= self.total:
                return (
                    f"{self.total} event streams are open, the most this server keeps "
                    "(max_event_streams); try again later, or poll "
                    "GET /api/jobs/{id}/events?after=N"
                )
            self._open[token] = mine + 1
            return None

    def give_back(self, token: Any) -> None:
        with self._mutex:
            left = self._open.get(token, 0) - 1
            if left > 0:
                self._open[token] = left
            else:
                self._open.pop(token, None)

    def count(self) -> int:
        with self._mutex:
            return sum(self._open.values())


@bp.record_once
def _stream_slots(state) -> None:
    cfg = state.app.extensions["ggnet"].config
    # Never more than half the request threads: the rest answer /boot and the API.
    total = min(int(cfg["max_event_streams"]), max(1, int(cfg["request_threads"]) // 2))
    state.app.extensions["ggnet_streams"] = StreamSlots(
        int(cfg["max_event_streams_per_token"]), total
    )


def _slots() -> StreamSlots:
    from flask import current_app

    return current_app.extensions["ggnet_streams"]


# A job id is uuid4().hex; the spec publishes the same pattern (JobId).
JOB_ID_PATTERN = "[0-9a-f]{32}"
_JOB_ID = re.compile(f"^{JOB_ID_PATTERN}$")
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
                "playbook": runs(spec),
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
    unknown = sorted(set(body) - {"kind", "extravars", "wait"})
    if unknown:
        fail(400, f"body: unknown field(s) {', '.join(unknown)}; send kind, extravars, wait")
    if "extravars" in body and not isinstance(body["extravars"], dict):
        fail(400, "body.extravars: must be an object of variable names to values")
    kind = body.get("kind")
    if not isinstance(kind, str):
        fail(400, "body.kind: required, the job kind (see GET /api/playbooks)")
    wait = body.get("wait", True)
    if not isinstance(wait, bool):
        fail(400, "body.wait: must be true (queue behind a conflicting job) or false (409)")
    try:
        job = ext().jobs.submit(kind, body.get("extravars"), auth.principal_name(), wait=wait)
    except JobError as exc:
        fail(exc.status, f"body.{exc}" if str(exc).startswith(("kind", "extravars")) else str(exc))
    return accepted(job)


@bp.get("/jobs")
@auth.require("viewer")
def list_jobs():
    state = request.args.get("state")
    if state is not None and state not in STATES:
        fail(400, f"query parameter state: {state[:20]!r} is not one of {', '.join(STATES)}")
    limit = int_arg("limit", 100, 1, 1000)
    before = cursor_arg(JOB_ID_PATTERN)
    jobs = ext().db.jobs(limit=limit + 1, state=state, before=before)
    more = len(jobs) > limit
    jobs = jobs[:limit]
    cursor = page_cursor(jobs[-1]["created"], jobs[-1]["id"]) if more else None
    return jsonify(jobs=jobs, next=cursor)


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
    return event_stream(job_id, after, g.principal["id"])


def event_stream(job_id: str, after: int, token: Any, event_name: str | None = None):
    """The job's events after `after` (or after the request's Last-Event-ID, which a
    reconnecting EventSource sends) as server-sent events, each with its seq as id; a
    429 when `token` has no stream slot left.  event_name: every event under that
    one name (the console's page listens to one), else each under its runner name."""
    last_id = request.headers.get("Last-Event-ID", "")
    if last_id.isdigit():
        after = int(last_id)
    slots = _slots()
    refused = slots.take(token)
    if refused:
        resp = jsonify(error=f"event streams: {refused}")
        resp.status_code = 429
        resp.headers["Retry-After"] = "5"
        return resp
    resp = Response(
        stream_with_context(_stream(ext(), job_id, after, event_name)),
        content_type="text/event-stream",
        headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"},
    )
    given: list[bool] = []  # close() may come more than once

    def give_back() -> None:
        if not given:
            given.append(True)
            slots.give_back(token)

    resp.call_on_close(give_back)
    return resp


def _stream(e, job_id: str, after: int, event_name: str | None = None):
    idle_since = time.monotonic()
    ends = idle_since + float(e.config["event_stream_lifetime"])
    # A first line at once: the client sees the stream open (headers sent) even when
    # the job has nothing to say for a while.
    yield f": job {job_id}\n\n"
    while True:
        if time.monotonic() >= ends:
            # EventSource reconnects after `retry` ms, sending the last id it saw.
            data = json.dumps({"after": after})
            yield f"retry: 1000\nid: {after}\nevent: reconnect\ndata: {data}\n\n"
            return
        # State first, then events: events stored before the job ended are all read.
        state = e.db.job(job_id)["state"]
        batch = e.db.events(job_id, after, 500)
        for ev in batch:
            after = ev["seq"]
            name = event_name or ev["event"]
            yield f"id: {ev['seq']}\nevent: {name}\ndata: {json.dumps(ev)}\n\n"
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
