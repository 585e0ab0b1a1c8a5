"""CHAP credentials: what a user or secret may hold, and each PC's own secret.

One rule for every place a credential travels: validation, the target drivers and
the iPXE script.  A value must be printable ASCII without whitespace, '$', '#',
quotes or backslashes: iPXE's command line splits words on whitespace, expands ${..},
may start a comment at '#' and (newer builds) parses quotes and backslashes; tgt's
configuration file splits on whitespace and comments at '#'.  A secret is also 12 to
16 characters, the Windows initiator's limits (a PC booted through iBFT hands the
secret to Windows, which refuses other lengths).

Each PC's secret is derived from the server secret (ggnet_iscsi.chap_secret) and the
PC's name, so the credentials one PC's script carries open no other PC's target.
The derivation is a keyed hash: the controller (the iSCSI role, through the ggnet
filters) and the API compute the same value without sharing anything but the server
secret.  With mutual CHAP the target proves itself to the PC with a secret derived
the same way under another label.
"""

from __future__ import annotations

import hashlib
import hmac
import string
from collections.abc import Mapping
from typing import Any

from .net import initiator_iqn, target_iqn
from .settings import CHAP_MAX, CHAP_MIN

# Characters iPXE's `set` or tgt's configuration would interpret (see above).
UNSAFE = frozenset(" \t\r\n$#\"'\\")
# A derived secret: letters and digits only, at the longest length Windows accepts.
DERIVED_ALPHABET = string.digits + string.ascii_letters
DERIVED_LENGTH = CHAP_MAX
# Labels that keep the PC's and the target's secrets apart; -v1 names this scheme, so
# a future one can never collide with the secrets it gave.
_INITIATOR_LABEL = "ggnet-chap-v1:initiator:"
_TARGET_LABEL = "ggnet-chap-v1:target:"


class ChapError(ValueError):
    """A credential breaks the rule; the message never holds the value itself."""


def unsafe_chars(value: str) -> list[str]:
    """The characters of `value` a script or a target cannot carry, sorted, each once."""
    return sorted({c for c in value if c in UNSAFE or not (c.isascii() and c.isprintable())})


def chars_problem(value: str) -> str | None:
    """Why `value` breaks the character rule (no value shown), or None."""
    bad = unsafe_chars(value)
    if not bad:
        return None
    shown = ", ".join(repr(c) for c in bad)
    return (
        f"contains {shown}; use printable ASCII without spaces, '$', '#', quotes or "
        "backslashes (an iPXE script and the target configuration cannot carry them)"
    )


def secret_problem(secret: object) -> str | None:
    """Why `secret` is no usable CHAP secret (never showing it), or None."""
    if not isinstance(secret, str):
        return "must be a string"
    if not CHAP_MIN <= len(secret) <= CHAP_MAX:
        return (
            f"has {len(secret)} characters; it needs {CHAP_MIN} to {CHAP_MAX} "
            "(the Windows initiator's limits)"
        )
    return chars_problem(secret)


def check_secret(secret: object, where: str) -> str:
    wrong = secret_problem(secret)
    if wrong:
        raise ChapError(f"{where}: the CHAP secret {wrong}")
    assert isinstance(secret, str)  # secret_problem refuses anything else
    return secret


def _derive(server_secret: str, label: str, name: str) -> str:
    digest = hmac.new(
        server_secret.encode("utf-8"), (label + name).encode("utf-8"), hashlib.sha256
    ).digest()
    # 256 bits in base 62: the 16 lowest digits keep about 95 bits.
    number = int.from_bytes(digest, "big")
    out = []
    for _ in range(DERIVED_LENGTH):
        number, digit = divmod(number, len(DERIVED_ALPHABET))
        out.append(DERIVED_ALPHABET[digit])
    return "".join(out)


def pc_secret(server_secret: str, name: str) -> str:
    """The secret PC `name` answers its target's challenge with."""
    return _derive(server_secret, _INITIATOR_LABEL, name)


def target_secret(server_secret: str, name: str) -> str:
    """The secret PC `name`'s target answers the PC's challenge with (mutual CHAP)."""
    return _derive(server_secret, _TARGET_LABEL, name)


def credentials(
    name: str, iscsi: Mapping[str, Any], pinned: object = None
) -> dict[str, str] | None:
    """PC `name`'s CHAP credentials under the server's ggnet_iscsi, or None when CHAP is off.

    {"user", "secret"} and, with chap_mutual, {"mutual_user", "mutual_secret"}.  The user
    is the initiator IQN (what iPXE and Windows default to), the mutual user the target
    IQN.  `pinned` is the host var ggnet_chap_secret: it replaces the derived PC secret
    (the target's secret is always derived).  The server secret is required either way,
    as validation requires it.
    Raises ChapError when a needed secret is missing or breaks the rule.
    """
    if not iscsi.get("chap"):
        return None
    server = iscsi.get("chap_secret")
    if not server:
        raise ChapError(f"{name}: ggnet_iscsi.chap is on but ggnet_iscsi.chap_secret is not set")
    check_secret(server, f"{name}: ggnet_iscsi.chap_secret")
    secret = (
        check_secret(pinned, f"{name}: ggnet_chap_secret") if pinned else pc_secret(server, name)
    )
    prefix = iscsi.get("iqn_prefix")
    out = {"user": initiator_iqn(name, prefix), "secret": secret}
    if iscsi.get("chap_mutual"):
        out["mutual_user"] = target_iqn(name, prefix)
        out["mutual_secret"] = target_secret(server, name)
        if out["mutual_secret"] == secret:
            # RFC 7143 forbids one secret both ways (and Windows refuses it).
            raise ChapError(f"{name}: ggnet_chap_secret equals the target's secret; pick another")
    return out
