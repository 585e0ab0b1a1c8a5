"""Tokens (admin): list and revoke.  Creating one is `ggnet token create` on the
server, so a token is only ever shown once, on the terminal of whoever made it."""

from __future__ import annotations

import time

from flask import Blueprint, jsonify

from ggnet_api import auth
from ggnet_api.blueprints.common import ext, fail

bp = Blueprint("tokens", __name__, url_prefix="/api")


@bp.get("/tokens")
@auth.require("admin")
def list_tokens():
    now = time.time()
    rows = ext().db.tokens()
    for row in rows:
        row["expired"] = row["expires"] is not None and row["expires"] <= now
    return jsonify(tokens=rows)


@bp.delete("/tokens/<int:token_id>")
@auth.require("admin")
def revoke(token_id: int):
    if not ext().db.revoke_token(token_id):
        fail(404, f"token {token_id}: no such active token")
    return jsonify(revoked=token_id)
