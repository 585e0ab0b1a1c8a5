"""Wakes: a magic packet sent to a PC, and whether the PC answered.

A wake job (kind power, op wake) records the time its packet left.  The wake is
confirmed by the PC's next request that reaches the server within `wake_timeout`
seconds: its iPXE script (`GET /boot/<mac>`, timed as it arrives) or a DHCP message
from its MAC in dnsmasq's log (timed when the collector reads the log, so up to
`collect_interval` late: the boot request, when it comes first, wins).  The time from
the packet to that request is observed in ggnet_wake_to_request_seconds; past the
timeout without one the wake is `unconfirmed`.

The MACs with a wake pending are kept in memory too, so that a boot or a DHCP line of
a PC nobody woke costs a dict look-up, not a database write.
"""

from __future__ import annotations

import threading
import time
from typing import Any

from ggnet_api.db.database import Database

# Firmware POST, the NIC's link and the PXE ROM's DHCP: seconds to minutes.
WAKE_BUCKETS = (2.0, 5.0, 10.0, 15.0, 20.0, 30.0, 45.0, 60.0, 90.0, 120.0, 180.0, 300.0)
VIA = ("boot", "dhcp")


def state_of(wake: dict[str, Any], now: float, timeout: float) -> str:
    """sent, confirmed or unconfirmed (no request within timeout of the packet)."""
    if wake.get("confirmed") is not None:
        return "confirmed"
    return "sent" if now - float(wake["sent"]) < timeout else "unconfirmed"


def view(wake: dict[str, Any] | None, now: float, timeout: float) -> dict[str, Any] | None:
    """A machine's latest wake as the API shows it."""
    if wake is None:
        return None
    confirmed = wake.get("confirmed")
    return {
        "state": state_of(wake, now, timeout),
        "sent": wake["sent"],
        "job_id": wake.get("job_id"),
        "interface": wake.get("interface"),
        "confirmed": confirmed,
        "via": wake.get("via"),
        "seconds": None if confirmed is None else round(confirmed - wake["sent"], 3),
    }


class Wakes:
    def __init__(self, db: Database, timeout: float, observe=None):
        self.db = db
        self.timeout = timeout
        # observe(seconds, via): the histogram (Metrics.wake_seconds), set by the app.
        self.observe = observe
        self._lock = threading.Lock()
        self._pending: dict[str, float] = {}
        now = time.time()
        for w in db.pending_wakes(now - timeout):
            self._pending[w["mac"]] = max(self._pending.get(w["mac"], 0.0), w["sent"])

    def sent(self, client: str, mac: str, at: float, interface: str, job_id: str | None) -> None:
        self.db.add_wake(client, mac, at, interface, job_id)
        with self._lock:
            self._pending[mac] = at

    def seen(self, mac: str, at: float, via: str) -> float | None:
        """A request from `mac` reached the server at `at`: the seconds since its pending
        wake's packet when this confirms one, else None."""
        with self._lock:
            sent = self._pending.get(mac)
            if sent is None:
                return None
            if at - sent >= self.timeout:
                del self._pending[mac]  # unconfirmed: its state says so from now on
                return None
            if at < sent:
                return None  # a request older than the packet (a log line read late)
            del self._pending[mac]
        seconds = self.db.confirm_wake(mac, sent, at, via)
        if seconds is not None and self.observe is not None:
            self.observe(seconds, via)
        return seconds

    def latest(self, mac: str) -> dict[str, Any] | None:
        return self.db.last_wake(mac)

    def pending(self) -> list[str]:
        with self._lock:
            return sorted(self._pending)
