"""The backend-neutral model: specs, plan, refusals, diff masking, SAN URIs."""

from __future__ import annotations

import pytest
from ggnet import iscsi
from ggnet.iscsi import desired_targets, diff, lun_number, plan, san_uri, target_from_spec
from ggnet.iscsi_types import (
    MASK,
    SESSION_PARAMS,
    UNKNOWN_SECRET,
    IscsiError,
    Lun,
    Target,
    mask_secret,
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


def found_of(wanted, first_lun=1, **tgt_defaults):
    """What a backend reports after applying `wanted` exactly (plus keys of its own)."""
    return {
        iqn: Target.from_live(
            iqn,
            luns={first_lun + i: lun for i, lun in enumerate(t.luns)},
            first_lun=first_lun,
            initiators=[t.initiator],
            chap_user=t.chap_user,
            chap_secret=t.chap_secret,
            params={"MaxQueueCmd": "128", **t.params, **tgt_defaults},
        )
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
        ("set_params", "pc-01", None),
    ]
    assert wanted[f"{P}:target.pc-01"].params == SESSION_PARAMS
    lio, _ = plan("lio", wanted, {}, {})
    assert [a.lun for a in lio if a.op == "add_lun"] == [0, 1]


def test_no_change_when_found_equals_wanted():
    wanted = desired_targets(
        [spec(f"pc-{i:02}", secret=SECRET if i % 2 else None) for i in range(20)]
    )
    assert plan("lio", wanted, found_of(wanted, first_lun=0), {}) == ([], [])
    assert plan("tgt", wanted, found_of(wanted), {}) == ([], [])


def test_changed_lun_is_replaced_and_extra_one_removed():
    wanted = desired_targets([spec("pc-01", luns=("/new",))])
    found = {
        f"{P}:target.pc-01": Target(
            f"{P}:target.pc-01",
            f"{P}:initiator.pc-01",
            [Lun("/old"), Lun("/game")],
            params=dict(SESSION_PARAMS),
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
            iqn,
            f"{P}:initiator.pc-99",
            [Lun("/wb/pc-01/system")],
            extra_initiators=["ALL"],
            params=dict(SESSION_PARAMS),
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


def test_mask_secret_masks_every_occurrence_and_nothing_without_a_secret():
    assert mask_secret(f"a {SECRET} b{SECRET}", SECRET) == f"a {MASK} b{MASK}"
    assert mask_secret("a b", None) == mask_secret("a b", "") == "a b"


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"chap_secret": "short"}, "has 5 characters; it needs 12 to 16"),
        ({"chap_secret": "seventeen-chars-x"}, "has 17 characters"),
        ({"chap_secret": "with space 12"}, "contains ' '"),
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


def test_from_live_orders_luns_splits_initiators_and_marks_gaps():
    t = Target.from_live(
        "iqn.x:t",
        luns={2: Lun("/game"), 1: Lun("/system", "block")},
        first_lun=1,
        initiators=[f"{P}:initiator.pc-01", "ALL"],
        params={"MaxBurstLength": 1048576},
    )
    assert t.luns == [Lun("/system", "block"), Lun("/game")]
    assert (t.initiator, t.extra_initiators) == (f"{P}:initiator.pc-01", ["ALL"])
    assert t.params == {"MaxBurstLength": "1048576"}
    gap = Target.from_live("iqn.x:t", luns={0: Lun("/a"), 2: Lun("/b")}, first_lun=0)
    assert gap.initiator is None and len(gap.luns) == 2
    assert Lun("/a") not in gap.luns and Lun("/b") not in gap.luns


@pytest.mark.parametrize("backend", ["tgt", "lio"])
def test_backend_default_login_keys_are_raised_and_nothing_else(backend):
    # tgt's and LIO's own defaults: 8 KiB data segments, InitialR2T on.
    wanted = desired_targets([spec("pc-01", secret=SECRET)])
    base = 1 if backend == "tgt" else 0
    found = found_of(
        wanted,
        first_lun=base,
        MaxRecvDataSegmentLength="8192",
        MaxXmitDataSegmentLength="8192",
        InitialR2T="Yes",
    )
    assert ops(plan(backend, wanted, found, {})[0]) == [("set_params", "pc-01", None)]
    # Keys ggnet does not set (MaxQueueCmd here) are the backend's business.
    assert plan(backend, wanted, found_of(wanted, first_lun=base), {}) == ([], [])


def test_login_keys_change_under_a_live_session_but_nothing_else_does():
    wanted = desired_targets([spec("pc-01")])
    found = found_of(wanted, MaxXmitDataSegmentLength="8192")
    live = {f"{P}:target.pc-01": [f"{P}:initiator.pc-01"]}
    actions, refused = plan("tgt", wanted, found, live)
    assert not refused and ops(actions) == [("set_params", "pc-01", None)]
    moved = desired_targets([spec("pc-01", luns=("/elsewhere",))])
    actions, refused = plan("tgt", moved, found, live)
    assert actions == [] and "add_lun, remove_lun, set_params" in refused[0]


def test_diff_shows_login_keys():
    wanted = desired_targets([spec("pc-01")])
    found = found_of(wanted, InitialR2T="Yes")
    actions, _ = plan("tgt", wanted, found, {})
    d = diff(wanted, found, actions)
    assert d["before"][f"{P}:target.pc-01"]["params"]["InitialR2T"] == "Yes"
    assert d["after"][f"{P}:target.pc-01"]["params"]["InitialR2T"] == "No"


def test_lio_saved_configuration_differs_when_login_keys_do():
    from ggnet.iscsi_lio import _essence

    def saved(**params):
        tpg = {"tag": 1, "luns": [], "node_acls": [], "attributes": {}, "parameters": params}
        return {"targets": [{"wwn": f"{P}:target.pc-01", "tpgs": [tpg]}]}

    tuned = saved(**SESSION_PARAMS, MaxOutstandingR2T="1")
    assert _essence(tuned) == _essence(saved(**SESSION_PARAMS, MaxOutstandingR2T="4"))
    assert _essence(tuned) != _essence(saved(**{**SESSION_PARAMS, "InitialR2T": "Yes"}))


def test_make_driver_gives_each_backend_only_its_own_options():
    from ggnet import iscsi_lio, iscsi_tgt, iscsi_tgt_conf
    from ggnet.iscsi import make_driver

    both = {
        "control_port": 7,
        "netns": None,
        "conf_path": None,
        "savefile": None,
        "portal": "10.0.0.1",
    }
    tgt = make_driver("tgt", **both)
    assert isinstance(tgt, iscsi_tgt.Driver) and tgt.conf_path is None
    assert tgt.tgtadm.argv("--op", "show")[1:3] == ["-C", "7"]
    lio = make_driver("lio", **both)
    assert isinstance(lio, iscsi_lio.Driver) and lio.savefile is None and lio.portal == "10.0.0.1"
    # With nothing given each keeps its own defaults (the closer's case).
    assert make_driver("tgt").conf_path == iscsi_tgt_conf.DEFAULT_CONF
    assert make_driver("lio").savefile == iscsi_lio.DEFAULT_SAVEFILE


def test_the_portal_is_where_the_pcs_reach_their_targets():
    # The boot test's throwaway target and the PCs' san URIs name the same address.
    assert iscsi.portal("10.0.0.1") == "10.0.0.1:3260"
    assert iscsi.san_uri("10.0.0.1", "iqn.x:t", "lio").startswith("iscsi:10.0.0.1::3260:")
    assert iscsi.portal(None) == "127.0.0.1:3260"
