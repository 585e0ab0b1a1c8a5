"""Bearer tokens with a role, and a limit on failed attempts per client address.

Roles are ordered: a viewer reads, an operator also starts and cancels jobs and
approves machines, an admin also manages tokens.  A client that fails more than
auth_fail_limit times within auth_fail_window seconds is answered 429 until the
window has passed, whatever token it sends then: guessing gets slow.

A token may carry an expiry; past it the token is refused like a revoked one.  A token's
name is written into job records, git commit messages and host_vars comments, so it is
one line of printable characters.
"""

from __future__ import annotations

import functools
import secrets
import time
from collections.abc import Callable
from typing import Any

from flask import current_app, g, jsonify, request

from ggnet_api import rate_limit

ROLES = ("viewer", "operator", "admin")
TOKEN_PREFIX = "ggn_"
MAX_NAME = 64


def new_token() -> str:
    return TOKEN_PREFIX + secrets.token_urlsafe(32)


def check_token_name(name: object) -> str:
    """The name, stripped; ValueError naming the value when it is not one printable line."""
    if not isinstance(name, str):
        raise ValueError(f"token name {name!r}: not a string")
    shown = repr(name[:40]) + ("..." if len(name) > 40 else "")
    stripped = name.strip(" ")  # not strip(): a trailing newline is refused, not dropped
    if not stripped or len(stripped) > MAX_NAME:
        raise ValueError(f"token name {shown}: 1 to {MAX_NAME} characters")
    # isprintable() is False for control, format and line/paragraph separator characters:
    # any of them would end a line of a host_vars comment or a commit message.
    if not stripped.isprintable():
        raise ValueError(f"token name {shown}: control or line-break characters are not allowed")
    return stripped


def printable_name(name: str) -> str:
    """A name for one line of text: tokens made before names were checked may hold
    control characters, shown here as escapes."""
    return "".join(ch if ch.isprintable() else ascii(ch)[1:-1] for ch in name)


def role_at_least(role: str, needed: str) -> bool:
    return ROLES.index(role) >= ROLES.index(needed)


def role_refusal(principal: dict[str, Any], needed: str) -> str | None:
    """None when the principal's role is at least `needed`, else why not."""
    if role_at_least(principal["role"], needed):
        return None
    return f"this needs the {needed} role; token {principal['name']!r} has {principal['role']}"


def deny(
    status: int,
    reason: str,
    message: str,
    retry_after: float | None = None,
    challenge: str = 'Bearer realm="ggnet"',
):
    """A refused authentication's answer, counted in auth_failures by `reason`."""
    ext = current_app.extensions["ggnet"]
    ext.metrics.auth_failures.labels(reason=reason).inc()
    resp = jsonify(error=message)
    resp.status_code = status
    if status == 401:
        resp.headers["WWW-Authenticate"] = challenge
    if retry_after is not None:
        resp.headers["Retry-After"] = rate_limit.retry_after(retry_after)
    return resp


def throttled(who: str):
    """The 429 while `who` is over its limit of failed authentications, else None."""
    wait = current_app.extensions["ggnet"].limiter.wait(who)
    if not wait:
        return None
    return deny(
        429,
        "rate_limited",
        f"too many failed authentications from {who}; retry in {rate_limit.retry_after(wait)} s",
        wait,
    )


def token_principal(token: str) -> tuple[dict[str, Any] | None, tuple[str, str]]:
    """(the token's principal, ("", "")) when it is valid now, else (None, (reason,
    message)): the API's bearer check and the console's sign-in both ask this."""
    principal = current_app.extensions["ggnet"].db.token(token)
    if principal is None:
        return None, ("invalid", "Authorization: the token is not valid (unknown or revoked)")
    expired = expiry_message(principal.get("expires"))
    if expired:
        return None, ("expired", f"Authorization: {expired}")
    return principal, ("", "")


def expiry_message(expires: float | None, now: float | None = None) -> str | None:
    """None while a token with this expiry is valid, else what to tell its holder."""
    if expires is None or expires > (time.time() if now is None else now):
        return None
    when = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(expires))
    return f"the token expired at {when}; an admin makes a new one"


def check_request(needed: str):
    """None when the request may go on (g.principal is set), else the error response."""
    ext = current_app.extensions["ggnet"]
    who = request.remote_addr or "unknown"
    limited = throttled(who)
    if limited is not None:
        return limited
    header = request.headers.get("Authorization", "")
    scheme, _, token = header.partition(" ")
    if not header:
        ext.limiter.take(who)
        return deny(
            401,
            "missing",
            "Authorization: a bearer token is required (Authorization: Bearer <token>)",
        )
    if scheme.lower() != "bearer" or not token.strip():
        ext.limiter.take(who)
        return deny(
            401, "malformed", "Authorization: use the Bearer scheme (Authorization: Bearer <token>)"
        )
    principal, refused = token_principal(token.strip())
    if principal is None:
        ext.limiter.take(who)
        return deny(401, *refused)
    forbidden = role_refusal(principal, needed)
    if forbidden:
        return deny(403, "forbidden", forbidden)
    g.principal = principal
    return None


def require(needed: str) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    if needed not in ROLES:
        raise ValueError(f"unknown role {needed}")

    def wrap(view: Callable[..., Any]) -> Callable[..., Any]:
        @functools.wraps(view)
        def inner(*args: Any, **kwargs: Any) -> Any:
            denied = check_request(needed)
            if denied is not None:
                return denied
            return view(*args, **kwargs)

        inner.ggnet_role = needed  # type: ignore[attr-defined]
        return inner

    return wrap


def principal_name() -> str:
    p = getattr(g, "principal", None)
    return printable_name(p["name"]) if p else "anonymous"
