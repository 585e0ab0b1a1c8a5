"""Safe image updates: version states, which version a PC boots, canary sets, and the
rollout's decision.  Pure: no ZFS, no database, no clock; callers hand everything in.

A version's state is stored with it (the ZFS user property ggnet:state on its
snapshot, see storage.properties).  `apply` makes a candidate; the boot-test job
(storage.boot_test_job; or an operator) marks it tested, or rejects it; a rollout
puts a tested version on the canary PCs (a candidate only when the operator forces
it: no PC boots what no boot test passed); the rollout's decision promotes it or
rejects it.  A version without the property (made before
states existed, or an image's first version) is promoted: no PC changes what it
boots when this code arrives.

    candidate -> tested -> canary -> promoted
        \\           \\         \\
         +-----------+---------+--> rejected   (final: never served again)
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from . import settings
from .notation import parse_duration, parse_percent

CANDIDATE, TESTED, CANARY, PROMOTED, REJECTED = (
    "candidate",
    "tested",
    "canary",
    "promoted",
    "rejected",
)
STATES = (CANDIDATE, TESTED, CANARY, PROMOTED, REJECTED)
# What an operation may move a version to, from each state.  promoted from anything
# but rejected is the operator's word (a rollback to it, or skipping the canary).
TRANSITIONS: dict[str, tuple[str, ...]] = {
    CANDIDATE: (TESTED, CANARY, PROMOTED, REJECTED),
    TESTED: (CANARY, PROMOTED, REJECTED),
    CANARY: (PROMOTED, REJECTED),
    PROMOTED: (REJECTED,),
    REJECTED: (),
}
# Moves allowed only when the operator forces them: a candidate no boot test passed
# goes to no canary PC unless the operator says so.
FORCED: dict[tuple[str, str], str] = {
    (CANDIDATE, CANARY): (
        "a candidate goes to canary only once its boot test passed (tested): run the "
        "boot test first (image.yml -e op=boot_test), or pass force=true to skip it"
    ),
}

# The inventory's ggnet_rollout (keys and defaults: ggnet.settings).
ROLLOUT_KEY = settings.ROLLOUT_KEY
ROLLOUT_KEYS = settings.ROLLOUT_KEYS
CANARY_KEYS = settings.CANARY_KEYS
# Boot results (the API's boots table) that count against a version; `refused` is the
# server's own refusal (pool full, a job holding the PC), not the version's fault.
FAILED_RESULTS = ("failed", "timeout")
# What makes a canary boot ok (ggnet_rollout.healthy_at): iPXE's hand-over to the disk
# (the boot path's `sanboot` stage), or the booted OS's own report (`os`, sent by
# pc/report_os.py), as greenboot counts a boot good only after its health check.
HANDOVER, OS_REPORT = "handover", "os"
HEALTHY_AT = (HANDOVER, OS_REPORT)


class RolloutError(ValueError):
    """Bad input to the rollout: the message names the key/version and value."""


def state_of(raw: str | None) -> str:
    """A version's state from its ggnet:state property; none (older versions) is promoted.
    An unknown word (a newer ggnet's state) is treated as rejected: never served."""
    if raw is None or raw in ("", "-"):
        return PROMOTED
    return raw if raw in STATES else REJECTED


def check_transition(version: str, have: str, want: str, force: bool = False) -> None:
    """Raise RolloutError naming the version when `have` -> `want` is not allowed
    (a FORCED move: unless `force`)."""
    if want not in STATES:
        raise RolloutError(f"{version}: state {want!r} is not one of {', '.join(STATES)}")
    if have == want:
        return
    if have == REJECTED:
        raise RolloutError(
            f"{version} is rejected: a rejected version is never served again; "
            "apply a new version instead"
        )
    if want == CANDIDATE:
        raise RolloutError(f"{version} is {have}: only apply makes a candidate")
    if want not in TRANSITIONS[have]:
        raise RolloutError(
            f"{version} is {have}: it can become {', '.join(TRANSITIONS[have])}, not {want}"
        )
    if (have, want) in FORCED and not force:
        raise RolloutError(f"{version} is {have}: {FORCED[(have, want)]}")


@dataclass(frozen=True)
class VersionInfo:
    """A version as the serving decision needs it: its name and ggnet:state value."""

    name: str
    state: str | None = None  # the raw property; None = promoted


def served_version(
    versions: Sequence[VersionInfo],
    current: str | None,
    pinned: str | None,
    canary: bool,
) -> str | None:
    """Which version a PC of this image boots; None when there is none to boot.

    `versions` oldest first; `current` the image's ggnet:current (what promote and
    rollback chose last); `pinned` ggnet_images.<image>.version; `canary` whether the
    PC is in its group's canary set.

    1. a pinned version (the inventory is the authority over any rollout), unless it
       is rejected: a rejected version is never served (None: the caller explains);
    2. a canary PC gets the image's version in canary, if there is one;
    3. ggnet:current when it names a promoted version;
    4. else the newest promoted version."""
    states = {v.name: state_of(v.state) for v in versions}
    if pinned:
        return pinned if states.get(pinned, REJECTED) != REJECTED else None
    if canary:
        in_canary = [v.name for v in versions if states[v.name] == CANARY]
        if in_canary:
            return in_canary[-1]
    if current and states.get(current) == PROMOTED:
        return current
    promoted = [v.name for v in versions if states[v.name] == PROMOTED]
    return promoted[-1] if promoted else None


@dataclass(frozen=True)
class CanarySet:
    machines: tuple[str, ...] = ()
    share: float = 0.0  # percent of the group's PCs


@dataclass(frozen=True)
class Knobs:
    """The rollout knobs (defaults: ggnet.settings); patience in seconds."""

    promote_after: int = settings.default(ROLLOUT_KEY, "promote_after")
    max_failures: int = settings.default(ROLLOUT_KEY, "max_failures")
    boot_time_ratio: float = settings.default(ROLLOUT_KEY, "boot_time_ratio")
    patience: int = 7200  # settings' "2h"; Knobs() is checked against it in the tests
    healthy_at: str = settings.default(ROLLOUT_KEY, "healthy_at")
    os_report_within: int = 600  # settings' "10m", checked as patience is


@dataclass(frozen=True)
class Rollout:
    knobs: Knobs = field(default_factory=Knobs)
    canary: Mapping[str, CanarySet] = field(default_factory=dict)


def parse_rollout(
    value: Any, groups: Mapping[str, Iterable[str]] | None = None
) -> tuple[Rollout, list[tuple[str, Any, str]]]:
    """(the ggnet_rollout setting parsed, its problems as (key, value, message)).

    With `groups` (machine group -> its PCs), a canary set must name a machine group
    and PCs of it.  A problem leaves that part out of the result (defaults instead)."""
    problems: list[tuple[str, Any, str]] = []
    if value is None:
        return Rollout(), problems
    if not isinstance(value, Mapping):
        return Rollout(), [(ROLLOUT_KEY, value, "must be a mapping")]
    for key in value:
        if key not in ROLLOUT_KEYS:
            problems.append(
                (
                    f"{ROLLOUT_KEY}.{key}",
                    None,
                    f"unknown key (known: {', '.join(sorted(ROLLOUT_KEYS))})",
                )
            )
    knobs: dict[str, Any] = {}
    for key, least in (("promote_after", 1), ("max_failures", 1)):
        given = value.get(key)
        if given is None:
            continue
        if not isinstance(given, int) or isinstance(given, bool) or given < least:
            problems.append(
                (f"{ROLLOUT_KEY}.{key}", given, f"must be a whole number, at least {least}")
            )
        else:
            knobs[key] = given
    ratio = value.get("boot_time_ratio")
    if ratio is not None:
        if isinstance(ratio, bool) or not isinstance(ratio, (int, float)) or not ratio >= 1:
            problems.append(
                (f"{ROLLOUT_KEY}.boot_time_ratio", ratio, "must be a number, at least 1 (e.g. 1.2)")
            )
        else:
            knobs["boot_time_ratio"] = float(ratio)
    for key in ("patience", "os_report_within"):
        given = value.get(key)
        if given is not None:
            try:
                knobs[key] = parse_duration(given)
            except ValueError as exc:
                problems.append((f"{ROLLOUT_KEY}.{key}", given, str(exc)))
    healthy_at = value.get("healthy_at")
    if healthy_at is not None:
        if healthy_at not in HEALTHY_AT:
            problems.append(
                (f"{ROLLOUT_KEY}.healthy_at", healthy_at, f"must be one of {', '.join(HEALTHY_AT)}")
            )
        else:
            knobs["healthy_at"] = healthy_at
    canary: dict[str, CanarySet] = {}
    sets = value.get("canary")
    if sets is not None and not isinstance(sets, Mapping):
        problems.append(
            (f"{ROLLOUT_KEY}.canary", sets, "must be a mapping: machine group -> {machines, share}")
        )
        sets = None
    for group, spec in (sets or {}).items():
        key = f"{ROLLOUT_KEY}.canary.{group}"
        parsed = _canary_set(key, group, spec, groups, problems)
        if parsed is not None:
            canary[str(group)] = parsed
    return Rollout(Knobs(**knobs), canary), problems


def _canary_set(
    key: str,
    group: Any,
    spec: Any,
    groups: Mapping[str, Iterable[str]] | None,
    problems: list[tuple[str, Any, str]],
) -> CanarySet | None:
    members: set[str] | None = None
    if groups is not None:
        if group not in groups:
            known = ", ".join(sorted(groups)) or "none"
            problems.append((key, None, f"{group!r} is not a machine group (known: {known})"))
            return None
        members = set(groups[group])
    if not isinstance(spec, Mapping):
        problems.append((key, spec, "must be a mapping such as {machines: [pc-01], share: 10%}"))
        return None
    for sub in spec:
        if sub not in CANARY_KEYS:
            problems.append((f"{key}.{sub}", None, "unknown key (known: machines, share)"))
    machines = spec.get("machines") or []
    ok = True
    if not isinstance(machines, list) or not all(isinstance(m, str) for m in machines):
        problems.append((f"{key}.machines", machines, "must be a list of PC names"))
        machines, ok = [], False
    for machine in machines:
        if members is not None and machine not in members:
            shown = sorted(members)
            listed = ", ".join(shown[:8]) + (
                f" and {len(shown) - 8} more" if len(shown) > 8 else ""
            )
            problems.append(
                (
                    f"{key}.machines",
                    machine,
                    f"is not a PC of machine group {group} (its PCs: {listed})",
                )
            )
            ok = False
    share = 0.0
    if spec.get("share") is not None:
        try:
            share = parse_percent(spec["share"])
        except ValueError as exc:
            problems.append((f"{key}.share", spec["share"], str(exc)))
            ok = False
    if not machines and not share and ok:
        problems.append((key, None, "names no PC: give machines, a share above 0%, or both"))
        ok = False
    return CanarySet(tuple(machines), share) if ok else None


def canary_members(rollout: Rollout, groups: Mapping[str, Iterable[str]]) -> frozenset[str]:
    """The PCs in a canary set: each group's named machines, and its share of its PCs
    (at least one when the share is above 0), chosen by a hash of group and name so
    the choice is stable across loads and servers."""
    chosen: set[str] = set()
    for group, spec in rollout.canary.items():
        members = sorted(set(groups.get(group) or ()))
        chosen.update(m for m in spec.machines if m in members)
        if spec.share > 0 and members:
            count = max(1, math.ceil(len(members) * spec.share / 100))
            ranked = sorted(
                members, key=lambda m: hashlib.sha256(f"{group}/{m}".encode()).hexdigest()
            )
            chosen.update(ranked[:count])
    return frozenset(chosen)


# -- the rollout's decision ------------------------------------------------------------


@dataclass(frozen=True)
class Boot:
    """One boot from the boot path's records: its result, duration (seconds), the last
    stage it reached and its age (seconds since it started)."""

    result: str
    duration: float | None = None
    stage: str | None = None
    age: float = 0.0


def outcome(boot: Boot, knobs: Knobs) -> str:
    """ok, failed or pending: what one boot says of the version it got.  With
    healthy_at os, a boot the disk took over is ok only once its OS reported, and a
    failure when no report came within os_report_within (a hang after the hand-over)."""
    if boot.result in FAILED_RESULTS:
        return "failed"
    if boot.result != "ok":
        return "pending"
    if knobs.healthy_at != OS_REPORT or boot.stage == "os":
        return "ok"
    return "failed" if boot.age >= knobs.os_report_within else "pending"


@dataclass(frozen=True)
class Decision:
    """What to do with a version: none (it is not in canary), wait (more boots to come),
    pause (the operator must look), promote, or rollback (reject it; canaries go back
    to the promoted version at their next boot)."""

    action: str
    reason: str
    ok: int = 0
    failed: int = 0
    canary_p95: float | None = None
    previous_p95: float | None = None

    def as_dict(self) -> dict[str, Any]:
        return {
            "action": self.action,
            "reason": self.reason,
            "ok": self.ok,
            "failed": self.failed,
            "canary_p95": self.canary_p95,
            "previous_p95": self.previous_p95,
        }


ACTIONS = ("none", "wait", "pause", "promote", "rollback")


def p95(values: Sequence[float]) -> float | None:
    """The 95th percentile by nearest rank (an observed value, no interpolation)."""
    if not values:
        return None
    ordered = sorted(values)
    return ordered[max(0, math.ceil(0.95 * len(ordered)) - 1)]


def decide(
    state: str,
    canary_boots: Sequence[Boot],
    previous_durations: Sequence[float],
    knobs: Knobs,
    elapsed: float,
) -> Decision:
    """The rollout's next step for one version.

    `canary_boots`: the boots that got this version (only canary PCs get a version in
    canary); `previous_durations`: the ok boot times of the version it would replace;
    `elapsed`: seconds since the version went to canary.  In this order:
    failures at the threshold roll back; fewer than K ok boots wait, or pause once
    `patience` has passed; K ok boots promote when their p95 boot time is within
    boot_time_ratio of the previous version's, and pause when they are slower or a
    boot time is missing (no data to compare is the operator's call)."""
    if state != CANARY:
        return Decision("none", f"the version is {state}, not in canary")
    outcomes = [outcome(b, knobs) for b in canary_boots]
    ok = [b for b, o in zip(canary_boots, outcomes, strict=True) if o == "ok"]
    failed = outcomes.count("failed")
    durations = [b.duration for b in ok if b.duration is not None]
    mine, theirs = p95(durations), p95(previous_durations)

    def decision(action: str, reason: str, times: bool = False) -> Decision:
        if not times:
            return Decision(action, reason, len(ok), failed)
        return Decision(action, reason, len(ok), failed, mine, theirs)

    if failed >= knobs.max_failures:
        silent = (
            f", or their OS did not report within {knobs.os_report_within} s"
            if knobs.healthy_at == OS_REPORT
            else ""
        )
        return decision(
            "rollback",
            f"{failed} canary boot(s) failed{silent} (threshold {knobs.max_failures})",
        )
    if len(ok) < knobs.promote_after:
        if elapsed >= knobs.patience:
            return decision(
                "pause",
                f"only {len(ok)} of {knobs.promote_after} ok canary boots after "
                f"{int(elapsed)} s (patience {knobs.patience} s): no data, the operator decides",
            )
        return decision("wait", f"{len(ok)} of {knobs.promote_after} ok canary boots so far")
    if len(durations) < knobs.promote_after or mine is None:
        return decision("pause", "the ok canary boots recorded no boot time: no data", True)
    if theirs is None:
        return decision(
            "pause", "no ok boot of the previous version to compare boot times with: no data", True
        )
    if mine > knobs.boot_time_ratio * theirs:
        return decision(
            "pause",
            f"canary p95 boot time {mine:.1f} s is above {knobs.boot_time_ratio:g} x the "
            f"previous version's {theirs:.1f} s",
            True,
        )
    return decision(
        "promote",
        f"{len(ok)} ok canary boots, p95 {mine:.1f} s within {knobs.boot_time_ratio:g} x "
        f"{theirs:.1f} s",
        True,
    )
