"""Boot stages of PCs (qemu TCG) through the ggnet_netboot role's dnsmasq (full mode),
the real iPXE script and tgt, per client kind: seconds from power-on to each stage.

Kinds: bios (SeaBIOS + the NIC's iPXE ROM), uefi-ipxe (OVMF + the NIC's iPXE ROM),
uefi-pxe (OVMF's own PXE: DHCP, TFTP snponly.efi, then iPXE's own DHCP).

Sources: tcpdump on the netns bridge (DHCP messages, the iSCSI SYN and the target's
first answer = login response), the API stand-in's request log (script fetched,
sanboot callback) and the serial port (marker).  All in time.time() seconds.

Server side: from the script request's arrival to the target's login response, which
includes what the API does before it answers — the boot path's own writeback reset,
storage.reset(boot=True) as ggnet_api's live.boot_script calls it, on a zfs-fuse pool
whose writeback files tgt exports — and iPXE's work on the PC until it logs in.
Goal: <= 150 ms.  Unlike the lab (bench netboot_lab) the boot server is not emulated
here: dnsmasq, tgtd, zfs-fuse and the reset run on this machine."""

from __future__ import annotations

import shutil
import statistics
import tempfile
import time
from pathlib import Path

from ggnet import iscsi, layout, net, storage
from ggnet_bootprog import build as bp
from ggnet_testing import netboot_env as nb
from ggnet_testing import zfs_pool

KINDS = {
    # kind: (qemu firmware, MAC)
    "bios": ("bios", "52:54:00:15:00:21"),
    "uefi-ipxe": ("uefi", "52:54:00:15:00:22"),
    "uefi-pxe": ("uefi-pxe", "52:54:00:15:00:23"),
}
RUNS = 2
GOAL_SERVER_MS = 150


def _stages(boot: nb.Boot, mac: str, events: list, packets: list) -> dict:
    t0 = boot.wall_started

    def rel(t: float | None) -> float | None:
        return round(t - t0, 3) if t is not None else None

    script = next(e for e in events if e.kind == "script" and e.mac == mac)
    sanboot = next(
        (e for e in events if e.kind == "stage" and e.detail.get("name") == "sanboot"), None
    )
    dhcp = [p for p in packets if p["kind"] == "dhcp" and p["mac"] == mac and p["t"] >= t0]
    discovers = [p["t"] for p in dhcp if p["msg"] == "Discover"]
    acks = [p["t"] for p in dhcp if p["msg"] == "ACK"]
    # The ACK iPXE got just before it asked for the script (uefi-pxe has two rounds:
    # OVMF's PXE, then iPXE's own).
    ipxe_ack = max((t for t in acks if t <= script.wall), default=None)
    after = [p for p in packets if p["kind"] == "iscsi" and p["t"] >= script.wall]
    syn = next((p["t"] for p in after if p["what"] == "syn"), None)
    request = next((p["t"] for p in after if p["what"] == "login-request"), None)
    login = next((p["t"] for p in after if p["what"] == "login-response"), None)
    reset_ms = script.detail.get("reset_s", 0) * 1000
    target_ms = (login - request) * 1000 if login and request else None
    return {
        "dhcp_first_discover_s": rel(discovers[0] if discovers else None),
        "dhcp_first_offer_s": rel(next((p["t"] for p in dhcp if p["msg"] == "Offer"), None)),
        "dhcp_first_ack_s": rel(acks[0] if acks else None),
        "dhcp_rounds": len(acks),
        "dhcp_ipxe_ack_s": rel(ipxe_ack),
        "script_fetched_s": rel(script.wall),
        "iscsi_connect_s": rel(syn),
        "iscsi_login_s": rel(login),
        "sanboot_s": rel(sanboot.wall if sanboot else None),
        "marker_s": round(boot.marker_at - boot.started, 3) if boot.marker_at else None,
        "server_script_to_login_ms": round((login - script.wall) * 1000, 1) if login else None,
        "reset_ms": round(reset_ms, 1),
        "target_login_ms": round(target_ms, 1) if target_ms is not None else None,
        # What the server itself spends: the reset before answering the script and
        # the target's answer to the login; the rest of script->login is the PC (TCG).
        "server_work_ms": round(reset_ms + target_ms, 1) if target_ms is not None else None,
    }


def run() -> dict:
    work = Path(tempfile.mkdtemp(prefix="bench-netboot-"))
    with zfs_pool.daemon(work):
        pool = zfs_pool.make_pool(work, "1G")
        try:
            return _run(work, zfs_pool.storage_cfg(pool))
        finally:
            zfs_pool.destroy_pool(pool)
            shutil.rmtree(work, ignore_errors=True)


def _run(work: Path, cfg: dict) -> dict:
    env = nb.NetbootEnv(work)
    try:
        clients = [
            {
                "name": f"pc-{kind}",
                "vars": {"ggnet_mac": mac, "ggnet_ip": f"{nb.SUBNET}.{121 + i}",
                         "ggnet_image": "lab"},
            }
            for i, (kind, (_, mac)) in enumerate(KINDS.items())
        ]  # fmt: skip
        out, _ = env.render_role("full", clients)
        env.add_ula("fd67:676e:6574::1/64")
        tgt = env.start_tgt()
        golden = bp.build_disk(work / "golden.img", "golden")
        images = {"lab": {"kind": "system", "source": str(golden)}}
        storage.converge_images(cfg, images, check=False)
        wb_clients = [
            {"name": f"pc-{kind}", "image": "lab", "game_disk": None, "keep_writeback": False}
            for kind in KINDS
        ]
        storage.converge_writebacks(cfg, images, wb_clients, check=False, sessions={})
        api_clients, by_mac = {}, {}
        for kind, (_, mac) in KINDS.items():
            name = f"pc-{kind}"
            by_mac[mac] = next(c for c in wb_clients if c["name"] == name)
            c = {"name": name, "mac": mac, "initiator_iqn": net.initiator_iqn(name)}
            iqn = net.target_iqn(name)
            disk, _kind = layout.writeback_backing(cfg, name, "system")
            tgt.add_target(iqn, c["initiator_iqn"], [Path(disk)])
            api_clients[mac] = {
                "client": c,
                "san_uris": [iscsi.san_uri(nb.SERVER_IP, iqn, "tgt", 0)],
            }
        api = env.start_api(api_clients)

        def reset(mac: str) -> None:
            # What ggnet_api's boot path does before it answers (live.boot_script):
            # a same-version reset is one rollback, which tgt's open file survives.
            storage.reset(cfg, images, wb_clients, by_mac[mac]["name"], boot=True)

        api.on_script = reset
        env.start_dnsmasq(out / "dnsmasq.conf")
        cap = env.capture("bench")
        kinds = {}
        for kind, (firmware, mac) in KINDS.items():
            runs = []
            for _ in range(RUNS):
                api.events.clear()
                boot = env.boot(f"pc-{kind}", mac, firmware=firmware, timeout=120)
                time.sleep(0.3)  # let tcpdump flush the last packets
                runs.append(_stages(boot, mac, list(api.events), cap.packets()))
            kinds[kind] = {"firmware": firmware, "runs": runs}
        cap.stop()

        def figures(key: str) -> dict:
            values = [r[key] for k in kinds.values() for r in k["runs"] if r[key] is not None]
            return {
                "goal": GOAL_SERVER_MS,
                "max": max(values) if values else None,
                "median": statistics.median(values) if values else None,
            }

        return {
            "accel": "tcg",
            "storage": "zfs-fuse pool on a sparse file, disk_format=file; the reset is "
            "ggnet.storage.reset(boot=True), as the API's boot path runs it",
            "kinds": kinds,
            "server_script_to_login_ms": figures("server_script_to_login_ms"),
            "server_work_ms": figures("server_work_ms"),
        }
    finally:
        # tgt holds the writeback files open: close it before the pool is destroyed.
        env.close()
