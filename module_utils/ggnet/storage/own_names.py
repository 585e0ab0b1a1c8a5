"""Dataset names this package built, split back into image, version or writeback.

layout's split_* answer None for a name that is not one of theirs.  The plans and the
pool state only ever hold names layout built, so None here is a bug, not an input."""

from __future__ import annotations

from .. import layout


def image_parts(cfg: dict, name: str) -> tuple[str, str | None]:
    """(image, version or None) of an image dataset or one of its version snapshots."""
    parts = layout.split_image(cfg, name)
    assert parts is not None, f"{name} is not an image dataset"
    return parts


def version_parts(cfg: dict, snapshot: str) -> tuple[str, str]:
    """(image, version) of a version snapshot."""
    image, version = image_parts(cfg, snapshot)
    assert version is not None, f"{snapshot} is not a version snapshot"
    return image, version


def writeback_parts(cfg: dict, dataset: str) -> tuple[str, str]:
    """(client, disk role) of a writeback dataset."""
    parts = layout.split_writeback(cfg, dataset)
    assert parts is not None, f"{dataset} is not a writeback dataset"
    return parts
