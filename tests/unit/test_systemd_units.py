"""ggnet.systemd_units: the ggnet_units module's plan from `systemctl show` output."""

from __future__ import annotations

import pytest
from ggnet.systemd_units import UnitError, Wanted, needs_reload, parse_show, plan

pytestmark = pytest.mark.unit

SHOW = """\
Id=ggnet-privd.service
LoadState=loaded
ActiveState=active
UnitFileState=enabled
NeedDaemonReload=no

Id=ggnet-api.service
LoadState=loaded
ActiveState=inactive
UnitFileState=disabled
NeedDaemonReload=yes

Id=ggnet-preflight-metrics.timer
LoadState=loaded
ActiveState=active
UnitFileState=static
NeedDaemonReload=no
"""


def test_show_output_parses_into_one_mapping_per_unit():
    units = parse_show(SHOW)
    assert [u["Id"] for u in units] == [
        "ggnet-privd.service",
        "ggnet-api.service",
        "ggnet-preflight-metrics.timer",
    ]
    assert units[1]["NeedDaemonReload"] == "yes"


def test_only_what_differs_is_run_and_a_changed_unit_file_asks_for_a_reload():
    units = parse_show(SHOW)
    wanted = [
        Wanted("ggnet-privd.service"),
        Wanted("ggnet-api.service"),
        Wanted("ggnet-preflight-metrics.timer"),
    ]
    assert needs_reload(units)
    todo = plan(wanted, units)
    assert todo.enable == ["ggnet-api.service"]
    assert todo.start == ["ggnet-api.service"]
    assert todo.actions() == ["enable ggnet-api.service", "start ggnet-api.service"]


def test_everything_as_wanted_is_no_change_and_no_reload():
    units = parse_show(
        SHOW.replace("inactive", "active").replace("disabled", "enabled").replace("=yes", "=no")
    )
    wanted = [
        Wanted("ggnet-privd.service"),
        Wanted("ggnet-api.service"),
        Wanted("ggnet-preflight-metrics.timer"),
    ]
    assert not needs_reload(units)
    assert not plan(wanted, units).changed


def test_a_unit_wanted_off_is_disabled_and_stopped_and_an_absent_one_is_left_alone():
    units = parse_show(
        "Id=tgt.service\nLoadState=loaded\nActiveState=active\nUnitFileState=enabled\n\n"
        "Id=gone.service\nLoadState=not-found\nActiveState=inactive\nUnitFileState=\n"
    )
    todo = plan(
        [Wanted("tgt.service", enabled=False, started=False), Wanted("gone.service", False, False)],
        units,
    )
    assert todo.actions() == ["disable tgt.service", "stop tgt.service"]


def test_a_unit_systemd_does_not_know_is_named_with_what_to_check():
    units = parse_show("Id=ggnet-api.service\nLoadState=not-found\nActiveState=inactive\n")
    with pytest.raises(UnitError, match=r"unit ggnet-api\.service is not-found to systemd"):
        plan([Wanted("ggnet-api.service")], units)


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ({"name": "ggnet-api"}, "with its suffix"),
        ({"name": "a.service", "state": "restarted"}, "not started, stopped"),
    ],
)
def test_bad_entries_are_refused_by_name(raw, message):
    with pytest.raises(UnitError, match=message):
        Wanted.parse(raw)


def test_a_unit_only_enabled_is_never_started_or_stopped():
    units = parse_show(
        "Id=rtslib-fb-targetctl.service\nLoadState=loaded\nActiveState=inactive\nUnitFileState=disabled\n"
    )
    todo = plan([Wanted.parse({"name": "rtslib-fb-targetctl.service", "state": None})], units)
    assert todo.actions() == ["enable rtslib-fb-targetctl.service"]
