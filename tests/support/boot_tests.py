"""What the boot-test tests and the rollout bench share: the job's Setup on a private
tgtd (tgt_netns), and a new image version made the way an operator's update is made
(bootprog's disk written over a PC's writeback, then applied: a candidate), and the
PC that does it."""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from ggnet import layout, storage
from ggnet.boot_test_knobs import Knobs
from ggnet.model import parse_size
from ggnet.storage import boot_test_job as job
from ggnet.zfs import Zfs
from ggnet_bootprog import build as bp

from .tgt_netns import PREFIX, Tgt


def job_setup(tgt: Tgt, state_dir: Path, knobs: Knobs | None = None) -> job.Setup:
    """A boot test's Setup whose target goes to `tgt` and whose VM runs in its netns."""
    return job.Setup(
        backend="tgt",
        iqn_prefix=PREFIX,
        portal=f"{tgt.portal}:3260",
        iscsi_options={"control_port": tgt.control_port, "netns": tgt.netns},
        state_dir=str(state_dir),
        knobs=knobs or Knobs(),
    )


def pc(name: str = "pc-01", image: str = "os") -> dict[str, Any]:
    """One PC as storage's writebacks converge reads it: a system disk, no game disk."""
    return {
        "name": name,
        "image": image,
        "game_disk": None,
        "keep_writeback": False,
        "target_iqn": f"{PREFIX}:target.{name}",
    }


def versions(cfg: dict, image: str) -> list[str]:
    """The versions of `image` on the pool, oldest first."""
    out = subprocess.run(
        ["zfs", "list", "-H", "-o", "name", "-t", "snapshot", "-s", "createtxg", "-r",
         layout.image_dataset(cfg, image)],
        capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip
    return [line.split("@", 1)[1] for line in out.splitlines() if "@" in line]


def write_bootprog_disk(
    cfg: dict,
    images: Mapping[str, Any],
    clients: Sequence[Mapping[str, Any]],
    client: str,
    identity: str,
    work: Path,
    hang: Iterable[str] = (),
) -> None:
    """`client` writes bootprog's disk (its marker says `identity`; `hang`: the
    firmwares it hangs on) over its system writeback."""
    image = next(c["image"] for c in clients if c["name"] == client)
    size = parse_size(images[image]["size"])
    src = bp.build_disk(work / f"{identity}.img", identity, size=size, hang=hang)
    disk = layout.writeback_backing(cfg, client, "system")[0]
    with open(src, "rb") as s, open(disk, "r+b") as d:
        shutil.copyfileobj(s, d)


def apply_version(
    cfg: dict,
    images: Mapping[str, Any],
    clients: Sequence[Mapping[str, Any]],
    client: str,
    comment: str,
) -> str:
    """`client`'s writeback applied as a new version of its image: the version's name."""
    image = next(c["image"] for c in clients if c["name"] == client)
    before = set(versions(cfg, image))
    storage.apply_writeback(cfg, images, list(clients), client, comment, sessions={})
    (new,) = set(versions(cfg, image)) - before
    return new


def origin(cfg: dict, client: str) -> str:
    """The version `client`'s system writeback is a clone of."""
    dataset = layout.writeback_dataset(cfg, client, "system")
    return str(Zfs().get([dataset], ["origin"])[dataset]["origin"].split("@")[1])
