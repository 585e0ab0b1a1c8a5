"""Boot stages of a BIOS PC (qemu TCG, iPXE ROM) through the ggnet_netboot role's
dnsmasq, the real iPXE script and tgt: seconds from power-on to each stage.

Stages come from the API stand-in's request log (script fetched, sanboot callback)
and the serial port (marker).  DHCP is inside "script fetched": iPXE asks the API
right after its lease."""

from __future__ import annotations

import shutil
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "tests" / "integration"))

import netboot_env as nb  # noqa: E402
from ggnet import iscsi, net  # noqa: E402

MAC = "52:54:00:15:00:21"
RUNS = 2


def run() -> dict:
    work = Path(tempfile.mkdtemp(prefix="bench-netboot-"))
    bp = nb.load_bootprog()
    env = nb.NetbootEnv(work)
    try:
        clients = [
            {
                "name": "pc-bench",
                "vars": {"ggnet_mac": MAC, "ggnet_ip": f"{nb.SUBNET}.121", "ggnet_image": "lab"},
            }
        ]
        out, _ = env.render_role("full", clients)
        env.add_ula("fd67:676e:6574::1/64")
        tgt = env.start_tgt()
        disk = work / "pc-bench.img"
        bp.build_disk(disk, "pc-bench")
        c = {"name": "pc-bench", "mac": MAC, "initiator_iqn": net.initiator_iqn("pc-bench")}
        iqn = net.target_iqn("pc-bench")
        tgt.add_target(iqn, c["initiator_iqn"], [disk])
        env.start_api(
            {MAC: {"client": c, "san_uris": [iscsi.san_uri(nb.SERVER_IP, iqn, "tgt", 0)]}}
        )
        env.start_dnsmasq(out / "dnsmasq.conf")
        runs = []
        for _ in range(RUNS):
            env.api.events.clear()
            boot = env.boot("pc-bench", MAC)
            ev = env.api.events
            script = next(e.t for e in ev if e.kind == "script")
            sanboot = next(
                e.t for e in ev if e.kind == "stage" and e.detail.get("name") == "sanboot"
            )
            runs.append(
                {
                    "script_fetched_s": round(script - boot.started, 2),
                    "sanboot_s": round(sanboot - boot.started, 2),
                    "marker_s": round(boot.marker_at - boot.started, 2) if boot.marker_at else None,
                }
            )
        return {"client": "bios-ipxe-rom", "accel": "tcg", "runs": runs}
    finally:
        env.close()
        shutil.rmtree(work, ignore_errors=True)
