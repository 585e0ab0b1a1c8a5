"""The backend-neutral model: specs, plan, refusals, diff masking, SAN URIs."""

from __future__ import annotations

import pytest
from ggnet.iscsi import (
    MASK,
    UNKNOWN_SECRET,
    IscsiError,
    Lun,
    Target,
    desired_targets,
    diff,
    lun_number,
    plan,
    san_uri,
    target_from_spec,
)

pytestmark = pytest.mark.unit

P = "iqn.2025-01.lan.ggnet"
SECRET = "Abcdefgh-1234"


def spec(name, luns=("/wb/{n}/system",), secret=None, **kw):
    out = {
        "name": name,
        "target_iqn": f"{P}:target.{name}",
        "initiator_iqn": f"{P}:initiator.{name}",
        "luns": [{"path": p.format(n=name), "kind": "file"} for p in luns],
        **kw,
    }
    if secret:
        out["chap_secret"] = secret
    return out


def found_of(wanted):
    """What a backend reports after applying `wanted` exactly."""
    return {
        iqn: Target(t.iqn, t.initiator, list(t.luns), t.chap_user, t.chap_secret)
        for iqn, t in wanted.items()
    }


def ops(actions):
    return [(a.op, a.iqn.rsplit(".", 1)[-1], a.lun) for a in actions]


def test_san_uri_follows_the_backend_lun_numbering():
    iqn = f"{P}:target.pc-01"
    assert san_uri("10.213.0.10", iqn, "tgt") == f"iscsi:10.213.0.10::3260:1:{iqn}"
    assert san_uri("10.213.0.10", iqn, "lio") == f"iscsi:10.213.0.10::3260:0:{iqn}"
    assert san_uri("10.213.0.10", iqn, "lio", disk_index=1) == f"iscsi:10.213.0.10::3260:1:{iqn}"
    assert san_uri("fd00::10", iqn, "tgt", port=3261) == f"iscsi:[fd00::10]::3261:1:{iqn}"
    assert lun_number("tgt", 1) == 2
    with pytest.raises(IscsiError, match="'iet' is not a known backend"):
        san_uri("10.0.0.1", iqn, "iet")


def test_create_everything_for_a_new_client():
    wanted = desired_targets([spec("pc-01", luns=("/a", "/b"), secret=SECRET)])
    actions, refused = plan("tgt", wanted, {}, {})
    assert not refused
    assert ops(actions) == [
        ("create_target", "pc-01", None),
        ("add_lun", "pc-01", 1),
        ("add_lun", "pc-01", 2),
        ("add_acl", "pc-01", None),
        ("set_chap", "pc-01", None),
    ]
    lio, _ = plan("lio", wanted, {}, {})
    assert [a.lun for a in lio if a.op == "add_lun"] == [0, 1]


def test_no_change_when_found_equals_wanted():
    wanted = desired_targets(
        [spec(f"pc-{i:02}", secret=SECRET if i % 2 else None) for i in range(20)]
    )
    assert plan("lio", wanted, found_of(wanted), {}) == ([], [])


def test_changed_lun_is_replaced_and_extra_one_removed():
    wanted = desired_targets([spec("pc-01", luns=("/new",))])
    found = {
        f"{P}:target.pc-01": Target(
            f"{P}:target.pc-01", f"{P}:initiator.pc-01", [Lun("/old"), Lun("/game")]
        )
    }
    actions, _ = plan("tgt", wanted, found, {})
    assert ops(actions) == [
        ("remove_lun", "pc-01", 1),
        ("add_lun", "pc-01", 1),
        ("remove_lun", "pc-01", 2),
    ]


def test_foreign_initiators_are_removed_and_ours_added():
    wanted = desired_targets([spec("pc-01")])
    iqn = f"{P}:target.pc-01"
    found = {
        iqn: Target(
            iqn, f"{P}:initiator.pc-99", [Lun("/wb/pc-01/system")], extra_initiators=["ALL"]
        )
    }
    actions, _ = plan("tgt", wanted, found, {})
    assert [(a.op, a.initiator) for a in actions] == [
        ("remove_acl", f"{P}:initiator.pc-99"),
        ("remove_acl", "ALL"),
        ("add_acl", f"{P}:initiator.pc-01"),
    ]


def test_chap_is_set_when_secret_differs_or_is_unknown_and_cleared_when_off():
    wanted = desired_targets([spec("pc-01", secret=SECRET)])
    found = found_of(wanted)
    found[f"{P}:target.pc-01"].chap_secret = UNKNOWN_SECRET
    assert ops(plan("tgt", wanted, found, {})[0]) == [("set_chap", "pc-01", None)]
    found[f"{P}:target.pc-01"].chap_secret = "Other-secret-99"
    assert ops(plan("tgt", wanted, found, {})[0]) == [("set_chap", "pc-01", None)]
    off = desired_targets([spec("pc-01")])
    assert ops(plan("tgt", off, found_of(wanted), {})[0]) == [("clear_chap", "pc-01", None)]


def test_unwanted_targets_are_removed_only_under_the_managed_prefix():
    foreign = Target("iqn.2003-01.org.example:storage", None, [Lun("/x")])
    ours = Target(f"{P}:target.gone", f"{P}:initiator.gone", [Lun("/y")])
    found = {foreign.iqn: foreign, ours.iqn: ours}
    actions, _ = plan("lio", {}, found, {}, managed_prefix=f"{P}:target.")
    assert [(a.op, a.iqn) for a in actions] == [("delete_target", ours.iqn)]


def test_live_session_refuses_change_and_removal_naming_the_initiator():
    wanted = desired_targets([spec("pc-01", luns=("/new",)), spec("pc-02")])
    found = found_of(desired_targets([spec("pc-01"), spec("pc-03")]))
    live = {f"{P}:target.pc-01": [f"{P}:initiator.pc-01"], f"{P}:target.pc-03": ["iqn.x:someone"]}
    actions, refused = plan("tgt", wanted, found, live, managed_prefix=f"{P}:target.")
    assert len(refused) == 2
    assert (
        f"{P}:initiator.pc-01" in refused[0] and "changed" in refused[0] and "force" in refused[0]
    )
    assert "iqn.x:someone" in refused[1] and "removed" in refused[1]
    # The unrelated new client is still planned; the module applies nothing if refused.
    assert {a.iqn for a in actions} == {f"{P}:target.pc-02"}
    forced, refused = plan("tgt", wanted, found, live, force=True, managed_prefix=f"{P}:target.")
    assert not refused
    assert {a.iqn for a in forced} == {
        f"{P}:target.pc-01",
        f"{P}:target.pc-02",
        f"{P}:target.pc-03",
    }


def test_live_session_on_an_unchanged_target_does_not_block():
    wanted = desired_targets([spec("pc-01"), spec("pc-02")])
    found = found_of(desired_targets([spec("pc-01")]))
    actions, refused = plan("tgt", wanted, found, {f"{P}:target.pc-01": ["x"]})
    assert not refused and {a.iqn for a in actions} == {f"{P}:target.pc-02"}


def test_diff_masks_secrets_and_repr_hides_them():
    wanted = desired_targets([spec("pc-01", secret=SECRET)])
    actions, _ = plan("tgt", wanted, {}, {})
    d = diff(wanted, {}, actions)
    assert d["after"][f"{P}:target.pc-01"]["chap_secret"] == MASK
    assert SECRET not in repr(d) and SECRET not in repr(wanted) and SECRET not in repr(actions)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"chap_secret": "short"}, "has 5 characters; it needs 12 to 16"),
        ({"chap_secret": "seventeen-chars-x"}, "has 17 characters"),
        ({"chap_secret": "with space 12"}, "space, quote"),
        ({"chap_user": "u", "chap_secret": ""}, "no chap_secret is set"),
        ({"luns": []}, "at least one LUN"),
        ({"luns": [{"path": "relative"}]}, "luns[0].path 'relative' is not an absolute path"),
        ({"luns": [{"path": "/x", "kind": "nbd"}]}, "kind 'nbd'"),
        ({"target_iqn": "pc-01"}, "target_iqn 'pc-01' is not an iSCSI name"),
    ],
)
def test_bad_specs_name_the_client_and_never_the_secret(change, message):
    bad = {**spec("pc-07"), **change}
    with pytest.raises(IscsiError) as err:
        desired_targets([spec("pc-01"), bad])
    assert "pc-07" in str(err.value) and message in str(err.value)
    secret = change.get("chap_secret")
    if secret:
        assert secret not in str(err.value)


def test_duplicates_are_refused():
    with pytest.raises(IscsiError, match="also wanted"):
        desired_targets([spec("pc-01"), {**spec("pc-01"), "name": "again"}])
    a, b = spec("pc-01", secret=SECRET), spec("pc-02", secret=SECRET)
    b["chap_user"] = a["initiator_iqn"]
    with pytest.raises(IscsiError, match=r"chap_user .* is also used by pc-01"):
        desired_targets([a, b])


def test_chap_user_defaults_to_the_initiator_iqn():
    t = target_from_spec(spec("pc-01", secret=SECRET))
    assert t.chap_user == f"{P}:initiator.pc-01" and t.chap
