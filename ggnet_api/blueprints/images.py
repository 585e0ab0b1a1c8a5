"""Images: the inventory's ggnet_images with the versions found on the pool, their
states and last boot test, the version PCs boot, and a rollout's version and decision;
a version's boot test started as a job, and its screenshot."""

from __future__ import annotations

import re
import time

from flask import Blueprint, jsonify, request, send_file

from ggnet_api import auth
from ggnet_api.blueprints.common import accepted, ext, fail, json_body
from ggnet_api.config import NAME_PATTERN
from ggnet_api.jobs import JobError
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


def _known_version(name: str, version: str) -> None:
    """404 unless `name` is an image of the inventory and `version` a name the job
    allow-list accepts and, when the pool could be read, one of the image's versions."""
    e = ext()
    if name not in e.inventory.snapshot.images:
        fail(404, f"image {name[:64]!r}: not in ggnet_images of the inventory")
    if not re.fullmatch(NAME_PATTERN, version):
        fail(404, f"version {version[:64]!r}: not a version name")
    sample = e.collector.sample
    versions = sample.versions.get(name) if "storage" not in sample.errors else None
    if versions is not None and version not in {v["name"] for v in versions}:
        fail(404, f"{name}@{version}: no such version on the pool")


@bp.post("/images/<name>/versions/<version>/boot-test")
@auth.require("operator")
def start_boot_test(name: str, version: str):
    """Start the boot test of a version as an image job (op=boot_test): the same job
    POST /api/jobs starts with kind image."""
    _known_version(name, version)
    body = json_body() if request.content_length else {}
    unknown = sorted(set(body) - {"wait"})
    if unknown:
        fail(400, f"body: unknown field(s) {', '.join(unknown)}; send only wait")
    wait = body.get("wait", True)
    if not isinstance(wait, bool):
        fail(400, "body.wait: must be true (queue behind a conflicting job) or false (409)")
    extravars = {"op": "boot_test", "image": name, "version": version}
    try:
        job = ext().jobs.submit("image", extravars, auth.principal_name(), wait=wait)
    except JobError as exc:
        fail(exc.status, str(exc))
    return accepted(job)


@bp.get("/images/<name>/versions/<version>/screenshot")
@auth.require("viewer")
def boot_test_screenshot(name: str, version: str):
    """The screen of the version's last boot test (PNG).  The path is built from the
    image and version names only after both are checked (_known_version)."""
    from ggnet.storage.boot_test_job import screenshot_path

    _known_version(name, version)
    path = screenshot_path(ext().config["boot_test_dir"], name, version)
    if not path.is_file():
        fail(404, f"{name}@{version}: no boot-test screenshot")
    return send_file(path, mimetype="image/png", max_age=0)
