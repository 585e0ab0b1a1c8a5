"""The types the iSCSI registry (iscsi.py) and its drivers (iscsi_tgt, iscsi_lio) share:
a target and its LUNs as wanted or found, one step of a plan, and what a driver offers.

Drivers import from here and never from the registry, which picks them by name.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

# The LUN number of a target's first disk: tgt keeps LUN 0 for its controller.
LUN_BASE = {"lio": 0, "tgt": 1}
DISK_KINDS = ("file", "block")
MASK = "********"
# iSCSI login keys every ggnet target offers (RFC 7143 names, the same in tgt and
# LIO).  tgt's defaults send Data-In in 8 KiB PDUs and LIO's accept 8 KiB Data-Out
# PDUs: a 1 MiB read then takes 128 PDUs.  Each value is an upper bound the login
# negotiates down to the initiator's own (iPXE, Windows), so larger ones are safe.
# InitialR2T=No with ImmediateData lets a write carry its first burst unasked.
SESSION_PARAMS = {
    "MaxRecvDataSegmentLength": "262144",
    "MaxXmitDataSegmentLength": "262144",
    "MaxBurstLength": "1048576",
    "FirstBurstLength": "262144",
    "ImmediateData": "Yes",
    "InitialR2T": "No",
}


class IscsiError(Exception):
    """A problem an operator can act on; the message says what, where and what to do."""


def mask_secret(text: str, secret: str | None) -> str:
    """`text` with every occurrence of `secret` replaced by MASK (no secret: as is)."""
    return text.replace(secret, MASK) if secret else text


@dataclass(frozen=True)
class Lun:
    path: str
    kind: str = "file"

    def __post_init__(self) -> None:
        if self.kind not in DISK_KINDS:
            raise IscsiError(f"LUN {self.path}: kind {self.kind!r} is not one of {DISK_KINDS}")


@dataclass
class Target:
    """A target as wanted (from the inventory) or as found (from the backend).

    chap_secret is None when CHAP is off; a found target whose secret the backend
    cannot tell (tgt never shows it) carries UNKNOWN_SECRET so plan() resets it.
    mutual_user/mutual_secret are the target's own credentials (mutual CHAP: the
    target authenticates to the initiator too), None when mutual CHAP is off.
    """

    iqn: str
    initiator: str | None
    luns: list[Lun] = field(default_factory=list)
    chap_user: str | None = None
    chap_secret: str | None = field(default=None, repr=False)
    mutual_user: str | None = None
    mutual_secret: str | None = field(default=None, repr=False)
    name: str = ""
    # Initiators admitted besides `initiator` (only ever found, never wanted).
    extra_initiators: list[str] = field(default_factory=list)
    # Login keys (SESSION_PARAMS when wanted; as the backend reports them when found).
    params: dict[str, str] = field(default_factory=dict)

    @classmethod
    def from_live(
        cls,
        iqn: str,
        *,
        luns: Mapping[int, Lun],
        first_lun: int,
        initiators: Sequence[str] = (),
        chap_user: str | None = None,
        chap_secret: str | None = None,
        mutual_user: str | None = None,
        mutual_secret: str | None = None,
        params: Mapping[str, str] | None = None,
    ) -> Target:
        """A found target, from what a backend lists: LUNs by number, admitted initiators.

        Disks are kept in LUN order from first_lun; a gap would shift every disk
        after it, so such a target gets LUNs no wanted one equals and plan() rewrites
        them, which is what a gap needs anyway.
        """
        numbers = sorted(luns)
        ordered = [luns[n] for n in numbers]
        if numbers != list(range(first_lun, first_lun + len(numbers))):
            ordered = [Lun("\x00gap")] * len(numbers)
        return cls(
            iqn=iqn,
            initiator=initiators[0] if initiators else None,
            extra_initiators=list(initiators[1:]),
            luns=ordered,
            chap_user=chap_user,
            chap_secret=chap_secret,
            mutual_user=mutual_user,
            mutual_secret=mutual_secret,
            params={k: str(v) for k, v in (params or {}).items()},
        )

    @property
    def chap(self) -> bool:
        return self.chap_user is not None

    def chap_state(self) -> tuple[str | None, ...]:
        """Every CHAP credential, both ways: set_chap is due when these differ."""
        return (self.chap_user, self.chap_secret, self.mutual_user, self.mutual_secret)

    def params_differ(self, have: Target) -> bool:
        """Whether `have` lacks one of this target's login keys; keys not wanted are the backend's."""
        return any(have.params.get(k) != v for k, v in self.params.items())

    def summary(self) -> dict[str, Any]:
        """What diffs and results show: everything but the secret."""
        out: dict[str, Any] = {
            "initiator": self.initiator,
            "luns": [{"path": lun.path, "kind": lun.kind} for lun in self.luns],
            "chap_user": self.chap_user,
            "chap_secret": MASK if self.chap_secret is not None else None,
        }
        if self.mutual_user is not None:
            out["mutual_user"] = self.mutual_user
            out["mutual_secret"] = MASK
        if self.extra_initiators:
            out["extra_initiators"] = list(self.extra_initiators)
        if self.params:
            out["params"] = dict(self.params)
        if self.name:
            out["name"] = self.name
        return out


UNKNOWN_SECRET = "\x00unknown"  # never equal to a real secret


@dataclass(frozen=True)
class Action:
    """One step of a plan.  `op` is one of OPS; drivers implement each of them."""

    op: str
    iqn: str
    lun: int | None = None
    backing: Lun | None = None
    initiator: str | None = None

    def describe(self) -> dict[str, Any]:
        out: dict[str, Any] = {"op": self.op, "target": self.iqn}
        if self.lun is not None:
            out["lun"] = self.lun
        if self.backing is not None:
            out["path"] = self.backing.path
            out["kind"] = self.backing.kind
        if self.initiator is not None:
            out["initiator"] = self.initiator
        return out


OPS = (
    "create_target",
    "delete_target",
    "add_lun",
    "remove_lun",
    "add_acl",
    "remove_acl",
    "set_chap",
    "clear_chap",
    "set_params",
)


class Driver(Protocol):
    """One backend's targets, read and changed (iscsi_tgt.Driver, iscsi_lio.Driver)."""

    def read(
        self, iqns: Iterable[str] | None = None
    ) -> tuple[dict[str, Target], dict[str, list[str]]]:
        """(targets by IQN, live initiators by target IQN); with iqns only those."""
        ...

    def apply(
        self,
        actions: Sequence[Action],
        wanted: Mapping[str, Target],
        found: Mapping[str, Target],
        force: bool = False,
    ) -> None:
        """Carry out a plan's actions (iscsi.plan) on the backend."""
        ...

    def persist(self, wanted: Mapping[str, Target], check_mode: bool = False) -> bool:
        """Save what the backend restores at boot; True when that changed."""
        ...


class Backend(Protocol):
    """A driver module (iscsi_tgt, iscsi_lio): its Driver, and its live sessions,
    {target_iqn: [initiator_iqn, ...]}, from options of its own (tgt: control_port,
    netns; lio: none)."""

    # Properties make the members read-only: a module whose Driver is a class
    # matches a read-only Callable member, never a settable one.
    @property
    def Driver(self) -> Callable[..., Driver]: ...

    @property
    def sessions(self) -> Callable[..., dict[str, list[str]]]: ...
