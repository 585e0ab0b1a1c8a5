"""The console's sign-in: an API token, checked as the API checks a bearer token
(ggnet_api/auth.py), buys a server-side session.

The browser holds only the session's random id, in a cookie that is HttpOnly,
SameSite=Strict, scoped to /ui, and Secure when the request came over TLS.  The
database keeps its SHA-256 (database.hash_token), the token it belongs to and its
expiry: a session ends at its expiry (never later than its token's), at sign-out, and
when its token is revoked (the lookup joins the token; revoke_token deletes them).

Every form carries the session's CSRF token, an HMAC of the session id (nothing more
to store), compared in constant time.  The sign-in form, before any session, carries
the value of a short-lived cookie of its own (double submit).
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import time
from typing import Any

from flask import current_app, request

from ggnet_api.db.database import hash_token

COOKIE = "ggnet_session"
SIGNIN_COOKIE = "ggnet_signin"
PATH = "/ui"
# A session id and a CSRF value as this module makes them: anything else is refused
# before the database is asked.
_MAX_ID = 64


def new_session_id() -> str:
    return secrets.token_urlsafe(32)


def csrf_for(session_id: str) -> str:
    return hmac.new(session_id.encode(), b"ggnet-ui-csrf", hashlib.sha256).hexdigest()


def same(given: str | None, expected: str) -> bool:
    """The CSRF check: constant-time, and False for a missing value."""
    if not given:
        return False
    return hmac.compare_digest(given.encode(), expected.encode())


def cookie_id(name: str = COOKIE) -> str | None:
    raw = request.cookies.get(name)
    if not raw or len(raw) > _MAX_ID:
        return None
    return raw


def start(principal: dict[str, Any], now: float | None = None) -> tuple[str, float]:
    """A new session of the token `principal` is: (its id, its expiry)."""
    ext = current_app.extensions["ggnet"]
    now = time.time() if now is None else now
    expires = now + float(ext.config["ui_session_lifetime"])
    if principal.get("expires") is not None:
        expires = min(expires, float(principal["expires"]))
    session_id = new_session_id()
    ext.db.add_ui_session(hash_token(session_id), principal["id"], now, expires)
    return session_id, expires


def lookup(session_id: str) -> dict[str, Any] | None:
    """The session (its token's id, name, role, expires; session_expires), or None
    when it is unknown, signed out or its token revoked."""
    return current_app.extensions["ggnet"].db.ui_session(hash_token(session_id))


def end(session_id: str) -> None:
    current_app.extensions["ggnet"].db.end_ui_session(hash_token(session_id))


def set_cookie(resp, name: str, value: str, max_age: int) -> None:
    resp.set_cookie(
        name,
        value,
        max_age=max(1, max_age),
        path=PATH,
        httponly=True,
        samesite="Strict",
        secure=request.is_secure,
    )


def clear_cookie(resp, name: str = COOKIE) -> None:
    resp.delete_cookie(name, path=PATH, httponly=True, samesite="Strict", secure=request.is_secure)
