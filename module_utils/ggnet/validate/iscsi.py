"""Checks of a server's ggnet_iscsi: backend, CHAP secret and mode, IQN prefix."""

from __future__ import annotations

from typing import Any

from ..chap import secret_problem
from ..net import check_iqn_prefix
from ..settings import BACKENDS
from .fields import _bool, _choice
from .problems import _Collector
from .values import UNRESOLVED


def _check_iscsi(out: _Collector, host: str, iscsi: dict[str, Any]) -> str | None:
    key = "ggnet_iscsi"
    _choice(out, host, f"{key}.backend", iscsi.get("backend"), BACKENDS)
    chap = iscsi.get("chap")
    _bool(out, host, f"{key}.chap", chap)
    secret = iscsi.get("chap_secret")
    if chap is True and secret is not UNRESOLVED:
        if secret in (None, ""):
            out.add(
                host,
                f"{key}.chap_secret",
                None,
                "CHAP is on but no secret is set: set chap_secret from an Ansible Vault "
                "variable, or set chap: false",
            )
        elif (wrong := secret_problem(secret)) is not None:
            out.add_secret(host, f"{key}.chap_secret", secret, wrong)
    _bool(out, host, f"{key}.chap_mutual", iscsi.get("chap_mutual"))
    prefix = iscsi.get("iqn_prefix")
    if prefix is UNRESOLVED:
        return None
    try:
        return check_iqn_prefix(prefix)
    except ValueError as exc:
        out.add(host, f"{key}.iqn_prefix", prefix, str(exc))
        return None
