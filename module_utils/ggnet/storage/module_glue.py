"""What every storage module shares: the sessions and LUN closer it works with, its
iscsi_options, and how it reports a result to Ansible."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from .. import layout, lun_release
from ..iscsi import active_sessions
from ..zfs import ZfsError
from .disks import Closer
from .results import Result, StorageError

# The argument specs of the options doc_fragments/ggnet_storage.py documents for every
# storage module (its DOCUMENTATION) and for those that read sessions (its SESSIONS).
STORAGE_ARGS = {
    "storage": {"type": "dict", "required": True},
    "images": {"type": "dict", "required": True},
}
ISCSI_OPTIONS = {
    "type": "dict",
    "options": {"control_port": {"type": "int"}, "netns": {"type": "str"}},
}
SESSION_ARGS = {
    "sessions": {"type": "dict"},
    "iscsi_backend": {"type": "str"},
    "iscsi_options": ISCSI_OPTIONS,
}


def iscsi_options(value: Mapping[str, Any] | None) -> dict[str, Any]:
    """A module's iscsi_options without the suboptions Ansible filled with None."""
    return {k: v for k, v in (value or {}).items() if v is not None}


def sessions_from_backend(
    backend: str | None, options: Mapping[str, Any] | None = None
) -> dict[str, list[str]] | None:
    """Live sessions from the iSCSI side, or None when they cannot be read.

    `options` go to iscsi.active_sessions (tgt: control_port, netns)."""
    if not backend:
        return None
    try:
        return active_sessions(backend, **dict(options or {}))
    except Exception:  # a missing target daemon means "unknown", never "nobody runs"
        return None


def sessions_and_closer(
    params: Mapping[str, Any],
) -> tuple[Mapping[str, list] | None, Closer | None]:
    """The live sessions a storage module plans with, and the Closer that lets go of a
    client's LUNs around a re-clone: the `sessions` it was given (then nothing is
    closed), else what its iscsi_backend reports for its clients."""
    if params["sessions"] is not None:
        return params["sessions"], None
    backend = params["iscsi_backend"]
    options = iscsi_options(params["iscsi_options"])
    return (
        sessions_from_backend(backend, options),
        lun_release.closer(backend, params["clients"], options),
    )


def run_module(module: Any, operation: Callable[[], Result]) -> None:
    """Run one storage operation for an AnsibleModule and exit with its result: the
    one way every storage module reports actions, diff (only with --diff) and warnings."""
    try:
        result = operation()
    except (StorageError, layout.LayoutError, ZfsError) as exc:
        module.fail_json(msg=str(exc), changed=False)
    out = result.as_dict()
    if not module._diff:
        out.pop("diff")
    for warning in out.pop("warnings"):
        module.warn(warning)
    module.exit_json(**out)
