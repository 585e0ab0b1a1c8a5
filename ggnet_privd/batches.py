"""Single requests served in batches: the boot path's writeback resets.

When a room is switched on, every PC's script asks for its reset within a second or
two.  Each reset alone reads its client from zfs (one `zfs get`: a process, and a round
trip to the ZFS daemon per dataset).  Batched instead: a request waits in the queue; a
worker takes every request waiting (up to max_batch, a client at most once: a request
for a client still being served waits for a later batch) and hands them to `run`
together, which reads them all at once and finishes each one when it can (ggnet_privd/
ops.py: one `zfs get` for the batch, then the rollbacks that are needed, side by side:
zfs-fuse's rollbacks wait for a transaction group, which concurrent ones share).  The
worker takes the next batch as soon as `run` returns, without waiting for the last one's
rollbacks.

What bounds it: each waiting request holds one of ggnet-privd's connections
(max_connections), and the API asks from its request threads.  A request that is not
served within `timeout` seconds is refused (503); its batch's result then goes nowhere.
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from ggnet_privd.protocol import OpError


class Done(Protocol):
    """How run reports one item: done(item, None, result) when it succeeded (result is
    what `call` returns for it), done(item, error) when it failed."""

    def __call__(self, item: str, error: Exception | None, result: Any = None) -> None: ...


# run(items, done): done is called once per item, during or after run (from any thread).
RunBatch = Callable[[list[str], Done], None]


@dataclass
class _Request:
    item: str
    done: threading.Event = field(default_factory=threading.Event)
    error: Exception | None = None
    result: Any = None


class Batches:
    def __init__(self, run: RunBatch, name: str, max_batch: int = 64, timeout: float = 120.0):
        if max_batch < 1:
            raise ValueError(f"{name}: max_batch must be at least 1")
        self.run = run
        self.name = name
        self.max_batch = max_batch
        self.timeout = timeout
        self._cv = threading.Condition()
        self._waiting: list[_Request] = []
        self._running: set[str] = set()
        self._started = False
        # The sizes of the latest batches, for tests and benches.
        self.batch_sizes: deque[int] = deque(maxlen=256)

    def call(self, item: str) -> Any:
        """Serve ITEM in the next batch that can take it: its result, or raise what it
        failed with."""
        request = _Request(item)
        with self._cv:
            if not self._started:
                threading.Thread(target=self._work, name=self.name, daemon=True).start()
                self._started = True
            self._waiting.append(request)
            self._cv.notify_all()
        if not request.done.wait(self.timeout):
            raise OpError(f"{self.name}: {item} not served within {self.timeout:g} s", 503)
        if request.error is not None:
            raise request.error
        return request.result

    def _take(self) -> list[_Request]:
        """The next batch: waiting requests whose item is not being served, oldest
        first, at most max_batch distinct items (a repeated item rides along)."""
        taken: list[_Request] = []
        items: set[str] = set()
        for request in self._waiting:
            if request.item in self._running:
                continue
            if request.item not in items:
                if len(items) == self.max_batch:
                    continue
                items.add(request.item)
            taken.append(request)
        for request in taken:
            self._waiting.remove(request)
        self._running |= items
        if items:
            self.batch_sizes.append(len(items))
        return taken

    def _work(self) -> None:
        while True:
            with self._cv:
                batch = self._take()
                while not batch:
                    self._cv.wait()
                    batch = self._take()
            by_item: dict[str, list[_Request]] = {}
            for request in batch:
                by_item.setdefault(request.item, []).append(request)
            reported: set[str] = set()

            def done(
                item: str,
                error: Exception | None,
                result: Any = None,
                by_item: dict[str, list[_Request]] = by_item,
                reported: set[str] = reported,
            ) -> None:
                with self._cv:
                    if item in reported or item not in by_item:
                        return
                    reported.add(item)
                    self._running.discard(item)
                    self._cv.notify_all()  # a request for it may wait for the next batch
                for request in by_item[item]:
                    request.error = error
                    request.result = result
                    request.done.set()

            try:
                self.run(list(by_item), done)
            except Exception as exc:  # whatever run did not finish failed with it
                for item in by_item:
                    done(item, exc)
