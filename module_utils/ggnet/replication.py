"""Replication of image versions from one boot server to another (issue 18, item 4).

Each version is a snapshot `<pool>/images/<image>@<version>` (ggnet.layout).  A server
of a node group boots a version only once its replica is the very same snapshot: same
name and same guid (a `zfs receive` keeps the sender's guid).  This module has three
parts:

- `plan()`: pure.  From the source's and the target's snapshots of one image it decides
  what to send: nothing, a full stream of the oldest version needed, incremental streams
  from the newest snapshot both sides share (same name *and* guid), or a resume of an
  interrupted receive (OpenZFS's receive_resume_token).  A target whose snapshot has
  the name of a source version but another guid has diverged: refused unless the
  caller forces it (then the diverged snapshots are destroyed first).
- `Replicator`: runs the plan, `zfs send` piped into `zfs receive` through this process
  (which counts the bytes for a progress callback).  Each end is an `Endpoint`: local,
  or behind a command prefix such as `ssh host`.  `receive -s` (resumable) only where
  the target's ZFS has it (OpenZFS; zfs-fuse does not), detected once per endpoint.  A
  non-resumable transfer that fails leaves nothing behind: its partial dataset is
  destroyed, so the next run restarts with no operator action.
- `check_bootable()` / `bootable()`: the guid rule; `replication_metrics()`: the figures
  for Prometheus (last success, lag, bytes behind) as plain data.

Why not syncoid: it is a Perl program outside the project's dependencies, it cannot be
pinned by the lock files, and it knows nothing of ggnet's version states or guid rule.
"""

from __future__ import annotations

import contextlib
import os
import re
import shlex
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from . import layout
from .host_os import C_LOCALE, c_locale_env
from .notation import iso_seconds, now_iso
from .storage.properties import (
    P_APPLIED_FROM,
    P_BOOT_TEST,
    P_COMMENT,
    P_CREATED,
    P_REPLICATED_AT,
    P_STATE,
    P_STATE_AT,
)
from .zfs import ZFS, Runner, Zfs, ZfsError, subprocess_runner

# The version properties a replica carries over from its source (after each run, so a
# state change on the source, e.g. rejected, reaches the replicas too, with the boot
# test's result that made it).
VERSION_PROPS = (P_COMMENT, P_CREATED, P_STATE, P_STATE_AT, P_APPLIED_FROM, P_BOOT_TEST)
RESUME_TOKEN = "receive_resume_token"
FULL, INCREMENTAL, RESUME = "full", "incremental", "resume"
CHUNK = 1 << 20


class ReplicationError(RuntimeError):
    """A replication refused or failed; the message names the image, datasets and what
    to do."""


class DivergedError(ReplicationError):
    """The target holds a snapshot that the source's history does not: never destroyed
    without force."""


class TransferError(ReplicationError):
    """`zfs send | zfs receive` failed; `moved`: the bytes that went through."""

    def __init__(self, message: str, moved: int):
        super().__init__(message)
        self.moved = moved


class ReplicaError(ReplicationError):
    """A version's replica is not the source's snapshot (absent, partial, other guid)."""


# -- the planner ------------------------------------------------------------------


@dataclass(frozen=True)
class Snap:
    """One snapshot of an image dataset as a side reports it.  `txg` orders one side's
    snapshots (createtxg, oldest smallest); the two sides' txgs are not comparable."""

    name: str
    guid: str
    txg: int
    creation: int = 0  # seconds since the epoch (a received snapshot keeps the sender's)


@dataclass(frozen=True)
class Step:
    kind: str  # FULL, INCREMENTAL or RESUME
    version: str | None = None  # the version sent (None for a resume)
    base: str | None = None  # an incremental's base version
    token: str | None = None  # a resume's receive_resume_token

    def describe(self) -> str:
        if self.kind == RESUME:
            return "resume the interrupted receive"
        if self.kind == FULL:
            return f"full send of @{self.version}"
        return f"incremental @{self.base} -> @{self.version}"


@dataclass
class Plan:
    image: str
    steps: list[Step] = field(default_factory=list)
    # Target snapshots destroyed before the first step (only with force).
    destroy: list[str] = field(default_factory=list)
    # The target dataset is destroyed before a full send: it has no snapshot (what an
    # interrupted receive or an empty head leaves), or force replaces a diverged one.
    replace: bool = False
    common: str | None = None  # the newest version both sides share
    # Versions wanted that cannot be sent: older than `common`, missing on the target
    # (ZFS appends to a dataset's history, it cannot insert into it).
    unreachable: list[str] = field(default_factory=list)

    @property
    def nothing(self) -> bool:
        return not self.steps and not self.destroy and not self.replace

    def describe(self) -> list[str]:
        out = [f"destroy @{name} on the target" for name in self.destroy]
        if self.replace:
            out.append("destroy the target dataset (no shared snapshot)")
        return out + [s.describe() for s in self.steps]


def plan(
    image: str,
    source: Iterable[Snap],
    target: Iterable[Snap],
    *,
    wanted: Iterable[str] | None = None,
    target_exists: bool | None = None,
    token: str | None = None,
    force: bool = False,
) -> Plan:
    """What to do so that the target has every `wanted` version (default: all of the
    source's) with the source's guid.

    `target_exists`: the target dataset exists (default: it has snapshots).  `token`:
    the target's receive_resume_token: resuming comes first, then plan again.
    DivergedError when the target has a snapshot named as a source version with another
    guid, or snapshots the source lacks newer than the newest shared one (an incremental
    cannot be received over them), unless `force`."""
    src = sorted(source, key=lambda s: s.txg)
    tgt = sorted(target, key=lambda s: s.txg)
    _unique(image, "source", src)
    _unique(image, "target", tgt)
    if token:
        return Plan(image, steps=[Step(RESUME, token=token)])
    names = [s.name for s in src]
    want = set(names) if wanted is None else set(wanted)
    unknown = sorted(want - set(names))
    if unknown:
        raise ReplicationError(
            f"image {image}: wanted version(s) {', '.join(unknown)} not on the source "
            f"(it has: {', '.join(names) or 'none'})"
        )
    by_name = {s.name: s for s in src}
    tgt_by_name = {t.name: t for t in tgt}
    diverged = [t for t in tgt if t.name in by_name and by_name[t.name].guid != t.guid]
    shared = [s for s in src if s.name in tgt_by_name and tgt_by_name[s.name].guid == s.guid]
    common = shared[-1] if shared else None
    # Target snapshots after the shared one (all of them when none is shared): a
    # receive appends only after the newest snapshot, so they are in the way.
    after = tgt if common is None else [t for t in tgt if t.txg > tgt_by_name[common.name].txg]
    foreign = [t for t in after if t.name not in by_name]
    result = Plan(image, common=common.name if common else None)
    in_the_way = sorted({t.name for t in [*diverged, *foreign]}, key=lambda n: tgt_by_name[n].txg)
    if in_the_way and not force:
        raise DivergedError(_diverged_message(image, diverged, foreign, by_name, common))
    if in_the_way:
        if common is None:
            result.replace = True
        else:
            result.destroy = in_the_way
    exists = bool(tgt) if target_exists is None else target_exists
    if exists and not tgt:
        result.replace = True
    base = common
    newer = [s for s in src if common is None or s.txg > common.txg]
    for snap in newer:
        if snap.name not in want:
            continue
        if base is None:
            result.steps.append(Step(FULL, snap.name))
        else:
            result.steps.append(Step(INCREMENTAL, snap.name, base=base.name))
        base = snap
    shared_names = {s.name for s in shared}
    result.unreachable = [
        s.name
        for s in src
        if common is not None
        and s.txg < common.txg
        and s.name in want
        and s.name not in shared_names
    ]
    if result.replace and not result.steps:
        # Nothing wanted to send: leave the target alone rather than empty it.
        result.replace = False
    return result


def _unique(image: str, side: str, snaps: Sequence[Snap]) -> None:
    seen: set[str] = set()
    for s in snaps:
        if s.name in seen:
            raise ReplicationError(f"image {image}: the {side} lists version {s.name} twice")
        seen.add(s.name)


def _diverged_message(
    image: str,
    diverged: Sequence[Snap],
    foreign: Sequence[Snap],
    by_name: Mapping[str, Snap],
    common: Snap | None,
) -> str:
    parts = [
        f"@{t.name} has guid {t.guid} on the target but {by_name[t.name].guid} on the source"
        for t in diverged
    ]
    if foreign:
        where = f"newer than the shared @{common.name}" if common else "and none is shared"
        parts.append(
            "the target has " + ", ".join(f"@{t.name}" for t in foreign) + f" that the "
            f"source lacks, {where}"
        )
    return (
        f"image {image}: the replica has diverged from the source ({'; '.join(parts)}); "
        "nothing was changed. Replicate with force to destroy the target's diverging "
        "snapshots (or the whole replica when nothing is shared) and send again"
    )


# -- the guid rule ------------------------------------------------------------------


def bootable(source_guid: str | None, target_guid: str | None) -> bool:
    """A replica is bootable only when it is the source's snapshot: equal guids."""
    return bool(source_guid) and source_guid == target_guid


def check_bootable(
    image: str, version: str, source_guid: str | None, target_guid: str | None
) -> None:
    """ReplicaError unless the target's `version` of `image` has the source's guid (a
    partial replica has no snapshot yet: target_guid None)."""
    if bootable(source_guid, target_guid):
        return
    if target_guid is None:
        why = "the target has no such snapshot (absent, or its receive is partial)"
    else:
        why = "the target's snapshot is another one (different guid)"
    raise ReplicaError(
        f"image {image} version {version} is not bootable on the target: {why}; "
        f"source guid {source_guid or 'unknown'}, target guid {target_guid or 'none'}"
    )


# -- metrics --------------------------------------------------------------------------


def replication_metrics(
    image: str,
    dataset: str,
    source: Sequence[Snap],
    target: Sequence[Snap],
    *,
    last_success: float | None,
    now: float,
    bytes_behind: int | None,
    bytes_method: str,
) -> dict[str, Any]:
    """Plain figures for one replica (proposed Prometheus names in docs/replication.md).

    lag_seconds: 0 when the source's newest version is on the target; otherwise the
    source's newest version's creation minus that of the newest version the target
    shares (or, with none shared, `now` minus the source's oldest version's creation)."""
    src = sorted(source, key=lambda s: s.txg)
    guids = {t.name: t.guid for t in target}
    shared = [s for s in src if guids.get(s.name) == s.guid]
    in_sync = bool(src) and bool(shared) and shared[-1] is src[-1]
    if not src or in_sync:
        lag = 0.0
    elif shared:
        lag = float(max(0, src[-1].creation - shared[-1].creation))
    else:
        lag = float(max(0.0, now - src[0].creation))
    return {
        "image": image,
        "dataset": dataset,
        "in_sync": in_sync,
        "newest_source": src[-1].name if src else None,
        "newest_replicated": shared[-1].name if shared else None,
        "last_success_timestamp": last_success,
        "lag_seconds": lag,
        "bytes_behind": bytes_behind,
        "bytes_behind_method": bytes_method,
    }


# -- running ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Endpoint:
    """Where one side's `zfs` runs: here (no prefix), behind an exec-style prefix
    (`sudo`, `ip netns exec NS`), or through ssh (`Endpoint.ssh(host)`: the command is
    quoted into one argument, run under the C locale on the far side)."""

    prefix: tuple[str, ...] = ()
    quote: bool = False
    label: str = "local"

    @classmethod
    def ssh(cls, host: str, *options: str) -> Endpoint:
        return cls(("ssh", *options, host), quote=True, label=host)

    def argv(self, argv: Sequence[str]) -> list[str]:
        if not self.prefix:
            return list(argv)
        if self.quote:
            return [
                *self.prefix,
                shlex.join(["env", *(f"{k}={v}" for k, v in C_LOCALE.items()), *argv]),
            ]
        return [*self.prefix, *argv]

    def runner(self) -> Runner:
        def run(argv: Sequence[str], stdin: str | None = None) -> tuple[int, str, str]:
            return subprocess_runner(self.argv(argv), stdin)

        return run


@dataclass
class Side:
    """One end: its storage settings (pool), where its zfs runs, and a Zfs for it."""

    cfg: dict
    endpoint: Endpoint = field(default_factory=Endpoint)
    zfs: Zfs | None = None
    _resumable: bool | None = None

    def __post_init__(self) -> None:
        if self.zfs is None:
            self.zfs = Zfs(runner=self.endpoint.runner())

    @property
    def z(self) -> Zfs:
        assert self.zfs is not None
        return self.zfs

    def dataset(self, image: str) -> str:
        return layout.image_dataset(self.cfg, image)

    def resumable(self) -> bool:
        """Has this ZFS resumable receives (OpenZFS: the receive_resume_token property
        and `receive -s`)?  Asked once: zfs-fuse rejects the property by name."""
        if self._resumable is None:
            argv = [ZFS, "get", "-H", "-o", "value", RESUME_TOKEN, layout.pool(self.cfg)]
            rc, _, err = self.z.runner(argv, None)
            if rc == 0:
                self._resumable = True
            elif "invalid property" in err or "bad property" in err:
                self._resumable = False
            else:
                raise ReplicationError(
                    f"{self.endpoint.label}: cannot ask pool {layout.pool(self.cfg)} "
                    f"whether receives resume: {err.strip() or f'rc={rc}'}"
                )
        return self._resumable

    def read(self, image: str) -> Listing:
        """The image dataset's snapshots (oldest first), whether it exists, its resume
        token and ggnet properties, in one `zfs get -d 1`."""
        dataset = self.dataset(image)
        props = ["guid", "createtxg", "creation", "referenced", P_REPLICATED_AT, *VERSION_PROPS]
        if self.resumable():
            props.append(RESUME_TOKEN)
        raw = self.z.get([dataset], props, depth=1)
        snaps: list[Snap] = []
        version_props: dict[str, dict[str, str | None]] = {}
        for name, values in raw.items():
            ds, at, version = name.partition("@")
            if ds != dataset or not at:
                continue
            snaps.append(
                Snap(
                    version,
                    values.get("guid") or "",
                    int(values.get("createtxg") or 0),
                    int(values.get("creation") or 0),
                )
            )
            version_props[version] = {p: values.get(p) for p in (*VERSION_PROPS, "referenced")}
        head = raw.get(dataset, {})
        return Listing(
            dataset=dataset,
            exists=dataset in raw,
            snaps=sorted(snaps, key=lambda s: s.txg),
            token=head.get(RESUME_TOKEN),
            replicated_at=head.get(P_REPLICATED_AT),
            props=version_props,
        )


@dataclass
class Listing:
    dataset: str
    exists: bool
    snaps: list[Snap]
    token: str | None
    replicated_at: str | None
    props: dict[str, dict[str, str | None]]

    def guid(self, version: str) -> str | None:
        return next((s.guid for s in self.snaps if s.name == version), None)


@dataclass
class Progress:
    """Handed to the progress callback after each chunk of a transfer."""

    image: str
    step: Step
    bytes: int
    send_pid: int
    receive_pid: int


@dataclass
class Outcome:
    image: str
    plan: Plan  # the first round's (a resume's round is followed by another)
    steps_done: list[Step]
    bytes: int
    seconds: float
    finished_at: str
    actions: list[str] = field(default_factory=list)  # every round's, as done

    def as_dict(self) -> dict[str, Any]:
        return {
            "image": self.image,
            "changed": bool(self.actions),
            "actions": self.actions,
            "unreachable": self.plan.unreachable,
            "bytes": self.bytes,
            "seconds": round(self.seconds, 3),
            "finished_at": self.finished_at,
        }


ProgressCallback = Callable[[Progress], None]


@dataclass
class Replicator:
    """Replicates images from `source` to `target` (see the module's docstring)."""

    source: Side
    target: Side
    progress: ProgressCallback | None = None
    # How many plan-and-run rounds one call may take (a resume, then the rest).
    max_rounds: int = 3

    def replicate(
        self, image: str, wanted: Iterable[str] | None = None, force: bool = False
    ) -> Outcome:
        """Bring the target's replica of `image` up to the source; ReplicationError (and
        a clean target, or a resumable one) when a transfer fails."""
        started = time.monotonic()
        wanted_list = list(wanted) if wanted is not None else None
        done: list[Step] = []
        moved = 0
        first: Plan | None = None
        actions: list[str] = []
        for _ in range(self.max_rounds):
            src = self.source.read(image)
            tgt = self.target.read(image)
            if not src.exists:
                raise ReplicationError(
                    f"image {image}: {src.dataset} does not exist on the source "
                    f"({self.source.endpoint.label}); nothing was changed"
                )
            todo = plan(
                image,
                src.snaps,
                tgt.snaps,
                wanted=wanted_list,
                target_exists=tgt.exists,
                token=tgt.token,
                force=force,
            )
            first = first or todo
            if todo.nothing:
                break
            actions += todo.describe()
            self._prepare(todo, tgt)
            for step in todo.steps:
                moved += self._run_step(image, step, tgt)
                done.append(step)
            if not any(s.kind == RESUME for s in todo.steps):
                break
        else:
            raise ReplicationError(
                f"image {image}: still not replicated after {self.max_rounds} rounds"
            )
        src = self.source.read(image)
        tgt = self.target.read(image)
        self._copy_version_props(src, tgt)
        finished = now_iso()
        if tgt.exists:
            self.target.z.set(tgt.dataset, {P_REPLICATED_AT: finished})
        assert first is not None
        return Outcome(image, first, done, moved, time.monotonic() - started, finished, actions)

    def _prepare(self, todo: Plan, tgt: Listing) -> None:
        for name in todo.destroy:
            self.target.z.destroy(f"{tgt.dataset}@{name}")
        if todo.replace and tgt.exists:
            self.target.z.destroy(tgt.dataset, recursive=True, unmount_first=True)

    def _run_step(self, image: str, step: Step, tgt: Listing) -> int:
        dataset = tgt.dataset
        src_dataset = self.source.dataset(image)
        resumable = self.target.resumable()
        recv = [ZFS, "receive", "-u"]
        if resumable:
            recv.append("-s")
        if step.kind == RESUME:
            assert step.token
            send = [ZFS, "send", "-t", step.token]
            recv.append(dataset)
        elif step.kind == FULL:
            send = [ZFS, "send", f"{src_dataset}@{step.version}"]
            recv.append(f"{dataset}@{step.version}")
        else:
            # -F: roll back whatever changed on the replica's head since the base (the
            # planner has made sure no snapshot follows the base there).
            send = [ZFS, "send", "-i", f"@{step.base}", f"{src_dataset}@{step.version}"]
            recv += ["-F", f"{dataset}@{step.version}"]
        try:
            return self._pipe(image, step, send, recv)
        except TransferError as err:
            hint = self._after_failure(image, step, dataset, resumable, err.moved)
            raise TransferError(f"{err}; {hint}", err.moved) from None

    def _pipe(self, image: str, step: Step, send_argv: list[str], recv_argv: list[str]) -> int:
        """`send | receive` through this process; the byte count, or TransferError with
        both commands' errors.  An exception from the progress callback interrupts the
        transfer (as a dropped link would)."""
        with tempfile.TemporaryFile() as send_err, tempfile.TemporaryFile() as recv_err:
            send = subprocess.Popen(
                self.source.endpoint.argv(send_argv),
                stdout=subprocess.PIPE,
                stderr=send_err,
                env=c_locale_env(),
            )
            recv = subprocess.Popen(
                self.target.endpoint.argv(recv_argv),
                stdin=subprocess.PIPE,
                stdout=subprocess.DEVNULL,
                stderr=recv_err,
                env=c_locale_env(),
            )
            assert send.stdout is not None and recv.stdin is not None
            moved = 0
            # Why the pump stopped early, if it did.
            stopped: str | None = None
            try:
                while chunk := os.read(send.stdout.fileno(), CHUNK):
                    try:
                        recv.stdin.write(chunk)
                    except BrokenPipeError:
                        stopped = "the receive stopped reading"
                        break
                    moved += len(chunk)
                    if self.progress:
                        try:
                            self.progress(Progress(image, step, moved, send.pid, recv.pid))
                        except Exception as exc:  # the caller's way to interrupt
                            stopped = f"interrupted by the progress callback: {exc!r}"
                            break
                    if send.poll() not in (None, 0):
                        # A dead `zfs send` ends the transfer even where its stream
                        # comes from elsewhere: zfs-fuse's daemon writes it and would
                        # go on after its client died.
                        stopped = "the send died"
                        break
            finally:
                if stopped:
                    send.kill()
                # Closing our end makes a writer still at it (zfs-fuse's daemon) fail.
                send.stdout.close()
                with contextlib.suppress(BrokenPipeError):
                    recv.stdin.close()
                send_rc = send.wait()
                recv_rc = recv.wait()
            if send_rc == 0 and recv_rc == 0 and not stopped:
                return moved
            errors = [stopped] if stopped else []
            for what, rc, err in (("send", send_rc, send_err), ("receive", recv_rc, recv_err)):
                err.seek(0)
                text = err.read().decode(errors="replace").strip()
                if rc != 0:
                    errors.append(f"`zfs {what}` rc={rc}" + (f": {text}" if text else ""))
            raise TransferError(
                f"image {image}: {step.describe()} failed after {moved} bytes "
                f"({'; '.join(errors)})",
                moved,
            )

    def _after_failure(
        self, image: str, step: Step, dataset: str, resumable: bool, moved: int
    ) -> str:
        """Leave the target so that the next run needs no operator; says what it did.

        Resumable (OpenZFS): the partial receive is kept and the next run resumes it,
        unless a resume itself failed before moving a byte (its token leads nowhere,
        e.g. the snapshot was destroyed on the source): then `receive -A` drops it.
        Not resumable (zfs-fuse): whatever the interrupted receive left is destroyed."""
        z = self.target.z
        if step.kind == RESUME:
            if moved:
                return "the target keeps the partial receive: the next run resumes it"
            with contextlib.suppress(ZfsError):
                z.zfs("receive", "-A", dataset)
            return "the partial receive was dropped (receive -A): the next run starts over"
        after = self.target.read(image)
        if resumable:
            if after.token:
                return "the target keeps the partial receive: the next run resumes it"
            return "nothing was received: the next run starts this step again"
        if step.kind == FULL and after.exists and not after.snaps:
            z.destroy(dataset, recursive=True, unmount_first=True)
        elif step.kind == INCREMENTAL:
            # Older ZFS receives an incremental into a hidden clone, normally gone with
            # the failed receive; a daemon killed mid-way would leave it.
            with contextlib.suppress(ZfsError):
                z.destroy(f"{dataset}/%recv")
        return "the partial receive was removed: the next run starts this step again"

    def _copy_version_props(self, src: Listing, tgt: Listing) -> None:
        """Carry the ggnet properties of every shared version over to the replica."""
        for version in [s.name for s in src.snaps]:
            sguid, tguid = src.guid(version), tgt.guid(version)
            if not bootable(sguid, tguid):
                continue
            want = {
                k: v
                for k, v in src.props.get(version, {}).items()
                if k in VERSION_PROPS and v is not None
            }
            have = tgt.props.get(version, {})
            changed = {k: v for k, v in want.items() if have.get(k) != v}
            if changed:
                self.target.z.set(f"{tgt.dataset}@{version}", changed)

    # -- the guid rule and metrics against the live pools ---------------------------

    def check_bootable(self, image: str, version: str) -> None:
        src = self.source.read(image)
        tgt = self.target.read(image)
        check_bootable(image, version, src.guid(version), tgt.guid(version))

    def metrics(self, image: str, now: float | None = None) -> dict[str, Any]:
        src = self.source.read(image)
        tgt = self.target.read(image)
        behind, method = self.bytes_behind(image, src, tgt)
        return replication_metrics(
            image,
            tgt.dataset,
            src.snaps,
            tgt.snaps,
            last_success=iso_seconds(tgt.replicated_at),
            now=time.time() if now is None else now,
            bytes_behind=behind,
            bytes_method=method,
        )

    def bytes_behind(self, image: str, src: Listing, tgt: Listing) -> tuple[int | None, str]:
        """(bytes, how): what the target lacks of the source's newest version.

        OpenZFS: `zfs send -nP` (a dry run's stream size, from the newest shared version
        or full).  zfs-fuse has no `send -n` and no `written`: a full send is estimated
        by the newest version's `referenced`; an incremental is unknown (None)."""
        if not src.snaps:
            return 0, "none"
        newest = src.snaps[-1]
        guids = {t.name: t.guid for t in tgt.snaps}
        shared = [s for s in src.snaps if guids.get(s.name) == s.guid]
        if shared and shared[-1] == newest:
            return 0, "in-sync"
        base = shared[-1].name if shared else None
        snap = f"{src.dataset}@{newest.name}"
        if self.source.resumable():
            argv = [ZFS, "send", "-nP", *(["-i", f"@{base}"] if base else []), snap]
            rc, out, err = self.source.z.runner(argv, None)
            size = _dry_run_size(out + "\n" + err) if rc == 0 else None
            if size is not None:
                return size, "send-dry-run"
        if base is None:
            ref = src.props.get(newest.name, {}).get("referenced")
            if ref and ref.isdigit():
                return int(ref), "referenced"
        return None, "unknown"


def _dry_run_size(text: str) -> int | None:
    """The total of `zfs send -nP`: its `size<TAB>N` line."""
    for line in text.splitlines():
        m = re.match(r"size\s+(\d+)\s*$", line)
        if m:
            return int(m.group(1))
    return None
