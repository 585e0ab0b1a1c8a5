"""`ggnet preflight [--json] [--textfile PATH]`: can this boot server boot PCs now?

Exit 0 when every check passes, 1 when any fails.  The settings come from the
inventory (the server's ggnet_storage, ggnet_iscsi, ggnet_network and role knobs);
`--settings FILE` (YAML) overrides any of them, e.g. where a test runs the daemons.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

from ggnet_cli.inventory import add_inventory_argument

HELP = "check this boot server: pool, iSCSI, dnsmasq, TFTP, interface, API db, Prometheus"
EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_inventory_argument(parser)
    parser.add_argument(
        "--server",
        metavar="NAME",
        help="the boot server to check (default: the first of ggnet_servers)",
    )
    parser.add_argument(
        "--settings", metavar="FILE", help="YAML mapping overriding the checks' settings"
    )
    parser.add_argument("--no-inventory", action="store_true", help="use only --settings")
    parser.add_argument("--json", action="store_true", help="print the result as JSON")
    parser.add_argument(
        "--textfile",
        metavar="PATH",
        help="also write the results for node_exporter's textfile collector (atomically)",
    )


def settings_from_inventory(inventory: Any, server: str | None) -> dict[str, Any]:
    from ggnet.model import settings

    servers = list(inventory.servers)
    if not servers:
        raise ValueError("the inventory has no host in ggnet_servers")
    name = server or servers[0]
    if name not in inventory.hostvars:
        raise ValueError(f"{name} is not a host of the inventory (servers: {', '.join(servers)})")
    hv = inventory.hostvars[name]
    storage = settings(hv, "ggnet_storage")
    network = settings(hv, "ggnet_network")
    iscsi = settings(hv, "ggnet_iscsi")
    prom_host = hv.get("ggnet_monitoring_prometheus_host") or servers[0]
    # Preflight checks the machine it runs on: when that machine is the Prometheus host,
    # ask loopback, never the inventory address (which from elsewhere — a developer's
    # machine reading inventory/lab — would leave the host).
    prom_addr = (
        "127.0.0.1"
        if prom_host == name
        else inventory.hostvars.get(prom_host, {}).get("ansible_host", prom_host)
    )
    return {
        "pool": storage.get("pool"),
        "reserve": storage.get("reserve"),
        "iscsi_backend": iscsi.get("backend"),
        "dnsmasq_config": hv.get("ggnet_netboot_config", "/etc/ggnet/dnsmasq.conf"),
        "dnsmasq_service": hv.get("ggnet_netboot_service", "ggnet-dnsmasq"),
        "tftp_root": hv.get("ggnet_netboot_tftp_root", "/srv/ggnet/tftp"),
        "interface": network.get("interface"),
        "server_ip": network.get("server_ip"),
        "api_database": str(Path(hv.get("ggnet_api_state_dir", "/var/lib/ggnet-api")) / "api.db"),
        "prometheus_url": f"http://{prom_addr}:{hv.get('ggnet_monitoring_prometheus_port', 9090)}",
    }


def _settings(args: argparse.Namespace) -> dict[str, Any]:
    import yaml

    result: dict[str, Any] = {}
    if not args.no_inventory:
        from ggnet.inventory import load_inventory

        from ggnet_cli.inventory import default_inventory

        path = args.inventory if args.inventory is not None else default_inventory()
        result = settings_from_inventory(load_inventory(path), args.server)
        backend = _converged_backend()
        if backend:
            result["iscsi_backend"] = backend
    if args.settings:
        extra = yaml.safe_load(Path(args.settings).read_text()) or {}
        if not isinstance(extra, dict):
            raise ValueError(f"{args.settings}: must be a YAML mapping")
        result.update(extra)
    return result


def _converged_backend() -> str | None:
    """On a boot server, the backend the last converge put the targets on: the API's
    inventory copy is the server's own and may still name the previous one."""
    if not os.environ.get("GGNET_API_CONFIG"):
        return None
    from ggnet_api import config, converged

    path = config.load().get("targets_file")
    if not path or not os.path.exists(path):
        return None
    return converged.load(path)["backend"]


def run(args: argparse.Namespace) -> int:
    from ggnet.files import write_atomic
    from ggnet.preflight import human, run_checks, summary, textfile

    try:
        settings = _settings(args)
    except Exception as exc:  # an unreadable inventory is a usage problem, not a check
        print(f"ggnet preflight: {exc}", file=sys.stderr)
        return EXIT_USAGE
    checks = run_checks(settings)
    if args.textfile:
        # node_exporter may read it at any moment.
        write_atomic(args.textfile, textfile(checks, time.time()))
    ok = all(c.ok for c in checks)
    if args.json:
        print(
            json.dumps(
                {"ok": ok, "summary": summary(checks), "checks": [c.as_dict() for c in checks]},
                indent=2,
            )
        )
    else:
        print(human(checks))
    return EXIT_OK if ok else EXIT_FAILED


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="ggnet preflight", description=__doc__.splitlines()[0])
    add_arguments(parser)
    return run(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
