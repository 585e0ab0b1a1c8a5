"""Where ggnet keeps images, versions and writebacks on a pool.

This module is the only place that knows dataset names and the paths of disk files and
zvol devices; storage, iSCSI and the API ask it rather than building names themselves.

    <pool>/images/<image>                     an image's head (never booted directly)
    <pool>/images/<image>@<version>           a version: what clients clone
    <pool>/writebacks/<client>                one per client, holds its disks
    <pool>/writebacks/<client>/<disk_role>    clone of a version: system | game
    <pool>/boot-tests/<image>                 a boot test's throwaway clone (outside
                                              writebacks: never a PC's, never reconciled)

With disk_format ``file`` each of those datasets holds one disk file, DISK_FILE, at a
mountpoint derived from ``ggnet_storage.mountpoint`` (default ``/<pool>``): ggnet sets
the mountpoint of ``images`` and ``writebacks`` itself, so paths never depend on what
the pool happens to be mounted at.  With ``zvol`` the datasets are volumes and the
disk is the device node udev creates for them.
"""

from __future__ import annotations

from .settings import DATASET_COMPONENT, DISK_FORMATS, POOL_NAME, default

IMAGES = "images"
WRITEBACKS = "writebacks"
BOOT_TESTS = "boot-tests"
DISK_FILE = "disk.img"
# The client's boot disk comes from ggnet_image, the optional second disk from
# ggnet_game_disk; the role names are also the LUN order the iSCSI side uses.
DISK_ROLES = ("system", "game")
ZVOL_DEV_ROOT = "/dev/zvol"


class LayoutError(ValueError):
    """A name that cannot be used as a dataset or path component."""


def _component(kind: str, name: object) -> str:
    if not isinstance(name, str) or not DATASET_COMPONENT.match(name) or name in (".", ".."):
        raise LayoutError(
            f"{kind} name {name!r} cannot be used in a ZFS dataset name: use letters, "
            "digits and _ . : - (not starting with a punctuation character)"
        )
    return name


def pool(cfg: dict) -> str:
    name = cfg.get("pool", default("ggnet_storage", "pool"))
    if not isinstance(name, str) or not POOL_NAME.match(name):
        raise LayoutError(
            f"ggnet_storage.pool {name!r} is not a valid pool name: start with a letter, "
            "then letters, digits and _ . : -"
        )
    return name


def disk_format(cfg: dict) -> str:
    fmt = cfg.get("disk_format", default("ggnet_storage", "disk_format"))
    if fmt not in DISK_FORMATS:
        raise LayoutError(
            f"ggnet_storage.disk_format {fmt!r} is not one of {', '.join(DISK_FORMATS)}"
        )
    return fmt


def mount_root(cfg: dict) -> str:
    root = cfg.get("mountpoint") or f"/{pool(cfg)}"
    if not root.startswith("/"):
        raise LayoutError(f"ggnet_storage.mountpoint {root!r} must be an absolute path")
    return root.rstrip("/") or "/"


def _role(role: str) -> str:
    if role not in DISK_ROLES:
        raise LayoutError(f"disk role {role!r} is not one of {', '.join(DISK_ROLES)}")
    return role


def images_root(cfg: dict) -> str:
    return f"{pool(cfg)}/{IMAGES}"


def writebacks_root(cfg: dict) -> str:
    return f"{pool(cfg)}/{WRITEBACKS}"


def top_mountpoints(cfg: dict) -> dict[str, str]:
    """The mountpoint ggnet sets on each top-level dataset it owns."""
    root = mount_root(cfg).rstrip("/")
    return {
        images_root(cfg): f"{root}/{IMAGES}",
        writebacks_root(cfg): f"{root}/{WRITEBACKS}",
    }


def image_dataset(cfg: dict, image: str) -> str:
    return f"{images_root(cfg)}/{_component('image', image)}"


def version_snapshot(cfg: dict, image: str, version: str) -> str:
    return f"{image_dataset(cfg, image)}@{_component('version', version)}"


def client_dataset(cfg: dict, client: str) -> str:
    return f"{writebacks_root(cfg)}/{_component('client', client)}"


def writeback_dataset(cfg: dict, client: str, disk_role: str) -> str:
    return f"{client_dataset(cfg, client)}/{_role(disk_role)}"


def split_writeback(cfg: dict, dataset: str) -> tuple[str, str] | None:
    """(client, disk_role) of a writeback dataset name, None for anything else."""
    prefix = writebacks_root(cfg) + "/"
    if not dataset.startswith(prefix):
        return None
    parts = dataset[len(prefix) :].split("/")
    if len(parts) != 2 or parts[1] not in DISK_ROLES or "@" in dataset:
        return None
    return parts[0], parts[1]


def split_client(cfg: dict, dataset: str) -> str | None:
    """The client of a client dataset (`<pool>/writebacks/<client>`), None otherwise."""
    prefix = writebacks_root(cfg) + "/"
    if not dataset.startswith(prefix):
        return None
    rest = dataset[len(prefix) :]
    return rest if rest and "/" not in rest and "@" not in rest else None


def split_image(cfg: dict, name: str) -> tuple[str, str | None] | None:
    """(image, version or None) of an image dataset or version snapshot name."""
    prefix = images_root(cfg) + "/"
    if not name.startswith(prefix):
        return None
    rest = name[len(prefix) :]
    image, _, version = rest.partition("@")
    if "/" in image or not image:
        return None
    return image, (version or None)


def boot_test_dataset(cfg: dict, image: str) -> str:
    """The throwaway clone a boot test of `image` boots (one test per image at a time).
    Outside writebacks: no PC's name can reach it, and neither the writebacks'
    reconcile nor a read of the clients ever lists it."""
    return f"{pool(cfg)}/{BOOT_TESTS}/{_component('image', image)}"


def boot_test_mountpoint(cfg: dict, image: str) -> str:
    """Where a boot test's clone is mounted (disk_format file): set on the clone itself,
    so that it never depends on where the pool happens to be mounted."""
    return f"{mount_root(cfg).rstrip('/')}/{BOOT_TESTS}/{_component('image', image)}"


def boot_test_backing(cfg: dict, image: str) -> tuple[str, str]:
    """(path, kind) of a boot test's disk, what its throwaway LUN exports."""
    return _backing(cfg, boot_test_dataset(cfg, image))


def _backing(cfg: dict, dataset: str) -> tuple[str, str]:
    if disk_format(cfg) == "zvol":
        return f"{ZVOL_DEV_ROOT}/{dataset}", "block"
    relative = dataset[len(pool(cfg)) + 1 :]
    return f"{mount_root(cfg).rstrip('/')}/{relative}/{DISK_FILE}", "file"


def image_backing(cfg: dict, image: str) -> tuple[str, str]:
    """(path, kind) of an image head's disk: kind is ``file`` or ``block``."""
    return _backing(cfg, image_dataset(cfg, image))


def writeback_backing(cfg: dict, client_name: str, disk_role: str) -> tuple[str, str]:
    """(path, kind) of a client's disk, what an iSCSI LUN exports.

    kind is ``file`` (a disk file: LIO fileio / tgt rdwr) or ``block`` (a zvol: LIO
    block backstore).  Pure: the path is derived, the writeback may not exist yet.
    """
    return _backing(cfg, writeback_dataset(cfg, client_name, disk_role))
