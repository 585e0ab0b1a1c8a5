"""ggnet.rollout: version states, which version a PC boots, canary sets, the decision."""

from __future__ import annotations

import pytest
from ggnet import model, rollout, settings
from ggnet.rollout import Boot, Knobs, VersionInfo, decide, served_version

pytestmark = pytest.mark.unit

C, T, K, P, R = "candidate", "tested", "canary", "promoted", "rejected"


def versions(*pairs):
    return [VersionInfo(name, state) for name, state in pairs]


@pytest.mark.parametrize(
    ("given", "current", "pinned", "canary", "served"),
    [
        # versions made before states: all promoted, behaviour as before (newest, or current)
        ([("v1", None), ("v2", None)], None, None, False, "v2"),
        ([("v1", None), ("v2", None)], "v1", None, False, "v1"),
        ([("v1", None), ("v2", None)], None, None, True, "v2"),
        # a candidate is served to nobody, canary or not
        ([("v1", None), ("v2", C)], None, None, False, "v1"),
        ([("v1", None), ("v2", C)], None, None, True, "v1"),
        ([("v1", P), ("v2", T)], None, None, True, "v1"),
        # a version in canary: canary PCs only
        ([("v1", P), ("v2", K)], None, None, False, "v1"),
        ([("v1", P), ("v2", K)], None, None, True, "v2"),
        ([("v1", P), ("v2", K)], "v1", None, True, "v2"),
        # rejected: never served, current pointing at it falls back to the newest promoted
        ([("v1", P), ("v2", R)], None, None, True, "v1"),
        ([("v1", P), ("v2", P), ("v3", R)], "v3", None, False, "v2"),
        # rollback to an older promoted version: current wins over the newest
        ([("v1", P), ("v2", P), ("v3", P)], "v1", None, False, "v1"),
        ([("v1", P), ("v2", P), ("v3", K)], "v1", None, True, "v3"),
        # a pin wins over everything, for canaries too
        ([("v1", P), ("v2", K)], None, "v1", True, "v1"),
        ([("v1", P), ("v2", C)], None, "v2", False, "v2"),
        ([("v1", P)], None, "v9", False, None),
        # ... but a rejected version is never served, pinned or not
        ([("v1", P), ("v2", R)], None, "v2", False, None),
        # nothing promoted: nothing to boot
        ([("v1", R), ("v2", C)], None, None, False, None),
        ([], None, None, False, None),
        # an unknown word (a newer ggnet's state) is never served
        ([("v1", P), ("v2", "golden")], None, None, True, "v1"),
    ],
)
def test_served_version(given, current, pinned, canary, served):
    assert served_version(versions(*given), current, pinned, canary) == served


@pytest.mark.parametrize(
    ("have", "want", "error"),
    [
        (C, T, None),
        (C, K, "a candidate goes to canary only once its boot test passed"),
        (T, K, None),
        (K, P, None),
        (K, R, None),
        (P, R, None),
        (C, C, None),
        (R, R, None),
        (R, P, "rejected: a rejected version is never served again"),
        (R, K, "rejected"),
        (P, K, "it can become rejected, not canary"),
        (K, T, "it can become promoted, rejected, not tested"),
        (T, C, "only apply makes a candidate"),
        (C, "golden", "is not one of candidate, tested"),
    ],
)
def test_transitions(have, want, error):
    if error is None:
        rollout.check_transition("os@v2", have, want)
    else:
        with pytest.raises(rollout.RolloutError, match=error) as info:
            rollout.check_transition("os@v2", have, want)
        assert "os@v2" in str(info.value)


def test_the_operator_may_force_a_candidate_to_canary():
    rollout.check_transition("os@v2", C, K, force=True)
    # force is no key to what TRANSITIONS refuses
    with pytest.raises(rollout.RolloutError, match="only apply makes a candidate"):
        rollout.check_transition("os@v2", T, C, force=True)


def test_state_of_a_version_without_the_property_is_promoted():
    assert rollout.state_of(None) == P
    assert rollout.state_of("-") == P
    assert rollout.state_of("canary") == K
    assert rollout.state_of("nonsense") == R


KNOBS = Knobs(promote_after=3, max_failures=2, boot_time_ratio=1.2, patience=3600)
OK = Boot("ok", 20.0)
FAST = Boot("ok", 10.0)
SLOW = Boot("ok", 30.0)
FAIL = Boot("failed")
TIMEOUT = Boot("timeout")
PREVIOUS = [18.0, 20.0, 21.0, 22.0, 25.0]  # p95 25.0


@pytest.mark.parametrize(
    ("state", "boots", "previous", "elapsed", "action", "reason"),
    [
        (P, [OK, OK, OK], PREVIOUS, 10, "none", "promoted, not in canary"),
        (C, [], PREVIOUS, 10, "none", "candidate"),
        # waiting for boots, then no data: pause
        (K, [], PREVIOUS, 10, "wait", "0 of 3 ok canary boots"),
        (K, [OK, OK], PREVIOUS, 10, "wait", "2 of 3"),
        (K, [], PREVIOUS, 3600, "pause", "only 0 of 3 ok canary boots after 3600 s"),
        (K, [OK], PREVIOUS, 7200, "pause", "no data"),
        # pending and refused boots count for nothing
        (K, [Boot("pending"), Boot("refused"), OK], PREVIOUS, 10, "wait", "1 of 3"),
        # failures at the threshold roll back, before anything else
        (K, [FAIL], PREVIOUS, 10, "wait", "0 of 3"),
        (K, [FAIL, TIMEOUT], PREVIOUS, 10, "rollback", "2 canary boot(s) failed (threshold 2)"),
        (K, [OK, OK, OK, FAIL, FAIL], PREVIOUS, 10, "rollback", "failed"),
        (K, [FAIL, FAIL], [], 7200, "rollback", "failed"),
        # K ok boots: promote when p95 <= 1.2 x the previous version's p95 (25 -> 30)
        (
            K,
            [OK, OK, OK],
            PREVIOUS,
            10,
            "promote",
            "3 ok canary boots, p95 20.0 s within 1.2 x 25.0",
        ),
        (K, [FAST, OK, SLOW], PREVIOUS, 10, "promote", "p95 30.0 s"),  # exactly 1.2 x
        (K, [OK, OK, OK, FAIL], PREVIOUS, 10, "promote", "within"),
        (K, [OK, OK, Boot("ok", 30.1)], PREVIOUS, 10, "pause", "30.1 s is above 1.2 x"),
        # no boot times: pause, never promote blind
        (K, [OK, OK, OK], [], 10, "pause", "no ok boot of the previous version"),
        (K, [OK, OK, Boot("ok", None)], PREVIOUS, 10, "pause", "recorded no boot time"),
    ],
)
def test_decide(state, boots, previous, elapsed, action, reason):
    decision = decide(state, boots, previous, KNOBS, elapsed)
    assert decision.action == action
    assert reason in decision.reason
    assert decision.action in rollout.ACTIONS


OS_KNOBS = Knobs(promote_after=2, max_failures=1, healthy_at="os", os_report_within=300)


@pytest.mark.parametrize(
    ("boots", "action", "reason"),
    [
        # the OS reported: ok
        ([Boot("ok", 40.0, "os", 50), Boot("ok", 41.0, "os", 900)], "promote", "2 ok canary"),
        # handed over, no report yet: neither ok nor failed
        ([Boot("ok", 9.0, "sanboot", 299)], "wait", "0 of 2"),
        # handed over and silent past os_report_within: a hang after the hand-over
        (
            [Boot("ok", 9.0, "sanboot", 300)],
            "rollback",
            "1 canary boot(s) failed, or their OS did not report within 300 s (threshold 1)",
        ),
        ([Boot("failed", None, "failed", 5)], "rollback", "did not report"),
    ],
)
def test_decide_with_healthy_at_os(boots, action, reason):
    decision = decide(K, boots, [45.0], OS_KNOBS, 10)
    assert (decision.action, reason in decision.reason) == (action, True), decision


def test_healthy_at_handover_takes_the_hand_over_whatever_the_age():
    silent = Boot("ok", 9.0, "sanboot", 10_000)
    assert rollout.outcome(silent, Knobs()) == "ok"
    assert rollout.outcome(silent, OS_KNOBS) == "failed"
    assert rollout.outcome(Boot("pending", None, "chain", 10_000), OS_KNOBS) == "pending"


def test_decide_reports_its_numbers():
    d = decide(K, [OK, FAST, SLOW, FAIL], PREVIOUS, KNOBS, 10)
    assert d.as_dict() == {
        "action": "promote",
        "reason": d.reason,
        "ok": 3,
        "failed": 1,
        "canary_p95": 30.0,
        "previous_p95": 25.0,
    }


def test_decide_is_deterministic_whatever_the_order():
    boots = [OK, FAST, SLOW, Boot("ok", 12.0)]
    first = decide(K, boots, PREVIOUS, KNOBS, 10)
    assert all(decide(K, b, PREVIOUS[::-1], KNOBS, 10) == first for b in (boots[::-1], boots))


@pytest.mark.parametrize(
    ("values", "p"), [([], None), ([5.0], 5.0), ([1.0, 2.0], 2.0), (list(range(1, 101)), 95)]
)
def test_p95_nearest_rank(values, p):
    assert rollout.p95([float(v) for v in values]) == p


def test_knobs_defaults_are_the_settings():
    knobs = Knobs()
    for key in ("promote_after", "max_failures", "boot_time_ratio", "healthy_at"):
        assert getattr(knobs, key) == settings.default("ggnet_rollout", key)
    for key in ("patience", "os_report_within"):
        assert getattr(knobs, key) == model.parse_duration(settings.default("ggnet_rollout", key))
    assert rollout.parse_rollout({})[0].knobs == knobs


GROUPS = {
    "vip": [f"vip-{i:02d}" for i in range(1, 11)],
    "lounge": [f"l-{i:02d}" for i in range(1, 4)],
}


def test_parse_rollout_reads_knobs_and_sets():
    parsed, problems = rollout.parse_rollout(
        {
            "promote_after": 5,
            "max_failures": 2,
            "boot_time_ratio": 1.5,
            "patience": "30m",
            "canary": {"vip": {"machines": ["vip-03"], "share": "20%"}, "lounge": {"share": "1%"}},
        },
        GROUPS,
    )
    assert problems == []
    assert parsed.knobs == Knobs(5, 2, 1.5, 1800)
    os_knobs = rollout.parse_rollout({"healthy_at": "os", "os_report_within": "5m"})[0].knobs
    assert (os_knobs.healthy_at, os_knobs.os_report_within) == ("os", 300)
    assert parsed.canary["vip"] == rollout.CanarySet(("vip-03",), 20.0)


def test_canary_members_named_and_share_stable():
    parsed, _ = rollout.parse_rollout(
        {"canary": {"vip": {"machines": ["vip-03"], "share": "20%"}, "lounge": {"share": "1%"}}},
        GROUPS,
    )
    chosen = rollout.canary_members(parsed, GROUPS)
    vip = sorted(m for m in chosen if m.startswith("vip"))
    # 20% of 10 is 2, plus the named vip-03 when the hash did not pick it
    assert "vip-03" in vip and len(vip) in (2, 3)
    # a share above 0 picks at least one PC, never more than the group has
    assert len([m for m in chosen if m.startswith("l-")]) == 1
    # stable: the same groups in another order give the same PCs
    shuffled = {g: list(reversed(m)) for g, m in reversed(list(GROUPS.items()))}
    assert rollout.canary_members(parsed, shuffled) == chosen
    # a PC joining the group does not reshuffle who was picked beyond the new count
    grown = {**GROUPS, "vip": [*GROUPS["vip"], "vip-11"]}
    assert set(vip) - {"vip-03"} <= rollout.canary_members(parsed, grown) | {"vip-11"}


def test_no_rollout_setting_means_no_canaries():
    assert rollout.canary_members(rollout.parse_rollout(None)[0], GROUPS) == frozenset()


def test_model_marks_canary_clients():
    groups = {
        "all": ["boot1", "pc-01", "pc-02"],
        "ggnet_servers": ["boot1"],
        "ggnet_clients": ["pc-01", "pc-02"],
        "vip": ["pc-01", "pc-02"],
    }
    setting = {"canary": {"vip": {"machines": ["pc-02"]}}}
    hv = {
        "ggnet_image": "os",
        "ggnet_images": {"os": {"size": "1G", "kind": "system"}},
        "ggnet_rollout": setting,
    }
    hostvars = {
        "boot1": {},
        "pc-01": {**hv, "ggnet_mac": "52:54:00:00:00:01"},
        "pc-02": {**hv, "ggnet_mac": "52:54:00:00:00:02"},
    }
    by_name = {c["name"]: c for c in model.clients(groups, hostvars)}
    assert by_name["pc-01"]["canary"] is False
    assert by_name["pc-02"]["canary"] is True
    assert model.client("pc-02", hostvars["pc-02"], groups)["canary"] is True
