"""What the storage modules share: their sessions and LUN closer, from their params."""

from __future__ import annotations

import contextlib

import pytest
from ggnet.storage import module_glue

pytestmark = pytest.mark.unit

PARAMS = {
    "sessions": None,
    "iscsi_backend": None,
    "iscsi_options": None,
    "clients": [{"name": "pc-1", "target_iqn": "iqn.2025-01.lan.ggnet:pc-1"}, {"name": "pc-2"}],
}


def test_given_sessions_are_used_and_nothing_is_closed():
    sessions = {"iqn.2025-01.lan.ggnet:pc-1": ["iqn.x"]}
    params = {**PARAMS, "sessions": sessions, "iscsi_backend": "tgt"}
    assert module_glue.sessions_and_closer(params) == (sessions, None)


def test_no_backend_means_sessions_unknown_and_no_closer():
    assert module_glue.sessions_and_closer(PARAMS) == (None, None)


def test_a_backend_gives_its_sessions_and_a_closer(monkeypatch):
    asked = []

    def active_sessions(backend, **options):
        asked.append((backend, options))
        return {}

    monkeypatch.setattr(module_glue, "active_sessions", active_sessions)
    params = {**PARAMS, "iscsi_backend": "tgt", "iscsi_options": {"control_port": 9, "netns": None}}
    sessions, closer = module_glue.sessions_and_closer(params)
    assert sessions == {} and asked == [("tgt", {"control_port": 9})]
    # A client without a target has no LUNs to close.
    assert isinstance(closer("pc-2"), contextlib.nullcontext)
