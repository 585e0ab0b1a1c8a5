"""Discovered machines: list them (a page at a time), approve one (inventory + git +
converge), forget one or many.

A page holds at most MAX_PAGE machines and a report in a list at most LIST_REPORT
bytes (the whole one is on GET /api/discovered/<mac>): a room of PCs that each sent
the largest body the API accepts must not make a reply of tens of megabytes.
"""

from __future__ import annotations

import base64
import binascii
import json
import time
from typing import Any

from flask import Blueprint, jsonify, request
from ggnet.model import parse_duration
from ggnet.net import normalize_mac

from ggnet_api import auth
from ggnet_api.approval import ApprovalError, approve, check_request
from ggnet_api.blueprints.common import ext, fail, json_body
from ggnet_api.jobs import JobError

bp = Blueprint("discovery", __name__, url_prefix="/api")

DEFAULT_PAGE = 100
MAX_PAGE = 500
LIST_REPORT = 4096
MAX_FORGET = 4096
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


def _cursor(row: dict) -> str:
    raw = json.dumps([row["first_seen"], row["mac"]]).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _after(raw: str) -> tuple[float, str]:
    try:
        first_seen, mac = json.loads(base64.urlsafe_b64decode(raw + "=" * (-len(raw) % 4)))
        if not isinstance(mac, str) or isinstance(first_seen, bool):
            raise ValueError
        return float(first_seen), mac
    except (ValueError, TypeError, binascii.Error):
        fail(400, f"query parameter after: {raw[:40]!r} is not a cursor this API gave (next)")


@bp.get("/discovered")
@auth.require("viewer")
def list_discovered():
    state = _state(request.args.get("state"), "discovered")
    raw_limit = request.args.get("limit", str(DEFAULT_PAGE))
    if not raw_limit.isdigit() or not 1 <= int(raw_limit) <= MAX_PAGE:
        fail(400, f"query parameter limit: {raw_limit[:20]!r} is not a number from 1 to {MAX_PAGE}")
    limit = int(raw_limit)
    raw_after = request.args.get("after")
    after = _after(raw_after) if raw_after else None
    # One more than the page: whether there is a next page, without a count.
    rows = ext().db.discovered_list(state, limit + 1, after)
    page, more = rows[:limit], len(rows) > limit
    return jsonify(
        discovered=[_view(r, LIST_REPORT) for r in page],
        next=_cursor(page[-1]) if more else None,
    )


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
        commit = approve(
            e.config["inventory"], mac, name, image, groups, who, e.config["git_author"]
        )
    except ApprovalError as exc:
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


@bp.post("/discovered/forget")
@auth.require("operator")
def forget_many():
    """Forget the machines matching every filter of the body: `macs` (a list),
    `seen_before` (not seen since: epoch seconds, or a duration back from now) and
    `state` (default discovered).  At least macs or seen_before."""
    body = json_body()
    unknown = sorted(set(body) - {"macs", "seen_before", "state"})
    if unknown:
        fail(400, f"body: unknown field(s) {', '.join(unknown)}; send macs, seen_before, state")
    macs, seen_before = body.get("macs"), body.get("seen_before")
    if macs is None and seen_before is None:
        fail(400, "body: send macs (a list of MACs) or seen_before (epoch or duration), or both")
    if macs is not None:
        if not isinstance(macs, list) or not all(isinstance(m, str) for m in macs):
            fail(400, "body.macs: a list of MAC addresses")
        if len(macs) > MAX_FORGET:
            fail(400, f"body.macs: at most {MAX_FORGET} at a time")
        macs = [_body_mac(m) for m in macs]
    before = None if seen_before is None else _seen_before(seen_before)
    state = _state(body.get("state"), "discovered")
    n = ext().db.forget_discovered_many(macs, before, state)
    return jsonify(forgotten=n)


def _body_mac(raw: str) -> str:
    try:
        return normalize_mac(raw)
    except ValueError as exc:
        fail(400, f"body.macs: {raw[:40]!r} {exc}")


def _seen_before(value: Any) -> float:
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    if isinstance(value, str):
        try:
            return time.time() - parse_duration(value)
        except ValueError as exc:
            fail(400, f"body.seen_before: {value[:40]!r} {exc}")
    fail(400, "body.seen_before: epoch seconds, or a duration back from now (e.g. 7d)")
