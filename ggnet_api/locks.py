"""Who is working on which PC and image now: the one registry jobs and the boot path share.

A claim names what a piece of work touches, each thing exclusively (it changes it) or
shared (it only needs it to stay as it is): `pc:<name>`, `image:<name>`, and `room`,
which every claim holds shared and a converge holds exclusively.  Two claims conflict
on a thing one of them holds exclusively and the other holds at all.

- a machine op on PC X: X exclusive, X's images shared (an `apply` changes the image
  it writes: that one exclusive);
- an image op on image Y: Y and every PC on Y exclusive; a prune without an image:
  every image and every PC; a boot test of Y boots no PC: Y shared (it must stay as
  it is) and `boot-test:Y` exclusive (one test of an image at a time);
- converge, and any kind this module does not know: the whole room exclusive;
  preflight only reads, so it holds the room shared (it waits for a converge only);
- a boot's writeback reset: the PC exclusive, its images shared.

Jobs wait for their claim (ggnet_api/jobs.py); the boot path never waits: a PC whose
claim is taken is refused with a message its screen shows, and asks again later.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

ROOM = "room"


@dataclass(frozen=True)
class Claim:
    exclusive: frozenset[str]
    shared: frozenset[str]

    @staticmethod
    def of(exclusive: set[str], shared: set[str] | None = None) -> Claim:
        excl = frozenset(exclusive)
        # Every claim holds the room at least shared, so a converge conflicts with all.
        return Claim(excl, frozenset((shared or set()) | {ROOM}) - excl)

    def clash(self, other: Claim) -> str | None:
        """A thing both claims hold with at least one holding it exclusively, or None."""
        for key in sorted(self.exclusive & (other.exclusive | other.shared)):
            return key
        for key in sorted(self.shared & other.exclusive):
            return key
        return None


def describe(key: str) -> str:
    """`pc:pc-01` -> `pc pc-01`; the room as the words an operator reads."""
    return "the whole room" if key == ROOM else key.replace(":", " ", 1)


def _images_of(client: Mapping[str, Any]) -> set[str]:
    return {f"image:{i}" for i in (client.get("image"), client.get("game_disk")) if i}


def job_claim(kind: str, extravars: Mapping[str, Any], snap: Any) -> Claim:
    """What a job of `kind` with `extravars` touches, against the snapshot's clients."""
    clients: Mapping[str, Mapping[str, Any]] = snap.clients
    if kind == "machine":
        name = str(extravars.get("client"))
        client = clients.get(name, {})
        images = _images_of(client)
        exclusive = {f"pc:{name}"}
        if extravars.get("op") == "apply":
            disk = client.get("game_disk" if extravars.get("disk") == "game" else "image")
            if disk:
                exclusive.add(f"image:{disk}")
        return Claim.of(exclusive, images)
    if kind == "image":
        image = extravars.get("image")
        if image and extravars.get("op") == "boot_test":
            return Claim.of({f"boot-test:{image}"}, {f"image:{image}"})
        if image:
            on_it = {f"pc:{n}" for n, c in clients.items() if f"image:{image}" in _images_of(c)}
            return Claim.of({f"image:{image}", *on_it})
        every_image = {f"image:{i}" for i in snap.images}
        for c in clients.values():
            every_image |= _images_of(c)
        return Claim.of(every_image | {f"pc:{n}" for n in clients})
    if kind == "preflight":
        return Claim.of(set())
    if kind == "power":
        # One power request at a time per PC; a boot's reset or a machine job goes on.
        return Claim.of({f"power:{extravars.get('client')}"})
    return Claim.of({ROOM})


def boot_claim(name: str, snap: Any) -> Claim:
    return Claim.of({f"pc:{name}"}, _images_of(snap.clients.get(name, {})))


class Busy(Exception):
    """The claim is taken; the message says by whom and over what."""

    def __init__(self, holder: str, owner: str, key: str):
        super().__init__(f"{holder} is working on {describe(key)}")
        self.holder = holder
        self.owner = owner
        self.key = key


class Locks:
    """The claims held now, by owner (a job id, or `boot:<name>`), with a label for each
    (`job <id> (machine reset pc-01)`, `a boot of pc-01`) that messages quote."""

    def __init__(self) -> None:
        self._mutex = threading.Lock()
        self._held: dict[str, tuple[Claim, str]] = {}

    def blocker(self, claim: Claim, ignore: str | None = None) -> Busy | None:
        """Who holds something the claim conflicts with (None: it is free now)."""
        with self._mutex:
            return self._blocker(claim, ignore)

    def _blocker(self, claim: Claim, ignore: str | None) -> Busy | None:
        for owner, (held, label) in self._held.items():
            if owner == ignore:
                continue
            key = claim.clash(held)
            if key is not None:
                return Busy(label, owner, key)
        return None

    def take(self, owner: str, claim: Claim, label: str) -> None:
        """Hold the claim, or raise Busy naming a holder; never waits."""
        with self._mutex:
            busy = self._blocker(claim, owner)
            if busy is not None:
                raise busy
            self._held[owner] = (claim, label)

    def release(self, owner: str) -> None:
        with self._mutex:
            self._held.pop(owner, None)

    def holders(self) -> dict[str, str]:
        with self._mutex:
            return {owner: label for owner, (_claim, label) in self._held.items()}

    @contextlib.contextmanager
    def holding(self, owner: str, claim: Claim, label: str) -> Iterator[None]:
        self.take(owner, claim, label)
        try:
            yield
        finally:
            self.release(owner)

    def boot(self, name: str, snap: Any) -> contextlib.AbstractContextManager[None]:
        """Hold PC `name` for its boot's reset; Busy at once when a job has it."""
        return self.holding(f"boot:{name}", boot_claim(name, snap), f"a boot of {name}")
