"""Signed fleet calls: the signature, each refusal of the verifier, key rotation, the
nonce store's bound, and a real signed request replayed through the Flask app."""

from __future__ import annotations

import hashlib
import hmac
import logging
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from ggnet_testing.api_project import ALL, HOSTS, inventory_app

from ggnet_api import config as config_mod
from ggnet_api import fleet_signing as fs

pytestmark = pytest.mark.unit

KEY = "k" * 40
PREVIOUS = "p" * 40
OTHER = "o" * 40
NOW = 1_900_000_000
BODY = b'{"placement": ["pc-01"]}'


class Clock:
    def __init__(self, now: float = NOW):
        self.now = now

    def __call__(self) -> float:
        return self.now


def verifier(key=KEY, previous=None, clock=None, **kw) -> fs.Verifier:
    return fs.Verifier(key, previous, clock=clock or Clock(), **kw)


def signed(key=KEY, method="POST", path="/v1/place", body=BODY, **kw) -> dict[str, str]:
    return fs.sign(key, method, path, body, timestamp=kw.pop("timestamp", NOW), **kw)


def refusal(v: fs.Verifier, headers, method="POST", path="/v1/place", body=BODY) -> fs.Refused:
    with pytest.raises(fs.Refused) as caught:
        v.verify(method, path, headers, body)
    return caught.value


def test_signature_is_hmac_sha256_of_the_documented_message():
    headers = signed(nonce="ab" * 16)
    text = f"POST\n/v1/place\n{NOW}\n{'ab' * 16}\n{hashlib.sha256(BODY).hexdigest()}"
    expected = hmac.new(KEY.encode(), text.encode(), hashlib.sha256).hexdigest()
    assert headers[fs.SIGNATURE] == expected
    assert headers[fs.TIMESTAMP] == str(NOW)
    assert headers[fs.BODY_SHA256] == hashlib.sha256(BODY).hexdigest()


def test_fresh_nonces_are_16_random_bytes_of_hex():
    nonces = {fs.sign(KEY, "GET", "/v1/status")[fs.NONCE] for _ in range(50)}
    assert len(nonces) == 50
    assert all(len(n) == 32 and int(n, 16) >= 0 for n in nonces)


def test_a_good_call_passes_with_the_current_key():
    assert verifier().verify("POST", "/v1/place", signed(), BODY) == "current"


def test_header_names_are_matched_whatever_their_case():
    lowered = {name.lower(): value for name, value in signed().items()}
    assert verifier().verify("POST", "/v1/place", lowered, BODY) == "current"


@pytest.mark.parametrize("header", [fs.TIMESTAMP, fs.NONCE, fs.SIGNATURE])
def test_missing_header_is_refused(header):
    headers = signed()
    del headers[header]
    r = refusal(verifier(), headers)
    assert (r.status, r.code) == (401, "missing")
    assert header in r.reason


@pytest.mark.parametrize(
    "header,value",
    [(fs.TIMESTAMP, "12ab"), (fs.NONCE, "ab" * 8), (fs.NONCE, "zz" * 16), (fs.SIGNATURE, "0" * 63)],
)
def test_malformed_header_is_refused(header, value):
    headers = {**signed(), header: value}
    assert refusal(verifier(), headers).code == "malformed"


def test_wrong_signature_is_refused():
    headers = {**signed(), fs.SIGNATURE: "0" * 64}
    r = refusal(verifier(), headers)
    assert (r.status, r.code) == (401, "signature")


def test_wrong_key_is_refused():
    assert refusal(verifier(), signed(key=OTHER)).code == "signature"


@pytest.mark.parametrize("offset", [-31, 31, -3600, 10**6])
def test_timestamp_outside_the_window_is_refused(offset):
    clock = Clock()
    v = verifier(clock=clock)
    clock.now = NOW - offset  # the call was signed at NOW: `offset` seconds away
    r = refusal(v, signed())
    assert (r.status, r.code) == (401, "stale")
    assert "±30 s" in r.reason


@pytest.mark.parametrize("offset", [-30, 30])
def test_timestamp_at_the_edge_of_the_window_passes(offset):
    clock = Clock()
    v = verifier(clock=clock)
    clock.now = NOW + offset
    assert v.verify("POST", "/v1/place", signed(), BODY) == "current"


def test_replayed_nonce_is_refused():
    v = verifier()
    headers = signed()
    v.verify("POST", "/v1/place", headers, BODY)
    r = refusal(v, headers)
    assert (r.status, r.code) == (401, "replay")


def test_a_nonce_reused_with_another_signature_is_refused():
    v = verifier()
    v.verify("POST", "/v1/place", signed(nonce="cd" * 16), BODY)
    assert refusal(v, signed(nonce="cd" * 16, body=b"{}"), body=b"{}").code == "replay"


def test_body_not_matching_its_hash_is_refused():
    r = refusal(verifier(), signed(), body=b'{"placement": ["pc-02"]}')
    assert (r.status, r.code) == (401, "body")


def test_body_changed_without_the_hash_header_is_a_bad_signature():
    headers = signed()
    del headers[fs.BODY_SHA256]
    assert refusal(verifier(), headers, body=b"{}").code == "signature"


@pytest.mark.parametrize(
    "method,path", [("GET", "/v1/place"), ("POST", "/v1/status"), ("POST", "/v1/place?x=1")]
)
def test_another_method_or_path_is_refused(method, path):
    assert refusal(verifier(), signed(), method=method, path=path).code == "signature"


def test_a_refused_call_does_not_use_up_its_nonce():
    v = verifier()
    headers = signed()
    refusal(v, {**headers, fs.SIGNATURE: "0" * 64})
    assert v.verify("POST", "/v1/place", headers, BODY) == "current"


def test_rotation_accepts_the_previous_key_and_refuses_a_third():
    v = verifier(previous=PREVIOUS)
    assert v.verify("POST", "/v1/place", signed(), BODY) == "current"
    assert v.verify("POST", "/v1/place", signed(key=PREVIOUS), BODY) == "previous"
    assert refusal(v, signed(key=OTHER)).code == "signature"


def test_after_rotation_the_old_key_is_refused():
    assert refusal(verifier(key=PREVIOUS), signed(key=KEY)).code == "signature"


def test_a_call_signed_before_the_verifier_started_is_refused():
    # A restart empties the nonce store: what was seen before must not pass again.
    clock = Clock()
    v = verifier(clock=clock)
    r = refusal(v, signed(timestamp=NOW - 5))
    assert (r.status, r.code) == (401, "before_start")
    clock.now = NOW + 5
    assert v.verify("POST", "/v1/place", signed(timestamp=NOW + 1), BODY) == "current"


def test_nonce_store_stays_bounded_under_100k_distinct_nonces():
    store = fs.NonceStore(limit=10_000)
    biggest = 0
    # 100,000 calls at 250 a second (400 s): each is forgotten 30 s after its timestamp.
    for i in range(100_000):
        now = NOW + i / 250
        assert store.add(f"{i:032x}", now + fs.WINDOW, now)
        biggest = max(biggest, len(store))
    assert biggest <= 30 * 250 + 1
    assert len(store._order) == len(store) <= 30 * 250 + 1


def test_nonce_store_refuses_rather_than_forgets_when_full():
    store = fs.NonceStore(limit=100)
    for i in range(100):
        assert store.add(f"{i:032x}", NOW + 30, NOW)
    with pytest.raises(fs.Refused) as caught:
        store.add("f" * 32, NOW + 30, NOW)
    assert (caught.value.status, caught.value.code) == (503, "busy")
    assert not store.add(f"{0:032x}", NOW + 30, NOW)  # still remembered: still a replay
    assert store.add("f" * 32, NOW + 61, NOW + 31)  # the window passed: room again
    assert len(store) == 1


def test_config_refuses_a_short_fleet_key_without_showing_it():
    with pytest.raises(ValueError) as caught:
        config_mod.load(fleet_key="short-secret")
    assert "short-secret" not in str(caught.value)
    assert str(config_mod.FLEET_KEY_MIN) in str(caught.value)
    assert config_mod.load(fleet_key="")["fleet_key"] is None


# -- through the app -----------------------------------------------------------------------


@pytest.fixture
def app(tmp_path):
    app = inventory_app(tmp_path, HOSTS, ALL, fleet_key=KEY, fleet_key_previous=PREVIOUS)
    yield app
    app.extensions["ggnet"].close()


def test_a_captured_request_replayed_byte_for_byte_is_refused(app, caplog):
    client = app.test_client()
    sent = fs.sign(KEY, "GET", "/v1/status")
    caplog.set_level(logging.DEBUG)
    first = client.get("/v1/status", headers=sent)
    assert first.status_code == 200, first.get_json()
    # What went over the wire, taken from the request the app received.
    captured = first.request
    replay = client.open(
        captured.path,
        method=captured.method,
        headers=list(captured.headers.items()),
        data=captured.get_data(),
    )
    assert replay.status_code == 401
    assert "already used" in replay.get_json()["error"]
    assert replay.headers["WWW-Authenticate"].startswith("Ggnet-HMAC")
    # Neither the key nor the signature reaches the log.
    assert KEY not in caplog.text and sent[fs.SIGNATURE] not in caplog.text
    assert "replay" in caplog.text
    metrics = client.get("/metrics").get_data(as_text=True)
    assert 'ggnet_api_auth_failures_total{reason="fleet_replay"} 1.0' in metrics


def test_app_refuses_unsigned_and_wrongly_signed_status(app):
    client = app.test_client()
    assert client.get("/v1/status").status_code == 401
    wrong = client.get("/v1/status", headers=fs.sign(OTHER, "GET", "/v1/status"))
    assert wrong.status_code == 401
    assert "does not match" in wrong.get_json()["error"]
    previous = client.get("/v1/status", headers=fs.sign(PREVIOUS, "GET", "/v1/status"))
    assert previous.status_code == 200


def test_refused_calls_hit_the_per_address_limit(tmp_path):
    app = inventory_app(tmp_path, HOSTS, ALL, fleet_key=KEY, auth_fail_limit=3)
    try:
        client = app.test_client()
        codes = [client.get("/v1/status").status_code for _ in range(4)]
        assert codes == [401, 401, 401, 429]
        # A good signature waits too: the address is throttled, not the key.
        assert (
            client.get("/v1/status", headers=fs.sign(KEY, "GET", "/v1/status")).status_code == 429
        )
    finally:
        app.extensions["ggnet"].close()


def test_without_a_fleet_key_the_signed_endpoints_say_how_to_set_one(tmp_path):
    app = inventory_app(tmp_path, HOSTS, ALL)
    try:
        resp = app.test_client().get("/v1/status", headers=fs.sign(KEY, "GET", "/v1/status"))
        assert resp.status_code == 503
        assert "set fleet_key in the inventory" in resp.get_json()["error"]
    finally:
        app.extensions["ggnet"].close()


# -- the client ------------------------------------------------------------------------------


def test_send_signs_what_it_sends():
    received: dict[str, object] = {}
    v = fs.Verifier(KEY)

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self):
            body = self.rfile.read(int(self.headers["Content-Length"]))
            try:
                received["key"] = v.verify("POST", self.path, dict(self.headers), body)
                self.send_response(200)
            except fs.Refused as refused:
                received["refused"] = refused.code
                self.send_response(401)
            self.end_headers()
            self.wfile.write(b"{}")

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        base = f"http://127.0.0.1:{server.server_address[1]}"
        assert fs.send(base, KEY, "POST", "/v1/place?dry=1", BODY) == (200, b"{}")
        assert received == {"key": "current"}
        status, _ = fs.send(base, OTHER, "POST", "/v1/place", BODY)
        assert (status, received.get("refused")) == (401, "signature")
    finally:
        server.shutdown()
        server.server_close()


def test_sign_refuses_a_path_the_server_would_read_differently():
    with pytest.raises(ValueError):
        fs.sign(KEY, "GET", "/v1/st%61tus")
    with pytest.raises(ValueError):
        fs.sign(KEY, "GET", "v1/status")
