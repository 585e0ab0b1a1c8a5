"""Discovered machines: list them (a page at a time), approve one (inventory + git +
converge), forget one or many.

A page holds at most MAX_PAGE machines and a report in a list at most LIST_REPORT
bytes (the whole one is on GET /api/discovered/<mac>): a room of PCs that each sent
the largest body the API accepts must not make a reply of tens of megabytes.
"""

from __future__ import annotations

import json
import time
from typing import Any

from flask import Blueprint, jsonify, request
from ggnet.model import parse_duration
from ggnet.net import mac_bytes, mac_of_bytes, normalize_mac

from ggnet_api import auth
from ggnet_api.approval import ApprovalError, check_request
from ggnet_api.blueprints.common import cursor_arg, ext, fail, json_body, page_cursor
from ggnet_api.jobs import JobError
from ggnet_privd.protocol import OpError

bp = Blueprint("discovery", __name__, url_prefix="/api")

DEFAULT_PAGE = 100
MAX_PAGE = 500
LIST_REPORT = 4096
_STATES = ("discovered", "approved", "all")


def _mac(raw: str) -> str:
    try:
        return normalize_mac(raw)
    except ValueError as exc:
        fail(400, f"MAC address {raw[:40]!r} in the URL {exc}")


def _view(row: dict, report_limit: int | None = None) -> dict:
    row = dict(row)
    row["facts"] = json.loads(row["facts"] or "{}")
    report = row["report"]
    if report and report_limit is not None and len(report) > report_limit:
        row["report"] = {"truncated": True, "bytes": len(report)}
    else:
        row["report"] = json.loads(report) if report else None
    return row


def _state(raw: str | None, default: str) -> str | None:
    """A state filter from the client: None means every state."""
    state = default if raw is None else raw
    if state not in _STATES:
        fail(400, f"state: {str(state)[:20]!r} is not one of {', '.join(_STATES)}")
    return None if state == "all" else state


@bp.get("/discovered")
@auth.require("viewer")
def list_discovered():
    state = _state(request.args.get("state"), "discovered")
    raw_limit = request.args.get("limit", str(DEFAULT_PAGE))
    if not raw_limit.isdigit() or not 1 <= int(raw_limit) <= MAX_PAGE:
        fail(400, f"query parameter limit: {raw_limit[:20]!r} is not a number from 1 to {MAX_PAGE}")
    limit = int(raw_limit)
    cursor = cursor_arg(r"\w{12}")
    after = None if cursor is None else (cursor[0], _cursor_mac(cursor[1]))
    # One more than the page: whether there is a next page, without a count.
    rows = ext().db.discovered_list(state, limit + 1, after)
    page, more = rows[:limit], len(rows) > limit
    return jsonify(
        discovered=[_view(r, LIST_REPORT) for r in page],
        next=page_cursor(page[-1]["first_seen"], page[-1]["mac"].replace(":", ""))
        if more
        else None,
    )


def _cursor_mac(key: str) -> str:
    try:
        return mac_of_bytes(mac_bytes(key))
    except ValueError:
        fail(400, f"query parameter cursor: {key!r} is not a cursor this API gave (next)")


def _row_or_404(mac: str) -> dict:
    row = ext().db.discovered(mac)
    if row is None:
        fail(404, f"{mac}: no discovered machine with this MAC")
    return row


@bp.get("/discovered/<raw_mac>")
@auth.require("viewer")
def get_discovered(raw_mac: str):
    return jsonify(_view(_row_or_404(_mac(raw_mac))))


@bp.post("/discovered/<raw_mac>/approve")
@auth.require("operator")
def approve_machine(raw_mac: str):
    mac = _mac(raw_mac)
    row = _row_or_404(mac)
    if row["state"] != "discovered":
        fail(409, f"{mac}: already {row['state']} as {row['name']}")
    body = json_body()
    e = ext()
    who = auth.principal_name()
    try:
        name, image, groups = check_request(body, e.inventory.snapshot, mac)
        # The write and the commit are the privileged side's; it checks again.
        commit = e.privileged.approve(mac, name, image, groups, who)
    except (ApprovalError, OpError) as exc:
        payload: dict[str, Any] = {"error": str(exc)}
        if exc.problems:
            payload["problems"] = exc.problems
        resp = jsonify(payload)
        resp.status_code = exc.status
        return resp
    e.inventory.reload(force=True)
    try:
        job = e.jobs.submit("converge", {}, who)
        job_id, job_error = job["id"], None
    except JobError as exc:
        job_id, job_error = None, str(exc)
    e.db.approve_discovered(mac, name, who, job_id)
    return jsonify(
        mac=mac,
        name=name,
        image=image,
        groups=groups,
        commit=commit,
        job_id=job_id,
        job_error=job_error,
    ), 201


@bp.delete("/discovered/<raw_mac>")
@auth.require("operator")
def forget(raw_mac: str):
    mac = _mac(raw_mac)
    _row_or_404(mac)
    ext().db.forget_discovered(mac)
    return jsonify(forgotten=mac)


@bp.delete("/discovered")
@auth.require("operator")
def forget_many():
    """Forget the machines matching every filter given: `seen_before` (not seen for
    this long: a duration) and `state` (default discovered).  No filter clears the
    waiting list; a forgotten machine that boots again is discovered again.  One
    machine is DELETE /discovered/<mac>."""
    unknown = sorted(set(request.args) - {"seen_before", "state"})
    if unknown:
        fail(400, f"query: unknown parameter(s) {', '.join(unknown)}; use seen_before, state")
    seen_before = request.args.get("seen_before")
    before = None if seen_before is None else _seen_before(seen_before)
    state = _state(request.args.get("state"), "discovered")
    return jsonify(forgotten=ext().db.forget_discovered_many(before, state))


def _seen_before(value: str) -> float:
    try:
        return time.time() - parse_duration(value)
    except ValueError as exc:
        fail(400, f"query parameter seen_before: {value[:40]!r} {exc}")
