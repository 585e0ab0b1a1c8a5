"""Checks of one client PC against the server(s) that may serve it: placement, name, MAC,
images, IP."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from .. import console, redfish
from ..chap import secret_problem
from ..net import check_iqn_name, initiator_iqn, normalize_mac, target_iqn
from ..settings import BOOT_MODES, CLIENT_DEFAULTS, LAB_FIRMWARES, SETTINGS_KEYS
from .fields import _a_server, _bool, _choice, _inside, _ip_field, _unknown
from .problems import _Collector
from .values import UNRESOLVED


def _check_client(
    out: _Collector,
    name: str,
    hv: Mapping[str, Any],
    targets: list[str],
    parsed: Mapping[str, dict[str, Any]],
    hostvars: Mapping[str, Mapping[str, Any]],
    macs: dict[str, str],
    ips: dict[str, str],
) -> None:
    """`targets`: the servers this PC may boot from (_placement's answer)."""
    info = parsed.get(targets[0], {}) if targets else {}
    # A server's settings apply to the PCs placed on it; a PC not placed yet is compared
    # once placement has written its ggnet_server.
    if len(targets) == 1:
        server = targets[0]
        for key in SETTINGS_KEYS:
            mine, theirs = hv.get(key), hostvars.get(server, {}).get(key)
            if mine is not UNRESOLVED and theirs is not UNRESOLVED and mine != theirs:
                out.add(
                    name,
                    key,
                    None,
                    f"differs from its server {server}'s: {key} is a server setting, "
                    "set it for the server (group_vars/all.yml or ggnet_servers)",
                )

    try:
        check_iqn_name(name)
        prefix = info.get("iqn_prefix")
        target_iqn(name, prefix)
        initiator_iqn(name, prefix)
    except ValueError as exc:
        out.add(name, "name", name, str(exc))

    vnc = hv.get("ggnet_console_vnc")
    if vnc not in (None, "", UNRESOLVED):
        wrong = console.check_vnc_endpoint(vnc)
        if wrong:
            out.add(name, "ggnet_console_vnc", vnc, wrong)

    mac = hv.get("ggnet_mac")
    if mac is None:
        out.add(name, "ggnet_mac", None, "is required: the PC's boot NIC address")
    elif mac is not UNRESOLVED:
        try:
            normal = normalize_mac(mac)
        except ValueError as exc:
            out.add(name, "ggnet_mac", mac, str(exc))
        else:
            if normal in macs:
                out.add(name, "ggnet_mac", mac, f"duplicate: {macs[normal]} has the same MAC")
            else:
                macs[normal] = name

    _check_client_images(out, name, hv, {t: parsed.get(t, {}).get("images", {}) for t in targets})
    _choice(
        out, name, "ggnet_boot", hv.get("ggnet_boot", CLIENT_DEFAULTS["ggnet_boot"]), BOOT_MODES
    )
    if "ggnet_keep_writeback" in hv:
        _bool(out, name, "ggnet_keep_writeback", hv["ggnet_keep_writeback"])
    if "ggnet_lab_firmware" in hv:
        _choice(out, name, "ggnet_lab_firmware", hv["ggnet_lab_firmware"], LAB_FIRMWARES)
    _check_client_ip(out, name, hv.get("ggnet_ip"), info, ips)
    bmc = hv.get(redfish.KEY)
    if bmc is not None and bmc is not UNRESOLVED:
        # A value this process could not template (a vaulted password without the vault
        # password) was reported as such already: not again as a wrong one.
        unresolved = (
            {f"{redfish.KEY}.{k}" for k, v in bmc.items() if v is UNRESOLVED}
            if isinstance(bmc, Mapping)
            else set()
        )
        for key, shown, message in redfish.bmc_problems(bmc):
            if key not in unresolved:
                out.add(name, key, shown, message)
    pinned = hv.get("ggnet_chap_secret")
    # The same rule as the server secret: the PC's script and its target carry it.
    if pinned not in (None, "", UNRESOLVED) and (wrong := secret_problem(pinned)) is not None:
        out.add_secret(name, "ggnet_chap_secret", pinned, wrong)


def _placement(
    out: _Collector,
    name: str,
    hv: Mapping[str, Any],
    servers: list[str],
    fleet: Mapping[str, list[str]] | None,
) -> list[str]:
    """The servers this PC may boot from: its own, or (placed later) its node group's;
    [] when that is unknown (the problem is reported)."""
    group = hv.get("ggnet_node_group")
    members = None
    if group is not None and group is not UNRESOLVED and fleet is not None:
        if group not in fleet:
            out.add(name, "ggnet_node_group", group, _unknown("unknown node group", group, fleet))
            return []
        members = fleet[group]
    chosen = hv.get("ggnet_server")
    if chosen is UNRESOLVED:
        return []
    if chosen is not None:
        if not _a_server(out, name, "ggnet_server", chosen, servers):
            return []
        if members is not None and chosen not in members:
            out.add(
                name,
                "ggnet_server",
                chosen,
                f"is outside the PC's node group {group} (its servers: "
                f"{', '.join(members) or 'none'}): pin it to one of those, or leave "
                "ggnet_server to placement",
            )
            return []
        return [chosen]
    if members is not None:
        return list(members)  # not placed yet: placement picks one of these
    if len(servers) == 1:
        return [servers[0]]
    if len(servers) > 1:
        out.add(
            name,
            "ggnet_server",
            None,
            f"is required with {len(servers)} servers ({', '.join(servers)}): "
            "say which one serves this PC, or name its ggnet_node_group",
        )
    return []


def _check_client_images(
    out: _Collector, name: str, hv: Mapping[str, Any], images: Mapping[str, dict[str, str]]
) -> None:
    """The PC's images, on every server it may boot from ({server: {image: kind}})."""
    image = hv.get("ggnet_image")
    disk = hv.get("ggnet_game_disk")
    if image is None:
        out.add(name, "ggnet_image", None, "is required: the system image this PC boots")
    for server, kinds in images.items():
        if image not in (None, UNRESOLVED):
            _check_image_ref(
                out, name, "ggnet_image", image, "system", kinds, server, "unknown image",
                "is a data image (a game disk), not a system image: use it as ggnet_game_disk",
            )  # fmt: skip
        if disk not in (None, UNRESOLVED):
            _check_image_ref(
                out, name, "ggnet_game_disk", disk, "data", kinds, server, "unknown game disk",
                "is a system image, not a data image: use a kind: data image as game disk",
            )  # fmt: skip


def _check_image_ref(
    out: _Collector,
    name: str,
    key: str,
    value: Any,
    kind: str,
    kinds: dict[str, str],
    server: str,
    unknown: str,
    wrong_kind: str,
) -> None:
    """A PC's reference to an image: known on its server, and of the kind the key wants."""
    if value not in kinds:
        out.add(name, key, value, _unknown(f"{unknown} on server {server}", value, kinds))
    elif kinds[value] != kind:
        out.add(name, key, value, wrong_kind)


def _check_client_ip(
    out: _Collector, name: str, value: Any, info: Mapping[str, Any], ips: dict[str, str]
) -> None:
    if value is None or value is UNRESOLVED:
        return
    if info.get("dhcp_mode") == "proxy":
        out.add(
            name,
            "ggnet_ip",
            value,
            "is not used in proxy mode (the router's DHCP assigns addresses): remove it, "
            "or reserve the address on the router",
        )
        return
    ip = _ip_field(out, name, "ggnet_ip", value)
    if ip is None:
        return
    if str(ip) in ips:
        out.add(name, "ggnet_ip", ip, f"duplicate: {ips[str(ip)]} has the same address")
    else:
        ips[str(ip)] = name
    subnet = info.get("subnet")
    if subnet is not None and not _inside(out, name, "ggnet_ip", ip, subnet):
        return
    if info.get("server_ip") == ip:
        out.add(name, "ggnet_ip", ip, "is the server's own address")
    rng = info.get("dhcp_range")
    if rng and rng[0] <= ip <= rng[1]:
        out.add(
            name,
            "ggnet_ip",
            ip,
            f"is inside the dynamic range {rng[0]} - {rng[1]}: a fixed address must be outside it",
        )
