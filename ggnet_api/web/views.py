"""The console's pages: sign-in, machines, a machine, jobs, a job, tokens."""

from __future__ import annotations

import functools
import re
import time
from collections.abc import Callable
from typing import Any
from urllib.parse import urlencode

from flask import (
    Blueprint,
    Response,
    g,
    redirect,
    render_template,
    request,
    url_for,
)
from ggnet import redfish
from markupsafe import Markup, escape
from werkzeug.exceptions import HTTPException

from ggnet_api import auth, rate_limit
from ggnet_api.blueprints import jobs as jobs_api
from ggnet_api.blueprints import machines as machines_api
from ggnet_api.blueprints.common import ext
from ggnet_api.db.database import JOB_DONE
from ggnet_api.jobs import JobError
from ggnet_api.web import sessions

bp = Blueprint(
    "ui",
    __name__,
    url_prefix="/ui",
    static_folder="static",
    static_url_path="/static",
)

# A machine's status on the console, from its last boot's result (the API's view).
STATUSES = ("off", "booting", "booted", "failed")
_RESULT_STATUS = {"pending": "booting", "ok": "booted"}
# The endpoints a browser reaches without a session.
_OPEN = frozenset({"ui.static", "ui.signin", "ui.signin_post"})
_SAFE_NEXT = re.compile(r"^/ui/[A-Za-z0-9/_.?=&%-]*$")
CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'; "
    "object-src 'none'"
)


class Refused(HTTPException):
    """A page that says what is wrong and what to do, with its status."""

    def __init__(self, status: int, title: str, message: str, hint: str = "", **headers: str):
        super().__init__(message)
        self.code = status
        self.title = title
        self.message = message
        self.hint = hint
        self.extra_headers = headers


def error_page(status: int, title: str, message: str, hint: str = "", headers=None) -> Response:
    principal = getattr(g, "principal", None)
    html = render_template(
        "ui/error.html",
        status=status,
        title=title,
        message=message,
        hint=hint,
        principal=principal,
        csrf=getattr(g, "csrf", ""),
    )
    resp = Response(html, status=status, content_type="text/html; charset=utf-8")
    for k, v in (headers or {}).items():
        resp.headers[k] = v
    if status == 401:
        sessions.clear_cookie(resp)
    return resp


def http_error_page(exc: HTTPException) -> Response:
    """The app's HTTP errors under /ui as pages (app.py asks this for /ui paths)."""
    if isinstance(exc, Refused):
        return error_page(exc.code or 400, exc.title, exc.message, exc.hint, exc.extra_headers)
    code = exc.code or 500
    if code == 404:
        return error_page(
            404,
            "Page not found",
            f"{request.path[:100]} is not a page of the console.",
            "Go to the machines page and follow the links from there.",
        )
    if code == 405:
        return error_page(405, "Not allowed", f"{request.method} is not allowed here.", "")
    if code == 413:
        return error_page(413, "Form too large", "The form sent more than this server accepts.")
    return error_page(code, exc.name, exc.description or exc.name)


def internal_error_page() -> Response:
    return error_page(
        500,
        "Internal error",
        "The server failed to answer this page.",
        "The details are in the API's log (journalctl -u ggnet-api); try again.",
    )


def _who() -> str:
    return request.remote_addr or "unknown"


def _throttled() -> None:
    wait = ext().limiter.wait(_who())
    if wait:
        ext().metrics.auth_failures.labels(reason="rate_limited").inc()
        after = rate_limit.retry_after(wait)
        raise Refused(
            429,
            "Too many failed sign-ins",
            f"Too many failed authentications came from {_who()}.",
            f"Wait {after} s, then sign in again with a valid token.",
            **{"Retry-After": after},
        )


def _failed(reason: str) -> None:
    """An authentication failed: counted, and spent from the address's budget."""
    ext().limiter.take(_who())
    ext().metrics.auth_failures.labels(reason=reason).inc()


def _signin_url() -> str:
    nxt = request.full_path if request.method == "GET" else request.path
    nxt = nxt.rstrip("?")
    return url_for("ui.signin") + ("?" + urlencode({"next": nxt}) if nxt != "/ui/" else "")


@bp.before_request
def _session():
    if request.endpoint in _OPEN:
        return None
    _throttled()
    session_id = sessions.cookie_id()
    fragment = request.headers.get("HX-Request") == "true"
    if session_id is None:
        if request.method == "GET" and not fragment and "/events" not in request.path:
            return redirect(_signin_url(), 303)
        raise Refused(
            401, "Not signed in", "This needs a signed-in session.", "Sign in with an API token."
        )
    row = sessions.lookup(session_id)
    if row is None:
        _failed("invalid")
        raise Refused(
            401,
            "Session not valid",
            "This session is not valid: it was signed out, or its token was revoked.",
            "Sign in again with a valid API token.",
        )
    now = time.time()
    if row["session_expires"] <= now:
        sessions.end(session_id)
        when = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(row["session_expires"]))
        raise Refused(
            401,
            "Session expired",
            f"This session expired at {when}.",
            "Sign in again with your API token.",
        )
    expired = auth.expiry_message(row["expires"], now)
    if expired:
        sessions.end(session_id)
        raise Refused(401, "Token expired", f"This session's token: {expired}.", "")
    g.principal = {k: row[k] for k in ("id", "name", "role", "expires")}
    g.session_id = session_id
    g.csrf = sessions.csrf_for(session_id)
    if request.method == "POST" and not sessions.same(request.form.get("csrf"), g.csrf):
        missing = not request.form.get("csrf")
        raise Refused(
            403,
            "Form refused",
            "The form's CSRF token is "
            + ("missing." if missing else "not the one of this session."),
            "Reload the page and send the form again from it.",
        )
    return None


@bp.after_request
def _headers(resp: Response) -> Response:
    resp.headers.setdefault("Content-Security-Policy", CSP)
    resp.headers["X-Frame-Options"] = "DENY"
    resp.headers["X-Content-Type-Options"] = "nosniff"
    resp.headers["Referrer-Policy"] = "no-referrer"
    if request.endpoint != "ui.static":
        resp.headers["Cache-Control"] = "no-store"
    return resp


def needs(role: str) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """The page needs at least `role` (auth.ROLES' order): else a 403 page."""

    def wrap(view: Callable[..., Any]) -> Callable[..., Any]:
        @functools.wraps(view)
        def inner(*args: Any, **kwargs: Any) -> Any:
            refusal = auth.role_refusal(g.principal, role)
            if refusal:
                raise Refused(
                    403,
                    "Not allowed",
                    f"{refusal[0].upper()}{refusal[1:]}.",
                    f"Ask an admin for a token with the {role} role.",
                )
            return view(*args, **kwargs)

        return inner

    return wrap


def page(template: str, status: int = 200, **context: Any) -> Response:
    html = render_template(
        template,
        principal=g.principal,
        csrf=Markup.escape(g.csrf),
        can_act=auth.role_at_least(g.principal["role"], "operator"),
        is_admin=auth.role_at_least(g.principal["role"], "admin"),
        **context,
    )
    return Response(html, status=status, content_type="text/html; charset=utf-8")


# -- sign-in -----------------------------------------------------------------------------


def _next() -> str:
    nxt = request.values.get("next", "")
    if _SAFE_NEXT.match(nxt) and "//" not in nxt:
        return nxt
    return url_for("ui.machines")


def _signin_page(status: int = 200, error: str = "", notice: str = "") -> Response:
    value = sessions.cookie_id(sessions.SIGNIN_COOKIE) or sessions.new_session_id()
    html = render_template(
        "ui/signin.html", csrf=value, next=_next(), error=error, notice=notice, principal=None
    )
    resp = Response(html, status=status, content_type="text/html; charset=utf-8")
    sessions.set_cookie(resp, sessions.SIGNIN_COOKIE, value, 3600)
    return resp


@bp.get("/signin")
def signin():
    notice = "You are signed out." if request.args.get("signed_out") else ""
    return _signin_page(notice=notice)


@bp.post("/signin")
def signin_post():
    _throttled()
    expected = sessions.cookie_id(sessions.SIGNIN_COOKIE)
    if expected is None or not sessions.same(request.form.get("csrf"), expected):
        return _signin_page(
            403, "The sign-in form had expired or its CSRF token was missing: send it again."
        )
    token = (request.form.get("token") or "").strip()
    if not token:
        _failed("missing")
        return _signin_page(401, "Type or paste an API token (ggn_…).")
    principal, (reason, message) = auth.token_principal(token)
    if principal is None:
        _failed(reason)
        text = message.removeprefix("Authorization: ")
        return _signin_page(401, f"Sign-in refused: {text}.")
    session_id, expires = sessions.start(principal)
    resp = redirect(_next(), 303)
    sessions.set_cookie(resp, sessions.COOKIE, session_id, int(expires - time.time()))
    sessions.clear_cookie(resp, sessions.SIGNIN_COOKIE)
    return resp


@bp.post("/signout")
def signout():
    sessions.end(g.session_id)
    resp = redirect(url_for("ui.signin", signed_out=1), 303)
    sessions.clear_cookie(resp)
    return resp


# -- machines ----------------------------------------------------------------------------


def status_of(machine: dict) -> str:
    last = machine.get("last_boot")
    if last is None:
        return "off"
    return _RESULT_STATUS.get(last["result"], "failed")


def _filtered() -> tuple[list[dict], dict[str, str], list[str]]:
    machines = machines_api.machine_views()
    groups = sorted({grp for m in machines for grp in m["groups"]})
    group = request.args.get("group", "")
    status = request.args.get("status", "")
    if group and group not in groups:
        raise Refused(
            400,
            "Unknown group",
            f"Group {group[:64]!r} has no machines in this server's inventory.",
            "Pick one of: " + (", ".join(groups) or "(no groups)") + ", or all groups.",
        )
    if status and status not in STATUSES:
        raise Refused(
            400,
            "Unknown status",
            f"Status {status[:20]!r} is not a machine status.",
            "Pick one of: " + ", ".join(STATUSES) + ", or any status.",
        )
    for m in machines:
        m["status"] = status_of(m)
    shown = [
        _row(m)
        for m in machines
        if (not group or group in m["groups"]) and (not status or m["status"] == status)
    ]
    return shown, {"group": group, "status": status}, groups


def _row(m: dict) -> dict[str, Any]:
    """A machine's row as the table shows it, its cells formatted AND escaped here
    (markupsafe.escape): a room's thousand rows are rendered at every poll, so the
    table's loop runs without autoescape (_machines_table.html), each value escaped
    once instead of at each of its uses."""
    last = m["last_boot"] or {}
    cells = {
        "name": m["name"],
        "groups": ", ".join(m["groups"]) or "—",
        "status": m["status"],
        "maintenance": m["maintenance"],
        "ip": m["ip"] or "—",
        "image": (m["image"] or "—") + (f"@{m['version']}" if m["version"] else ""),
        "game_disk": m["game_disk"] or "—",
        "writeback": _size(m["writeback_bytes"]),
        "last_boot": _when(last.get("started")),
        "took": _seconds(last.get("duration")),
        # A wake not yet answered by the PC's next request: "wake sent" / "wake unconfirmed".
        "wake": _wake_badge(m),
    }
    return {k: v if isinstance(v, bool) else escape(v) for k, v in cells.items()}


def _wake_badge(m: dict) -> str:
    wake = (m.get("power") or {}).get("wake") or {}
    state = wake.get("state")
    return f"wake {state}" if state in ("sent", "unconfirmed") else ""


@bp.get("/")
def home():
    return redirect(url_for("ui.machines"), 303)


@bp.get("/machines")
def machines():
    shown, filters, groups = _filtered()
    query = urlencode({k: v for k, v in filters.items() if v})
    return page(
        "ui/machines.html",
        machines=shown,
        filters=filters,
        groups=groups,
        statuses=STATUSES,
        query=query,
        poll=float(ext().config["ui_poll_seconds"]),
    )


@bp.get("/machines/table")
def machines_table():
    shown, filters, _ = _filtered()
    return page("ui/_machines_table.html", machines=shown, filters=filters)


def _machine_or_404(name: str) -> dict:
    machine = machine_view_or_none(name)
    if machine is None:
        raise Refused(
            404,
            "Unknown machine",
            f"Machine {name[:64]!r} is not a client of this server's inventory.",
            "Pick a machine from the machines page; a new PC appears there once approved.",
        )
    return machine


def machine_view_or_none(name: str) -> dict | None:
    return machines_api.machine_view(name)


@bp.get("/machines/<name>")
def machine(name: str):
    m = _machine_or_404(name)
    m["status"] = status_of(m)
    e = ext()
    found = e.db.discovered(m["mac"])
    hardware = None
    if found is not None:
        hardware = {
            "facts": _json(found.get("facts")) or {},
            "report": _json(found.get("report")),
            "seen": found.get("last_seen"),
        }
    return page(
        "ui/machine.html",
        m=m,
        hardware=hardware,
        operations=e.db.machine_jobs(name, 20),
    )


def _json(raw: Any) -> Any:
    import json

    if raw is None or isinstance(raw, dict):
        return raw
    try:
        return json.loads(raw)
    except ValueError:
        return None


def _start_machine_job(name: str, extravars: dict[str, Any]):
    _machine_or_404(name)
    try:
        job = ext().jobs.submit(
            "machine", {**extravars, "client": name}, auth.principal_name(), wait=True
        )
    except JobError as exc:
        raise Refused(
            exc.status,
            "Not started",
            f"{name}: {exc}",
            "Fix what the message names, or wait for the job holding this machine.",
        ) from None
    return redirect(url_for("ui.job", job_id=job["id"]), 303)


@bp.post("/machines/<name>/reset")
@needs("operator")
def machine_reset(name: str):
    return _start_machine_job(name, {"op": "reset"})


@bp.post("/machines/<name>/maintenance")
@needs("operator")
def machine_maintenance(name: str):
    want = request.form.get("maintenance", "")
    if want not in ("on", "off"):
        raise Refused(
            400,
            "Bad form",
            f"maintenance: {want[:10]!r} is not on or off.",
            "Use the Maintenance on/off button of the machine's row.",
        )
    return _start_machine_job(name, {"op": "keep" if want == "on" else "release"})


@bp.post("/machines/<name>/apply")
@needs("operator")
def machine_apply(name: str):
    comment = (request.form.get("comment") or "").strip()
    if not comment:
        raise Refused(
            400,
            "Comment needed",
            f"{name}: applying a writeback makes a new image version, which needs a comment.",
            "Go back, describe what changed in the comment box, and apply again.",
        )
    return _start_machine_job(name, {"op": "apply", "comment": comment})


@bp.post("/machines/<name>/wake")
@needs("operator")
def machine_wake(name: str):
    return _start_power_job(name, "wake")


@bp.post("/machines/<name>/power")
@needs("operator")
def machine_power(name: str):
    action = request.form.get("action", "")
    if action not in redfish.ACTIONS:
        raise Refused(
            400,
            "Bad form",
            f"power: {action[:10]!r} is not one of {', '.join(redfish.ACTIONS)}.",
            "Use the power buttons of the machine's page.",
        )
    m = _machine_or_404(name)
    if not (m.get("power") or {}).get("bmc"):
        raise Refused(
            409,
            "No BMC",
            f"{name}: the inventory names no BMC for it ({redfish.KEY}).",
            "Wake it instead, or add its BMC to the inventory.",
        )
    return _start_power_job(name, action)


def _start_power_job(name: str, op: str):
    _machine_or_404(name)
    try:
        job = machines_api.submit_power(name, op)
    except JobError as exc:
        raise Refused(
            exc.status,
            "Not started",
            f"{name}: {exc}",
            "Wait for the job holding this machine, then press again.",
        ) from None
    return redirect(url_for("ui.job", job_id=job["id"]), 303)


# -- jobs --------------------------------------------------------------------------------


def _job_or_404(job_id: str) -> dict:
    job = ext().db.job(job_id) if jobs_api._JOB_ID.match(job_id) else None
    if job is None:
        raise Refused(
            404,
            "Unknown job",
            f"Job {job_id[:40]!r} is not a job of this server.",
            "Pick a job from the jobs page (job ids are 32 hex digits).",
        )
    return job


@bp.get("/jobs")
def jobs():
    state = request.args.get("state", "")
    if state and state not in jobs_api.STATES:
        raise Refused(
            400,
            "Unknown state",
            f"Job state {state[:20]!r} is not one of {', '.join(jobs_api.STATES)}.",
        )
    rows = ext().db.jobs(limit=100, state=state or None)
    return page("ui/jobs.html", jobs=rows, state=state, states=jobs_api.STATES)


@bp.get("/jobs/<job_id>")
def job(job_id: str):
    j = _job_or_404(job_id)
    events = ext().db.events(job_id, 0, 10000)
    after = events[-1]["seq"] if events else 0
    return page("ui/job.html", job=j, events=events, after=after, done=j["state"] in JOB_DONE)


@bp.get("/jobs/<job_id>/events")
def job_events(job_id: str):
    _job_or_404(job_id)
    raw = request.args.get("after", "0")
    after = int(raw) if raw.isdigit() and len(raw) <= 10 else 0
    return jobs_api.event_stream(job_id, after, g.principal["id"], event_name="log")


@bp.post("/jobs/<job_id>/cancel")
@needs("operator")
def job_cancel(job_id: str):
    _job_or_404(job_id)
    try:
        ext().jobs.cancel(job_id)
    except JobError as exc:
        raise Refused(exc.status, "Not cancelled", str(exc), "") from None
    return redirect(url_for("ui.job", job_id=job_id), 303)


# -- tokens ------------------------------------------------------------------------------


@bp.get("/tokens")
@needs("admin")
def tokens():
    now = time.time()
    rows = ext().db.tokens()
    for row in rows:
        row["expired"] = row["expires"] is not None and row["expires"] <= now
    return page("ui/tokens.html", tokens=rows, roles=auth.ROLES)


@bp.post("/tokens")
@needs("admin")
def token_create():
    name = request.form.get("name", "")
    role = request.form.get("role", "")
    days_raw = (request.form.get("days") or "").strip()
    expires = None
    if days_raw:
        if not days_raw.isdigit() or not 1 <= int(days_raw) <= 3650:
            raise Refused(
                400,
                "Bad expiry",
                f"days: {days_raw[:10]!r} is not a whole number of days from 1 to 3650.",
                "Leave it empty for a token that never expires.",
            )
        expires = time.time() + int(days_raw) * 86400
    secret = auth.new_token()
    try:
        token_id = ext().db.add_token(name, role, secret, expires)
    except ValueError as exc:
        raise Refused(400, "Token not made", str(exc), "Go back and fix the form.") from None
    return page(
        "ui/token_created.html",
        secret=secret,
        token={"id": token_id, "name": name.strip(), "role": role, "expires": expires},
    )


@bp.post("/tokens/<int:token_id>/revoke")
@needs("admin")
def token_revoke(token_id: int):
    if not ext().db.revoke_token(token_id):
        raise Refused(
            404, "No such token", f"Token {token_id} is not an active token.", "It may be revoked."
        )
    return redirect(url_for("ui.tokens"), 303)


# -- template helpers ----------------------------------------------------------------------


@bp.app_template_filter("when")
def _when(at: float | None) -> str:
    if at is None:
        return "—"
    return time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(at))


@bp.app_template_filter("seconds")
def _seconds(value: float | None) -> str:
    return "—" if value is None else f"{value:.1f} s"


@bp.app_template_filter("size")
def _size(value: int | None) -> str:
    if value is None:
        return "—"
    size = float(value)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if size < 1024 or unit == "TiB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{value} B"
