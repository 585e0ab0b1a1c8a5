"""The boot test of an image version: boot it in a throwaway VM, through the real
target, before any PC does.

    refuse (unknown, rejected, canary or promoted version; a test of the image running)
    -> lock the image's test -> clean a crashed run's leftovers
    -> clone the version into <pool>/boot-tests/<image> (never a PC's writeback)
    -> a throwaway target for it: fresh random CHAP secret, ACL for the boot-test initiator
    -> the VM runner (ggnet.boot_test.run) boots it
    -> ALWAYS: target deleted, clone destroyed (finally)
    -> passed: state tested; failed: state rejected (ggnet.rollout's transitions), and
       the result, compact, in ggnet:boot_test on the version's snapshot.

A failure of the job itself (the clone, the target, the runner raising) changes no
state: only a boot the VM ran and judged rejects a version.  The CHAP secret lives in
this process only: never in a result, a warning, a log line or the record.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import hashlib
import os
import secrets
import shutil
import tempfile
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .. import boot_test as vm
from .. import iscsi, layout, rollout
from ..boot_test_knobs import Knobs
from ..chap import DERIVED_ALPHABET, DERIVED_LENGTH
from ..iscsi import check_backend, make_driver, plan_target, target_from_spec
from ..iscsi_types import Driver, IscsiError, Target, mask_secret
from ..net import check_iqn_name, check_iqn_prefix
from ..notation import now_iso
from ..settings import default
from ..zfs import Zfs, ZfsError
from . import disks
from .images import image_specs
from .properties import P_BOOT_TEST, format_boot_test
from .results import Action, Result, StorageError
from .versions import _image_version, set_state

# Where screenshots, the per-image lock and the runner's work directories live.
DEFAULT_STATE_DIR = "/var/lib/ggnet/boot-tests"
# The states a boot test may start from: a candidate, or a tested version again.
TESTABLE = (rollout.CANDIDATE, rollout.TESTED)
# The stored reason is cut to this (a ZFS user property holds at most 8 KiB).
REASON_MAX = 300

# (spec fields, logged_in, progress) -> the runner's BootTestResult (ggnet.boot_test).
Runner = Callable[[dict[str, Any], Callable[[], bool], Callable[[str], None]], Any]


# -- names -------------------------------------------------------------------------------


def _iqn_name(image: str) -> str:
    """`image` as an IQN may carry it (lower case, no '_'); a hash keeps names that
    had to change apart (Win_11 and win-11)."""
    plain = image.lower().replace("_", "-")
    with contextlib.suppress(ValueError):
        if plain == image:
            return check_iqn_name(plain)
    digest = hashlib.sha256(image.encode()).hexdigest()[:8]
    return f"{plain.strip('.:-')}-{digest}"


def _join(prefix: str, rest: str) -> str:
    return f"{prefix}:{rest}" if ":" not in prefix else f"{prefix}.{rest}"


def target_iqn(image: str, prefix: str) -> str:
    """The throwaway target of `image`'s boot test.  Outside the `<prefix>:target.`
    names the iSCSI converge manages, so a converge running meanwhile leaves it alone."""
    return _join(check_iqn_prefix(prefix), f"boot-test-target.{_iqn_name(image)}")


def initiator_iqn(prefix: str) -> str:
    """The one initiator a boot-test target admits: no PC's (theirs are `initiator.<pc>`)."""
    return _join(check_iqn_prefix(prefix), "boot-test.initiator")


def screenshot_path(state_dir: str | os.PathLike[str], image: str, version: str) -> Path:
    """Where the screenshot of `image@version`'s last boot test is kept: from names
    layout accepts only (a dataset component: no '/', never '..')."""
    layout.version_snapshot({"pool": "p"}, image, version)  # LayoutError on a bad name
    return Path(state_dir) / image / f"{version}.png"


def new_secret() -> str:
    """A fresh CHAP secret for one test: random, the longest length Windows accepts."""
    return "".join(secrets.choice(DERIVED_ALPHABET) for _ in range(DERIVED_LENGTH))


# -- the lock ----------------------------------------------------------------------------


@contextlib.contextmanager
def image_lock(state_dir: Path, image: str) -> Iterator[None]:
    """Hold the image's boot-test lock; StorageError when another test holds it.  A
    lock held by a dead process is released by the kernel (flock): no stale lock."""
    # Readable by the API's own user, which serves the screenshots; a test's work
    # directory, where the runner may keep the secret, is mkdtemp's (0700).
    state_dir.mkdir(parents=True, exist_ok=True, mode=0o755)
    path = state_dir / f"{image}.lock"
    with open(path, "a+", encoding="utf-8") as fh:
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            if exc.errno not in (errno.EAGAIN, errno.EACCES):
                raise
            raise StorageError(
                f"boot_test {image}: another boot test of {image} is running (it holds "
                f"{path}); wait for it to end"
            ) from None
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def lock_held(state_dir: Path, image: str) -> bool:
    """Whether a boot test of `image` runs now (check mode: nothing is created)."""
    path = state_dir / f"{image}.lock"
    try:
        fh = open(path, encoding="utf-8")  # noqa: SIM115 (closed below)
    except FileNotFoundError:
        return False
    with fh:
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            return True
        fcntl.flock(fh, fcntl.LOCK_UN)
    return False


# -- the job -----------------------------------------------------------------------------


@dataclass
class Setup:
    """What one boot test works with (the module builds it from its params)."""

    backend: str
    iqn_prefix: str = default("ggnet_iscsi", "iqn_prefix")
    portal: str = field(default_factory=lambda: iscsi.portal(None))  # iscsi.portal(server_ip)
    iscsi_options: Mapping[str, Any] | None = None  # tgt: control_port, netns
    state_dir: str = DEFAULT_STATE_DIR
    knobs: Knobs = field(default_factory=Knobs)


def _default_runner(
    fields: dict[str, Any], logged_in: Callable[[], bool], progress: Callable[[str], None]
) -> Any:
    return vm.run(vm.BootTestSpec(**fields), logged_in=logged_in, progress=progress)


def _driver(setup: Setup) -> Driver:
    options = dict(setup.iscsi_options or {})
    # LIO listens per target: the throwaway target's portal is where the VM connects.
    # It must be where the room's targets listen (iscsi.portal(server_ip)), since LIO
    # cannot bind 0.0.0.0:3260 beside their 10.0.0.1:3260.  tgt ignores it.
    options["portal"], options["port"] = vm.parse_portal(setup.portal)
    # Never persisted: the target must not come back after a reboot of the server.
    return make_driver(setup.backend, conf_path=None, savefile=None, **options)


def boot_test(
    cfg: dict,
    images: Mapping[str, Any],
    image_name: str,
    version: str,
    setup: Setup,
    check: bool = False,
    zfs: Zfs | None = None,
    driver: Driver | None = None,
    runner: Runner | None = None,
    secret: Callable[[], str] = new_secret,
) -> Result:
    """Boot-test `image_name@version` (see the module's docstring for the steps).

    Raises StorageError for a refusal or a failure of the job; the iSCSI backend's
    and the names' errors (a tgtd not running, a bad iqn_prefix) become one too."""
    try:
        return _boot_test(
            cfg, images, image_name, version, setup, check, zfs, driver, runner, secret
        )
    except (IscsiError, ValueError) as exc:
        if isinstance(exc, layout.LayoutError):
            raise
        raise StorageError(f"boot_test {image_name}@{version}: {exc}") from None


def _boot_test(
    cfg: dict,
    images: Mapping[str, Any],
    image_name: str,
    version: str,
    setup: Setup,
    check: bool,
    zfs: Zfs | None,
    driver: Driver | None,
    runner: Runner | None,
    secret: Callable[[], str],
) -> Result:
    zfs = zfs or Zfs()
    where = f"boot_test {image_name}@{version}"
    specs = image_specs(images)
    _image, target = _image_version(cfg, zfs, specs, image_name, version, where)
    if target.state not in TESTABLE:
        raise StorageError(
            f"{where}: the version is {target.state}; a boot test is for a candidate "
            f"(or a tested version again), not a {target.state} one"
            + ("; apply a new version instead" if target.state == rollout.REJECTED else "")
        )
    state_dir = Path(setup.state_dir)
    dataset = layout.boot_test_dataset(cfg, image_name)
    iqn = target_iqn(image_name, setup.iqn_prefix)
    check_backend(setup.backend)
    driver = driver or _driver(setup)
    result = Result(before={"state": target.state})
    if check:
        if lock_held(state_dir, image_name):
            raise StorageError(f"{where}: another boot test of {image_name} is running")
        _plan_leftovers(result, zfs, driver, dataset, iqn)
        result.actions += [
            Action("clone", dataset, f"clone of {target.snapshot}"),
            Action("create_target", iqn, f"ACL {initiator_iqn(setup.iqn_prefix)}, CHAP"),
            Action(
                "boot", target.snapshot, f"VM ({setup.knobs.firmware}), {setup.knobs.timeout} s"
            ),
            Action("delete_target", iqn),
            Action("destroy", dataset),
            Action("set_state", target.snapshot, f"{target.state} -> tested | rejected"),
        ]
        result.after = {"state": f"{rollout.TESTED} | {rollout.REJECTED}"}
        return result
    with image_lock(state_dir, image_name):
        _remove_leftovers(result, zfs, driver, setup.backend, dataset, iqn)
        outcome = _boot(cfg, image_name, version, target.snapshot, setup, zfs, driver, runner,
                        secret, result)  # fmt: skip
        record = _record(outcome, setup)
        new_state = rollout.TESTED if record["passed"] else rollout.REJECTED
        # The record is written before the state: the API's collector reads ZFS between
        # any two of these calls, and whoever sees the new state must find its record.
        record["state"] = new_state
        zfs.set(target.snapshot, {P_BOOT_TEST: format_boot_test(record)})
        try:
            moved = set_state(cfg, images, image_name, version, new_state, zfs=zfs)
        except StorageError as exc:
            # e.g. the inventory pins this version: the record still says what happened.
            result.warnings.append(f"{where}: the state stays {target.state}: {exc}")
            new_state = record["state"] = target.state
            zfs.set(target.snapshot, {P_BOOT_TEST: format_boot_test(record)})
        else:
            result.actions += moved.actions
            result.warnings += moved.warnings
        result.actions.append(
            Action("record_boot_test", target.snapshot, "passed" if record["passed"] else "failed")
        )
    result.after = {"state": new_state}
    result.info["state"] = new_state
    result.info["boot_test"] = record
    return result


@dataclass
class _Outcome:
    passed: bool
    reason: str
    stages: dict[str, float]
    screenshot: Path | None
    serial_tail: str
    progress: list[str]


def _plan_leftovers(
    result: Result, zfs: Zfs, driver: Driver, dataset: str, iqn: str
) -> dict[str, Target]:
    """Note a crashed run's target and clone as actions; returns the target as read."""
    found, _live = driver.read([iqn])
    if iqn in found:
        result.actions.append(Action("delete_target", iqn, "left by an earlier run"))
    if zfs.exists(dataset):
        result.actions.append(Action("destroy", dataset, "left by an earlier run"))
    return found


def _remove_leftovers(
    result: Result, zfs: Zfs, driver: Driver, backend: str, dataset: str, iqn: str
) -> None:
    """A crashed run's target and clone (the lock says no run is alive)."""
    found = _plan_leftovers(result, zfs, driver, dataset, iqn)
    _teardown(zfs, driver, backend, dataset, iqn, errors=None, found=found)


def _teardown(
    zfs: Zfs,
    driver: Driver,
    backend: str,
    dataset: str,
    iqn: str,
    errors: list[str] | None,
    found: dict[str, Target] | None = None,
) -> None:
    """Delete the target (dropping a session) and destroy the clone.  With `errors`,
    a failing step is noted there and the next one still runs.  `found`: the target
    as just read (None: read it now)."""
    steps: list[tuple[str, Callable[[], None]]] = [
        ("delete target " + iqn, lambda: _delete_target(driver, backend, iqn, found)),
        ("destroy " + dataset, lambda: _destroy(zfs, dataset)),
    ]
    for what, step in steps:
        try:
            step()
        except (IscsiError, ZfsError, OSError) as exc:
            if errors is None:
                raise StorageError(f"boot_test: cannot {what}: {exc}") from exc
            errors.append(f"cannot {what}: {exc}")


def _delete_target(
    driver: Driver, backend: str, iqn: str, found: dict[str, Target] | None = None
) -> None:
    if found is None:
        found, _live = driver.read([iqn])
    have = found.get(iqn)
    if have is not None:
        driver.apply(plan_target(backend, None, have), {}, found, force=True)


def _destroy(zfs: Zfs, dataset: str) -> None:
    if zfs.exists(dataset):
        zfs.destroy(dataset, recursive=True, unmount_first=True)


def _boot(
    cfg: dict,
    image: str,
    version: str,
    snapshot: str,
    setup: Setup,
    zfs: Zfs,
    driver: Driver,
    runner: Runner | None,
    secret_of: Callable[[], str],
    result: Result,
) -> _Outcome:
    dataset = layout.boot_test_dataset(cfg, image)
    iqn = target_iqn(image, setup.iqn_prefix)
    initiator = initiator_iqn(setup.iqn_prefix)
    secret = secret_of()
    user = _join(check_iqn_prefix(setup.iqn_prefix), f"boot-test.{_iqn_name(image)}")
    progress: list[str] = []
    state_dir = Path(setup.state_dir)
    errors: list[str] = []
    workdir = Path(tempfile.mkdtemp(prefix=f"{image}-{version}.", dir=state_dir))
    try:
        props = {"ggnet:managed": "yes", "ggnet:kind": "boot-test"}
        if layout.disk_format(cfg) == "file":
            props["mountpoint"] = layout.boot_test_mountpoint(cfg, image)
        result.actions.append(Action("clone", dataset, f"clone of {snapshot}"))
        zfs.clone(snapshot, dataset, props)
        path, kind = layout.boot_test_backing(cfg, image)
        if kind == "block":
            disks.wait_for_device(path, f"boot_test {image}@{version}")
        want = target_from_spec(
            {
                "name": f"boot-test-{_iqn_name(image)}",
                "target_iqn": iqn,
                "initiator_iqn": initiator,
                "luns": [{"path": path, "kind": kind}],
                "chap_user": user,
                "chap_secret": secret,
            },
            where=f"boot test of {image}",
        )
        found, _live = driver.read([iqn])
        result.actions.append(Action("create_target", iqn, f"ACL {initiator}, CHAP"))
        driver.apply(plan_target(setup.backend, want, None), {iqn: want}, found)
        logged_in = vm.session_probe(setup.backend, iqn, initiator, **(setup.iscsi_options or {}))

        def note(line: str) -> None:
            progress.append(mask_secret(str(line), secret)[:200])

        fields = {
            "portal": setup.portal,
            "target_iqn": iqn,
            "initiator_iqn": initiator,
            "chap_user": user,
            "chap_secret": secret,
            "workdir": workdir,
            "firmware": setup.knobs.firmware,
            "timeout": float(setup.knobs.timeout),
            "marker": setup.knobs.marker,
            "memory_mib": setup.knobs.memory,
            "netns": (setup.iscsi_options or {}).get("netns"),
            # the system disk's LUN number differs: tgt 1, LIO 0
            "backend": setup.backend,
        }
        result.actions.append(Action("boot", snapshot, f"VM ({setup.knobs.firmware})"))
        try:
            got = (runner or _default_runner)(fields, logged_in, note)
        except Exception as exc:
            raise StorageError(
                f"boot_test {image}@{version}: the VM runner failed: "
                f"{mask_secret(f'{type(exc).__name__}: {exc}', secret)}; the state is unchanged"
            ) from None
        outcome = _Outcome(
            passed=bool(got.passed),
            reason=mask_secret(str(got.reason), secret)[:REASON_MAX],
            stages={str(k): round(float(v), 2) for k, v in dict(got.stages).items()},
            screenshot=_keep_screenshot(got.screenshot, state_dir, image, version),
            serial_tail=mask_secret(str(got.serial_tail or ""), secret)[-2000:],
            progress=progress,
        )
    except (IscsiError, ZfsError) as exc:
        raise StorageError(
            f"boot_test {image}@{version}: {mask_secret(str(exc), secret)}; the state is unchanged"
        ) from None
    finally:
        result.actions += [Action("delete_target", iqn), Action("destroy", dataset)]
        _teardown(zfs, driver, setup.backend, dataset, iqn, errors)
        shutil.rmtree(workdir, ignore_errors=True)
        for error in errors:
            result.warnings.append(f"boot_test teardown: {mask_secret(error, secret)}")
    result.info["progress"] = outcome.progress
    result.info["serial_tail"] = outcome.serial_tail
    return outcome


def _keep_screenshot(shot: Path | None, state_dir: Path, image: str, version: str) -> Path | None:
    """Move the runner's screenshot to where the API serves it from; the previous
    test's goes (it showed another run)."""
    dest = screenshot_path(state_dir, image, version)
    with contextlib.suppress(FileNotFoundError):
        dest.unlink()
    if shot is None or not Path(shot).is_file():
        return None
    dest.parent.mkdir(parents=True, exist_ok=True, mode=0o755)
    shutil.move(str(shot), dest)
    # The job runs as root, the API that serves it (to authenticated viewers) does not.
    dest.chmod(0o644)
    return dest


def _record(outcome: _Outcome, setup: Setup) -> dict[str, Any]:
    return {
        "passed": outcome.passed,
        "reason": outcome.reason,
        "stages": outcome.stages,
        "at": now_iso(),
        "firmware": setup.knobs.firmware,
        "screenshot": str(outcome.screenshot) if outcome.screenshot else None,
    }
