"""The configuration tgt's service restores at start (tgt-admin reads it), as ggnet writes it.

tgtadm never shows a CHAP password: the secrets of the previous converge are read back
from this file (mode 0600, root only) so an unchanged secret is not reset each run.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Mapping

from .files import write_atomic
from .iscsi_types import Target

DEFAULT_CONF = "/etc/tgt/conf.d/ggnet.conf"

# tgt-admin binds the address rule "ALL" to a target whose configuration has no
# initiator-address, and "ALL" admits every initiator whatever the name rule says.
# The limited broadcast address is never a TCP peer's, so this rule admits no one.
NO_ADDRESS = "255.255.255.255/32"
CONF_HEADER = (
    "# Written by ggnet (modules/ggnet_targets.py); changes here are overwritten.\n"
    "# tgt's service reads it at start through the include in /etc/tgt/targets.conf.\n"
)


def read_conf_secrets(path: str) -> dict[str, dict[str, tuple[str, str]]]:
    """{target_iqn: {"incominguser" | "outgoinguser": (user, secret)}} from a configuration
    this driver wrote (incoming: the PC's account; outgoing: the target's, mutual CHAP)."""
    out: dict[str, dict[str, tuple[str, str]]] = {}
    try:
        with open(path, encoding="utf-8") as fh:
            text = fh.read()
    except FileNotFoundError:
        return out
    iqn = None
    for line in text.splitlines():
        words = line.split()
        if words[:1] == ["<target"] and len(words) == 2:
            iqn = words[1].rstrip(">")
        elif words[:1] == ["</target>"]:
            iqn = None
        elif iqn and words[:1] in (["incominguser"], ["outgoinguser"]) and len(words) == 3:
            out.setdefault(iqn, {})[words[0]] = (words[1], words[2])
    return out


def render_conf(wanted: Mapping[str, Target]) -> str:
    parts = [CONF_HEADER]
    for iqn in sorted(wanted):
        t = wanted[iqn]
        parts.append(f"\n<target {iqn}>\n")
        if t.name:
            parts.append(f"    # client {t.name}\n")
        for i, lun in enumerate(t.luns):
            # An explicit lun keeps the numbering the boot path uses (first disk = 1);
            # a zvol is opened O_DIRECT as the live LUN is (iscsi_tgt.bs_flags).
            direct = "        bsoflags direct\n" if lun.kind == "block" else ""
            parts.append(
                f"    <backing-store {lun.path}>\n        lun {1 + i}\n        bs-type rdwr\n"
                f"{direct}    </backing-store>\n"
            )
        parts.append(f"    initiator-address {NO_ADDRESS}\n    initiator-name {t.initiator}\n")
        # tgt-admin passes these to `tgtadm --op update --mode target` at start.
        parts.extend(f"    {key} {value}\n" for key, value in t.params.items())
        if t.chap:
            parts.append(f"    incominguser {t.chap_user} {t.chap_secret}\n")
            if t.mutual_user:
                parts.append(f"    outgoinguser {t.mutual_user} {t.mutual_secret}\n")
        parts.append("</target>\n")
    return "".join(parts)


def write_conf(path: str, text: str, check_mode: bool = False) -> bool:
    try:
        with open(path, encoding="utf-8") as fh:
            old = fh.read()
        mode = stat.S_IMODE(os.stat(path).st_mode)
    except FileNotFoundError:
        old, mode = None, None
    if old == text and mode == 0o600:
        return False
    if check_mode:
        return True
    # 0600 before the secrets go in: never a half-written or world-readable file.
    write_atomic(path, text, mode=0o600)
    return True
