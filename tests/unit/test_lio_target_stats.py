"""LIO's per-target login and error counters, and the totals that never go down."""

from __future__ import annotations

import pytest

from ggnet_api.lio_target_stats import Totals, read_lio_target_stats

pytestmark = pytest.mark.unit

IQN = "iqn.2024-01.lan.ggnet:pc-01"


def target(root, iqn: str, **values: int) -> None:
    """A target's fabric_statistics as configfs shows them (file names as the kernel's)."""
    files = {
        "accepts": "iscsi_login_stats",
        "authenticate_fails": "iscsi_login_stats",
        "authorize_fails": "iscsi_login_stats",
        "negotiate_fails": "iscsi_login_stats",
        "other_fails": "iscsi_login_stats",
        "digest_errors": "iscsi_sess_err",
        "cxn_errors": "iscsi_sess_err",
        "format_errors": "iscsi_sess_err",
    }
    for name, directory in files.items():
        d = root / iqn / "fabric_statistics" / directory
        d.mkdir(parents=True, exist_ok=True)
        (d / name).write_text(f"{values.get(name, 0)}\n")


def test_reads_every_counter_of_every_target(tmp_path):
    target(tmp_path, IQN, accepts=7, authenticate_fails=2, cxn_errors=3)
    (tmp_path / "discovery_auth").mkdir()  # configfs has more than targets
    got = read_lio_target_stats(tmp_path)
    assert got[(IQN, "logins", "")] == 7
    assert got[(IQN, "login_failures", "authenticate")] == 2
    assert got[(IQN, "login_failures", "other")] == 0
    assert got[(IQN, "errors", "connection")] == 3
    assert len(got) == 8


def test_absent_lio_raises(tmp_path):
    with pytest.raises(FileNotFoundError):
        read_lio_target_stats(tmp_path / "none")


def test_totals_survive_a_target_made_again():
    t = Totals()
    assert t.update({"a": 5}) == {"a": 5}
    assert t.update({"a": 8}) == {"a": 8}
    assert t.update({"a": 2}) == {"a": 10}  # the target was made again: 2 new
    assert t.update({}) == {"a": 10}  # gone
    assert t.update({"a": 1}) == {"a": 11}  # back, from 0
