"""iSCSI targets, backend-neutral: the desired state, the plan, sessions, SAN URIs.

One target per client.  Its disks are listed in order (system disk, then game disk)
and the backend decides their LUN numbers: tgt keeps LUN 0 for its controller, so
its first disk is LUN 1; LIO's first disk is LUN 0.  Anything that needs a LUN number
(the iPXE script, a test) asks lun_number() or san_uri() instead of assuming one.

The drivers (iscsi_tgt, iscsi_lio) read the live state into the same Target type, so
plan() compares like with like and the drivers only execute Actions.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from . import chap
from .iscsi_types import (  # noqa: F401
    DISK_KINDS,
    LUN_BASE,
    MASK,
    OPS,
    SESSION_PARAMS,
    UNKNOWN_SECRET,
    Action,
    Backend,
    Driver,
    IscsiError,
    Lun,
    Target,
)

# The shared types, handed on: the modules, the API and the bench import them from here.
from .net import is_ipv6, is_iscsi_name
from .settings import BACKENDS

DEFAULT_PORT = 3260


def portal(server_ip: str | None) -> str:
    """ "address:port" where the PCs reach their targets (what san_uri names): the
    server's address on the room's network, or loopback on a server without one."""
    return f"{server_ip or '127.0.0.1'}:{DEFAULT_PORT}"


# Login keys apply to the next login only: changing them never touches a live
# session, so a live session does not hold them back (an upgrade of ggnet on a busy
# server must not fail on every running client).
NON_DISRUPTIVE = frozenset({"set_params"})


def check_backend(backend: str) -> str:
    if backend not in BACKENDS:
        raise IscsiError(
            f"ggnet_iscsi.backend: {backend!r} is not a known backend; use one of {', '.join(BACKENDS)}"
        )
    return backend


def lun_number(backend: str, disk_index: int = 0) -> int:
    """The LUN under which the backend exposes a target's disk number `disk_index`."""
    return LUN_BASE[check_backend(backend)] + disk_index


def san_uri(
    server_ip: str,
    target_iqn: str,
    backend: str,
    disk_index: int = 0,
    port: int = DEFAULT_PORT,
) -> str:
    """The iPXE `sanboot` URI of a client's disk: iscsi:<server>::<port>:<lun>:<iqn>.

    The protocol field stays empty (iPXE knows only TCP, 6); IPv6 servers are
    bracketed since the URI is colon-separated.
    """
    host = str(server_ip)
    if is_ipv6(host):  # else an IPv4 address or a host name, which iPXE resolves
        host = f"[{host}]"
    return f"iscsi:{host}::{int(port)}:{lun_number(backend, disk_index)}:{target_iqn}"


def check_chap_secret(secret: object, where: str) -> str:
    """Validate a CHAP secret (ggnet.chap's rule) without ever putting it in the message."""
    if not isinstance(secret, str) or not secret:
        raise IscsiError(
            f"{where}: CHAP is on but no chap_secret is set (set ggnet_iscsi.chap_secret or the host var ggnet_chap_secret)"
        )
    try:
        return chap.check_secret(secret, where)
    except chap.ChapError as exc:
        raise IscsiError(str(exc)) from None


def target_from_spec(spec: Mapping[str, Any], where: str | None = None) -> Target:
    """A Target from a plain dict: name, target_iqn, initiator_iqn, luns, chap_user, chap_secret."""
    where = where or str(spec.get("name") or spec.get("target_iqn") or "target")
    iqn = spec.get("target_iqn")
    if not isinstance(iqn, str) or not is_iscsi_name(iqn):
        raise IscsiError(f"{where}: target_iqn {iqn!r} is not an iSCSI name")
    initiator = spec.get("initiator_iqn")
    if not isinstance(initiator, str) or not is_iscsi_name(initiator):
        raise IscsiError(f"{where}: initiator_iqn {initiator!r} is not an iSCSI name")
    luns = []
    for i, lun in enumerate(spec.get("luns") or []):
        path = lun.get("path") if isinstance(lun, Mapping) else None
        if not isinstance(path, str) or not path.startswith("/"):
            raise IscsiError(f"{where}: luns[{i}].path {path!r} is not an absolute path")
        try:
            luns.append(Lun(path, lun.get("kind") or "file"))
        except IscsiError as exc:
            raise IscsiError(f"{where}: luns[{i}]: {exc}") from None
    if not luns:
        raise IscsiError(f"{where}: a target needs at least one LUN (its writeback)")
    user, secret = spec.get("chap_user"), spec.get("chap_secret")
    if user or secret:
        check_chap_secret(secret, where)
        user = user or initiator
    mutual_user, mutual_secret = spec.get("chap_mutual_user"), spec.get("chap_mutual_secret")
    if mutual_user or mutual_secret:
        if not user:
            raise IscsiError(f"{where}: mutual CHAP needs CHAP (a chap_secret) as well")
        check_chap_secret(mutual_secret, f"{where}: chap_mutual_secret")
        if mutual_secret == secret:
            raise IscsiError(f"{where}: the mutual CHAP secret must differ from the CHAP secret")
        mutual_user = mutual_user or iqn
    return Target(
        iqn=iqn,
        initiator=initiator,
        luns=luns,
        chap_user=user or None,
        chap_secret=secret if user else None,
        mutual_user=mutual_user or None,
        mutual_secret=mutual_secret if mutual_user else None,
        name=str(spec.get("name") or ""),
        params=dict(SESSION_PARAMS),
    )


def desired_targets(specs: Iterable[Mapping[str, Any]]) -> dict[str, Target]:
    out: dict[str, Target] = {}
    users: dict[str, str] = {}
    for spec in specs:
        t = target_from_spec(spec)
        where = t.name or t.iqn
        if t.iqn in out:
            raise IscsiError(
                f"{where}: target_iqn {t.iqn} is also wanted by {out[t.iqn].name or 'another entry'}"
            )
        if t.chap_user:
            # tgt's accounts are global: one user name cannot carry two secrets.
            if t.chap_user in users:
                raise IscsiError(
                    f"{where}: chap_user {t.chap_user} is also used by {users[t.chap_user]}"
                )
            users[t.chap_user] = where
        out[t.iqn] = t
    return out


def targets_from_clients(
    clients: Sequence[Mapping[str, Any]],
    storage: dict[str, Any],  # ggnet_storage, as every layout function takes it
    chap_secrets: Mapping[str, str] | None = None,
) -> list[dict[str, Any]]:
    """Plain target specs from normalised client dicts (model.clients()).

    chap_secrets maps a client name to its secret, or to its credentials
    (model.chap_credentials: secret, and mutual_user + mutual_secret with mutual CHAP);
    a client with `chap` on and no entry is an error.  The backing paths come from layout.writeback_backing, the one
    place that knows where writebacks live.
    """
    from .layout import writeback_backing

    chap_secrets = chap_secrets or {}
    specs = []
    for c in clients:
        name = c["name"]
        luns = []
        for role, wanted in (("system", True), ("game", bool(c.get("game_disk")))):
            if wanted:
                path, kind = writeback_backing(storage, name, role)
                luns.append({"path": path, "kind": kind})
        spec = {
            "name": name,
            "target_iqn": c["target_iqn"],
            "initiator_iqn": c["initiator_iqn"],
            "luns": luns,
        }
        if c.get("chap"):
            spec["chap_user"] = c["initiator_iqn"]
            given = chap_secrets.get(name)
            creds = given if isinstance(given, Mapping) else {"secret": given}
            spec["chap_secret"] = creds.get("secret")
            if creds.get("mutual_secret"):
                spec["chap_mutual_user"] = creds.get("mutual_user") or c["target_iqn"]
                spec["chap_mutual_secret"] = creds["mutual_secret"]
        specs.append(spec)
    return specs


def plan_target(backend: str, want: Target | None, have: Target | None) -> list[Action]:
    base = LUN_BASE[backend]
    if want is None and have is None:
        return []
    if want is None:
        assert have is not None  # both None returned above
        return [Action("delete_target", have.iqn)]
    iqn = want.iqn
    acts: list[Action]
    if have is None:
        acts = [Action("create_target", iqn)]
        acts += [
            Action("add_lun", iqn, lun=base + i, backing=lun) for i, lun in enumerate(want.luns)
        ]
        acts.append(Action("add_acl", iqn, initiator=want.initiator))
        if want.chap:
            acts.append(Action("set_chap", iqn, initiator=want.initiator))
        if want.params:
            acts.append(Action("set_params", iqn))
        return acts
    acts = []
    have_luns = dict(enumerate(have.luns))
    for i in range(max(len(want.luns), len(have.luns))):
        w, h = (want.luns[i] if i < len(want.luns) else None), have_luns.get(i)
        if w == h:
            continue
        if h is not None:
            acts.append(Action("remove_lun", iqn, lun=base + i, backing=h))
        if w is not None:
            acts.append(Action("add_lun", iqn, lun=base + i, backing=w))
    found = [have.initiator] if have.initiator else []
    for extra in [*found, *have.extra_initiators]:
        if extra != want.initiator:
            acts.append(Action("remove_acl", iqn, initiator=extra))
    if want.initiator not in found + have.extra_initiators:
        acts.append(Action("add_acl", iqn, initiator=want.initiator))
    if want.chap and want.chap_state() != have.chap_state():
        acts.append(Action("set_chap", iqn, initiator=want.initiator))
    elif not want.chap and have.chap:
        acts.append(Action("clear_chap", iqn, initiator=have.initiator))
    if want.params_differ(have):
        acts.append(Action("set_params", iqn))
    return acts


def plan(
    backend: str,
    wanted: Mapping[str, Target],
    found: Mapping[str, Target],
    sessions: Mapping[str, Sequence[str]],
    force: bool = False,
    managed_prefix: str | None = None,
) -> tuple[list[Action], list[str]]:
    """Actions turning `found` into `wanted`, and the refusals (empty when all is allowed).

    Only found targets whose IQN starts with managed_prefix are removed when no client
    wants them, so targets someone else made on the same server are left alone.  A
    target with a live session is neither removed nor changed unless `force`, except
    for its login keys (NON_DISRUPTIVE), which only the next login sees.
    """
    check_backend(backend)
    actions: list[Action] = []
    refused: list[str] = []
    for iqn in sorted(set(wanted) | set(found)):
        want, have = wanted.get(iqn), found.get(iqn)
        if want is None and managed_prefix is not None and not iqn.startswith(managed_prefix):
            continue
        acts = plan_target(backend, want, have)
        if not acts:
            continue
        live = list(sessions.get(iqn) or [])
        if live and not force and not {a.op for a in acts} <= NON_DISRUPTIVE:
            what = (
                "removed"
                if want is None
                else "changed (" + ", ".join(sorted({a.op for a in acts})) + ")"
            )
            refused.append(
                f"target {iqn} would be {what} but has a live session from "
                f"{', '.join(live)}; shut that client down first, or pass force=true "
                "(ggnet_iscsi_force: true) to drop its session"
            )
            continue
        actions.extend(acts)
    return actions, refused


def diff(
    wanted: Mapping[str, Target], found: Mapping[str, Target], actions: Sequence[Action]
) -> dict[str, Any]:
    """Ansible's before/after, for the targets the actions touch, secrets masked."""
    touched = sorted({a.iqn for a in actions})
    before = {iqn: found[iqn].summary() for iqn in touched if iqn in found}
    after = {iqn: wanted[iqn].summary() for iqn in touched if iqn in wanted}
    return {"before": before, "after": after}


def _driver(backend: str) -> Backend:
    if check_backend(backend) == "tgt":
        from . import iscsi_tgt

        return iscsi_tgt
    from . import iscsi_lio

    return iscsi_lio


def active_sessions(backend: str, **options: Any) -> dict[str, list[str]]:
    """{target_iqn: [initiator_iqn, ...]} for every target with a logged-in initiator.

    Options go to the driver: tgt takes control_port (tgtd -C) and netns (a netns
    name to run tgtadm in); lio takes none.
    """
    return _driver(backend).sessions(**options)


def driver(backend: str) -> Backend:
    """The module (iscsi_tgt or iscsi_lio) that reads and changes the backend."""
    return _driver(backend)


# What each backend's Driver takes: tgt where tgtd listens and the file it persists
# to, LIO its savefile and the portal it creates.
_DRIVER_OPTIONS = {
    "tgt": ("control_port", "netns", "conf_path"),
    "lio": ("savefile", "portal", "port"),
}


def make_driver(backend: str, **options: Any) -> Driver:
    """The backend's Driver from the options it takes; the other backend's are left
    out, so a caller may pass both backends' settings (None for a file: no persisting)."""
    drv = _driver(backend)
    return drv.Driver(**{k: v for k, v in options.items() if k in _DRIVER_OPTIONS[backend]})
