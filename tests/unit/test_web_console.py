"""The web console (/ui) in-process: sign-in, the session cookie's flags, sessions
kept server-side and ended by sign-out, expiry and revocation, CSRF on every form,
roles, and the error pages.  The pages read the same app state as the API."""

from __future__ import annotations

import re
import time

import pytest
from ggnet_testing.api_project import NETWORK, STORAGE, hosts_yml, inventory_app, iscsi_yml

from ggnet_api.db.database import hash_token
from ggnet_api.web import sessions

pytestmark = pytest.mark.unit

HOSTS = hosts_yml(
    """\
    children:
      vip:
        hosts:
          pc-01: {ggnet_mac: "52:54:00:aa:00:01", ggnet_ip: 10.213.0.101}
      office:
        hosts:
          pc-02: {ggnet_mac: "52:54:00:aa:00:02", ggnet_ip: 10.213.0.102, ggnet_keep_writeback: true}
    """
)
ALL = (
    NETWORK
    + STORAGE
    + iscsi_yml()
    + "ggnet_images:\n  win11: {size: 64M, kind: system}\nggnet_image: win11\n"
)
CSRF = re.compile(r'name="csrf" value="([^"]+)"')


@pytest.fixture
def app(tmp_path):
    return inventory_app(tmp_path, HOSTS, ALL, auth_fail_limit=1000)


@pytest.fixture
def db(app):
    return app.extensions["ggnet"].db


def token_of(db, role: str, expires: float | None = None) -> str:
    from ggnet_api.auth import new_token

    token = new_token()
    db.add_token(f"web-{role}", role, token, expires)
    return token


def sign_in(client, token: str, next_path: str = "/ui/machines"):
    page = client.get("/ui/signin")
    csrf = CSRF.search(page.get_data(as_text=True)).group(1)
    return client.post("/ui/signin", data={"token": token, "csrf": csrf, "next": next_path})


def csrf_of(client, path: str = "/ui/machines") -> str:
    return CSRF.search(client.get(path).get_data(as_text=True)).group(1)


def test_sign_in_sets_a_strict_httponly_session_cookie_and_keeps_only_its_hash(app, db):
    client = app.test_client()
    resp = sign_in(client, token_of(db, "viewer"))
    assert resp.status_code == 303 and resp.headers["Location"] == "/ui/machines"
    cookie = next(c for c in resp.headers.getlist("Set-Cookie") if c.startswith("ggnet_session="))
    flags = {f.strip().lower() for f in cookie.split(";")}
    assert {"httponly", "samesite=strict", "path=/ui"} <= flags
    assert "secure" not in flags  # plain HTTP here
    session_id = cookie.split(";")[0].split("=", 1)[1]
    stored = db.query("SELECT hash FROM ui_sessions")
    assert stored == [{"hash": hash_token(session_id)}]
    page = client.get("/ui/machines")
    assert page.status_code == 200
    text = page.get_data(as_text=True)
    assert "pc-01" in text and "pc-02" in text
    assert "web-viewer (viewer)" in text


def test_the_cookie_is_secure_under_tls(app, db):
    client = app.test_client()
    page = client.get("/ui/signin", base_url="https://localhost")
    csrf = CSRF.search(page.get_data(as_text=True)).group(1)
    resp = client.post(
        "/ui/signin",
        data={"token": token_of(db, "viewer"), "csrf": csrf},
        base_url="https://localhost",
    )
    cookie = next(c for c in resp.headers.getlist("Set-Cookie") if c.startswith("ggnet_session="))
    assert "secure" in {f.strip().lower() for f in cookie.split(";")}


def test_pages_need_a_session_and_say_so(app):
    client = app.test_client()
    resp = client.get("/ui/machines?group=vip")
    assert resp.status_code == 303
    assert resp.headers["Location"].startswith("/ui/signin?next=%2Fui%2Fmachines%3Fgroup%3Dvip")
    resp = client.get("/ui/machines/table", headers={"HX-Request": "true"})
    assert resp.status_code == 401 and "Not signed in" in resp.get_data(as_text=True)


def test_a_bad_token_is_refused_on_the_form_and_counted(app, db):
    client = app.test_client()
    resp = sign_in(client, "ggn_nope")
    text = resp.get_data(as_text=True)
    assert resp.status_code == 401
    assert "Sign-in refused: the token is not valid (unknown or revoked)." in text
    assert db.query("SELECT * FROM ui_sessions") == []


def test_sign_in_is_rate_limited_with_the_apis_limiter(tmp_path):
    app = inventory_app(tmp_path, HOSTS, ALL, auth_fail_limit=2)
    client = app.test_client()
    assert sign_in(client, "ggn_bad1").status_code == 401
    assert sign_in(client, "ggn_bad2").status_code == 401
    resp = sign_in(client, "ggn_bad3")
    assert resp.status_code == 429 and "Retry-After" in resp.headers
    assert "Too many failed sign-ins" in resp.get_data(as_text=True)
    # The API's bearer check shares the same budget per address.
    assert client.get("/api/machines", headers={"Authorization": "Bearer x"}).status_code == 429


def test_sign_in_without_its_csrf_value_is_refused(app, db):
    client = app.test_client()
    client.get("/ui/signin")
    resp = client.post("/ui/signin", data={"token": token_of(db, "viewer"), "csrf": "forged"})
    assert resp.status_code == 403 and "CSRF" in resp.get_data(as_text=True)


def test_sign_out_ends_the_session_server_side(app, db):
    client = app.test_client()
    sign_in(client, token_of(db, "viewer"))
    cookie = client.get_cookie("ggnet_session", path="/ui").value
    resp = client.post("/ui/signout", data={"csrf": csrf_of(client)})
    assert resp.status_code == 303 and "signed_out=1" in resp.headers["Location"]
    assert db.query("SELECT * FROM ui_sessions") == []
    # The old cookie, replayed, is no longer a session.
    client.set_cookie("ggnet_session", cookie, path="/ui")
    resp = client.get("/ui/machines")
    assert resp.status_code == 401 and "Session not valid" in resp.get_data(as_text=True)


def test_an_expired_session_gives_a_clear_page(app, db):
    client = app.test_client()
    sign_in(client, token_of(db, "viewer"))
    db.execute("UPDATE ui_sessions SET expires = ?", (time.time() - 5,))
    resp = client.get("/ui/machines")
    text = resp.get_data(as_text=True)
    assert resp.status_code == 401
    assert "Session expired" in text and "Sign in again" in text
    assert "Traceback" not in text
    assert db.query("SELECT * FROM ui_sessions") == []


def test_a_session_never_outlives_its_token(app, db):
    client = app.test_client()
    sign_in(client, token_of(db, "viewer", expires=time.time() + 60))
    row = db.one("SELECT expires FROM ui_sessions")
    assert row["expires"] <= time.time() + 60


def test_revoking_the_token_ends_its_sessions(app, db):
    client = app.test_client()
    sign_in(client, token_of(db, "viewer"))
    token_id = db.one("SELECT token_id FROM ui_sessions")["token_id"]
    assert db.revoke_token(token_id)
    assert client.get("/ui/machines").status_code == 401
    assert db.query("SELECT * FROM ui_sessions") == []


@pytest.mark.parametrize("csrf", [None, "", "0" * 64])
def test_every_form_needs_the_sessions_csrf_token(app, db, csrf):
    client = app.test_client()
    sign_in(client, token_of(db, "operator"))
    data = {} if csrf is None else {"csrf": csrf}
    resp = client.post("/ui/machines/pc-01/reset", data=data)
    text = resp.get_data(as_text=True)
    assert resp.status_code == 403
    assert ("missing" if not csrf else "not the one of this session") in text
    assert db.query("SELECT * FROM jobs") == []


def test_a_csrf_token_of_another_session_is_refused(app, db):
    one, two = app.test_client(), app.test_client()
    sign_in(one, token_of(db, "operator"))
    sign_in(two, token_of(db, "operator"))
    resp = two.post("/ui/machines/pc-01/reset", data={"csrf": csrf_of(one)})
    assert resp.status_code == 403


def test_a_viewer_sees_no_actions_and_may_not_act(app, db):
    client = app.test_client()
    sign_in(client, token_of(db, "viewer"))
    assert "Reset<span" not in client.get("/ui/machines").get_data(as_text=True)
    resp = client.post("/ui/machines/pc-01/reset", data={"csrf": csrf_of(client)})
    text = resp.get_data(as_text=True)
    assert resp.status_code == 403
    assert "This needs the operator role; token &#39;web-viewer&#39; has viewer." in text
    assert db.query("SELECT * FROM jobs") == []
    assert client.get("/ui/tokens").status_code == 403


def test_an_operator_resets_a_writeback_as_the_api_does(app, db):
    client = app.test_client()
    sign_in(client, token_of(db, "operator"))
    resp = client.post("/ui/machines/pc-01/reset", data={"csrf": csrf_of(client)})
    assert resp.status_code == 303
    job = db.one("SELECT * FROM jobs")
    assert resp.headers["Location"] == f"/ui/jobs/{job['id']}"
    assert (job["kind"], job["requested_by"]) == ("machine", "web-operator")
    assert '"op": "reset"' in job["extravars"] and '"client": "pc-01"' in job["extravars"]
    page = client.get(f"/ui/jobs/{job['id']}").get_data(as_text=True)
    assert "web-operator" in page and "Cancel this job" in page


def test_maintenance_and_apply_start_machine_jobs(app, db):
    client = app.test_client()
    sign_in(client, token_of(db, "operator"))
    csrf = csrf_of(client)
    client.post("/ui/machines/pc-02/maintenance", data={"csrf": csrf, "maintenance": "off"})
    client.post("/ui/machines/pc-02/apply", data={"csrf": csrf, "comment": "new drivers"})
    ops = [j["extravars"] for j in db.machine_jobs("pc-02")]
    assert {"op": "apply", "client": "pc-02", "comment": "new drivers"} in ops
    assert {"op": "release", "client": "pc-02"} in ops
    resp = client.post("/ui/machines/pc-02/apply", data={"csrf": csrf, "comment": " "})
    assert resp.status_code == 400 and "needs a comment" in resp.get_data(as_text=True)
    resp = client.post("/ui/machines/pc-02/maintenance", data={"csrf": csrf, "maintenance": "x"})
    assert resp.status_code == 400


def test_wake_is_a_power_job_and_power_needs_a_bmc(app, db):
    client = app.test_client()
    sign_in(client, token_of(db, "operator"))
    csrf = csrf_of(client)
    assert 'id="wake-pc-01"' in client.get("/ui/machines").get_data(as_text=True)
    resp = client.post("/ui/machines/pc-01/wake", data={"csrf": csrf})
    job = db.one("SELECT * FROM jobs")
    assert resp.status_code == 303 and resp.headers["Location"] == f"/ui/jobs/{job['id']}"
    assert (job["kind"], job["requested_by"]) == ("power", "web-operator")
    assert '"op": "wake"' in job["extravars"] and '"client": "pc-01"' in job["extravars"]
    page = client.get("/ui/machines/pc-01").get_data(as_text=True)
    assert "wake-on-LAN only" in page and 'id="power-off"' not in page
    resp = client.post("/ui/machines/pc-01/power", data={"csrf": csrf, "action": "off"})
    assert resp.status_code == 409 and "names no BMC" in resp.get_data(as_text=True)
    resp = client.post("/ui/machines/pc-01/power", data={"csrf": csrf, "action": "melt"})
    assert resp.status_code == 400 and "&#39;melt&#39; is not one of" in resp.get_data(as_text=True)
    assert len(db.query("SELECT * FROM jobs")) == 1


def test_an_unknown_machine_job_or_page_is_a_clear_404(app, db):
    client = app.test_client()
    sign_in(client, token_of(db, "operator"))
    for path, words in (
        ("/ui/machines/pc-99", "Machine &#39;pc-99&#39; is not a client"),
        ("/ui/jobs/" + "a" * 32, "is not a job of this server"),
        ("/ui/jobs/nope", "job ids are 32 hex digits"),
        ("/ui/nowhere", "is not a page of the console"),
    ):
        resp = client.get(path)
        text = resp.get_data(as_text=True)
        assert resp.status_code == 404, path
        assert resp.content_type.startswith("text/html") and words in text, path
    resp = client.post("/ui/machines/pc-99/reset", data={"csrf": csrf_of(client)})
    assert resp.status_code == 404 and db.query("SELECT * FROM jobs") == []


def test_filters_by_group_and_status_work_without_javascript(app, db):
    client = app.test_client()
    sign_in(client, token_of(db, "viewer"))
    text = client.get("/ui/machines?group=vip").get_data(as_text=True)
    assert 'id="row-pc-01"' in text and 'id="row-pc-02"' not in text
    # pc-02 asks for its script from its own address: booting
    client.get("/boot/52:54:00:aa:00:02", environ_base={"REMOTE_ADDR": "10.213.0.102"})
    text = client.get("/ui/machines/table?status=booting").get_data(as_text=True)
    assert 'id="row-pc-02" data-status="booting"' in text and "row-pc-01" not in text
    resp = client.get("/ui/machines?group=nope")
    assert resp.status_code == 400 and "Pick one of: office, vip" in resp.get_data(as_text=True)
    assert client.get("/ui/machines?status=on").status_code == 400


def test_the_page_shows_the_apis_view_and_a_dash_for_what_it_lacks(app, db):
    client = app.test_client()
    token = token_of(db, "viewer")
    sign_in(client, token)
    api = client.get("/api/machines", headers={"Authorization": f"Bearer {token}"}).get_json()
    page = client.get("/ui/machines/pc-01").get_data(as_text=True)
    first = api["machines"][0]
    assert first["name"] == "pc-01" and first["ip"] in page and first["mac"] in page
    assert "—" in page  # no writeback size without a pool, no last boot yet


def test_admin_makes_a_token_shown_once_and_revokes_it(app, db):
    client = app.test_client()
    sign_in(client, token_of(db, "admin"))
    csrf = csrf_of(client, "/ui/tokens")
    resp = client.post("/ui/tokens", data={"csrf": csrf, "name": "front desk", "role": "viewer"})
    text = resp.get_data(as_text=True)
    secret = re.search(r'value="(ggn_[^"]+)"', text).group(1)
    assert resp.headers["Cache-Control"] == "no-store"
    assert db.token(secret)["name"] == "front desk"
    assert secret not in client.get("/ui/tokens").get_data(as_text=True)
    token_id = db.token(secret)["id"]
    resp = client.post(f"/ui/tokens/{token_id}/revoke", data={"csrf": csrf})
    assert resp.status_code == 303 and db.token(secret) is None
    resp = client.post("/ui/tokens", data={"csrf": csrf, "name": "a\nb", "role": "viewer"})
    assert resp.status_code == 400 and "control or line-break" in resp.get_data(as_text=True)


def test_an_internal_error_is_a_page_without_the_trace(app, db, monkeypatch):
    from ggnet_api.blueprints import machines

    client = app.test_client()
    sign_in(client, token_of(db, "viewer"))

    def broken():
        raise RuntimeError("secret path /etc/ggnet/api.yml")

    monkeypatch.setattr(machines, "machine_views", broken)
    resp = client.get("/ui/machines")
    text = resp.get_data(as_text=True)
    assert resp.status_code == 500 and "Internal error" in text
    assert "secret path" not in text and "Traceback" not in text


def test_pages_carry_a_strict_content_security_policy(app, db):
    client = app.test_client()
    sign_in(client, token_of(db, "viewer"))
    resp = client.get("/ui/machines")
    assert "script-src 'self'" in resp.headers["Content-Security-Policy"]
    assert resp.headers["X-Frame-Options"] == "DENY"
    text = resp.get_data(as_text=True)
    assert "<script>" not in text and "https://" not in text  # no inline script, no CDN


def test_open_redirects_are_refused(app, db):
    client = app.test_client()
    resp = sign_in(client, token_of(db, "viewer"), next_path="//evil.example/ui/")
    assert resp.headers["Location"] == "/ui/machines"


def test_session_ids_are_random_and_csrf_is_per_session():
    a, b = sessions.new_session_id(), sessions.new_session_id()
    assert a != b and len(a) >= 43
    assert sessions.csrf_for(a) != sessions.csrf_for(b)
    assert not sessions.same(None, "x") and sessions.same("abc", "abc")


def test_the_table_escapes_every_cell_though_its_loop_does_not_autoescape(app, db, monkeypatch):
    from ggnet_api.blueprints import machines

    real = machines.machine_views

    def hostile():
        views = real()
        views[0].update(name="<b>x", ip="<script>alert(1)</script>", groups=['"vip'])
        return views

    client = app.test_client()
    sign_in(client, token_of(db, "operator"))
    monkeypatch.setattr(machines, "machine_views", hostile)
    text = client.get("/ui/machines/table").get_data(as_text=True)
    assert "<script>alert" not in text and "&lt;script&gt;alert(1)" in text
    assert "<b>x" not in text and 'id="row-&lt;b&gt;x"' in text
    assert "&#34;vip" in text
