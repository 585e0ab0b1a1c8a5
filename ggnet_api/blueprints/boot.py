"""The boot path, reached by PCs without a token: /boot/<mac> and its callbacks.

Answers are text/plain iPXE (or a one-line text), never JSON: iPXE shows the body of
an error on the PC's screen.  The script of a known PC carries its CHAP secret, so it
is never logged.  Every request for a script is recorded as a boot; the callbacks
the script makes (see ggnet.ipxe) move that boot through its stages.
"""

from __future__ import annotations

import logging
import time

from flask import Blueprint, Response, request
from ggnet import ipxe
from ggnet.ipxe import DISCOVERY_FIELDS
from ggnet.net import normalize_mac

from ggnet_api.blueprints.common import ext
from ggnet_api.boot_service import BootRefused

bp = Blueprint("boot", __name__, url_prefix="/boot")
log = logging.getLogger(__name__)

MAX_FACT = 128
# Stages after which the boot is over: the disk was handed to the firmware, or not.
FINAL = {"sanboot": "ok", "failed": "failed", "os": "ok"}


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


@bp.get("/<raw_mac>")
def script(raw_mac: str):
    mac = _mac(raw_mac)
    if isinstance(mac, Response):
        return mac
    e = ext()
    snap = e.inventory.snapshot
    name = snap.by_mac.get(mac)
    if name is None:
        _seen_unknown(e.db, mac)
        return _text(e.boot.discovery_script(_api_url()))
    # The image the PC boots now: boot durations are compared per image.
    image = snap.clients[name].get("image")
    try:
        body, kind = e.boot.script(name, _api_url())
    except BootRefused as exc:
        e.db.add_boot(mac, name, "normal", result="refused", detail=str(exc)[:500], image=image)
        log.warning("boot of %s (%s) refused: %s", name, mac, exc)
        return _text(e.boot.refusal_script(str(exc), _api_url(), mac))
    e.db.add_boot(mac, name, kind, image=image)
    return _text(body)


def _seen_unknown(db, mac: str) -> None:
    """An unknown PC asks every few seconds while it waits: one boot row, refreshed."""
    now = time.time()
    last = db.last_boot(mac)
    if last and last["kind"] == "discovery":
        db.touch_boot(last["id"], now)
    else:
        db.add_boot(mac, None, "discovery", result="discovery")
    _upsert_discovered(db, mac, None, None)


def _upsert_discovered(db, mac: str, facts: dict | None, report: dict | None) -> bool:
    now = time.time()
    if db.discovered(mac) is None:
        if db.count_discovered() >= int(ext().config["max_discovered"]):
            return False
        db.add_discovered(mac, now)
    db.seen_discovered(mac, now, facts, report)
    return True


@bp.get("/<raw_mac>/stage")
def stage(raw_mac: str):
    mac = _mac(raw_mac)
    if isinstance(mac, Response):
        return mac
    e = ext()
    name = request.args.get("name", "")
    if name not in e.boot.STAGES:
        return _text(
            f"query parameter name: {name[:40]!r} is not one of {', '.join(e.boot.STAGES)}\n", 400
        )
    error = request.args.get("error")
    _record_stage(e.db, mac, name, error[:64] if error else None)
    return _text("ok\n")


def _record_stage(db, mac: str, name: str, detail: str | None) -> bool:
    boot = db.last_boot(mac, discovery=False)
    if boot is None:
        return False
    now = time.time()
    if boot["result"] == "refused":
        return True  # the refusal script reports `failed`; the refusal says more
    result = FINAL.get(name, boot["result"])
    # The duration runs to the last final stage: the hand-over to the disk, or the
    # OS's own report when one comes.
    duration = now - boot["started"] if name in FINAL else boot["duration"]
    text = f"{name}: {detail}" if detail else boot["detail"]
    db.set_boot_stage(boot["id"], name, now, result, duration, text)
    return True


@bp.get("/<raw_mac>/discover")
def discover(raw_mac: str):
    mac = _mac(raw_mac)
    if isinstance(mac, Response):
        return mac
    e = ext()
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
    data = request.get_json(silent=True) if request.is_json else None
    if not isinstance(data, dict):
        return _text("body: send a JSON object with Content-Type: application/json\n", 400)
    e = ext()
    if mac in e.inventory.snapshot.by_mac:
        _record_stage(e.db, mac, "os", None)
        return _text("ok\n")
    if not _upsert_discovered(e.db, mac, None, data):
        return _text("too many discovered machines waiting; approve or forget some\n", 503)
    return _text("reported\n")
