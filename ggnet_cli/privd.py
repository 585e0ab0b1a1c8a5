"""`ggnet privd`: ggnet-privd, the API's root half, as the systemd unit of
roles/ggnet_api runs it (as root).

It reads the API's own settings file: privd_socket (where to listen) and
privd_api_user (who besides root may connect; the socket's group is that user's), and
the inventory, targets file and allow-list it checks every request against.  It keeps
its own inventory snapshot, reloaded on inventory_poll like the API's, and runs jobs in
a private directory of its own that it removes when it stops.
"""

from __future__ import annotations

import argparse
import os
import sys

HELP = "run ggnet-privd: the named root operations of the API on a local socket"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", help="API settings file (YAML); default $GGNET_API_CONFIG")


def run(args: argparse.Namespace) -> int:
    import logging
    import shutil
    import signal
    import tempfile
    import threading
    from pathlib import Path

    from ggnet_api import config as config_mod
    from ggnet_api.periodic import Periodic
    from ggnet_api.snapshot import CurrentInventory
    from ggnet_privd.ops import Ops
    from ggnet_privd.server import Server, allowed_uids, api_user

    logging.basicConfig(
        level=os.environ.get("GGNET_API_LOG_LEVEL", "INFO"),
        format="%(levelname)s %(name)s: %(message)s",
    )
    try:
        config = config_mod.load(args.config)
        if not config["privd_socket"]:
            raise ValueError("privd_socket is not set: where ggnet-privd listens")
        allowed = allowed_uids(config)
        group = api_user(config).pw_gid
    except (OSError, ValueError) as exc:
        print(f"ggnet privd: {exc}", file=sys.stderr)
        return 2
    # The served file is the API's to write: a root-owned one would lock the API out.
    config["served_file"] = None
    inventory = CurrentInventory(config)
    if not inventory.reload():
        logging.warning("inventory not loaded yet: %s", inventory.load_error)
    jobs_dir = Path(tempfile.mkdtemp(prefix="ggnet-privd-jobs-"))
    server = Server(
        Ops(config, inventory, jobs_dir=jobs_dir), config["privd_socket"], allowed, group
    )
    server.bind()
    background = Periodic()
    background.every(
        float(config["inventory_poll"]), inventory.reload_if_changed, "ggnet-privd-inventory"
    )

    def stop(_signum: int, _frame: object) -> None:
        threading.Thread(target=server.stop, daemon=True).start()

    signal.signal(signal.SIGTERM, stop)
    logging.info("listening on %s for uids %s", config["privd_socket"], sorted(allowed))
    try:
        server.serve_forever()
    finally:
        server.stop()
        background.stop()
        shutil.rmtree(jobs_dir, ignore_errors=True)
    return 0
