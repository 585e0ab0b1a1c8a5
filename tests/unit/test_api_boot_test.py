"""The API's side of the image boot test: the job it starts (and what it holds), the
result in the images view, and the screenshot: viewers only, paths from checked names."""

from __future__ import annotations

import time

import pytest
from ggnet_testing.api_project import (
    NETWORK,
    STORAGE,
    bearer,
    hosts_yml,
    inventory_app,
    iscsi_yml,
    role_tokens,
)

from ggnet_api.collector import Sample
from ggnet_api.locks import ROOM, job_claim

pytestmark = pytest.mark.unit

HOSTS = hosts_yml(
    """\
    children:
      vip:
        hosts:
          pc-01: {ggnet_mac: "52:54:00:dd:00:01", ggnet_ip: 10.213.0.101}
    """
)
ALL = (
    NETWORK
    + STORAGE
    + iscsi_yml(None)
    + "ggnet_images: {win11: {size: 64M, kind: system}}\nggnet_image: win11\n"
)
AT = "2026-01-01T00:00:00.000000000Z"
RESULT = {
    "passed": True,
    "reason": "marker seen",
    "stages": {"started": 0.4, "login": 2.1, "marker": 9.8},
    "at": AT,
    "firmware": "bios",
    "screenshot": "/var/lib/ggnet/boot-tests/win11/v2.png",
    "state": "tested",
}
PNG = b"\x89PNG\r\n\x1a\n fake screen"


def _version(name: str, state: str, boot_test: dict | None) -> dict:
    return {"name": name, "created": AT, "comment": "", "applied_from": None, "guid": name,
            "state": state, "state_at": AT, "boot_test": boot_test}  # fmt: skip


@pytest.fixture
def app(tmp_path):
    shots = tmp_path / "boot-tests"
    (shots / "win11").mkdir(parents=True)
    (shots / "win11" / "v2.png").write_bytes(PNG)
    (tmp_path / "secret.png").write_bytes(b"not yours")
    a = inventory_app(tmp_path, HOSTS, ALL, boot_test_dir=str(shots))
    e = a.extensions["ggnet"]
    e.collector.sample = Sample(
        at=time.time(),
        versions={"win11": [_version("v1", "promoted", None), _version("v2", "tested", RESULT)]},
        image_current={"win11": "v1"},
    )
    yield a
    e.close()


@pytest.fixture
def tokens(app):
    return role_tokens(app, "viewer", "operator")


def test_the_images_view_shows_the_boot_test(app, tokens):
    resp = app.test_client().get("/api/images", headers=bearer(tokens["viewer"]))
    assert resp.status_code == 200
    (image,) = resp.get_json()["images"]
    assert [v["boot_test"] for v in image["versions"]] == [None, RESULT]


def test_the_screenshot_is_served_to_a_viewer(app, tokens):
    client = app.test_client()
    resp = client.get("/api/images/win11/versions/v2/screenshot", headers=bearer(tokens["viewer"]))
    assert resp.status_code == 200 and resp.mimetype == "image/png" and resp.data == PNG


def test_the_screenshot_needs_a_token(app, tokens):
    client = app.test_client()
    for headers in ({}, bearer("g" * 43)):
        resp = client.get("/api/images/win11/versions/v2/screenshot", headers=headers)
        assert resp.status_code == 401 and resp.data != PNG


@pytest.mark.parametrize(
    ("path", "message"),
    [
        ("/api/images/win11/versions/v1/screenshot", "no boot-test screenshot"),
        ("/api/images/win11/versions/v9/screenshot", "win11@v9: no such version"),
        ("/api/images/linux/versions/v2/screenshot", "not in ggnet_images"),
        # an encoded '/' never reaches the route: no path component can climb out
        ("/api/images/win11/versions/..%2F..%2Fsecret/screenshot", "no such endpoint"),
        ("/api/images/win11/versions/.hidden/screenshot", "not a version name"),
        ("/api/images/..%2Fsecret/versions/v2/screenshot", "no such endpoint"),
        ("/api/images/win11/versions/..secret/screenshot", "not a version name"),
    ],
)
def test_screenshot_paths_come_from_checked_names(app, tokens, path, message):
    resp = app.test_client().get(path, headers=bearer(tokens["viewer"]))
    assert resp.status_code == 404, resp.data
    assert message in resp.get_json()["error"]


def test_starting_a_boot_test_queues_the_image_job(app, tokens):
    client = app.test_client()
    url = "/api/images/win11/versions/v2/boot-test"
    assert client.post(url, headers=bearer(tokens["viewer"])).status_code == 403
    resp = client.post(url, headers=bearer(tokens["operator"]))
    assert resp.status_code == 202, resp.get_json()
    job = resp.get_json()
    assert job["kind"] == "image" and job["state"] == "queued"
    assert job["extravars"] == {"op": "boot_test", "image": "win11", "version": "v2"}
    assert resp.headers["Location"] == f"/api/jobs/{job['id']}"
    # the same job through /api/jobs
    resp = client.post(
        "/api/jobs",
        json={"kind": "image", "extravars": {"op": "boot_test", "image": "win11", "version": "v2"}},
        headers=bearer(tokens["operator"]),
    )
    assert resp.status_code == 202, resp.get_json()


@pytest.mark.parametrize(
    ("url", "body", "status", "message"),
    [
        ("/api/images/win11/versions/v9/boot-test", None, 404, "no such version"),
        ("/api/images/nope/versions/v2/boot-test", None, 404, "not in ggnet_images"),
        ("/api/images/win11/versions/v2/boot-test", {"force": True}, 400, "unknown field"),
        ("/api/images/win11/versions/v2/boot-test", {"wait": "no"}, 400, "body.wait"),
    ],
)
def test_bad_boot_test_requests(app, tokens, url, body, status, message):
    resp = app.test_client().post(url, json=body, headers=bearer(tokens["operator"]))
    assert resp.status_code == status and message in resp.get_json()["error"]


def test_a_boot_test_holds_the_image_shared_and_no_pc(app):
    snap = app.extensions["ggnet"].inventory.snapshot
    claim = job_claim("image", {"op": "boot_test", "image": "win11", "version": "v2"}, snap)
    assert claim.exclusive == {"boot-test:win11"}
    assert claim.shared == {"image:win11", ROOM}
    # a PC of the image boots meanwhile; a second test of the image waits
    boot = job_claim("machine", {"op": "reset", "client": "pc-01"}, snap)
    assert claim.clash(boot) is None
    assert claim.clash(claim) == "boot-test:win11"
    rollback = job_claim("image", {"op": "rollback", "image": "win11", "version": "v1"}, snap)
    assert claim.clash(rollback) == "image:win11"
