"""ggnet_targets' run apart from Ansible: its options, the driver and the converge."""

from __future__ import annotations

import pytest
from ggnet.iscsi import desired_targets
from ggnet.iscsi_converge import argument_spec, converge, driver_for, managed_prefix
from ggnet.iscsi_converge import with_defaults as params_of
from ggnet.iscsi_types import IscsiError
from ggnet.layout import writeback_backing

pytestmark = pytest.mark.unit

P = "iqn.2025-01.lan.ggnet"
SECRET = "Abcdefgh-1234"
PC1 = {
    "name": "pc-01",
    "target_iqn": f"{P}:target.pc-01",
    "initiator_iqn": f"{P}:initiator.pc-01",
    "luns": [{"path": "/wb/pc-01/system.img", "kind": "file"}],
    "chap_secret": SECRET,
}
PARAMS = params_of({"backend": "tgt", "targets": [PC1], "iqn_prefix": P})


class FakeDriver:
    """Records what converge does to a backend holding `found`, with `live` sessions."""

    def __init__(self, found=None, live=None):
        self.found, self.live = found or {}, live or {}
        self.applied, self.persisted = [], None

    def read(self, iqns=None):
        return self.found, self.live

    def apply(self, actions, wanted, found, force=False):
        self.applied.extend(actions)

    def persist(self, wanted, check_mode=False):
        self.persisted = "checked" if check_mode else "saved"
        return bool(wanted)


def test_managed_prefix_comes_from_the_iqn_derivation():
    assert managed_prefix(P) == f"{P}:target."
    # No prefix in the inventory: ggnet's default, never "every target on the server".
    assert managed_prefix(None) == "iqn.2025-01.lan.ggnet:target."


def test_check_mode_plans_and_compares_without_applying():
    drv = FakeDriver()
    result = converge(PARAMS, check_mode=True, driver=drv)
    assert result["changed"] and result["persisted"] and result["targets"] == 1
    assert drv.applied == [] and drv.persisted == "checked"
    assert [a["op"] for a in result["actions"]][:2] == ["create_target", "add_lun"]
    assert SECRET not in repr(result)


def test_a_run_applies_then_persists():
    drv = FakeDriver()
    result = converge(PARAMS, check_mode=False, driver=drv)
    assert [a.describe() for a in drv.applied] == result["actions"]
    assert drv.persisted == "saved"
    assert list(result["diff"]["after"]) == [PC1["target_iqn"]]


def test_without_persist_nothing_is_saved():
    drv = FakeDriver()
    result = converge({**PARAMS, "persist": False}, check_mode=False, driver=drv)
    assert drv.persisted is None and result["persisted"] is False and result["changed"]


def test_a_refusal_names_the_initiator_and_changes_nothing():
    found = desired_targets([PC1])
    moved = {**PC1, "luns": [{"path": "/other", "kind": "file"}]}
    drv = FakeDriver(found, {PC1["target_iqn"]: [PC1["initiator_iqn"]]})
    with pytest.raises(
        IscsiError, match=r"live session from .*initiator\.pc-01.*\. Nothing was changed\.$"
    ):
        converge({**PARAMS, "targets": [moved]}, check_mode=False, driver=drv)
    assert drv.applied == [] and drv.persisted is None


def test_targets_outside_the_prefix_are_left_alone():
    foreign = {**PC1, "target_iqn": "iqn.2020-01.org.other:disk", "chap_secret": None}
    drv = FakeDriver(desired_targets([foreign]))
    result = converge({**PARAMS, "targets": []}, check_mode=False, driver=drv)
    assert result["actions"] == [] and drv.applied == []


def test_clients_are_turned_into_targets_by_the_layout():
    client = {
        "name": "pc-01",
        "target_iqn": PC1["target_iqn"],
        "initiator_iqn": PC1["initiator_iqn"],
        "game_disk": True,
        "chap": True,
    }
    params = {**PARAMS, "targets": None, "clients": [client], "chap_secrets": {"pc-01": SECRET}}
    result = converge(params, check_mode=True, driver=FakeDriver())
    luns = [(a["path"], a["kind"]) for a in result["actions"] if a["op"] == "add_lun"]
    assert luns == [writeback_backing({}, "pc-01", role) for role in ("system", "game")]
    assert "set_chap" in [a["op"] for a in result["actions"]]


@pytest.mark.parametrize("backend", ["tgt", "lio"])
def test_driver_for_reads_only_declared_options(backend):
    # AnsibleModule fills every declared option and nothing else; so does this dict.
    # An option driver_for reads but argument_spec() leaves out is a KeyError here,
    # and would be one in the bench, which fills its params the same way.
    params = {name: opt.get("default") for name, opt in argument_spec().items()}
    drv = driver_for({**params, "backend": backend})
    assert type(drv).__module__.rsplit(".", 1)[-1] == f"iscsi_{backend}"


def test_with_defaults_fills_what_argument_spec_declares():
    assert set(PARAMS) == set(argument_spec())
    assert PARAMS["persist"] is True and PARAMS["control_port"] is None


def _other(pc: dict, name: str) -> dict:
    return {
        **pc,
        "name": name,
        "target_iqn": f"{P}:target.{name}",
        "initiator_iqn": f"{P}:initiator.{name}",
        "luns": [{"path": f"/wb/{name}/system.img", "kind": "file"}],
    }


def test_retire_only_takes_away_disks_and_targets_and_nothing_else():
    """The retire run before storage: a removed PC's target and a PC's dropped game disk
    go, a new PC's target waits for the full run after storage, nothing is persisted."""
    game = {"path": "/wb/pc-01/game.img", "kind": "file"}
    gone = _other(PC1, "pc-02")
    found = desired_targets([{**PC1, "luns": [*PC1["luns"], game]}, gone])
    new = _other(PC1, "pc-03")
    drv = FakeDriver(found)
    result = converge(
        {**PARAMS, "targets": [PC1, new], "retire_only": True}, check_mode=False, driver=drv
    )
    assert sorted((a.op, a.iqn) for a in drv.applied) == [
        ("delete_target", gone["target_iqn"]),
        ("remove_lun", PC1["target_iqn"]),
    ]
    assert drv.persisted is None and result["persisted"] is False
    assert [a["op"] for a in result["actions"]] == [a.op for a in drv.applied]


def test_retire_only_refuses_a_removed_pc_with_a_live_session():
    gone = _other(PC1, "pc-02")
    drv = FakeDriver(desired_targets([gone]), {gone["target_iqn"]: [gone["initiator_iqn"]]})
    with pytest.raises(IscsiError, match=r"target\.pc-02 would be removed .*initiator\.pc-02"):
        converge({**PARAMS, "targets": [], "retire_only": True}, check_mode=False, driver=drv)
    assert drv.applied == []
