"""A PC's writeback is reset once its session has ended, so that its next boot only
checks it: what the API skips, and what privd asks of storage (a live session refused,
as privd itself reads the backend)."""

from __future__ import annotations

import dataclasses
import logging

import pytest
from ggnet_testing.api_project import ALL, HOSTS, inventory_app

from ggnet_api.locks import Claim
from ggnet_privd.protocol import OpError

pytestmark = pytest.mark.unit
IQN = "iqn.2024-01.net.ggnet:pc-01"


@pytest.fixture
def calls(monkeypatch):
    """storage.reset's calls (client, boot, sessions) and the live sessions privd reads."""
    from ggnet import iscsi, storage

    seen: list[tuple[str, bool, dict]] = []

    def reset(_s, _i, _c, name, boot=False, sessions=None, **_k):
        seen.append((name, boot, sessions))

    monkeypatch.setattr(storage, "reset", reset)
    live: dict[str, list[str]] = {}
    monkeypatch.setattr(iscsi, "active_sessions", lambda backend, **o: dict(live))
    return seen, live


def app_with(tmp_path, **settings):
    return inventory_app(tmp_path, HOSTS, ALL, reset_on_boot=True, **settings)


def test_privd_resets_with_the_sessions_it_reads_itself(tmp_path, calls):
    seen, live = calls
    e = app_with(tmp_path).extensions["ggnet"]
    live[IQN] = ["iqn.pc-01"]
    assert e.boot.reset_after_session("pc-01")
    # Not the boot path (which takes a live session as its own): storage refuses it.
    assert seen == [("pc-01", False, {IQN: ["iqn.pc-01"]})]


def test_a_refusal_is_logged_and_nothing_else(tmp_path, calls, monkeypatch, caplog):
    from ggnet import storage

    def refuse(*_a, **_k):
        raise storage.StorageError("pc-01 has a live iSCSI session")

    monkeypatch.setattr(storage, "reset", refuse)
    caplog.set_level(logging.INFO, logger="ggnet_api.boot_service")
    e = app_with(tmp_path).extensions["ggnet"]
    assert not e.boot.reset_after_session("pc-01")
    assert "not reset after its session: pc-01 has a live iSCSI session" in caplog.text


@pytest.mark.parametrize(
    "settings",
    [{"reset_on_session_end": False}, {"reset_on_boot": False}],
)
def test_off_when_the_settings_say_so(tmp_path, calls, settings):
    e = inventory_app(tmp_path, HOSTS, ALL, **{"reset_on_boot": True, **settings}).extensions[
        "ggnet"
    ]
    assert not e.boot.reset_after_session("pc-01")
    assert calls[0] == []


def test_not_in_maintenance_nor_during_a_job_nor_for_a_stranger(tmp_path, calls):
    e = app_with(tmp_path).extensions["ggnet"]
    snap = e.inventory.snapshot
    snap.clients["pc-01"] = {**snap.clients["pc-01"], "keep_writeback": True}
    assert not e.boot.reset_after_session("pc-01")
    snap.clients["pc-01"] = {**snap.clients["pc-01"], "keep_writeback": False}
    with e.boot.locks.holding("job:x", Claim.of({"pc:pc-01"}), "job x"):
        assert not e.boot.reset_after_session("pc-01")
    assert not e.boot.reset_after_session("pc-99")
    assert calls[0] == []


def test_privd_refuses_without_a_backend_to_ask(tmp_path, calls):
    e = app_with(tmp_path).extensions["ggnet"]
    ops = e.boot.privileged.ops
    ops.inventory.snapshot = dataclasses.replace(ops.inventory.snapshot, iscsi={})
    with pytest.raises(OpError, match="no iSCSI backend"):
        ops.call("reset_idle", {"client": "pc-01"})
    assert calls[0] == []


@pytest.mark.parametrize(
    "key, value, says",
    [
        ("reset_workers", 0, "reset_workers: '0' is not a whole number from 1 to 64"),
        ("reset_workers", True, "reset_workers: 'True' is not"),
        ("iscsi_options", {"portal": "x"}, "iscsi_options: .*'portal'.* control_port and netns"),
        ("iscsi_options", "netns", "iscsi_options: 'netns' is not a mapping"),
    ],
)
def test_the_new_settings_are_checked(monkeypatch, key, value, says):
    from ggnet_api import config

    monkeypatch.delenv("GGNET_API_CONFIG", raising=False)
    with pytest.raises(ValueError, match=says):
        config.load(**{key: value})
