"""Machines: the inventory's clients with what the server knows of them now."""

from __future__ import annotations

from flask import Blueprint, jsonify, request
from ggnet import console

from ggnet_api import auth
from ggnet_api.blueprints.common import ext, fail
from ggnet_api.boot_service import client_state

bp = Blueprint("machines", __name__, url_prefix="/api")


def _console_url(c: dict) -> str | None:
    """The noVNC page showing this machine's screen, when it has a VNC endpoint."""
    if not c.get("console_vnc"):
        return None
    cfg = ext().config
    host = cfg.get("console_host") or request.host.rsplit(":", 1)[0].strip("[]")
    try:
        return console.console_url(host, cfg.get("console_port", console.DEFAULT_PORT), c["name"])
    except ValueError:
        return None


def _view(c: dict, last: dict | None, sample, images: dict) -> dict:
    image = images.get(c["image"]) or {}
    version = c.get("image_version") or image.get("version")
    if version is None:
        # No pinned version: the newest one is what boots (see ggnet.storage).
        versions = sample.versions.get(c["image"]) or []
        version = versions[-1]["name"] if versions else None
    sizes = sample.writeback_bytes
    return {
        "name": c["name"],
        "mac": c["mac"],
        "ip": c["ip"],
        "image": c["image"],
        "version": version,
        "game_disk": c["game_disk"],
        "groups": c["groups"],
        "maintenance": c["keep_writeback"],
        "writeback_bytes": sizes.get(c["name"]) if sizes is not None else None,
        "state": client_state(c, last),
        "console_url": _console_url(c),
        "last_boot": None
        if last is None
        else {k: last[k] for k in ("id", "started", "stage", "result", "duration", "detail")},
    }


def machine_views() -> list[dict]:
    """Every client of the inventory as GET /api/machines shows it (the console's
    machines page shows the same), by name."""
    e = ext()
    snap, sample, last = e.inventory.snapshot, e.collector.sample, e.db.last_boots()
    return [
        _view(c, last.get(c["mac"]), sample, snap.images) for _, c in sorted(snap.clients.items())
    ]


def machine_view(name: str) -> dict | None:
    """One client as GET /api/machines/<name> shows it, with its recent boots; None
    when the inventory has no such client."""
    e = ext()
    snap = e.inventory.snapshot
    c = snap.clients.get(name)
    if c is None:
        return None
    out = _view(c, e.db.last_boot(c["mac"]), e.collector.sample, snap.images)
    out["boots"] = e.db.recent_boots(c["mac"], 20)
    return out


@bp.get("/machines")
@auth.require("viewer")
def list_machines():
    return jsonify(machines=machine_views())


@bp.get("/machines/<name>")
@auth.require("viewer")
def get_machine(name: str):
    out = machine_view(name)
    if out is None:
        fail(404, f"machine {name[:64]!r}: not a client of this server's inventory")
    return jsonify(out)
