"""Node groups in the inventory: validation, the model, and placement's input from them.

The refusals with their exact lines are in the corpus (tests/unit/invalid/node-group-*);
these are the cases given as plain data.
"""

import pytest
from ggnet import model, node_groups
from ggnet import validate as validation
from ggnet.placement import PC

pytestmark = pytest.mark.unit

NETWORK = {
    "interface": "eth0",
    "server_ip": "10.0.0.1",
    "subnet": "10.0.0.0/24",
    "dhcp_mode": "proxy",
}
FLEET = {
    "hall": {"region": "east", "priority": 1, "servers": ["boot1", "boot2"]},
    "vip": {"region": "east", "priority": 2, "capacity": 20, "servers": ["boot3"]},
}


def _inventory(fleet=FLEET, images=None, **pc_vars):
    servers = ["boot1", "boot2", "boot3"]
    groups = {"ggnet_servers": servers, "ggnet_clients": ["pc-01", "pc-02"], "room": ["pc-01"]}
    shared = {
        "ggnet_network": NETWORK,
        "ggnet_images": {"os": {"size": "1G", "kind": "system"}},
    }
    hostvars = {s: {**shared, "ggnet_node_groups": fleet} for s in servers}
    for s, known in (images or {}).items():
        hostvars[s]["ggnet_images"] = known
    for i, name in enumerate(("pc-01", "pc-02"), start=1):
        hostvars[name] = {
            **shared,
            "ggnet_mac": f"52:54:00:00:00:0{i}",
            "ggnet_image": "os",
            "ggnet_node_group": "hall",
            **pc_vars,
        }
    return groups, hostvars


def _lines(groups, hostvars):
    return [str(p) for p in validation.validate({"groups": groups, "hostvars": hostvars})]


def test_a_pc_of_a_node_group_needs_no_server():
    assert _lines(*_inventory()) == []


def test_a_pc_pinned_inside_its_group_is_valid():
    assert _lines(*_inventory(ggnet_server="boot2")) == []


def test_a_pc_pinned_outside_its_group_is_refused():
    assert _lines(*_inventory(ggnet_server="boot3")) == [
        f"{pc}: ggnet_server: is outside the PC's node group hall (its servers: boot1, "
        "boot2): pin it to one of those, or leave ggnet_server to placement (value: boot3)"
        for pc in ("pc-01", "pc-02")
    ]


def test_an_unknown_node_group_is_refused():
    lines = _lines(*_inventory(ggnet_node_group="vp"))
    assert lines[0] == (
        "pc-01: ggnet_node_group: unknown node group (known: hall, vip); did you mean vip? "
        "(value: vp)"
    )


def test_a_node_group_without_any_declared_is_unknown():
    groups, hostvars = _inventory()
    for s in groups["ggnet_servers"]:
        del hostvars[s]["ggnet_node_groups"]
    assert "unknown node group (known: none)" in _lines(groups, hostvars)[0]


def test_a_server_in_two_groups_is_refused():
    fleet = {**FLEET, "vip": {"region": "west", "servers": ["boot3", "boot1"]}}
    assert _lines(*_inventory(fleet)) == [
        "boot1: ggnet_node_groups.vip.servers: is already in node group hall: "
        "a server belongs to one node group (value: boot1)"
    ]


@pytest.mark.parametrize(
    ("spec", "line"),
    [
        ({"servers": ["boot1"]}, "ggnet_node_groups.x.region: is required"),
        ({"region": "e", "servers": ["boot9"]}, "is not a host of ggnet_servers"),
        ({"region": "e", "servers": []}, "must be a non-empty list"),
        ({"region": "e", "capacity": 0, "servers": ["boot1"]}, "must be at least 1"),
        ({"region": "e", "priority": "hi", "servers": ["boot1"]}, "must be a whole number"),
        ({"region": "e", "servers": ["boot1"], "size": 3}, "x.size: unknown key"),
    ],
)
def test_a_node_group_spec_is_checked(spec, line):
    groups, hostvars = _inventory({"x": spec}, ggnet_node_group="x")
    lines = _lines(groups, hostvars)
    assert any(line in text for text in lines), lines


def test_node_groups_must_be_a_mapping():
    groups, hostvars = _inventory(["hall"])
    assert "boot1: ggnet_node_groups: must be a mapping, not a list (value: ['hall'])" in (
        _lines(groups, hostvars)
    )


def test_servers_must_agree_on_the_node_groups():
    groups, hostvars = _inventory()
    hostvars["boot3"]["ggnet_node_groups"] = {"hall": FLEET["hall"]}
    assert _lines(groups, hostvars) == [
        "boot3: ggnet_node_groups: differs from server boot1's: node groups are one mapping "
        "for the whole fleet, set them once in group_vars/ggnet_servers.yml"
    ]


def test_an_unplaced_pc_needs_its_image_on_every_server_of_its_group():
    groups, hostvars = _inventory(images={"boot2": {"other": {"size": "1G", "kind": "system"}}})
    lines = _lines(groups, hostvars)
    assert lines == [
        f"{pc}: ggnet_image: unknown image on server boot2 (known: other) (value: os)"
        for pc in ("pc-01", "pc-02")
    ]


def test_without_node_groups_several_servers_still_need_ggnet_server():
    groups, hostvars = _inventory()
    for name in hostvars:
        hostvars[name].pop("ggnet_node_groups", None)
        hostvars[name].pop("ggnet_node_group", None)
    lines = _lines(groups, hostvars)
    assert lines and all("ggnet_server: is required with 3 servers" in line for line in lines)


def test_the_model_leaves_an_unplaced_pc_without_server():
    groups, hostvars = _inventory()
    hostvars["pc-02"]["ggnet_server"] = "boot2"
    placed = {c["name"]: c["server"] for c in model.clients(groups, hostvars)}
    assert placed == {"pc-01": None, "pc-02": "boot2"}
    assert [c["name"] for c in model.clients(groups, hostvars, server="boot2")] == ["pc-02"]


def test_placement_input_from_the_inventory():
    groups, hostvars = _inventory()
    hostvars["pc-02"]["ggnet_server"] = "boot1"
    fleet = node_groups.node_groups(groups, hostvars)
    assert fleet["vip"] == node_groups.NodeGroup("vip", "east", 2, 20, ("boot3",))
    assert fleet["hall"].capacity == 60  # the default
    assert node_groups.pcs_to_place(groups, hostvars) == [
        PC("pc-01", "hall", None),
        PC("pc-02", "hall", "boot1"),
    ]
    found = node_groups.statuses(fleet, {"boot1": {"cpu_percent": 50, "active": 2}})
    by_name = {s.name: s for s in found}
    assert by_name["boot1"].healthy and by_name["boot1"].active == 2
    assert not by_name["boot2"].healthy  # no report: it did not answer
    assert by_name["boot3"].capacity == 20 and by_name["boot3"].priority == 2
