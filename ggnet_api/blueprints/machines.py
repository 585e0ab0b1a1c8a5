"""Machines: the inventory's clients with what the server knows of them now, and their
power: a wake (magic packet) or a BMC's on / off / cycle, each a job of kind power."""

from __future__ import annotations

import time

from flask import Blueprint, jsonify, request
from ggnet import console, redfish

from ggnet_api import auth, wakes
from ggnet_api.blueprints.common import accepted, ext, fail, json_body
from ggnet_api.boot_service import client_state
from ggnet_api.jobs import JobError

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


def _power(c: dict, wake: dict | None, bmcs: dict) -> dict:
    cfg = ext().config
    return {
        "bmc": c["name"] in bmcs,
        "wake": wakes.view(wake, time.time(), float(cfg["wake_timeout"])),
    }


def _view(c: dict, last: dict | None, sample, images: dict, power: dict | None = None) -> dict:
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
        "power": power,
        "last_boot": None
        if last is None
        else {k: last[k] for k in ("id", "started", "stage", "result", "duration", "detail")},
    }


def machine_views() -> list[dict]:
    """Every client of the inventory as GET /api/machines shows it (the console's
    machines page shows the same), by name."""
    e = ext()
    snap, sample, last = e.inventory.snapshot, e.collector.sample, e.db.last_boots()
    woken = e.db.last_wakes()
    return [
        _view(c, last.get(c["mac"]), sample, snap.images, _power(c, woken.get(c["mac"]), snap.bmcs))
        for _, c in sorted(snap.clients.items())
    ]


def machine_view(name: str) -> dict | None:
    """One client as GET /api/machines/<name> shows it, with its recent boots; None
    when the inventory has no such client."""
    e = ext()
    snap = e.inventory.snapshot
    c = snap.clients.get(name)
    if c is None:
        return None
    power = _power(c, e.db.last_wake(c["mac"]), snap.bmcs)
    out = _view(c, e.db.last_boot(c["mac"]), e.collector.sample, snap.images, power)
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


def _client_or_404(name: str) -> dict:
    c = ext().inventory.snapshot.clients.get(name)
    if c is None:
        fail(404, f"machine {name[:64]!r}: not a client of this server's inventory")
    return c


def _power_job(name: str, op: str, fields: set[str]):
    body = json_body() if request.content_length else {}
    unknown = sorted(set(body) - fields - {"wait"})
    if unknown:
        fail(
            400,
            f"body: unknown field(s) {', '.join(unknown)}; send only {', '.join(sorted(fields | {'wait'}))}",
        )
    wait = body.get("wait", True)
    if not isinstance(wait, bool):
        fail(400, "body.wait: must be true (queue behind a conflicting job) or false (409)")
    try:
        job = submit_power(name, op, wait)
    except JobError as exc:
        fail(exc.status, str(exc))
    return accepted(job)


def submit_power(name: str, op: str, wait: bool = True) -> dict:
    """Queue a power job (op wake, on, off or cycle) for client NAME; a press again
    while the same job is queued gets that job.  JobError when it cannot start."""
    return ext().jobs.submit(
        "power", {"op": op, "client": name}, auth.principal_name(), wait=wait, reuse_queued=True
    )


@bp.post("/machines/<name>/wake")
@auth.require("operator")
def wake(name: str):
    """Wake the PC: a job (kind power, op wake) sends its magic packet from the boot
    interface; GET /api/machines/<name> shows the wake confirmed at its next request."""
    _client_or_404(name)
    return _power_job(name, "wake", set())


@bp.post("/machines/<name>/power")
@auth.require("operator")
def power(name: str):
    """Switch the PC on, off or cycle it through its BMC (a job, kind power)."""
    _client_or_404(name)
    body = json_body()
    action = body.get("action")
    if action not in redfish.ACTIONS:
        fail(400, f"body.action: {str(action)[:40]!r} is not one of {', '.join(redfish.ACTIONS)}")
    if name not in ext().inventory.snapshot.bmcs:
        fail(
            409,
            f"machine {name}: the inventory names no BMC for it ({redfish.KEY}); wake it instead",
        )
    return _power_job(name, action, {"action"})
