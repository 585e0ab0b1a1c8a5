"""Helpers the blueprints share: the app's state, JSON bodies, and 4xx answers."""

from __future__ import annotations

from typing import Any, NoReturn

from flask import abort, current_app, jsonify, make_response, request


def ext():
    return current_app.extensions["ggnet"]


def fail(status: int, message: str) -> NoReturn:
    """Stop the request with a JSON error naming what is wrong and where."""
    abort(make_response(jsonify(error=message), status))


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
