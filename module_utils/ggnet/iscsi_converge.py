"""The ggnet_targets run: its options, the driver they describe, and the converge
(read the backend, plan, apply or only report, persist) apart from AnsibleModule.

The module builds its AnsibleModule from argument_spec() and hands the params to
converge(); the unit tests call converge() with a fake driver, the bench in check mode
with with_defaults() filling what AnsibleModule would.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from . import iscsi_lio, iscsi_tgt_conf
from .iscsi import desired_targets, diff, make_driver, plan, targets_from_clients
from .iscsi_types import Driver, IscsiError
from .net import target_iqn
from .settings import BACKENDS

# Ansible's rules between the options; converge() takes `clients` over `targets`.
MUTUALLY_EXCLUSIVE = [("targets", "clients")]
REQUIRED_ONE_OF = [("targets", "clients")]


def argument_spec() -> dict[str, dict[str, Any]]:
    """ggnet_targets' options, as its DOCUMENTATION describes them."""
    lun_spec = {
        "path": {"type": "str", "required": True},
        "kind": {"type": "str", "choices": ["file", "block"], "default": "file"},
    }
    target_spec = {
        "name": {"type": "str"},
        "target_iqn": {"type": "str", "required": True},
        "initiator_iqn": {"type": "str", "required": True},
        "luns": {"type": "list", "elements": "dict", "required": True, "options": lun_spec},
        "chap_user": {"type": "str"},
        "chap_secret": {"type": "str", "no_log": True},
        "chap_mutual_user": {"type": "str"},
        "chap_mutual_secret": {"type": "str", "no_log": True},
    }
    return {
        "backend": {"type": "str", "required": True, "choices": list(BACKENDS)},
        "targets": {"type": "list", "elements": "dict", "options": target_spec},
        "clients": {"type": "list", "elements": "dict"},
        "storage": {"type": "dict", "default": {}},
        "chap_secrets": {"type": "dict", "default": {}, "no_log": True},
        "iqn_prefix": {"type": "str"},
        "force": {"type": "bool", "default": False},
        "retire_only": {"type": "bool", "default": False},
        "persist": {"type": "bool", "default": True},
        "control_port": {"type": "int"},
        "netns": {"type": "str"},
        "conf_path": {"type": "path", "default": iscsi_tgt_conf.DEFAULT_CONF},
        "savefile": {"type": "path", "default": iscsi_lio.DEFAULT_SAVEFILE},
        "portal": {"type": "str", "default": "0.0.0.0"},
        "port": {"type": "int", "default": 3260},
    }


def with_defaults(params: Mapping[str, Any]) -> dict[str, Any]:
    """PARAMS with every top-level option they leave out at its default (None when it
    has none), as AnsibleModule fills them; for callers outside Ansible."""
    return {name: opt.get("default") for name, opt in argument_spec().items()} | dict(params)


def managed_prefix(iqn_prefix: str | None) -> str:
    # Whatever the derivation puts before a client's name marks a ggnet target; with no
    # iqn_prefix that is the default prefix's, so targets someone else made on the same
    # server are never taken for ggnet's and removed.
    return target_iqn("x", iqn_prefix)[:-1]


def driver_for(params: Mapping[str, Any]) -> Driver:
    """The backend's driver from the module's params; no files when not persisting."""
    persist = params["persist"]
    return make_driver(
        params["backend"],
        control_port=params["control_port"],
        netns=params["netns"],
        conf_path=params["conf_path"] if persist else None,
        savefile=params["savefile"] if persist else None,
        portal=params["portal"],
        port=params["port"],
    )


# What a retire run applies: only what takes a disk away from a target, so that the
# storage that follows may destroy or replace it.  Everything else waits for the run
# after storage.
RETIRING_OPS = frozenset({"delete_target", "remove_lun"})


def converge(
    params: Mapping[str, Any], check_mode: bool, driver: Driver | None = None
) -> dict[str, Any]:
    """The whole run for the module's params: returns its result or raises IscsiError.

    Nothing is applied when any target is refused, nor in check mode, which still
    reports the actions and whether the saved configuration would change.

    With retire_only, the plan is the same (and so are its refusals: a target with a
    live session is not retired unless forced) but only RETIRING_OPS are applied and
    nothing is persisted: the full run after storage persists the result.
    """
    if params.get("clients") is not None:
        specs = targets_from_clients(
            params["clients"], params.get("storage") or {}, params.get("chap_secrets") or {}
        )
    else:
        specs = params.get("targets") or []
    wanted = desired_targets(specs)
    driver = driver or driver_for(params)
    found, live = driver.read()
    actions, refused = plan(
        params["backend"],
        wanted,
        found,
        live,
        force=params["force"],
        managed_prefix=managed_prefix(params.get("iqn_prefix")),
    )
    if refused:
        raise IscsiError("; ".join(refused) + ". Nothing was changed.")
    retire_only = bool(params.get("retire_only"))
    if retire_only:
        actions = [a for a in actions if a.op in RETIRING_OPS]
    if actions and not check_mode:
        driver.apply(actions, wanted, found, force=params["force"])
    persisted = False
    if params["persist"] and not retire_only:
        persisted = driver.persist(wanted, check_mode=bool(check_mode))
    return {
        "changed": bool(actions) or persisted,
        "actions": [a.describe() for a in actions],
        "sessions": live,
        "persisted": persisted,
        "targets": len(wanted),
        "diff": diff(wanted, found, actions),
    }
