"""The boot-server VM image: built once per recipe, cached, never modified.

The recipe (recipes/bootserver.yml and recipes/build-rootfs.sh) is hashed; the hash
names the cache directory, so a changed recipe builds a new image beside the old one and
an unchanged recipe reuses what is there.  Runs boot from a qcow2 overlay (see vm.py).
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import yaml

from . import paths

RECIPES = Path(__file__).resolve().parent / "recipes"
RECIPE = RECIPES / "bootserver.yml"
BUILD_SCRIPT = RECIPES / "build-rootfs.sh"
REQUIRED_KEYS = ("suite", "packages", "disable", "mask", "root_free_mib", "hostname", "address")
# Marks a finished build; a directory without it is a build that died half-way.
DONE = "image.done"


class ImageError(RuntimeError):
    pass


@dataclass(frozen=True)
class Image:
    directory: Path

    @property
    def root(self) -> Path:
        return self.directory / "root.img"

    @property
    def kernel(self) -> Path:
        return self.directory / "vmlinuz"

    @property
    def initrd(self) -> Path:
        return self.directory / "initrd.img"

    def complete(self) -> bool:
        return (
            all(p.is_file() for p in (self.root, self.kernel, self.initrd))
            and (self.directory / DONE).is_file()
        )


def recipe_hash(recipe_dir: Path = RECIPES) -> str:
    """A digest of every file of the recipe, names included, in a stable order."""
    digest = hashlib.sha256()
    for path in sorted(p for p in recipe_dir.iterdir() if p.is_file()):
        digest.update(path.name.encode() + b"\0")
        digest.update(path.read_bytes() + b"\0")
    return digest.hexdigest()[:16]


def load_recipe(path: Path = RECIPE) -> dict:
    try:
        recipe = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as exc:
        raise ImageError(f"{path}: cannot read the image recipe: {exc}") from exc
    if not isinstance(recipe, dict):
        raise ImageError(f"{path}: the recipe must be a mapping, got {type(recipe).__name__}")
    missing = [k for k in REQUIRED_KEYS if k not in recipe]
    if missing:
        raise ImageError(f"{path}: the recipe lacks {', '.join(missing)}")
    recipe.setdefault("components", ["main"])
    for key in ("packages", "disable", "mask", "components"):
        value = recipe[key]
        if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
            raise ImageError(f"{path}: '{key}' must be a list of names")
    return recipe


def _deb822_mirrors(text: str, suite: str) -> list[str]:
    found = []
    for stanza in text.split("\n\n"):
        fields: dict[str, str] = {}
        for line in stanza.splitlines():
            if line.startswith("#") or ":" not in line or line[:1].isspace():
                continue
            key, _, value = line.partition(":")
            fields[key.strip().lower()] = value.strip()
        if fields.get("enabled", "yes").lower() == "no":
            continue
        if "deb" not in fields.get("types", "").split():
            continue
        if suite not in fields.get("suites", "").split():
            continue
        found.extend(fields.get("uris", "").split())
    return found


def _one_line_mirrors(text: str, suite: str) -> list[str]:
    found = []
    for line in text.splitlines():
        words = line.split("#", 1)[0].split()
        if words and words[0] == "deb" and len(words) > 1 and words[1].startswith("["):
            # drop the "[arch=... signed-by=...]" options
            while words and not words[1].endswith("]"):
                words.pop(1)
            words.pop(1)
        if len(words) >= 3 and words[0] == "deb" and words[2] == suite:
            found.append(words[1])
    return found


def debian_mirror(suite: str, apt_dir: Path = Path("/etc/apt")) -> str:
    """The Debian mirror the host's apt already uses for SUITE (never a name of ours)."""
    candidates: list[str] = []
    for sources in sorted((apt_dir / "sources.list.d").glob("*.sources")):
        candidates += _deb822_mirrors(sources.read_text(), suite)
    for listing in [apt_dir / "sources.list", *sorted((apt_dir / "sources.list.d").glob("*.list"))]:
        if listing.is_file():
            candidates += _one_line_mirrors(listing.read_text(), suite)
    for url in candidates:
        if url.startswith(("http://", "https://", "file:/")):
            return url
    raise ImageError(
        f"no apt source for '{suite}' under {apt_dir} (sources.list.d/*.sources or "
        f"sources.list): add the Debian mirror this machine should use, then retry"
    )


def build_env(recipe: dict, root: Path, out: Path, mirror: str) -> dict[str, str]:
    env = dict(os.environ)
    env.update(
        ROOT=str(root),
        OUT=str(out),
        MIRROR=mirror,
        SUITE=recipe["suite"],
        APT_COMPONENTS=",".join(recipe["components"]),
        PACKAGES=" ".join(recipe["packages"]),
        DISABLE=" ".join(recipe["disable"]),
        MASK=" ".join(recipe["mask"]),
        FREE_MIB=str(int(recipe["root_free_mib"])),
        HOSTNAME_=recipe["hostname"],
        ADDRESS=recipe["address"],
        ADDRESS6=recipe.get("address6", ""),
    )
    return env


def cached_image() -> Image:
    return Image(paths.cache_dir() / recipe_hash())


def ensure_image(progress: Callable[[str], None] = print, rebuild: bool = False) -> Image:
    """The image for the current recipe, built first if the cache has none."""
    image = cached_image()
    if image.complete() and not rebuild:
        progress(f"image: cached {image.directory}")
        return image
    _build(image, progress)
    return image


def _build(image: Image, progress: Callable[[str], None]) -> None:
    recipe = load_recipe()
    for tool in ("debootstrap", "mkfs.ext4", "unshare", "chroot"):
        if shutil.which(tool) is None:
            raise ImageError(f"'{tool}' is not installed: run `make deps` (scripts/bootstrap.sh)")
    mirror = debian_mirror(recipe["suite"])
    staging = image.directory.with_name(image.directory.name + f".build-{os.getpid()}")
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    log = staging / "build.log"
    progress(
        f"image: building {image.directory.name} ({len(recipe['packages'])} packages from "
        f"{mirror}); takes a few minutes, full log in {log}"
    )
    started = time.monotonic()
    # A private mount namespace: the chroot's /proc, /sys, /dev go away with the script.
    command = ["unshare", "--mount", "--propagation", "private", "bash", str(BUILD_SCRIPT)]
    env = build_env(recipe, staging / "rootfs", staging, mirror)
    with log.open("w") as log_file:
        proc = subprocess.Popen(
            command, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
        )
        assert proc.stdout is not None
        last_tick = started
        for line in proc.stdout:
            log_file.write(line)
            now = time.monotonic()
            if line.startswith("==> "):
                progress(f"image: [{now - started:5.0f}s] {line[4:].rstrip()}")
            elif now - last_tick > 30 or line.startswith("  ... "):  # the script's own ticks
                text = line.strip().removeprefix("... ")
                progress(f"image: [{now - started:5.0f}s]   ... {text[:90]}")
            else:
                continue
            last_tick = now
        code = proc.wait()
    if code != 0:
        tail = "".join(log.read_text().splitlines(keepends=True)[-15:])
        raise ImageError(
            f"image build failed (exit {code}); last lines of {log}:\n{tail}\n"
            f"Fix the cause (network to the Debian mirror? disk space in {paths.cache_dir()}?), "
            f"then run `ggnet lab up` again; the half-built {staging} is replaced."
        )
    shutil.rmtree(staging / "rootfs")
    (staging / DONE).write_text(f"built in {time.monotonic() - started:.0f}s from {mirror}\n")
    shutil.rmtree(image.directory, ignore_errors=True)
    staging.rename(image.directory)
    progress(f"image: built in {time.monotonic() - started:.0f}s -> {image.directory}")


def main() -> int:
    """`python -m ggnet_lab.image [--rebuild]`: build (or find) the image alone."""
    try:
        image = ensure_image(rebuild="--rebuild" in sys.argv[1:])
    except ImageError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(image.directory)
    return 0


if __name__ == "__main__":
    sys.exit(main())
