"""modules/ggnet_targets.py loaded outside Ansible, for the unit tests and the iSCSI
bench (which call its converge() directly)."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

MODULE = Path(__file__).resolve().parents[2] / "modules" / "ggnet_targets.py"


def load():
    # The module imports ansible.module_utils.ggnet.*; outside Ansible that is the
    # very same `ggnet` package.
    import ggnet
    from ggnet import iscsi, iscsi_lio, iscsi_tgt, net

    for name, obj in {
        "": ggnet,
        ".iscsi": iscsi,
        ".iscsi_tgt": iscsi_tgt,
        ".iscsi_lio": iscsi_lio,
        ".net": net,
    }.items():
        sys.modules.setdefault(f"ansible.module_utils.ggnet{name}", obj)
    spec = importlib.util.spec_from_file_location("ggnet_targets_module", MODULE)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod
