"""Pre-flight checks of a boot server: can it boot PCs right now?

One implementation behind the ggnet_preflight module, `ggnet preflight` (run before the
API starts) and the textfile metrics node_exporter serves to Prometheus.  Each check
returns a Check whose message says what was found and, when it failed, what to do.
Commands run under LC_ALL=C through an injectable runner, so the parsing is testable
without the daemons.
"""

from __future__ import annotations

import sqlite3
import subprocess
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from .host_os import c_locale_env
from .model import parse_size_or_percent
from .settings import default

Runner = Callable[[Sequence[str]], tuple[int, str, str]]

# The order a person reads them in: storage first, then what serves the boot path.
CHECKS = (
    "pool",
    "iscsi_backend",
    "dnsmasq_config",
    "dnsmasq_running",
    "tftp_files",
    "boot_interface",
    "api_database",
    "prometheus",
)
DEFAULT_TFTP_FILES = ("undionly.kpxe", "snponly.efi", "ipxe.efi")
API_TABLES = ("jobs", "boots", "discovered", "tokens")


@dataclass
class Check:
    name: str
    ok: bool
    message: str

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def subprocess_runner(argv: Sequence[str]) -> tuple[int, str, str]:
    try:
        proc = subprocess.run(
            list(argv), capture_output=True, text=True, env=c_locale_env(), check=False, timeout=30
        )
    except FileNotFoundError:
        return 127, "", f"{argv[0]}: command not found"
    except subprocess.TimeoutExpired:
        return 124, "", f"{argv[0]}: no answer within 30 s"
    return proc.returncode, proc.stdout, proc.stderr


def _mib(n: float) -> str:
    return f"{n / 2**20:.1f} MiB"


def reserve_bytes(reserve: object, size: int) -> int:
    kind, value = parse_size_or_percent(reserve)
    return int(size * value / 100) if kind == "percent" else int(value)


def check_pool(pool: str, reserve: object, run: Runner) -> Check:
    rc, out, err = run(["zpool", "list", "-H", "-o", "health", pool])
    if rc != 0:
        return Check(
            "pool",
            False,
            f"pool {pool} is not imported ({err.strip() or out.strip()}): "
            f"import it (`zpool import {pool}`) or converge the storage role",
        )
    health = out.strip()
    if health != "ONLINE":
        return Check(
            "pool",
            False,
            f"pool {pool} is {health}: see `zpool status -x {pool}` and replace the failed device",
        )
    # zfs-fuse has no `zpool list -p`; `zfs get -Hp` gives exact bytes everywhere.
    rc, out, err = run(["zfs", "get", "-Hp", "-o", "property,value", "used,available", pool])
    values = dict(line.split("\t", 1) for line in out.splitlines() if "\t" in line)
    try:
        used, avail = int(values["used"]), int(values["available"])
    except (KeyError, ValueError):
        return Check("pool", False, f"pool {pool}: cannot read its space ({err.strip()})")
    need = reserve_bytes(reserve, used + avail)
    if avail < need:
        return Check(
            "pool",
            False,
            f"pool {pool} has {_mib(avail)} free, below its reserve of {_mib(need)} ({reserve}): "
            "boots are refused; destroy unused image versions, reset writebacks of PCs in "
            "maintenance or add a vdev",
        )
    return Check("pool", True, f"pool {pool} ONLINE, {_mib(avail)} free (reserve {_mib(need)})")


def check_iscsi_backend(
    backend: str, run: Runner, configfs: str = "/sys/kernel/config/target", tgt_control: int = 0
) -> Check:
    if backend == "lio":
        if Path(configfs, "iscsi").is_dir():
            return Check("iscsi_backend", True, "LIO loaded (iscsi_target_mod)")
        return Check(
            "iscsi_backend",
            False,
            f"LIO is not loaded ({configfs}/iscsi missing): `modprobe iscsi_target_mod`, "
            "and mount configfs if needed; in a container use backend tgt",
        )
    argv = ["tgtadm", "--lld", "iscsi", "--mode", "system", "--op", "show"]
    if tgt_control:
        argv[1:1] = ["-C", str(tgt_control)]
    rc, _out, err = run(argv)
    if rc == 0:
        return Check("iscsi_backend", True, "tgtd answers")
    return Check(
        "iscsi_backend",
        False,
        f"tgtd does not answer ({err.strip() or f'rc={rc}'}): `systemctl start tgt`",
    )


def check_dnsmasq_config(config: str, run: Runner) -> Check:
    rc, out, err = run(["dnsmasq", "--test", f"--conf-file={config}"])
    text = (err or out).strip().splitlines()
    if rc == 0:
        return Check("dnsmasq_config", True, f"{config}: syntax OK")
    return Check(
        "dnsmasq_config",
        False,
        f"dnsmasq rejects {config}: {text[0] if text else f'rc={rc}'}; "
        "fix the inventory and re-run the netboot role",
    )


def _pid_alive(pidfile: str, comm: str) -> tuple[bool, str]:
    try:
        pid = int(Path(pidfile).read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return False, f"no pid in {pidfile}"
    try:
        name = Path(f"/proc/{pid}/comm").read_text().strip()
    except OSError:
        return False, f"pid {pid} from {pidfile} is not running"
    if name != comm:
        return False, f"pid {pid} from {pidfile} is {name}, not {comm}"
    return True, f"pid {pid}"


def check_dnsmasq_running(pidfile: str | None, service: str, run: Runner) -> Check:
    # A pid file is exact; looking for any process named dnsmasq would count a
    # libvirt or lab dnsmasq as ours.
    if pidfile:
        ok, detail = _pid_alive(pidfile, "dnsmasq")
    elif Path("/run/systemd/system").is_dir():
        rc, out, _err = run(["systemctl", "is-active", service])
        ok, detail = rc == 0, f"{service} is {out.strip() or 'unknown'}"
    else:
        ok, detail = False, "no pid file given and no systemd to ask"
    if ok:
        return Check("dnsmasq_running", True, f"dnsmasq running ({detail})")
    return Check(
        "dnsmasq_running",
        False,
        f"dnsmasq is not running ({detail}): no PC can PXE-boot; "
        f"`systemctl start {service}`, then `journalctl -u {service}`",
    )


def check_tftp_files(root: str, files: Sequence[str]) -> Check:
    missing = [f for f in files if not (Path(root, f).is_file() and Path(root, f).stat().st_size)]
    if missing:
        return Check(
            "tftp_files",
            False,
            f"missing or empty in {root}: {', '.join(missing)}; re-run the netboot role "
            "(it copies them from the ipxe package)",
        )
    return Check("tftp_files", True, f"{len(files)} iPXE binaries in {root}")


def check_boot_interface(interface: str, address: str, run: Runner) -> Check:
    rc, out, err = run(["ip", "-o", "addr", "show", "dev", interface])
    if rc != 0:
        return Check(
            "boot_interface",
            False,
            f"interface {interface} not found ({err.strip()}): fix ggnet_network.interface",
        )
    addresses = [
        fields[fields.index(family) + 1].split("/")[0]
        for fields in (line.split() for line in out.splitlines())
        for family in ("inet", "inet6")
        if family in fields
    ]
    if address not in addresses:
        return Check(
            "boot_interface",
            False,
            f"{interface} does not have {address} (it has {', '.join(addresses) or 'none'}): "
            f"`ip addr add {address}/PREFIX dev {interface}` or fix ggnet_network.server_ip",
        )
    return Check("boot_interface", True, f"{interface} has {address}")


def check_api_database(path: str) -> Check:
    if not Path(path).is_file():
        return Check(
            "api_database",
            False,
            f"{path} does not exist: start the API once (it creates it) or fix state_dir",
        )
    try:
        with sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=5) as db:
            status = db.execute("PRAGMA quick_check").fetchone()[0]
            tables = {r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type='table'")}
    except sqlite3.Error as exc:
        return Check("api_database", False, f"{path} cannot be read: {exc}")
    if status != "ok":
        return Check(
            "api_database",
            False,
            f"{path} is damaged ({status}): stop the API and restore it from a backup",
        )
    missing = [t for t in API_TABLES if t not in tables]
    if missing:
        return Check(
            "api_database",
            False,
            f"{path} lacks tables {', '.join(missing)}: it is not the API's database",
        )
    return Check("api_database", True, f"{path} OK")


def check_prometheus(url: str, timeout: float = 5.0) -> Check:
    ready = url.rstrip("/") + "/-/ready"
    try:
        with urllib.request.urlopen(ready, timeout=timeout) as resp:
            if resp.status == 200:
                return Check("prometheus", True, f"{ready} ready")
            detail = f"HTTP {resp.status}"
    except urllib.error.HTTPError as exc:
        detail = f"HTTP {exc.code}"
    except (urllib.error.URLError, OSError) as exc:
        detail = str(getattr(exc, "reason", exc))
    return Check(
        "prometheus",
        False,
        f"Prometheus at {url} is not ready ({detail}): `systemctl status prometheus`",
    )


def run_checks(settings: Mapping[str, Any], run: Runner = subprocess_runner) -> list[Check]:
    """Every check whose settings are given, in CHECKS order; `skip` names ones to leave out.

    A check without its settings (no prometheus_url, no api_database) is left out
    rather than failed: not every boot server runs every service."""
    s, skip = settings, set(settings.get("skip") or ())
    planned: dict[str, Callable[[], Check]] = {}
    if s.get("pool"):
        planned["pool"] = lambda: check_pool(
            s["pool"], s.get("reserve") or default("ggnet_storage", "reserve"), run
        )
    if s.get("iscsi_backend"):
        planned["iscsi_backend"] = lambda: check_iscsi_backend(
            s["iscsi_backend"],
            run,
            configfs=s.get("configfs") or "/sys/kernel/config/target",
            tgt_control=int(s.get("tgt_control_port") or 0),
        )
    if s.get("dnsmasq_config"):
        planned["dnsmasq_config"] = lambda: check_dnsmasq_config(s["dnsmasq_config"], run)
    if s.get("dnsmasq_pidfile") or s.get("dnsmasq_service"):
        planned["dnsmasq_running"] = lambda: check_dnsmasq_running(
            s.get("dnsmasq_pidfile"), s.get("dnsmasq_service") or "ggnet-dnsmasq", run
        )
    if s.get("tftp_root"):
        planned["tftp_files"] = lambda: check_tftp_files(
            s["tftp_root"], s.get("tftp_files") or DEFAULT_TFTP_FILES
        )
    if s.get("interface") and s.get("server_ip"):
        planned["boot_interface"] = lambda: check_boot_interface(
            s["interface"], s["server_ip"], run
        )
    if s.get("api_database"):
        planned["api_database"] = lambda: check_api_database(s["api_database"])
    if s.get("prometheus_url"):
        planned["prometheus"] = lambda: check_prometheus(s["prometheus_url"])
    return [planned[name]() for name in CHECKS if name in planned and name not in skip]


def summary(checks: Sequence[Check]) -> str:
    failed = [c.name for c in checks if not c.ok]
    line = f"preflight: {len(checks) - len(failed)} passed, {len(failed)} failed"
    return line + (f" ({', '.join(failed)})" if failed else "")


def human(checks: Sequence[Check]) -> str:
    width = max((len(c.name) for c in checks), default=0)
    lines = [f"{'ok' if c.ok else 'FAIL':4}  {c.name:{width}}  {c.message}" for c in checks]
    return "\n".join([*lines, summary(checks)])


def textfile(checks: Sequence[Check], now: float) -> str:
    """node_exporter textfile format: one gauge per check, and when they ran."""
    out = [
        "# HELP ggnet_preflight_check_ok 1 when the check passed at the last run, else 0.",
        "# TYPE ggnet_preflight_check_ok gauge",
        *(f'ggnet_preflight_check_ok{{check="{c.name}"}} {int(c.ok)}' for c in checks),
        "# HELP ggnet_preflight_last_run_timestamp_seconds When the checks last ran.",
        "# TYPE ggnet_preflight_last_run_timestamp_seconds gauge",
        f"ggnet_preflight_last_run_timestamp_seconds {now:.3f}",
    ]
    return "\n".join(out) + "\n"
