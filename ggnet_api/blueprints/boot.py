"""The boot path, reached by PCs without a token: /boot/<mac> and its callbacks.

Answers are text/plain iPXE (or a one-line text), never JSON: iPXE shows the body of
an error on the PC's screen.  The script of a known PC carries its CHAP secret, so it
is never logged.  The people at the PCs reach this path too, so:

- A known PC's script goes to that PC only (ggnet_api/boot_origin.py: its fixed
  address, its DHCP lease, or a neighbour entry of its MAC).  Any other request for it
  gets a script that shows why and resets nothing, carries no secret, records no boot;
  it is logged with its source and counted (ggnet_boot_foreign_requests_total).
- Every script that records a boot carries a fresh random token; only its SHA-256 is
  stored with the boot.  /stage is taken only with the token of the MAC's latest boot
  (compared in constant time): without it, or with an older boot's, 403 and nothing
  is recorded.
- /report comes from the booted OS, which cannot learn the token iPXE got (the iBFT
  has no free field for it).  For a known PC it is taken with the latest boot's token
  in the X-Ggnet-Boot-Token header (a caller that has it) OR from the PC's own origin
  as for the script (what pc/report_os.py relies on: the OS's DHCP lease or neighbour
  entry is the PC's MAC).  Its body is capped at max_report_bytes (413).
- Unknown MACs' discovery callbacks need no token; they add no row past
  max_discovered (the count and the insert are one transaction).
- Every /boot request spends one token of its source's and its MAC's rate limits
  (boot_limit_*); past them 429 with Retry-After.
- With no inventory ever loaded, the script is an error script and nothing is
  registered: every PC would otherwise look unknown.
"""

from __future__ import annotations

import hmac
import logging
import time

from flask import Blueprint, Response, request
from ggnet import ipxe
from ggnet.ipxe import DISCOVERY_FIELDS
from ggnet.net import normalize_mac

from ggnet_api.blueprints.common import ext
from ggnet_api.boot_service import BootRefused
from ggnet_api.db.database import hash_token
from ggnet_api.rate_limit import retry_after

bp = Blueprint("boot", __name__, url_prefix="/boot")
log = logging.getLogger(__name__)

MAX_FACT = 128
# Stages after which the boot is over: the disk was handed to the firmware, or not.
FINAL = {"sanboot": "ok", "failed": "failed", "os": "ok"}
TOKEN_HEADER = "X-Ggnet-Boot-Token"
NO_INVENTORY = (
    "the boot server has no inventory loaded, so it cannot tell which PC this is. "
    "Fix the inventory (see the ggnet-api log or ggnet status) and this PC retries by itself"
)


def _text(body: str, status: int = 200) -> Response:
    return Response(
        body,
        status=status,
        content_type="text/plain; charset=utf-8",
        headers={"Cache-Control": "no-store"},
    )


def _mac(raw: str) -> str | Response:
    try:
        return normalize_mac(raw)
    except ValueError as exc:
        return _text(f"MAC address {raw[:40]!r} in the URL {exc}\n", 400)


def _api_url() -> str:
    return (ext().config.get("public_url") or request.host_url).rstrip("/")


def _no_inventory(e) -> bool:
    return not e.inventory.snapshot.loaded_at


def _no_inventory_answer() -> Response:
    return _text(f"{NO_INVENTORY}\n", 503)


@bp.before_request
def _rate_limit():
    e = ext()
    source = request.remote_addr or "unknown"
    by, wait = "source", e.boot.limits["source"].take(source)
    raw = (request.view_args or {}).get("raw_mac")
    if not wait and raw:
        try:
            mac = normalize_mac(raw)
        except ValueError:
            mac = None  # the route answers 400
        if mac is not None:
            by, wait = "mac", e.boot.limits["mac"].take(mac)
    if not wait:
        return None
    if e.metrics is not None:
        e.metrics.boot_rate_limited.labels(by=by).inc()
    resp = _text(f"too many boot requests from this {by}; retry in {retry_after(wait)} s\n", 429)
    resp.headers["Retry-After"] = retry_after(wait)
    return resp


@bp.get("/<raw_mac>")
def script(raw_mac: str):
    mac = _mac(raw_mac)
    if isinstance(mac, Response):
        return mac
    e = ext()
    snap = e.inventory.snapshot
    if _no_inventory(e):
        log.warning("script of %s asked with no inventory loaded; nothing registered", mac)
        return _text(e.boot.refusal_script(NO_INVENTORY, _api_url(), mac))
    name = snap.by_mac.get(mac)
    if name is None:
        _seen_unknown(e.db, mac)
        return _text(e.boot.discovery_script(_api_url()))
    source = request.remote_addr
    if e.boot.origin.of(snap.clients[name], mac, source) is None:
        log.warning(
            "script of %s (%s) asked from %s, not the PC's own address: refused", name, mac, source
        )
        if e.metrics is not None:
            e.metrics.boot_foreign.inc()
        message = (
            f"the boot script of {mac} is served only to that PC itself; this request came "
            f"from {source}, which is not its fixed address, DHCP lease or neighbour entry"
        )
        return _text(e.boot.refusal_script(message, _api_url(), mac))
    # The PC is up: a wake pending for it is confirmed (ggnet_api/wakes.py).
    if e.wakes is not None:
        e.wakes.seen(mac, time.time(), "boot")
    # The image the PC boots now: boot durations are compared per image.
    image = snap.clients[name].get("image")
    token = e.boot.new_token()
    try:
        body, kind, version = e.boot.script(name, _api_url(), token)
    except BootRefused as exc:
        e.db.add_boot(
            mac, name, "normal", result="refused", detail=str(exc)[:500], image=image, token=token
        )
        log.warning("boot of %s (%s) refused: %s", name, mac, exc)
        return _text(e.boot.refusal_script(str(exc), _api_url(), mac, token))
    e.db.add_boot(mac, name, kind, image=image, token=token, version=version)
    return _text(body)


def _seen_unknown(db, mac: str) -> None:
    """An unknown PC asks every few seconds while it waits: one boot row, refreshed.
    Past max_discovered it gets no row at all."""
    if not _upsert_discovered(db, mac, None, None):
        return
    last = db.last_boot(mac)
    if last and last["kind"] == "discovery":
        db.touch_boot(last["id"], time.time())
    else:
        db.add_boot(mac, None, "discovery", result="discovery")


def _upsert_discovered(db, mac: str, facts: dict | None, report: dict | None) -> bool:
    now = time.time()
    cap = int(ext().config["max_discovered"])
    if db.discovered(mac) is None and not db.add_discovered(mac, now, cap):
        return False
    db.seen_discovered(mac, now, facts, report)
    return True


def _token_of_latest_boot(db, mac: str, token: str | None) -> dict | None:
    """The MAC's latest boot when `token` is the one its script carried, else None."""
    boot = db.last_boot(mac, discovery=False)
    if boot is None or not token or not boot.get("token_hash"):
        return None
    if not hmac.compare_digest(boot["token_hash"], hash_token(token)):
        return None
    return boot


@bp.get("/<raw_mac>/stage")
def stage(raw_mac: str):
    mac = _mac(raw_mac)
    if isinstance(mac, Response):
        return mac
    e = ext()
    if _no_inventory(e):
        return _no_inventory_answer()
    name = request.args.get("name", "")
    if name not in e.boot.STAGES:
        return _text(
            f"query parameter name: {name[:40]!r} is not one of {', '.join(e.boot.STAGES)}\n", 400
        )
    boot = _token_of_latest_boot(e.db, mac, request.args.get("token"))
    if boot is None:
        log.warning(
            "stage %s of %s from %s refused: not its boot's token", name, mac, request.remote_addr
        )
        return _text("query parameter token: not the token of this PC's latest boot\n", 403)
    error = request.args.get("error")
    _record_stage(e.db, boot, name, error[:64] if error else None)
    if FINAL.get(name) == "failed" and boot.get("version"):
        _canary_failed(e, boot)
    return _text("ok\n")


def _canary_failed(e, boot: dict) -> None:
    """A canary's boot failed: the rollouts decide now rather than at the next
    collection (up to collect_interval later), so a rollback's job is queued at once;
    while it runs it holds the image, and the canaries' boots wait for it (locks)."""
    client = e.inventory.snapshot.clients.get(boot.get("client") or "")
    if e.rollouts is None or not client or not client.get("canary"):
        return
    try:
        e.rollouts.tick()
    except Exception:  # the PC's callback must not fail for it; the collector retries
        log.exception("rollouts after the failed boot of %s", boot.get("client"))


def _record_stage(db, boot: dict, name: str, detail: str | None) -> None:
    now = time.time()
    if boot["result"] == "refused":
        return  # the refusal script reports `failed`; the refusal says more
    result = FINAL.get(name, boot["result"])
    # The duration runs to the last final stage: the hand-over to the disk, or the
    # OS's own report when one comes.
    duration = now - boot["started"] if name in FINAL else boot["duration"]
    text = f"{name}: {detail}" if detail else boot["detail"]
    db.set_boot_stage(boot["id"], name, now, result, duration, text)


@bp.get("/<raw_mac>/discover")
def discover(raw_mac: str):
    mac = _mac(raw_mac)
    if isinstance(mac, Response):
        return mac
    e = ext()
    if _no_inventory(e):
        return _no_inventory_answer()
    if mac in e.inventory.snapshot.by_mac:
        return _text("known\n")
    # Not request.args: iPXE leaves '+', '&' and '=' unescaped inside values.
    raw = ipxe.parse_discover_query(request.query_string)
    facts = {f: raw[f][:MAX_FACT] for f in DISCOVERY_FIELDS if raw.get(f)}
    if not _upsert_discovered(e.db, mac, facts, None):
        return _text("too many discovered machines waiting; approve or forget some\n", 503)
    return _text("reported\n")


@bp.post("/<raw_mac>/report")
def report(raw_mac: str):
    """The richer report of pc/report_os.py from a booted OS; marks the boot up."""
    mac = _mac(raw_mac)
    if isinstance(mac, Response):
        return mac
    e = ext()
    limit = int(e.config["max_report_bytes"])
    too_big = _text(f"body: a report may have at most {limit} bytes (max_report_bytes)\n", 413)
    if request.content_length is not None and request.content_length > limit:
        return too_big
    if len(request.get_data(cache=True)) > limit:
        return too_big
    data = request.get_json(silent=True) if request.is_json else None
    if not isinstance(data, dict):
        return _text("body: send a JSON object with Content-Type: application/json\n", 400)
    if _no_inventory(e):
        return _no_inventory_answer()
    snap = e.inventory.snapshot
    name = snap.by_mac.get(mac)
    if name is not None:
        boot = _token_of_latest_boot(e.db, mac, request.headers.get(TOKEN_HEADER))
        if boot is None:
            if e.boot.origin.of(snap.clients[name], mac, request.remote_addr) is None:
                log.warning(
                    "report of %s (%s) from %s refused: neither its boot's token nor its own "
                    "address",
                    name,
                    mac,
                    request.remote_addr,
                )
                return _text(
                    f"report of {mac}: send the boot's token ({TOKEN_HEADER}) or report from "
                    "the PC's own address\n",
                    403,
                )
            boot = e.db.last_boot(mac, discovery=False)
        if boot is not None:
            _record_stage(e.db, boot, "os", None)
        return _text("ok\n")
    if not _upsert_discovered(e.db, mac, None, data):
        return _text("too many discovered machines waiting; approve or forget some\n", 503)
    return _text("reported\n")
