"""The boot-test job without ZFS, a target daemon or a VM: an in-memory pool behind
the real Zfs class, a recording fake iSCSI driver and fake VM runners (all named as
fakes).  The plan, the refusals, the teardown on every path, the state it leaves and
that the CHAP secret appears nowhere it returns or records."""

from __future__ import annotations

import fcntl
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from ggnet import iscsi, rollout, settings
from ggnet.boot_test_knobs import Knobs, parse_knobs
from ggnet.iscsi import MASK, Lun, Target
from ggnet.storage import boot_test_job as job
from ggnet.storage.properties import P_BOOT_TEST, P_STATE, parse_boot_test
from ggnet.storage.results import StorageError
from ggnet.zfs import Zfs

pytestmark = pytest.mark.unit

CFG = {"pool": "gg", "disk_format": "file"}
IMAGES = {"win11": {"size": "1G"}}
SNAP = "gg/images/win11@v2"
CLONE = "gg/boot-tests/win11"
PREFIX = settings.DEFAULT_IQN_PREFIX
IQN = f"{PREFIX}:boot-test-target.win11"


class FakePool:
    """A fake zfs command: datasets and their properties in a dict.  Answers `get`
    (with -r / -d), `set`, `inherit`, `clone`, `snapshot`, `destroy`, `umount`;
    records every changing command."""

    def __init__(self, states: dict[str, str | None]):
        self.props: dict[str, dict[str, str]] = {
            "gg": {"type": "filesystem", "available": str(10 << 30), "used": "0"},
            "gg/images": {"type": "filesystem"},
            "gg/writebacks": {"type": "filesystem"},
            "gg/images/win11": {"type": "filesystem", "ggnet:kind": "system"},
        }
        for i, (version, state) in enumerate(states.items(), 1):
            snap = {"type": "snapshot", "ggnet:created": f"2026-01-0{i}T00:00:00Z"}
            if state:
                snap[P_STATE] = state
            self.props[f"gg/images/win11@{version}"] = snap
        self.changes: list[list[str]] = []

    def __call__(self, argv, stdin=None):
        args = list(argv[1:])
        if args[0] == "get":
            return 0, self._get(args), ""
        self.changes.append(args)
        op = args[0]
        if op == "set":
            key, value = args[1].split("=", 1)
            self.props[args[2]][key] = value
        elif op == "inherit":
            self.props[args[2]].pop(args[1], None)
        elif op == "clone":
            name, snapshot = args[-1], args[-2]
            if snapshot not in self.props:
                return 1, "", f"cannot open '{snapshot}': dataset does not exist"
            opts = [a for a in args[1:-2] if a not in ("-p", "-o")]
            self.props[name] = {"type": "filesystem", "origin": snapshot}
            self.props[name].update(o.split("=", 1) for o in opts)
        elif op == "snapshot":
            self.props[args[-1]] = {"type": "snapshot"}
        elif op == "destroy":
            name = args[-1]
            if name not in self.props:
                return 1, "", f"cannot open '{name}': dataset does not exist"
            for other in [n for n in self.props if n == name or n.startswith(name + "/")]:
                del self.props[other]
        return 0, "", ""

    def _get(self, args: list[str]) -> str:
        # argv: get -Hp -o name,property,value [-r | -d N] PROPS NAME...
        depth: int | None = 0
        rest = args[4:]
        if rest[0] == "-r":
            depth, rest = None, rest[1:]
        elif rest[0] == "-d":
            depth, rest = int(rest[1]), rest[2:]
        props, names = rest[0].split(","), rest[1:]
        lines = []
        for name in names:
            for have, values in sorted(self.props.items()):
                below = have.startswith(name + "/") or have.startswith(name + "@")
                level = have[len(name) :].count("/") + have[len(name) :].count("@")
                if have != name and not (below and (depth is None or level <= depth)):
                    continue
                for prop in props:
                    lines.append(f"{have}\t{prop}\t{values.get(prop, '-')}")
        return "\n".join(lines) + "\n"

    def state(self, version: str) -> str | None:
        return self.props[f"gg/images/win11@{version}"].get(P_STATE)


@dataclass
class FakeDriver:
    """A recording fake iSCSI driver: targets in a dict, a session while `live`."""

    targets: dict[str, Any] = field(default_factory=dict)
    live: set[str] = field(default_factory=set)
    applied: list[tuple[str, str]] = field(default_factory=list)
    calls: list[str] = field(default_factory=list)  # "read" and each applied op, in order

    def read(self, iqns=None):
        self.calls.append("read")
        chosen = {k: v for k, v in self.targets.items() if iqns is None or k in iqns}
        return chosen, {k: ["initiator"] for k in chosen if k in self.live}

    def apply(self, actions, wanted, found, force=False):
        for a in actions:
            self.applied.append((a.op, a.iqn))
            self.calls.append(a.op)
            if a.op == "create_target":
                self.targets[a.iqn] = wanted[a.iqn]
            elif a.op == "delete_target":
                self.targets.pop(a.iqn)
                self.live.discard(a.iqn)

    def persist(self, wanted, check_mode=False):
        raise AssertionError("a boot test never persists its target")

    def sessions(self, backend, **options):
        """A FAKE ggnet.iscsi.active_sessions (what boot_test.session_probe reads):
        each live target's session, by its initiator."""
        return {k: [self.targets[k].initiator] for k in self.live if k in self.targets}


@dataclass
class FakeRunner:
    """A fake VM runner: answers `passed`/`reason` after checking what it was given,
    logs in (the fake driver shows a session) and writes a screenshot."""

    driver: FakeDriver
    passed: bool = True
    reason: str = "marker seen"
    raises: Exception | None = None
    calls: list[dict[str, Any]] = field(default_factory=list)
    saw_login: list[bool] = field(default_factory=list)

    def __call__(self, fields, logged_in, progress):
        self.calls.append(dict(fields))
        self.saw_login.append(logged_in())
        self.driver.live.add(fields["target_iqn"])
        self.saw_login.append(logged_in())
        progress(f"login with {fields['chap_user']} / {fields['chap_secret']}")
        if self.raises:
            raise self.raises
        shot = Path(fields["workdir"]) / "screen.png"
        shot.write_bytes(b"\x89PNG fake")
        return _FakeResult(
            passed=self.passed,
            reason=self.reason.replace("SECRET", fields["chap_secret"]),
            stages={"started": 0.5, "login": 3.25, "marker": 12.345},
            screenshot=shot,
            serial_tail=f"... {fields['chap_secret']} GGNET-BOOT",
        )


@dataclass
class _FakeResult:
    passed: bool
    reason: str
    stages: dict[str, float]
    screenshot: Path | None
    serial_tail: str


FIXED_SECRET = "Fixed0Secret789x"


def _run(tmp_path, states, version="v2", runner=None, check=False, driver=None, pool=None):
    pool = pool or FakePool(states)
    driver = driver or FakeDriver()
    runner = runner or FakeRunner(driver)
    setup = job.Setup(backend="tgt", state_dir=str(tmp_path / "bt"))
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(iscsi, "active_sessions", driver.sessions)
        result = job.boot_test(
            CFG,
            IMAGES,
            "win11",
            version,
            setup,
            check=check,
            zfs=Zfs(runner=pool, fuse=True),
            driver=driver,
            runner=runner,
            secret=lambda: FIXED_SECRET,
        )
    return result, pool, driver, runner


STATES = {"v1": None, "v2": rollout.CANDIDATE}


def test_a_passing_boot_makes_the_candidate_tested_and_records_the_result(tmp_path):
    result, pool, driver, runner = _run(tmp_path, STATES)
    assert pool.state("v2") == rollout.TESTED
    record = parse_boot_test(pool.props[SNAP][P_BOOT_TEST])
    assert record is not None
    assert record["passed"] is True and record["state"] == rollout.TESTED
    assert record["stages"] == {"started": 0.5, "login": 3.25, "marker": 12.35}
    assert record["firmware"] == "bios"
    shot = tmp_path / "bt" / "win11" / "v2.png"
    assert record["screenshot"] == str(shot) and shot.read_bytes() == b"\x89PNG fake"
    assert shot.stat().st_mode & 0o777 == 0o644  # the API's own user serves it
    assert result.info["state"] == rollout.TESTED
    assert result.info["boot_test"] == record
    # torn down: no target, no clone, no work directory
    assert driver.targets == {} and CLONE not in pool.props
    assert sorted(p.name for p in (tmp_path / "bt").iterdir()) == ["win11", "win11.lock"]
    assert next(op for op, _ in driver.applied) == "create_target"
    assert ("delete_target", IQN) in driver.applied
    # logged_in() is boot_test.session_probe: the backend's sessions of the target
    assert runner.saw_login == [False, True]


def test_the_runner_gets_the_real_target_and_a_fresh_secret(tmp_path):
    _result, pool, _driver, runner = _run(tmp_path, STATES)
    (fields,) = runner.calls
    assert fields["target_iqn"] == IQN
    assert fields["initiator_iqn"] == f"{PREFIX}:boot-test.initiator"
    assert fields["chap_secret"] == FIXED_SECRET
    assert fields["portal"] == "127.0.0.1:3260"
    assert fields["timeout"] == 300.0 and fields["memory_mib"] == 256
    assert fields["marker"] == r"GGNET-BOOT\b"
    # the clone it booted: of the version, outside writebacks, its own mountpoint
    clone = next(c for c in pool.changes if c[0] == "clone")
    assert clone[-2:] == [SNAP, CLONE]
    assert "mountpoint=/gg/boot-tests/win11" in clone


def test_secrets_are_fresh_and_valid():
    from ggnet.chap import secret_problem

    one, two = job.new_secret(), job.new_secret()
    assert one != two and secret_problem(one) is None


def test_a_failing_boot_rejects_the_candidate(tmp_path):
    driver = FakeDriver()
    runner = FakeRunner(driver, passed=False, reason="no marker within 300 s")
    result, pool, driver, _ = _run(tmp_path, STATES, runner=runner, driver=driver)
    assert pool.state("v2") == rollout.REJECTED
    record = parse_boot_test(pool.props[SNAP][P_BOOT_TEST])
    assert record["passed"] is False and record["reason"] == "no marker within 300 s"
    assert result.info["state"] == rollout.REJECTED
    assert driver.targets == {} and CLONE not in pool.props


def test_the_record_is_written_before_the_state_it_explains(tmp_path):
    # The API's collector reads ZFS between any two commands: whoever sees the new
    # state must find the record that says why.
    _result, pool, _driver, _runner = _run(tmp_path, STATES)

    def first(prefix: str) -> int:
        return next(i for i, c in enumerate(pool.changes) if any(a.startswith(prefix) for a in c))

    assert first(P_BOOT_TEST + "=") < first("ggnet:state=")


def test_the_secret_is_nowhere_in_result_record_or_zfs_commands(tmp_path):
    driver = FakeDriver()
    runner = FakeRunner(driver, passed=False, reason="CHAP refused SECRET")
    result, pool, _driver, _ = _run(tmp_path, STATES, runner=runner, driver=driver)
    shown = json.dumps(result.as_dict()) + json.dumps(pool.changes)
    assert FIXED_SECRET not in shown
    assert MASK in result.info["boot_test"]["reason"]
    assert all(FIXED_SECRET not in line for line in result.info["progress"])
    assert FIXED_SECRET not in result.info["serial_tail"]


def test_a_tested_version_may_be_tested_again(tmp_path):
    _result, pool, _d, _r = _run(tmp_path, {"v1": None, "v2": rollout.TESTED})
    assert pool.state("v2") == rollout.TESTED


@pytest.mark.parametrize(
    ("states", "version", "message"),
    [
        (STATES, "v9", r"unknown version 'v9' \(existing: v1 promoted, v2 candidate\)"),
        ({"v1": None, "v2": rollout.REJECTED}, "v2", "the version is rejected.*apply a new"),
        ({"v1": None, "v2": rollout.CANARY}, "v2", "the version is canary"),
        (STATES, "v1", "the version is promoted"),
    ],
)
def test_refusals_change_nothing(tmp_path, states, version, message):
    pool, driver = FakePool(states), FakeDriver()
    runner = FakeRunner(driver)
    with pytest.raises(StorageError, match=message):
        _run(tmp_path, states, version=version, runner=runner, driver=driver, pool=pool)
    assert pool.changes == [] and driver.applied == [] and runner.calls == []


def test_another_test_of_the_image_is_refused(tmp_path):
    state_dir = tmp_path / "bt"
    state_dir.mkdir()
    with open(state_dir / "win11.lock", "a+") as held:
        fcntl.flock(held, fcntl.LOCK_EX)  # what a running test holds
        pool, driver = FakePool(STATES), FakeDriver()
        for check in (False, True):
            with pytest.raises(StorageError, match="another boot test of win11 is running"):
                _run(tmp_path, STATES, check=check, driver=driver, pool=pool)
        assert pool.changes == [] and driver.applied == []
    # released: the next test runs
    _run(tmp_path, STATES)


def test_the_runner_failing_tears_down_and_changes_no_state(tmp_path):
    driver = FakeDriver()
    runner = FakeRunner(driver, raises=RuntimeError(f"qemu died holding {FIXED_SECRET}"))
    pool = FakePool(STATES)
    with pytest.raises(StorageError, match="the VM runner failed: RuntimeError") as info:
        _run(tmp_path, STATES, runner=runner, driver=driver, pool=pool)
    assert FIXED_SECRET not in str(info.value)
    assert pool.state("v2") == rollout.CANDIDATE and P_BOOT_TEST not in pool.props[SNAP]
    assert driver.targets == {} and CLONE not in pool.props
    assert ("delete_target", IQN) in driver.applied


def test_a_crashed_runs_leftovers_are_removed_first(tmp_path):
    pool, driver = FakePool(STATES), FakeDriver()
    pool.props[CLONE] = {"type": "filesystem", "origin": "gg/images/win11@v1"}
    # what a crashed run left: its target, with the session of a VM that never ended
    driver.targets[IQN] = Target(IQN, f"{PREFIX}:boot-test.initiator", [Lun("/x", "file")])
    driver.live.add(IQN)
    result, pool, driver, _ = _run(tmp_path, STATES, pool=pool, driver=driver)
    described = [a.describe() for a in result.actions]
    assert described[:2] == [
        {"action": "delete_target", "target": IQN, "detail": "left by an earlier run"},
        {"action": "destroy", "target": CLONE, "detail": "left by an earlier run"},
    ]
    # the leftover target is read once, to plan and to delete it
    assert driver.calls[:2] == ["read", "delete_target"]
    assert driver.targets == {} and CLONE not in pool.props
    assert pool.state("v2") == rollout.TESTED


def test_check_mode_reports_and_changes_nothing(tmp_path):
    result, pool, driver, runner = _run(tmp_path, STATES, check=True)
    assert pool.changes == [] and driver.applied == [] and runner.calls == []
    assert not (tmp_path / "bt").exists()
    assert [a.action for a in result.actions] == [
        "clone",
        "create_target",
        "boot",
        "delete_target",
        "destroy",
        "set_state",
    ]
    assert result.after == {"state": "tested | rejected"}


def test_a_target_that_cannot_be_made_still_destroys_the_clone(tmp_path):
    class BrokenDriver(FakeDriver):
        """A fake driver whose target creation fails as tgtadm would."""

        def apply(self, actions, wanted, found, force=False):
            from ggnet.iscsi import IscsiError

            if actions and actions[0].op == "create_target":
                raise IscsiError("tgtadm: can't create target")
            super().apply(actions, wanted, found, force)

    pool, driver = FakePool(STATES), BrokenDriver()
    with pytest.raises(StorageError, match="can't create target; the state is unchanged"):
        _run(tmp_path, STATES, pool=pool, driver=driver)
    assert CLONE not in pool.props and pool.state("v2") == rollout.CANDIDATE


def test_names_never_meet_a_pcs():
    assert job.target_iqn("win11", PREFIX) == IQN
    # not under the converge's managed "<prefix>:target." nor a PC's initiator name
    assert not IQN.startswith(f"{PREFIX}:target.")
    assert not job.initiator_iqn(PREFIX).startswith(f"{PREFIX}:initiator.")
    # image names an IQN cannot carry get a hash that keeps them apart
    a, b = job.target_iqn("Win_11", PREFIX), job.target_iqn("win-11", PREFIX)
    assert a != b and a.startswith(f"{PREFIX}:boot-test-target.win-11-")


@pytest.mark.parametrize("bad", ["../x", "a/b", "", ".."])
def test_screenshot_paths_come_from_valid_names_only(tmp_path, bad):
    from ggnet.layout import LayoutError

    with pytest.raises(LayoutError):
        job.screenshot_path(tmp_path, "win11", bad)
    with pytest.raises(LayoutError):
        job.screenshot_path(tmp_path, bad, "v1")
    assert job.screenshot_path(tmp_path, "win11", "v2") == tmp_path / "win11" / "v2.png"


def test_knob_defaults_are_the_settings():
    knobs, problems = parse_knobs(settings.DEFAULTS[settings.BOOT_TEST_KEY])
    assert problems == [] and knobs == Knobs()
    assert parse_knobs(None) == (Knobs(), [])


@pytest.mark.parametrize(
    ("value", "key", "shown", "message"),
    [
        ({"firmware": "coreboot"}, "firmware", "coreboot", "must be one of bios, uefi"),
        ({"timeout": "soon"}, "timeout", "soon", "is not a duration"),
        ({"timeout": "2h"}, "timeout", "2h", "at most 1h"),
        ({"marker": "GGNET-(BOOT"}, "marker", "GGNET-(BOOT", "not a regular expression"),
        ({"marker": ""}, "marker", "", "non-empty"),
        ({"memory": 32}, "memory", 32, "64 to 65536"),
        ({"memory": "1G"}, "memory", "1G", "whole number of MiB"),
        ({"ram": 512}, "ram", None, "unknown key"),
    ],
)
def test_bad_knobs_name_key_and_value(value, key, shown, message):
    knobs, problems = parse_knobs(value)
    assert knobs == Knobs()
    ((got_key, got_value, got_message),) = problems
    assert got_key == f"ggnet_boot_test.{key}" and got_value == shown and message in got_message


def test_validation_names_host_key_and_value():
    from ggnet.validate import validate

    inventory = {
        "groups": {"ggnet_servers": ["boot1"], "ggnet_clients": []},
        "hostvars": {"boot1": {"ggnet_boot_test": {"firmware": "uefi", "memory": 8}}},
    }
    problems = [p for p in validate(inventory) if "boot_test" in str(p)]
    assert len(problems) == 1
    text = str(problems[0])
    assert "boot1" in text and "ggnet_boot_test.memory" in text and "8" in text


def test_the_cli_parses_boot_test_and_still_lists():
    from ggnet_cli.main import build_parser

    args = build_parser().parse_args(["images", "boot-test", "win11", "v2", "--json"])
    assert (args.action, args.image, args.version, args.json) == ("boot-test", "win11", "v2", True)
    args = build_parser().parse_args(["images", "--json"])
    assert args.action is None and args.json is True


def test_the_cli_shows_the_last_boot_test():
    from ggnet_cli import images

    record = {"passed": False, "reason": "no marker within 300 s", "at": "2026-01-02T03:04:05.1Z",
              "firmware": "uefi", "stages": {"started": 0.52, "login": 3.0}}  # fmt: skip
    line = images.boot_test_line(record)
    assert line == (
        "FAILED 2026-01-02T03:04:05 (uefi); started 0.5 s, login 3.0 s: no marker within 300 s"
    )
    rows = [
        {"image": "win11", "served": "v1", "canary": None, "canary_pcs": [],
         "versions": [{"name": "v2", "state": "rejected", "created": "2026-01-02T00:00:00",
                       "comment": "", "boot_test": record}]},
    ]  # fmt: skip
    assert f"      boot test: {line}" in images.text(rows).splitlines()


def test_a_backend_that_cannot_be_read_is_a_clear_refusal(tmp_path):
    from ggnet.iscsi import IscsiError

    class DeadDriver(FakeDriver):
        """A fake driver whose tgtd does not answer."""

        def read(self, iqns=None):
            raise IscsiError("tgtadm: can't send the request to the tgt daemon")

    pool = FakePool(STATES)
    with pytest.raises(StorageError, match="boot_test win11@v2: tgtadm: can't send"):
        _run(tmp_path, STATES, pool=pool, driver=DeadDriver())
    assert pool.changes == []
    with pytest.raises(StorageError, match="not a known backend"):
        job.boot_test(CFG, IMAGES, "win11", "v2", job.Setup(backend="iet"),
                      zfs=Zfs(runner=FakePool(STATES), fuse=True), driver=FakeDriver())  # fmt: skip
