"""Issue 16, item 8 and part of 9: token names are one printable line, tokens expire,
job output masks a secret in its escaped and encoded forms, `*_pass` variables are
secret, and `ggnet serve` can hand gunicorn a certificate."""

from __future__ import annotations

import base64
import json
import shlex
import time
import urllib.parse
from argparse import Namespace

import pytest
from ggnet.settings import is_secret_key
from ggnet_testing.api_project import NETWORK, bearer, hosts_yml, inventory_app

from ggnet_api.auth import new_token, principal_name
from ggnet_api.db.database import Database
from ggnet_cli import serve, tokens
from ggnet_privd.playbooks import MASK, redact

pytestmark = pytest.mark.unit

HOSTS = hosts_yml(
    """\
    hosts:
      pc-01: {ggnet_mac: "52:54:00:aa:00:01"}
    """
)
ALL = (
    NETWORK
    + "ggnet_storage: {pool: ggtest, disk_format: file}\n"
    + "ggnet_images: {win11: {size: 64M, kind: system}}\nggnet_image: win11\n"
)


@pytest.fixture
def app(tmp_path):
    app = inventory_app(tmp_path, HOSTS, ALL, load=False)
    yield app
    app.extensions["ggnet"].close()


# -- token names -----------------------------------------------------------------------


@pytest.mark.parametrize("name", ["alice\nApproved by: root", "bob\r", "tab\there", "x\u2028y"])
def test_the_cli_refuses_a_name_with_a_control_character(tmp_path, capsys, name):
    args = Namespace(
        action="create", name=name, role="admin", expires=None, state_dir=str(tmp_path)
    )
    assert tokens.run(args) == 2
    out = capsys.readouterr()
    assert out.out == ""  # no token printed
    assert repr(name)[:20] in out.err  # the value is named, escaped
    assert Database(str(tmp_path / "api.db")).tokens() == []


def test_the_database_refuses_such_a_name_on_any_path(tmp_path):
    db = Database(str(tmp_path / "api.db"))
    with pytest.raises(ValueError, match=r"'eve\\n# ggnet_mac"):
        db.add_token("eve\n# ggnet_mac: 00:00:00:00:00:00", "operator", new_token())
    long_name = "a" * 200 + "\n"
    with pytest.raises(ValueError) as exc:
        db.add_token(long_name, "operator", new_token())
    assert len(str(exc.value)) < 120  # the value is shown truncated
    assert db.tokens() == []


def test_an_old_token_s_name_reaches_host_vars_comments_as_one_line(app):
    """A token made before names were checked: approvals write its name into a
    host_vars comment and a commit message through principal_name()."""
    db = app.extensions["ggnet"].db
    db.execute(
        "INSERT INTO tokens (name, role, hash, created) VALUES (?, 'operator', 'h', 0)",
        ("old\nggnet_image: evil",),
    )
    principal = db.query("SELECT id, name, role FROM tokens")[0]
    with app.test_request_context():
        from flask import g

        g.principal = principal
        name = principal_name()
    assert "\n" not in name and name == "old\\nggnet_image: evil"


# -- expiry ----------------------------------------------------------------------------


def test_an_expired_token_is_refused_and_listed_as_expired(app):
    db = app.extensions["ggnet"].db
    client = app.test_client()
    old, fresh, admin = new_token(), new_token(), new_token()
    db.add_token("temp", "viewer", old, time.time() - 5)
    db.add_token("fresh", "viewer", fresh, time.time() + 3600)
    db.add_token("root", "admin", admin)
    resp = client.get("/api/status", headers=bearer(old))
    assert resp.status_code == 401
    assert "expired" in resp.json["error"]
    assert old not in resp.get_data(as_text=True)
    assert client.get("/api/status", headers=bearer(fresh)).status_code == 200
    listed = {t["name"]: t for t in client.get("/api/tokens", headers=bearer(admin)).json["tokens"]}
    assert listed["temp"]["expired"] is True and listed["temp"]["expires"] < time.time()
    assert listed["fresh"]["expired"] is False
    assert listed["root"]["expires"] is None and listed["root"]["expired"] is False


def test_the_cli_makes_a_token_that_expires(tmp_path, capsys):
    args = Namespace(
        action="create", name="ci", role="viewer", expires="30d", state_dir=str(tmp_path)
    )
    assert tokens.run(args) == 0
    token = capsys.readouterr().out.strip()
    row = Database(str(tmp_path / "api.db")).token(token)
    assert row is not None
    assert abs(row["expires"] - (time.time() + 30 * 86400)) < 60
    assert tokens.run(Namespace(action="list", state_dir=str(tmp_path))) == 0
    assert "active" in capsys.readouterr().out
    bad = Namespace(action="create", name="x", role="viewer", expires="soon", state_dir="/")
    assert tokens.run(bad) == 2
    assert "--expires 'soon'" in capsys.readouterr().err


def test_an_old_database_gains_the_expiry_column(tmp_path):
    import sqlite3

    path = tmp_path / "api.db"
    conn = sqlite3.connect(path)
    conn.execute(
        "CREATE TABLE tokens (id INTEGER PRIMARY KEY AUTOINCREMENT, name TEXT NOT NULL, "
        "role TEXT NOT NULL, hash TEXT NOT NULL UNIQUE, created REAL NOT NULL, revoked REAL)"
    )
    conn.commit()
    conn.close()
    db = Database(str(path))
    token = new_token()
    db.add_token("kept", "viewer", token, time.time() + 60)
    assert db.token(token)["expires"] is not None


# -- masking ---------------------------------------------------------------------------

SECRET = "S3cr\"e't/pa ss+wd\\x"


@pytest.mark.parametrize(
    "form",
    [
        pytest.param(json.dumps(SECRET)[1:-1], id="json"),
        pytest.param(json.dumps(json.dumps(SECRET))[1:-1], id="json-in-json"),
        pytest.param(urllib.parse.quote(SECRET, safe=""), id="url"),
        pytest.param(urllib.parse.quote_plus(SECRET), id="url-plus"),
        pytest.param(base64.b64encode(SECRET.encode()).decode(), id="base64"),
        pytest.param(shlex.quote(SECRET), id="shell"),
    ],
)
def test_a_secret_is_masked_in_its_escaped_and_encoded_forms(form):
    # What ansible-runner's events carry: a module result printed as JSON, a URL, a
    # command line.
    stdout = (
        'ok: [boot1] => {"changed": false, "invocation": {"module_args": '
        f'{{"url": "http://u:{form}@10.213.0.10/x", "body": "{form}"}}}}}}\n'
        f"changed: [boot1] => (cmd=iscsiadm -m node -o update -v {form})"
    )
    masked = redact(stdout, [SECRET, "ch"])
    assert form not in masked
    assert masked.count(MASK) >= 3
    # The rest stays readable; a secret shorter than 4 characters is not masked at all.
    assert "iscsiadm -m node -o update -v" in masked and "changed" in masked


def test_pass_password_and_secret_variables_are_secret():
    for key in ("ansible_become_pass", "ansible_ssh_pass", "ggnet_chap_secret", "db_password"):
        assert is_secret_key(key), key
    # "pass" counts as a whole word only.
    for key in ("compass_heading", "bypass_cache", "passive"):
        assert not is_secret_key(key), key


# -- TLS -------------------------------------------------------------------------------


def test_serve_hands_gunicorn_the_certificate():
    args = Namespace(
        bind="10.0.0.1:8443", threads=4, certfile="/etc/ggnet/api.pem", keyfile="/etc/ggnet/k"
    )
    argv = serve.gunicorn_argv(args)
    assert argv[argv.index("--certfile") + 1] == "/etc/ggnet/api.pem"
    assert argv[argv.index("--keyfile") + 1] == "/etc/ggnet/k"
    assert argv[-1] == "ggnet_api.app:wsgi()"
    plain = serve.gunicorn_argv(Namespace(bind="127.0.0.1:8080", threads=4))
    assert "--certfile" not in plain
    with pytest.raises(ValueError, match="go together"):
        serve.gunicorn_argv(Namespace(bind="x:1", threads=1, certfile="/c", keyfile=None))
