"""Discovered machines: list them, approve one (inventory + git + converge), forget one."""

from __future__ import annotations

import json
from typing import Any

from flask import Blueprint, jsonify, request
from ggnet.net import normalize_mac

from ggnet_api import auth
from ggnet_api.approval import ApprovalError, approve, check_request
from ggnet_api.blueprints.common import ext, fail, json_body
from ggnet_api.jobs import JobError

bp = Blueprint("discovery", __name__, url_prefix="/api")


def _mac(raw: str) -> str:
    try:
        return normalize_mac(raw)
    except ValueError as exc:
        fail(400, f"MAC address {raw[:40]!r} in the URL {exc}")


def _view(row: dict) -> dict:
    row = dict(row)
    row["facts"] = json.loads(row["facts"] or "{}")
    row["report"] = json.loads(row["report"]) if row["report"] else None
    return row


@bp.get("/discovered")
@auth.require("viewer")
def list_discovered():
    state = request.args.get("state", "discovered")
    if state not in ("discovered", "approved", "all"):
        fail(400, f"query parameter state: {state[:20]!r} is not one of discovered, approved, all")
    rows = ext().db.discovered_list(None if state == "all" else state)
    return jsonify(discovered=[_view(r) for r in rows])


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
