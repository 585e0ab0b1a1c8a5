"""Load-aware placement (module_utils/ggnet/placement.py): scoring cases, then properties.

The properties run on hypothesis (in the dev lock): whatever the PCs and servers, a PC
is never placed outside its node group or above a server's capacity, and placing a
plan again changes nothing.
"""

import pytest
from ggnet.placement import PC, ServerStatus, place, score
from ggnet.settings import PLACEMENT
from hypothesis import given, settings
from hypothesis import strategies as st

pytestmark = pytest.mark.unit


def _server(name="b1", group="g", capacity=10, **status):
    return ServerStatus(name, group, capacity, **status)


def _pcs(n, group="g", server=None):
    return [PC(f"pc-{i:03d}", group, server) for i in range(n)]


# Scoring -------------------------------------------------------------------------------


def test_a_server_at_90_percent_cpu_loses_to_an_idle_one():
    hot, idle = _server("hot", cpu_percent=90), _server("idle", cpu_percent=0)
    assert score(hot, 1) > score(idle, 1)
    plan = place(_pcs(1), [hot, idle])
    assert plan.placement == {"pc-000": "idle"}


def test_memory_86_percent_is_penalised_85_is_not():
    assert score(_server(memory_percent=86), 1) == pytest.approx(
        score(_server(), 1) + PLACEMENT["memory_penalty"]
    )
    assert score(_server(memory_percent=85), 1) == score(_server(), 1)


def test_cpu_80_percent_is_not_penalised_81_is():
    assert score(_server(cpu_percent=80), 1) == score(_server(), 1)
    assert score(_server(cpu_percent=81), 1) == pytest.approx(
        score(_server(), 1) + PLACEMENT["cpu_penalty"]
    )


def test_the_score_is_load_over_capacity():
    assert score(_server(capacity=40), 10) == pytest.approx(0.25)
    # PCs it serves outside this placement hold capacity too.
    assert score(_server(capacity=40, active=10), 10) == pytest.approx(0.5)


def test_a_fuller_pool_scores_worse():
    assert score(_server(pool_free=0.2), 1) > score(_server(pool_free=0.9), 1)


def test_a_hot_server_still_takes_pcs_once_the_others_are_loaded():
    # The penalty is a cost, not a ban: at 50 % CPU (+0.5) over the cold one, it
    # gets PCs once the cold server's load ratio is 0.5 higher.
    plan = place(_pcs(14), [_server("hot", cpu_percent=95), _server("cold")])
    loads = plan.loads([_server("hot"), _server("cold")])
    assert loads == {"hot": pytest.approx(0.4), "cold": pytest.approx(1.0)}


def test_priority_breaks_ties_between_like_servers():
    plan = place(_pcs(1), [_server("a", priority=1), _server("b", priority=5)])
    assert plan.placement == {"pc-000": "b"}


def test_equal_servers_share_the_pcs_evenly():
    servers = [_server(f"b{i}", capacity=50) for i in range(4)]
    plan = place(_pcs(100), servers)
    assert set(plan.loads(servers).values()) == {0.5}
    assert all(m.reason == "not placed yet" and m.before is None for m in plan.moves)


# Stability and the reasons for a move -----------------------------------------------


def test_a_placed_pc_stays_on_a_busier_server_within_the_margin():
    # 4 of 10 against 2 of 10: a gap of 0.2, under the margin of 0.25.
    pcs = [*_pcs(4, server="a"), PC("pc-x", "g", "b"), PC("pc-y", "g", "b")]
    plan = place(pcs, [_server("a"), _server("b")])
    assert plan.moves == []


def test_a_server_far_over_its_share_sheds_pcs():
    plan = place(_pcs(8, server="a"), [_server("a"), _server("b")])
    assert plan.loads([_server("a"), _server("b")]) == {
        "a": pytest.approx(0.5),
        "b": pytest.approx(0.3),
    }
    assert [m.after for m in plan.moves] == ["b", "b", "b"]
    assert {m.reason for m in plan.moves} == {
        f"server a is far over its share ({n} of 10 PCs; b had {8 - n} of 10)" for n in (8, 7, 6)
    }


def test_a_hot_server_is_not_emptied_for_its_cpu_alone():
    # Its load ratio is not far over the other's: the CPU penalty alone moves nobody.
    pcs = [*_pcs(3, server="hot"), PC("pc-x", "g", "cold")]
    plan = place(pcs, [_server("hot", cpu_percent=99), _server("cold")])
    assert plan.moves == []


def test_pcs_leave_an_unhealthy_server():
    plan = place(_pcs(3, server="a"), [_server("a", healthy=False), _server("b")])
    assert set(plan.placement.values()) == {"b"}
    assert {m.reason for m in plan.moves} == {"server a is unhealthy"}


def test_pcs_leave_a_server_outside_their_group_or_without_status():
    pcs = [PC("pc-1", "g", "other"), PC("pc-2", "g", "gone")]
    plan = place(pcs, [_server("a"), _server("other", group="h")])
    assert plan.placement == {"pc-1": "a", "pc-2": "a"}
    assert [m.reason for m in plan.moves] == [
        "server other is not in node group g",
        "no status from server gone",
    ]


def test_a_server_over_its_capacity_sends_the_rest_elsewhere():
    plan = place(_pcs(12, server="a"), [_server("a"), _server("b", capacity=30)])
    assert sum(1 for s in plan.placement.values() if s == "a") <= 10
    assert any(m.reason == "server a is over its capacity of 10" for m in plan.moves)


def test_a_full_group_says_which_pcs_are_unplaced_and_why():
    plan = place(_pcs(5), [_server("a", capacity=2), _server("b", capacity=1)])
    assert len(plan.placement) == 3
    assert plan.unplaced == {
        "pc-003": "node group g has no room: not placed yet",
        "pc-004": "node group g has no room: not placed yet",
    }


def test_a_group_without_servers_leaves_its_pcs_unplaced():
    plan = place([PC("pc-1", "nowhere"), PC("pc-2", "g", "a")], [_server("a", healthy=False)])
    assert plan.placement == {}
    assert plan.unplaced == {
        "pc-1": "node group nowhere: no status from any server of the group",
        "pc-2": "node group g: no healthy server in the group",
    }
    # The PC that had a server moves off it, to nowhere.
    assert [(m.pc, m.after) for m in plan.moves] == [("pc-2", None)]


# Properties ----------------------------------------------------------------------------

GROUPS = ("g1", "g2", "g3")


@st.composite
def fleets(draw):
    servers = []
    for i in range(draw(st.integers(1, 8))):
        servers.append(
            ServerStatus(
                name=f"s{i}",
                node_group=draw(st.sampled_from(GROUPS)),
                capacity=draw(st.integers(1, 12)),
                healthy=draw(st.booleans()),
                active=draw(st.integers(0, 3)),
                cpu_percent=draw(st.floats(0, 100)),
                memory_percent=draw(st.floats(0, 100)),
                pool_free=draw(st.floats(0, 1)),
                priority=draw(st.integers(0, 3)),
            )
        )
    names = [s.name for s in servers] + ["gone"]
    pcs = [
        PC(f"pc-{i}", draw(st.sampled_from(GROUPS)), draw(st.none() | st.sampled_from(names)))
        for i in range(draw(st.integers(0, 60)))
    ]
    return pcs, servers


@settings(max_examples=500, deadline=None)
@given(fleets())
def test_never_outside_the_group_never_above_capacity(fleet):
    pcs, servers = fleet
    plan = place(pcs, servers)
    by_name = {s.name: s for s in servers}
    group_of = {pc.name: pc.node_group for pc in pcs}
    assert set(plan.placement) | set(plan.unplaced) == set(group_of)
    assert not set(plan.placement) & set(plan.unplaced)
    for pc, server in plan.placement.items():
        assert by_name[server].node_group == group_of[pc]
        assert by_name[server].healthy
    for server, load in plan.loads(servers).items():
        if any(s == server for s in plan.placement.values()):
            assert load <= 1.0, server


@settings(max_examples=500, deadline=None)
@given(fleets())
def test_placing_a_plan_again_moves_nothing(fleet):
    pcs, servers = fleet
    first = place(pcs, servers)
    again = [PC(pc.name, pc.node_group, first.placement.get(pc.name)) for pc in pcs]
    second = place(again, servers)
    assert second.placement == first.placement
    assert second.moves == []
    assert set(second.unplaced) == set(first.unplaced)


@settings(max_examples=200, deadline=None)
@given(fleets())
def test_a_pc_moves_only_with_a_reason(fleet):
    pcs, servers = fleet
    plan = place(pcs, servers)
    before = {pc.name: pc.server for pc in pcs}
    changed = {pc for pc in before if plan.placement.get(pc) != before[pc]}
    assert {m.pc for m in plan.moves} == changed
    assert all(m.reason for m in plan.moves)


def test_a_pc_taken_off_a_full_server_that_gets_room_again_stays_without_a_move():
    # Found by the property test above: s1 holds two PCs for a capacity of one; pc-1 is
    # taken off, the rebalance moves pc-0 to s2, and s1 is again the best place for pc-1.
    pcs = [PC("pc-0", "g", "s1"), PC("pc-1", "g", "s1")]
    servers = [ServerStatus("s1", "g", capacity=1), ServerStatus("s2", "g", capacity=2)]
    plan = place(pcs, servers)
    assert plan.placement == {"pc-0": "s2", "pc-1": "s1"}
    assert [(m.pc, m.before, m.after) for m in plan.moves] == [("pc-0", "s1", "s2")]
