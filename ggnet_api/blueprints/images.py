"""Images: the inventory's ggnet_images with the versions found on the pool."""

from __future__ import annotations

from flask import Blueprint, jsonify

from ggnet_api import auth
from ggnet_api.blueprints.common import ext, fail

bp = Blueprint("images", __name__, url_prefix="/api")


def _view(name: str, spec: dict, sample, clients: dict) -> dict:
    spec = spec if isinstance(spec, dict) else {}
    return {
        "name": name,
        "kind": spec.get("kind"),
        "size": spec.get("size"),
        "version": spec.get("version"),
        # None when the collector could not read the pool (see /api/status).
        "versions": sample.versions.get(name) if "storage" not in sample.errors else None,
        "clients": sorted(
            n for n, c in clients.items() if c["image"] == name or c.get("game_disk") == name
        ),
    }


@bp.get("/images")
@auth.require("viewer")
def list_images():
    e = ext()
    snap = e.inventory.snapshot
    return jsonify(
        images=[
            _view(n, s, e.collector.sample, snap.clients) for n, s in sorted(snap.images.items())
        ]
    )


@bp.get("/images/<name>")
@auth.require("viewer")
def get_image(name: str):
    e = ext()
    snap = e.inventory.snapshot
    if name not in snap.images:
        fail(404, f"image {name[:64]!r}: not in ggnet_images of the inventory")
    return jsonify(_view(name, snap.images[name], e.collector.sample, snap.clients))
