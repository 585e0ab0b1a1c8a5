"""The boot path's decisions: what script a PC gets, and what its boots came to.

A known PC's script is built first (SAN URIs, CHAP, the boot's callback token); only
once it is built is the PC's writeback reset (unless it is kept for maintenance), on
the backend the script points it at.  So a script that cannot be rendered costs no
reset.  A boot that would fail (the pool below its reserve, an image without a
version, credentials iPXE cannot carry) is refused with a message the PC shows.  The
script's calls into the engine (iscsi.san_uri, ipxe.boot_script) are here; the reset
needs root and is the privileged side's `reset` (ggnet_api/privileged.py).

The service also holds what guards the boot path (ggnet_api/blueprints/boot.py): who
counts as the PC itself (BootOrigin) and the rate limits per source and per MAC.
"""

from __future__ import annotations

import contextlib
import logging
import secrets
import time
from typing import TYPE_CHECKING, Any

from ggnet import ipxe, iscsi

from ggnet_api.boot_origin import BootOrigin
from ggnet_api.db.database import Database
from ggnet_api.locks import Busy, Locks
from ggnet_api.privileged import Privileged
from ggnet_api.rate_limit import RateLimiter
from ggnet_api.snapshot import CurrentInventory, Snapshot
from ggnet_privd.protocol import OpError

if TYPE_CHECKING:
    from ggnet_api.tracing_otel import Tracing

log = logging.getLogger(__name__)


class BootRefused(Exception):
    """The boot server will not boot this PC now; the message is shown on its screen."""


class BootService:
    STAGES = ipxe.STAGES

    def __init__(
        self,
        config: dict[str, Any],
        inventory: CurrentInventory,
        privileged: Privileged,
        locks: Locks | None = None,
        tracing: Tracing | None = None,
    ):
        self.config = config
        self.tracing = tracing
        self.privileged = privileged
        self.inventory = inventory
        self.origin = BootOrigin(config)
        window, keys = float(config["boot_limit_window"]), int(config["boot_limit_keys"])
        self.limits = {
            "source": RateLimiter(int(config["boot_limit_source"]), window, keys),
            "mac": RateLimiter(int(config["boot_limit_mac"]), window, keys),
        }
        self.locks = locks or Locks()

    @staticmethod
    def new_token() -> str:
        """A boot's callback token: what its stage callbacks must show."""
        return secrets.token_urlsafe(18)

    def script(self, name: str, api_url: str, token: str) -> tuple[str, str, str | None]:
        """(script, kind, version) for a known client: the script is built, then the
        writeback reset unless kept.

        kind is `normal` or `maintenance`; version is the image version the reset gave
        the system disk (None when it was not reset).  Raises BootRefused when the boot would fail
        (no script can be rendered, a job holds the PC or its image, the pool is below
        its reserve, the image has no version); a script that cannot be rendered costs
        no reset."""
        snap = self.inventory.snapshot
        client = snap.clients[name]
        kind = "maintenance" if client["keep_writeback"] else "normal"
        backend = snap.iscsi_backend
        server_ip = snap.network.get("server_ip")
        if not server_ip:
            raise BootRefused("ggnet_network.server_ip is not set in the inventory")
        disks = 2 if client.get("game_disk") else 1
        try:
            uris = [
                iscsi.san_uri(server_ip, client["target_iqn"], backend, i) for i in range(disks)
            ]
            body = ipxe.boot_script(client, uris, api_url, snap.chap.get(name), token)
        except (ipxe.IpxeError, iscsi.IscsiError) as exc:
            raise BootRefused(str(exc)) from exc
        version = None
        if kind == "normal" and self.config["reset_on_boot"]:
            try:
                # Never during a job on this PC or its image: refused, the PC asks again.
                with self._traced_reset(name, backend), self.locks.boot(name, snap):
                    version = self.privileged.reset(name)
            except (OpError, Busy) as exc:
                raise BootRefused(str(exc)) from exc
        return body, kind, version

    def _traced_reset(self, name: str, backend: str) -> Any:
        """The reset's span (its lock's wait and the privileged call), tracing on."""
        if self.tracing is None:
            return contextlib.nullcontext()
        attrs = {"ggnet.client": name, "ggnet.iscsi.backend": str(backend)}
        return self.tracing.span("boot.reset", attrs)

    def reset_after_session(self, name: str) -> bool:
        """Reset the writeback of PC `name` now that its session has ended (the
        collector's boot_sessions), so that its next boot finds it fresh and only checks
        it: at opening time the whole room's resets are then already done.

        Skipped (False) for a PC in maintenance, with reset_on_boot or
        reset_on_session_end off, and while a job or a boot holds the PC; privd refuses
        it while any initiator is logged in to the PC's target (its own reading of the
        backend).  Nothing a PC sends leads here: only the server's own reading of its
        targets' sessions."""
        snap = self.inventory.snapshot
        client = snap.clients.get(name)
        if client is None or client["keep_writeback"]:
            return False
        if not (self.config["reset_on_boot"] and self.config["reset_on_session_end"]):
            return False
        try:
            with self.locks.boot(name, snap):
                self.privileged.reset_idle(name)
        except (OpError, Busy) as exc:
            log.info("writeback of %s not reset after its session: %s", name, exc)
            return False
        return True

    @staticmethod
    def discovery_script(api_url: str) -> str:
        return ipxe.discovery_script(api_url)

    @staticmethod
    def refusal_script(message: str, api_url: str, mac: str, token: str | None = None) -> str:
        """A refused boot's script; without a token it calls nothing back (no boot was
        recorded for it to report on)."""
        return ipxe.error_script(message, api_url, mac, token, report=token is not None)

    def expire(self, db: Database) -> None:
        """Boots that reported no stage within boot_timeout become `timeout`."""
        db.expire_boots(time.time() - float(self.config["boot_timeout"]))


def client_state(client: dict[str, Any], last_boot: dict[str, Any] | None) -> str:
    """maintenance, or what the last boot came to: never_booted, booting, booted, ..."""
    if client.get("keep_writeback"):
        return "maintenance"
    if last_boot is None:
        return "never_booted"
    return {"pending": "booting", "ok": "booted"}.get(last_boot["result"], last_boot["result"])


def count_client_states(snap: Snapshot, last_results: dict[str, str]) -> dict[str, int]:
    """state -> how many of the snapshot's clients are in it."""
    counts: dict[str, int] = {}
    for c in snap.clients.values():
        result = last_results.get(c["mac"])
        state = client_state(c, None if result is None else {"result": result})
        counts[state] = counts.get(state, 0) + 1
    return counts
