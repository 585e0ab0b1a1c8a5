"""Report a booted PC's hardware to the ggnet API (the richer half of discovery).

Run inside the OS a PC booted (a live system for a new machine, or the installed OS):

    python3 report_os.py --api http://10.213.0.10:8080          # POST the report
    python3 report_os.py --api http://10.213.0.10:8080 --dry-run # print it only

It POSTs one JSON object to <api>/boot/<mac>/report.  For an unknown MAC the API shows
it beside the firmware's facts under /api/discovered; for a known PC the report marks
its latest boot as reaching the OS.

How a known PC's report proves it is the PC's own: the per-boot token the API put into
iPXE's script does not reach the booted OS (the iBFT that iPXE hands over has no free
field to carry it), so the API takes a known PC's report when it comes from the PC's
own address: its fixed address, its DHCP lease, or a neighbour entry of its MAC (the
same rule as for its boot script; ggnet_api/boot_origin.py).  Run it on the PC itself,
from the interface it booted from.  A caller that does know the boot's token (a
provisioning step that was handed it) can send it with --token (header
X-Ggnet-Boot-Token) and report from anywhere.  The body stays below the API's
max_report_bytes (16 KiB by default).

Standard library and psutil only, so it can be copied alone onto any machine with
Python 3.9+.  dmidecode and lshw add firmware and device details when they are
installed and the script runs as root; without them the report is still complete for
what psutil knows.  No secret is read or sent: no serial numbers of users' files, no
environment, only hardware and the OS's name.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import shutil
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from typing import Any

try:
    import psutil
except ImportError:  # pragma: no cover - reported clearly by main()
    psutil = None

VERSION = 1
# Stay below the API's default report limit (max_report_bytes, 16 KiB) with room to spare.
MAX_BYTES = 12 * 1024
TOKEN_HEADER = "X-Ggnet-Boot-Token"
DMI_KEYS = (
    "system-manufacturer",
    "system-product-name",
    "system-serial-number",
    "system-uuid",
    "baseboard-manufacturer",
    "baseboard-product-name",
    "bios-vendor",
    "bios-version",
    "bios-release-date",
)
LSHW_CLASSES = ("processor", "memory", "display", "network", "disk", "storage", "multimedia")
MAX_LSHW_DEVICES = 64
_MAC = re.compile(r"^([0-9a-f]{2}[:-]){5}[0-9a-f]{2}$", re.I)


def _run(argv: list[str], timeout: float = 20) -> str | None:
    """stdout of a command, or None when it is missing, fails or hangs."""
    if shutil.which(argv[0]) is None:
        return None
    try:
        proc = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return proc.stdout if proc.returncode == 0 else None


def _mac_of(value: str) -> str | None:
    if not _MAC.match(value or ""):
        return None
    mac = value.lower().replace("-", ":")
    return None if mac == "00:00:00:00:00:00" else mac


def nics() -> list[dict[str, Any]]:
    """Every interface with a hardware address: name, MAC, addresses, link state."""
    stats = psutil.net_if_stats()
    out = []
    for name, addrs in sorted(psutil.net_if_addrs().items()):
        mac = next((_mac_of(a.address) for a in addrs if a.family == psutil.AF_LINK), None)
        if mac is None:
            continue
        st = stats.get(name)
        out.append(
            {
                "name": name,
                "mac": mac,
                "ipv4": [a.address for a in addrs if a.family == socket.AF_INET],
                "ipv6": [a.address.split("%")[0] for a in addrs if a.family == socket.AF_INET6],
                "up": bool(st.isup) if st else None,
                "speed_mbps": st.speed if st and st.speed else None,
                "mtu": st.mtu if st else None,
            }
        )
    return out


def boot_mac(interfaces: list[dict[str, Any]]) -> str | None:
    """The MAC the PC most likely booted from: the first interface that is up and has
    an IPv4 address (iPXE's DHCP gave it one), else the first with a MAC at all."""
    for nic in interfaces:
        if nic["up"] and nic["ipv4"]:
            return nic["mac"]
    return interfaces[0]["mac"] if interfaces else None


def _cpu_model() -> str | None:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as fh:
            for line in fh:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or None


def cpu() -> dict[str, Any]:
    freq = None
    try:
        f = psutil.cpu_freq()
        freq = round(f.max or f.current) if f else None
    except (OSError, NotImplementedError, AttributeError):
        pass
    return {
        "model": _cpu_model(),
        "cores": psutil.cpu_count(logical=False),
        "threads": psutil.cpu_count(logical=True),
        "max_mhz": freq,
        "arch": platform.machine(),
    }


def disks() -> list[dict[str, Any]]:
    out = []
    seen = set()
    for part in psutil.disk_partitions(all=False):
        if part.device in seen:
            continue
        seen.add(part.device)
        try:
            usage = psutil.disk_usage(part.mountpoint)
        except OSError:
            continue
        out.append(
            {
                "device": part.device,
                "mountpoint": part.mountpoint,
                "fstype": part.fstype,
                "total_bytes": usage.total,
                "free_bytes": usage.free,
            }
        )
    return out


def dmi() -> dict[str, str] | None:
    """Firmware's DMI strings via dmidecode (root only); None when unavailable."""
    if shutil.which("dmidecode") is None:
        return None
    found = {}
    for key in DMI_KEYS:
        value = _run(["dmidecode", "-s", key])
        if value is None:
            continue
        lines = [ln.strip() for ln in value.splitlines() if ln.strip() and not ln.startswith("#")]
        if lines:
            found[key] = lines[0][:128]
    return found or None


def _walk_lshw(node: Any, out: list[dict[str, Any]]) -> None:
    if isinstance(node, list):
        for n in node:
            _walk_lshw(n, out)
        return
    if not isinstance(node, dict):
        return
    if node.get("class") in LSHW_CLASSES and len(out) < MAX_LSHW_DEVICES:
        item = {k: node[k] for k in ("class", "description", "product", "vendor") if k in node}
        if "size" in node:
            item["size"] = node["size"]
        if node.get("class") == "network" and node.get("serial"):
            item["mac"] = node["serial"]
        out.append(item)
    _walk_lshw(node.get("children", []), out)


def lshw() -> list[dict[str, Any]] | None:
    """A short device list (class, product, vendor) from `lshw -json`, when installed."""
    text = _run(["lshw", "-json", "-quiet", "-sanitize"], timeout=60)
    if not text:
        return None
    try:
        tree = json.loads(text)
    except ValueError:
        return None
    out: list[dict[str, Any]] = []
    _walk_lshw(tree, out)
    return out


def build_report(with_tools: bool = True) -> dict[str, Any]:
    """The report of this machine (what is POSTed)."""
    interfaces = nics()
    vm = psutil.virtual_memory()
    report: dict[str, Any] = {
        "version": VERSION,
        "reported_at": time.time(),
        "hostname": socket.gethostname(),
        "os": {
            "system": platform.system(),
            "release": platform.release(),
            "version": platform.version()[:200],
        },
        "boot_time": psutil.boot_time(),
        "cpu": cpu(),
        "memory_bytes": vm.total,
        "disks": disks(),
        "nics": interfaces,
        "boot_mac": boot_mac(interfaces),
    }
    if with_tools:
        found = dmi()
        if found is not None:
            report["dmi"] = found
        devices = lshw()
        if devices is not None:
            report["lshw"] = devices
    return shrink(report)


def shrink(report: dict[str, Any], limit: int = MAX_BYTES) -> dict[str, Any]:
    """Drop the least useful parts until the JSON fits the API's body limit."""
    for key in ("lshw", "disks"):
        if len(json.dumps(report)) <= limit:
            break
        report.pop(key, None)
    if len(json.dumps(report)) > limit:
        report["nics"] = report["nics"][:8]
    return report


def send(
    api: str, mac: str, report: dict[str, Any], timeout: float = 15, token: str | None = None
) -> tuple[int, str]:
    """POST the report (with the boot's token when given); (HTTP status, the API's
    one-line answer)."""
    url = f"{api.rstrip('/')}/boot/{mac}/report"
    data = json.dumps(report).encode()
    headers = {"Content-Type": "application/json"}
    if token:
        headers[TOKEN_HEADER] = token
    req = urllib.request.Request(url, data=data, method="POST", headers=headers)
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            return resp.status, resp.read().decode(errors="replace").strip()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode(errors="replace").strip()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="report this PC's hardware to ggnet")
    parser.add_argument("--api", default=os.environ.get("GGNET_API_URL"), help="API base URL")
    parser.add_argument("--mac", help="the MAC to report as (default: the boot interface's)")
    parser.add_argument("--dry-run", action="store_true", help="print the report, send nothing")
    parser.add_argument(
        "--token",
        default=os.environ.get("GGNET_BOOT_TOKEN"),
        help="the boot's token, when known (default: prove the PC by its own address)",
    )
    parser.add_argument("--no-tools", action="store_true", help="skip dmidecode and lshw")
    args = parser.parse_args(argv)
    if psutil is None:
        print("report_os: needs psutil (Debian: python3-psutil)", file=sys.stderr)
        return 1
    report = build_report(with_tools=not args.no_tools)
    if args.dry_run:
        json.dump(report, sys.stdout, indent=2)
        print()
        return 0
    if not args.api:
        print("report_os: --api URL (or GGNET_API_URL) is needed", file=sys.stderr)
        return 2
    mac = args.mac or report["boot_mac"]
    if not mac:
        print("report_os: no network interface with a MAC; give --mac", file=sys.stderr)
        return 2
    try:
        status, answer = send(args.api, mac, report, token=args.token)
    except (urllib.error.URLError, OSError) as exc:
        print(f"report_os: {args.api}: {exc}", file=sys.stderr)
        return 1
    print(f"{mac}: {status} {answer}")
    return 0 if status == 200 else 1


if __name__ == "__main__":
    sys.exit(main())
