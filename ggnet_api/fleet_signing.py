"""Signed calls between the boot servers of a fleet: the signature, its check, a client.

A fleet call carries three headers:

    X-Ggnet-Timestamp   Unix seconds when it was signed
    X-Ggnet-Nonce       random hex, 16 bytes or more, never used twice
    X-Ggnet-Signature   hex HMAC-SHA256, with the fleet key, of
                        METHOD \\n PATH \\n TIMESTAMP \\n NONCE \\n hex(sha256(body))

PATH is the URL's path, with `?query` when there is one.  Our client also sends
X-Ggnet-Body-Sha256 (the body's hash, already inside the signature), so that a body
changed on the way is refused as such instead of as a signature that does not match.

The Verifier refuses (Refused, 401 unless said otherwise) a missing or malformed header,
a timestamp more than WINDOW seconds from this server's clock, a body that does not
match its hash, a signature made with neither the current nor the previous key, and a
nonce already seen.  A nonce needs remembering only while its timestamp is inside the
window (an older request is refused for its age), so the store forgets it then; it
also holds at most max_nonces at once and refuses (503) beyond, rather than forget a
nonce early and let its request be replayed.  The store is in memory, so a request
timestamped before the Verifier started is refused as well: a restart does not reopen
the window for the requests seen before it.  Nothing here logs a key, a signature or
a body.
"""

from __future__ import annotations

import hashlib
import heapq
import hmac
import re
import secrets
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping

TIMESTAMP = "X-Ggnet-Timestamp"
NONCE = "X-Ggnet-Nonce"
SIGNATURE = "X-Ggnet-Signature"
BODY_SHA256 = "X-Ggnet-Body-Sha256"

WINDOW = 30  # seconds either side of this server's clock
NONCE_BYTES = 16
MAX_NONCES = 10_000

# Each header's shape, bounded: nothing longer is parsed or hashed.
_SHAPES = {
    TIMESTAMP: re.compile(r"[0-9]{1,12}"),
    NONCE: re.compile(rf"[0-9a-f]{{{NONCE_BYTES * 2},128}}"),
    SIGNATURE: re.compile(r"[0-9a-f]{64}"),
}
# Printable ASCII without `%`: the server signs the path as it decodes it, so an
# escape would make the two differ.
_PATH = re.compile(r"/[\x21-\x24\x26-\x7e]*")


def body_digest(body: bytes) -> str:
    return hashlib.sha256(body).hexdigest()


def message(method: str, path: str, timestamp: int | str, nonce: str, body: bytes) -> bytes:
    """What is signed: METHOD, PATH, TIMESTAMP, NONCE and the body's hash, one a line."""
    return "\n".join((method.upper(), path, str(timestamp), nonce, body_digest(body))).encode()


def signature(
    key: str, method: str, path: str, body: bytes, timestamp: int | str, nonce: str
) -> str:
    mac = hmac.new(key.encode(), message(method, path, timestamp, nonce, body), hashlib.sha256)
    return mac.hexdigest()


def sign(
    key: str,
    method: str,
    path: str,
    body: bytes = b"",
    timestamp: int | None = None,
    nonce: str | None = None,
) -> dict[str, str]:
    """The headers of a signed call (now, a fresh nonce, unless given)."""
    if not _PATH.fullmatch(path):
        raise ValueError(f"path {path[:60]!r}: an absolute path of printable ASCII, no %")
    ts = str(int(time.time()) if timestamp is None else int(timestamp))
    nonce = secrets.token_hex(NONCE_BYTES) if nonce is None else nonce
    return {
        TIMESTAMP: ts,
        NONCE: nonce,
        SIGNATURE: signature(key, method, path, body, ts, nonce),
        BODY_SHA256: body_digest(body),
    }


# Every code a Refused carries, each a label of the refusals' metric.
REFUSALS = ("missing", "malformed", "stale", "before_start", "body", "signature", "replay", "busy")


class Refused(Exception):
    """A signed call refused: `code` names the reason (a metrics label), `reason` says it."""

    def __init__(self, code: str, reason: str, status: int = 401):
        super().__init__(reason)
        self.code = code
        self.reason = reason
        self.status = status


class NonceStore:
    """Nonces seen, each until its expiry; at most `limit` at once."""

    def __init__(self, limit: int = MAX_NONCES):
        self.limit = limit
        self._expires: dict[str, float] = {}
        self._order: list[tuple[float, str]] = []  # a heap: the first to expire on top
        self._lock = threading.Lock()

    def add(self, nonce: str, expires: float, now: float) -> bool:
        """True: new, remembered until `expires`; False: seen before.  Refused (503)
        when `limit` nonces are still remembered."""
        with self._lock:
            while self._order and self._order[0][0] < now:
                del self._expires[heapq.heappop(self._order)[1]]
            if nonce in self._expires:
                return False
            if len(self._expires) >= self.limit:
                raise Refused(
                    "busy",
                    f"more than {self.limit} signed calls within {2 * WINDOW} s; retry later",
                    503,
                )
            self._expires[nonce] = expires
            heapq.heappush(self._order, (expires, nonce))
            return True

    def __len__(self) -> int:
        with self._lock:
            return len(self._expires)


class Verifier:
    """Checks signed calls against the current key and, during a rotation, the previous."""

    def __init__(
        self,
        key: str | None,
        previous: str | None = None,
        window: int = WINDOW,
        max_nonces: int = MAX_NONCES,
        clock: Callable[[], float] = time.time,
    ):
        self.keys: tuple[tuple[str, str], ...] = tuple(
            (name, k) for name, k in (("current", key), ("previous", previous)) if k
        )
        self.window = window
        self.nonces = NonceStore(max_nonces)
        self.clock = clock
        self.started = int(clock())

    @property
    def enabled(self) -> bool:
        return bool(self.keys)

    def verify(self, method: str, path: str, headers: Mapping[str, str], body: bytes) -> str:
        """Which key signed the call ("current" or "previous"); Refused otherwise.
        Header names are matched whatever their case, as HTTP has them."""
        by_name = {name.lower(): value for name, value in headers.items()}
        values = {h: by_name.get(h.lower()) or "" for h in _SHAPES}
        missing = [h for h, v in values.items() if not v]
        if missing:
            raise Refused("missing", f"{', '.join(missing)}: required on a signed fleet call")
        for header, shape in _SHAPES.items():
            if not shape.fullmatch(values[header]):
                raise Refused("malformed", f"{header}: not of the shape docs/api.md gives")
        ts, nonce, given = int(values[TIMESTAMP]), values[NONCE], values[SIGNATURE]
        now = self.clock()
        if abs(now - ts) > self.window:
            raise Refused(
                "stale",
                f"{TIMESTAMP}: {now - ts:+.0f} s from this server's clock, beyond the "
                f"±{self.window} s accepted (check both clocks)",
            )
        if ts < self.started:
            raise Refused("before_start", f"{TIMESTAMP}: signed before this API started; sign anew")
        claimed = by_name.get(BODY_SHA256.lower())
        if claimed is not None and not hmac.compare_digest(claimed, body_digest(body)):
            raise Refused("body", f"the body does not match its {BODY_SHA256}")
        # Every key is compared, so the time taken does not tell which one matched.
        matches = [
            name
            for name, key in self.keys
            if hmac.compare_digest(signature(key, method, path, body, ts, nonce), given)
        ]
        if not matches:
            raise Refused(
                "signature",
                f"{SIGNATURE}: does not match (another fleet key, or the method, path, "
                "timestamp, nonce or body changed)",
            )
        if not self.nonces.add(nonce, ts + self.window, now):
            raise Refused("replay", f"{NONCE}: already used (a replayed call)")
        return matches[0]


def send(
    base_url: str,
    key: str,
    method: str,
    path: str,
    body: bytes = b"",
    timeout: float = 5.0,
    content_type: str = "application/json",
) -> tuple[int, bytes]:
    """Sign and send one call to the server at base_url: (status, body)."""
    headers = sign(key, method, path, body)
    if body:
        headers["Content-Type"] = content_type
    req = urllib.request.Request(
        base_url.rstrip("/") + path, data=body or None, headers=headers, method=method.upper()
    )
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            return resp.status, resp.read()
    except urllib.error.HTTPError as exc:
        with exc:
            return exc.code, exc.read()


def signed_path(path: str, query: bytes | str = b"") -> str:
    """PATH as signed: the path, and `?query` when there is one."""
    if isinstance(query, bytes):
        query = query.decode("latin-1")
    return f"{path}?{query}" if query else path
