"""What the last converge gave the iSCSI targets, as the boot server must know it.

The ggnet_api role writes this file (setting `targets_file`, root-only) with the
backend the targets live on and the CHAP credentials they expect, both resolved on the
controller.  The server's own inventory copy cannot stand in for it: the server owns
that copy from its first converge on, and a vault or a lookup only resolves on the
controller.
"""

from __future__ import annotations

import json
from typing import Any

from ggnet import settings

# A client's credentials (ggnet.chap.credentials): one way, or both ways (mutual CHAP).
_CHAP_KEYS = ({"user", "secret"}, {"user", "secret", "mutual_user", "mutual_secret"})


class ConvergedError(ValueError):
    pass


def load(path: str) -> dict[str, Any]:
    """{"backend": lio|tgt, "chap": {client: {"user", "secret"[, "mutual_user", "mutual_secret"]}}}."""
    with open(path, encoding="utf-8") as fh:
        try:
            data = json.load(fh)
        except json.JSONDecodeError as exc:
            raise ConvergedError(f"{path}: not JSON ({exc.msg} at line {exc.lineno})") from exc
    if not isinstance(data, dict):
        raise ConvergedError(f"{path}: must hold a JSON object; converge the ggnet_api role")
    backend = data.get("backend")
    if backend not in settings.BACKENDS:
        raise ConvergedError(
            f"{path}: backend {backend!r} is not one of {', '.join(settings.BACKENDS)}; "
            "converge the ggnet_api role (playbooks/site.yml --tags api)"
        )
    chap = data.get("chap") or {}
    bad = [name for name, c in chap.items() if not isinstance(c, dict) or set(c) not in _CHAP_KEYS]
    if bad:
        raise ConvergedError(
            f"{path}: chap entries of {', '.join(sorted(bad))} need user and secret "
            "(and with mutual CHAP mutual_user and mutual_secret)"
        )
    return {"backend": backend, "chap": chap}
