"""Helpers the blueprints share: the app's state, JSON bodies, and 4xx answers."""

from __future__ import annotations

import re
from typing import Any, NoReturn

from flask import abort, current_app, jsonify, make_response, request


def ext():
    return current_app.extensions["ggnet"]


def fail(status: int, message: str) -> NoReturn:
    """Stop the request with a JSON error naming what is wrong and where."""
    abort(make_response(jsonify(error=message), status))


def accepted(job: dict[str, Any]):
    """202 with the job, and where to follow it."""
    resp = jsonify(job)
    resp.status_code = 202
    resp.headers["Location"] = f"/api/jobs/{job['id']}"
    return resp


def json_body() -> dict[str, Any]:
    if not request.is_json:
        fail(415, "body: send a JSON object with Content-Type: application/json")
    data = request.get_json(silent=True)
    if not isinstance(data, dict):
        fail(400, "body: not a JSON object")
    return data


def int_arg(name: str, default: int, low: int, high: int) -> int:
    raw = request.args.get(name)
    if raw is None:
        return default
    try:
        value = int(raw)
    except ValueError:
        fail(400, f"query parameter {name}: {raw[:20]!r} is not an integer")
    if not low <= value <= high:
        fail(400, f"query parameter {name}: must be between {low} and {high}")
    return value


# A page's cursor is its last row's (time, key): `<time as repr>-<key>`.  repr gives the
# float back exactly, and every string of that shape is a place in the order, so a
# well-formed cursor is never refused (openapi.yml publishes each list's shape).
_CURSOR_TIME = r"([0-9]{1,12}(?:\.[0-9]{1,20})?)"


def page_cursor(at: float, key: str) -> str:
    return f"{float(at)!r}-{key}"


def cursor_arg(key_pattern: str) -> tuple[float, str] | None:
    """The `cursor` query parameter as (time, key), None when absent."""
    raw = request.args.get("cursor")
    if raw is None:
        return None
    m = re.fullmatch(f"{_CURSOR_TIME}-({key_pattern})", raw)
    if m is None:
        fail(400, f"query parameter cursor: {raw[:40]!r} is not a cursor this API gave (next)")
    return float(m.group(1)), m.group(2)
