"""The replication planner, the guid rule and the metrics figures (ggnet.replication).

The property checks apply each plan to a model of what ZFS accepts (a full stream only
into an empty target, an incremental only onto the target's newest snapshot when it is
the stream's base) and then plan again: whatever the histories, a plan that is not
refused is receivable, leaves every wanted version with the source's guid, and the
second plan is empty.
"""

import pytest
from ggnet.replication import (
    FULL,
    INCREMENTAL,
    RESUME,
    DivergedError,
    Endpoint,
    ReplicaError,
    ReplicationError,
    Side,
    Snap,
    _dry_run_size,
    bootable,
    check_bootable,
    plan,
    replication_metrics,
)
from ggnet.zfs import Zfs
from hypothesis import given, settings
from hypothesis import strategies as st

pytestmark = pytest.mark.unit


def snaps(*names, guid=lambda n: f"g-{n}", start=10):
    return [Snap(n, guid(n), start + i, 1000 + 60 * i) for i, n in enumerate(names)]


def kinds(p):
    return [(s.kind, s.base, s.version) for s in p.steps]


# The cases ----------------------------------------------------------------------------


def test_everything_present_with_matching_guids_is_nothing():
    p = plan("os", snaps("v1", "v2"), snaps("v1", "v2", start=500))
    assert p.nothing and p.common == "v2" and p.describe() == []


def test_an_empty_target_gets_a_full_send_of_the_oldest_then_incrementals():
    p = plan("os", snaps("v1", "v2", "v3"), [])
    assert kinds(p) == [(FULL, None, "v1"), (INCREMENTAL, "v1", "v2"), (INCREMENTAL, "v2", "v3")]
    assert not p.replace and p.common is None


def test_only_wanted_versions_are_sent_and_the_chain_skips_the_others():
    p = plan("os", snaps("v1", "v2", "v3", "v4"), [], wanted=["v2", "v4"])
    assert kinds(p) == [(FULL, None, "v2"), (INCREMENTAL, "v2", "v4")]


def test_incremental_from_the_newest_common_snapshot():
    # v1 and v2 shared; the source pruned v1 later, which does not matter.
    p = plan("os", snaps("v2", "v3", "v4", start=20), snaps("v1", "v2", start=3))
    assert p.common == "v2"
    assert kinds(p) == [(INCREMENTAL, "v2", "v3"), (INCREMENTAL, "v3", "v4")]


def test_a_same_named_snapshot_with_another_guid_is_not_common():
    source = snaps("v1", "v2", "v3")
    target = [*snaps("v1"), Snap("v2", "other", 99)]
    with pytest.raises(DivergedError) as err:
        plan("os", source, target)
    text = str(err.value)
    assert "image os" in text and "@v2" in text and "other" in text and "g-v2" in text
    assert "nothing was changed" in text and "force" in text


def test_diverged_with_force_destroys_only_the_diverging_snapshots():
    source = snaps("v1", "v2", "v3")
    target = [*snaps("v1"), Snap("v2", "other", 99)]
    p = plan("os", source, target, force=True)
    assert p.destroy == ["v2"] and not p.replace and p.common == "v1"
    assert kinds(p) == [(INCREMENTAL, "v1", "v2"), (INCREMENTAL, "v2", "v3")]


def test_diverged_with_nothing_shared_and_force_replaces_the_replica():
    p = plan("os", snaps("v1"), [Snap("v1", "other", 4)], force=True)
    assert p.replace and p.destroy == [] and kinds(p) == [(FULL, None, "v1")]


def test_target_only_snapshots_after_the_common_one_block_an_incremental():
    target = [*snaps("v1"), Snap("local", "g-local", 50)]
    with pytest.raises(DivergedError, match=r"@local that the source lacks, newer than"):
        plan("os", snaps("v1", "v2"), target)
    p = plan("os", snaps("v1", "v2"), target, force=True)
    assert p.destroy == ["local"] and kinds(p) == [(INCREMENTAL, "v1", "v2")]


def test_target_only_snapshots_before_the_common_one_are_left_alone():
    target = [Snap("old", "g-old", 1), *snaps("v1", start=5)]
    p = plan("os", snaps("v1", "v2"), target)
    assert p.destroy == [] and kinds(p) == [(INCREMENTAL, "v1", "v2")]


def test_a_resume_token_comes_first_whatever_else():
    p = plan("os", snaps("v1", "v2"), [Snap("v1", "diverged", 1)], token="1-abc-def")
    assert [(s.kind, s.token) for s in p.steps] == [(RESUME, "1-abc-def")]


def test_an_existing_dataset_without_snapshots_is_replaced_by_the_full_send():
    p = plan("os", snaps("v1"), [], target_exists=True)
    assert p.replace and kinds(p) == [(FULL, None, "v1")]
    # With nothing to send it is left as it is.
    assert plan("os", snaps("v1"), [], target_exists=True, wanted=[]).nothing


def test_a_wanted_version_older_than_the_common_one_is_reported_unreachable():
    p = plan("os", snaps("v1", "v2", "v3"), snaps("v2", start=40), wanted=["v1", "v3"])
    assert p.unreachable == ["v1"] and kinds(p) == [(INCREMENTAL, "v2", "v3")]


def test_bad_input_is_refused_with_names():
    with pytest.raises(ReplicationError, match=r"image os: wanted version\(s\) v9 not on"):
        plan("os", snaps("v1"), [], wanted=["v9"])
    with pytest.raises(ReplicationError, match=r"the source lists version v1 twice"):
        plan("os", [*snaps("v1"), *snaps("v1", start=30)], [])


# The guid rule ------------------------------------------------------------------------


def test_bootable_only_with_equal_guids():
    assert bootable("123", "123")
    assert not bootable("123", "124")
    assert not bootable("123", None)
    assert not bootable(None, None)


def test_check_bootable_names_image_version_and_both_guids():
    check_bootable("os", "v2", "123", "123")
    with pytest.raises(ReplicaError) as err:
        check_bootable("os", "v2", "123", "999")
    text = str(err.value)
    assert "image os version v2" in text and "123" in text and "999" in text
    with pytest.raises(ReplicaError, match=r"no such snapshot.*target guid none"):
        check_bootable("os", "v2", "123", None)


# Metrics ------------------------------------------------------------------------------


def test_metrics_lag_is_zero_in_sync_and_the_creation_gap_otherwise():
    src = snaps("v1", "v2", "v3")  # created 1000, 1060, 1120
    m = replication_metrics(
        "os",
        "t/images/os",
        src,
        snaps("v1", "v2", "v3", start=1),
        last_success=5.0,
        now=2000,
        bytes_behind=0,
        bytes_method="in-sync",
    )
    assert m["lag_seconds"] == 0 and m["in_sync"] and m["newest_replicated"] == "v3"
    behind = replication_metrics(
        "os", "t/images/os", src, snaps("v1", start=1), last_success=None, now=2000,
        bytes_behind=None, bytes_method="unknown",
    )  # fmt: skip
    assert behind["lag_seconds"] == 120 and not behind["in_sync"]
    empty = replication_metrics(
        "os", "t/images/os", src, [], last_success=None, now=2000,
        bytes_behind=5, bytes_method="referenced",
    )  # fmt: skip
    assert empty["lag_seconds"] == 1000 and empty["newest_replicated"] is None


def test_dry_run_size_parses():
    out = "incremental\tv1\tp/images/os@v2\t123456\nsize\t123456\n"
    assert _dry_run_size(out) == 123456
    assert _dry_run_size("full\tp/images/os@v1\t5\n") is None


# Endpoints and reading a side (recorded commands: a scripted runner, not zfs) ----------


def test_ssh_endpoint_quotes_the_command_under_the_c_locale():
    ep = Endpoint.ssh("boot2", "-o", "BatchMode=yes")
    argv = ep.argv(["zfs", "receive", "-u", "p/images/my os@v1"])
    assert argv[:4] == ["ssh", "-o", "BatchMode=yes", "boot2"]
    assert argv[4] == "env LC_ALL=C LANG=C zfs receive -u 'p/images/my os@v1'"
    assert Endpoint(("sudo",)).argv(["zfs", "list"]) == ["sudo", "zfs", "list"]


class ScriptedRunner:
    """Fake zfs (named so): answers by the command's words, records every command."""

    def __init__(self, answers):
        self.answers = answers
        self.calls = []

    def __call__(self, argv, stdin=None):
        self.calls.append(list(argv))
        for words, answer in self.answers:
            if all(w in argv for w in words):
                return answer
        return 1, "", "unexpected command"


def test_openzfs_side_is_resumable_and_reads_its_token():
    fake = ScriptedRunner(
        [
            (["get", "value", "receive_resume_token"], (0, "-\n", "")),
            (
                ["get", "-d", "1"],
                (
                    0,
                    "t/images/os\treceive_resume_token\t1-e1-b8-xyz\n"
                    "t/images/os@v1\tguid\t111\nt/images/os@v1\tcreatetxg\t7\n"
                    "t/images/os@v1\tcreation\t1000\n",
                    "",
                ),
            ),
        ]
    )
    side = Side({"pool": "t"}, zfs=Zfs(runner=fake))
    got = side.read("os")
    assert side.resumable() and got.token == "1-e1-b8-xyz"
    assert got.snaps == [Snap("v1", "111", 7, 1000)] and got.guid("v1") == "111"
    assert sum("value" in c for c in fake.calls) == 1  # asked once


def test_zfs_fuse_side_is_not_resumable_and_does_not_ask_for_the_token():
    fake = ScriptedRunner(
        [
            (["receive_resume_token"], (2, "", "bad property list: invalid property\n")),
            (["get", "-d", "1"], (0, "t/images/os@v1\tguid\t111\n", "")),
        ]
    )
    side = Side({"pool": "t"}, zfs=Zfs(runner=fake))
    got = side.read("os")
    assert not side.resumable() and got.token is None
    assert not any("receive_resume_token" in " ".join(c) for c in fake.calls[1:])


def test_a_side_whose_pool_cannot_be_asked_is_an_error_naming_it():
    fake = ScriptedRunner([(["get"], (1, "", "cannot open 't': no such pool\n"))])
    with pytest.raises(ReplicationError, match=r"pool t .*no such pool"):
        Side({"pool": "t"}, zfs=Zfs(runner=fake)).resumable()


# Properties -----------------------------------------------------------------------------


def apply(p, source, target):
    """Receive the plan into a model of the target the way ZFS would, or fail."""
    by_name = {s.name: s for s in source}
    tgt = sorted(target, key=lambda s: s.txg)
    tgt = [t for t in tgt if t.name not in p.destroy]
    if p.replace:
        tgt = []
    txg = max([t.txg for t in target], default=0) + 1
    for step in p.steps:
        sent = by_name[step.version]
        if step.kind == FULL:
            assert tgt == [], "a full stream is received only into an empty target"
        else:
            assert tgt and (tgt[-1].name, tgt[-1].guid) == (step.base, by_name[step.base].guid)
        tgt.append(Snap(sent.name, sent.guid, txg, sent.creation))
        txg += 1
    return tgt


@st.composite
def histories(draw):
    n = draw(st.integers(1, 7))
    source = snaps(*[f"v{i}" for i in range(n)])
    # The target received some of the source's versions (in order), maybe had some
    # pruned, and maybe has snapshots of its own or diverged ones.
    received = sorted(draw(st.sets(st.integers(0, n - 1))))
    target = [Snap(source[i].name, source[i].guid, 100 + k) for k, i in enumerate(received)]
    for k in range(draw(st.integers(0, 2))):
        kind = draw(st.sampled_from(["own", "diverged"]))
        name = f"own{k}" if kind == "own" else draw(st.sampled_from([s.name for s in source]))
        if any(t.name == name for t in target):
            continue
        target.append(Snap(name, f"x{k}", 200 + k))
    wanted = draw(st.none() | st.sets(st.sampled_from([s.name for s in source])))
    return source, target, wanted


@settings(max_examples=400, deadline=None)
@given(histories(), st.booleans())
def test_any_plan_is_receivable_and_planning_again_finds_nothing(history, force):
    source, target, wanted = history
    try:
        p = plan("os", source, target, wanted=wanted, force=force)
    except DivergedError:
        assert not force
        return
    after = apply(p, source, target)
    guids = {t.name: t.guid for t in after}
    want = {s.name for s in source} if wanted is None else set(wanted)
    for s in source:
        if s.name in want and s.name not in p.unreachable:
            assert guids.get(s.name) == s.guid, (s.name, p)
    again = plan("os", source, after, wanted=wanted, force=force)
    assert again.nothing, again
