"""The API's background threads: each runs one body on an interval until stopped.

A body that raises is logged and run again at the next interval: one bad read of the
inventory or of zfs must not end the thread that retries it.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

log = logging.getLogger(__name__)


class Periodic:
    def __init__(self) -> None:
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []

    def every(self, seconds: float, body: Callable[[], object], name: str) -> None:
        """Start a daemon thread running body now and every `seconds` after."""
        thread = threading.Thread(target=self._loop, args=(body, seconds), name=name, daemon=True)
        self._threads.append(thread)
        thread.start()

    def stop(self) -> None:
        self._stop.set()
        for t in self._threads:
            t.join(5)

    def _loop(self, body: Callable[[], object], seconds: float) -> None:
        while not self._stop.is_set():
            try:
                body()
            except Exception:
                log.exception("%s failed", getattr(body, "__name__", body))
            self._stop.wait(seconds)
