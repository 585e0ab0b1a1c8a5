"""Images: the inventory's ggnet_images with the versions found on the pool, their
states, the version PCs boot, and a rollout's version and decision."""

from __future__ import annotations

import time

from flask import Blueprint, jsonify

from ggnet_api import auth
from ggnet_api.blueprints.common import ext, fail
from ggnet_api.rollouts import image_rollout

bp = Blueprint("images", __name__, url_prefix="/api")


def _view(name: str, spec: dict, sample, clients: dict, setting, db, now: float) -> dict:
    spec = spec if isinstance(spec, dict) else {}
    # None when the collector could not read the pool (see /api/status).
    versions = sample.versions.get(name) if "storage" not in sample.errors else None
    rollout = (
        image_rollout(name, spec, versions, sample.image_current.get(name), setting, db, now)
        if versions
        else {"served": None, "canary": None, "decision": None}
    )
    return {
        "name": name,
        "kind": spec.get("kind"),
        "size": spec.get("size"),
        "version": spec.get("version"),
        "versions": versions,
        # The version every PC but the canaries boots, the canaries' version (a
        # rollout), and the rollout's decision over the canaries' boots.
        "served": rollout["served"],
        "canary": rollout["canary"],
        "rollout": rollout["decision"],
        "clients": sorted(
            n for n, c in clients.items() if c["image"] == name or c.get("game_disk") == name
        ),
        "canary_clients": sorted(
            n
            for n, c in clients.items()
            if c.get("canary") and (c["image"] == name or c.get("game_disk") == name)
        ),
    }


@bp.get("/images")
@auth.require("viewer")
def list_images():
    e = ext()
    snap, now = e.inventory.snapshot, time.time()
    return jsonify(
        images=[
            _view(n, s, e.collector.sample, snap.clients, snap.rollout, e.db, now)
            for n, s in sorted(snap.images.items())
        ]
    )


@bp.get("/images/<name>")
@auth.require("viewer")
def get_image(name: str):
    e = ext()
    snap = e.inventory.snapshot
    if name not in snap.images:
        fail(404, f"image {name[:64]!r}: not in ggnet_images of the inventory")
    return jsonify(
        _view(
            name,
            snap.images[name],
            e.collector.sample,
            snap.clients,
            snap.rollout,
            e.db,
            time.time(),
        )
    )
