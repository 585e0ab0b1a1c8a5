"""Single requests served in batches: the boot path's writeback resets.

When a room is switched on, every PC's script asks for its reset within a second or
two.  Each reset alone reads its client from zfs (one `zfs get`, a process and a round
trip to the ZFS daemon per dataset) and rolls it back when it was written to; side by
side on a two-core server they also fight over the CPU.  Batches instead: a request
waits in the queue, a worker takes every request waiting (up to max_batch, a client
at most once: a request for a client already in a running batch waits for the next
one) and serves them together (ggnet_privd/ops.py: one read for the whole batch, then
each client's rollback only if it was written to).

What bounds it: each waiting request holds one of ggnet-privd's connections
(max_connections), and the API asks from its request threads; `workers` batches run
at once.  A request that is not served within `timeout` seconds is refused (503) and
stays queued for the batch that takes it, whose result then goes nowhere.
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

from ggnet_privd.protocol import OpError

# Items of a batch -> the error of each item that failed (absent: it succeeded).
RunBatch = Callable[[list[str]], dict[str, Exception]]


@dataclass
class _Request:
    item: str
    done: threading.Event = field(default_factory=threading.Event)
    error: Exception | None = None


class Batches:
    def __init__(
        self,
        run: RunBatch,
        name: str,
        workers: int = 1,
        max_batch: int = 64,
        timeout: float = 120.0,
    ):
        if workers < 1 or max_batch < 1:
            raise ValueError(f"{name}: workers and max_batch must be at least 1")
        self.run = run
        self.name = name
        self.workers = workers
        self.max_batch = max_batch
        self.timeout = timeout
        self._cv = threading.Condition()
        self._waiting: list[_Request] = []
        self._running: set[str] = set()
        self._started = False
        # The sizes of the latest batches, for tests and benches.
        self.batch_sizes: deque[int] = deque(maxlen=256)

    def call(self, item: str) -> None:
        """Serve ITEM in the next batch that can take it; raise what its batch raised."""
        request = _Request(item)
        with self._cv:
            if not self._started:
                for i in range(self.workers):
                    threading.Thread(
                        target=self._work, name=f"{self.name}-{i}", daemon=True
                    ).start()
                self._started = True
            self._waiting.append(request)
            self._cv.notify()
        if not request.done.wait(self.timeout):
            raise OpError(f"{self.name}: {item} not served within {self.timeout:g} s", 503)
        if request.error is not None:
            raise request.error

    def _take(self) -> list[_Request]:
        """The next batch: waiting requests whose item no running batch holds, oldest
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
        return taken

    def _work(self) -> None:
        while True:
            with self._cv:
                batch = self._take()
                while not batch:
                    self._cv.wait()
                    batch = self._take()
            items = list(dict.fromkeys(r.item for r in batch))
            try:
                errors = self.run(items)
            except Exception as exc:  # the whole batch failed: each of its requests says so
                errors = dict.fromkeys(items, exc)
            finally:
                with self._cv:
                    self._running.difference_update(items)
                    self.batch_sizes.append(len(items))
                    self._cv.notify_all()
            for request in batch:
                request.error = errors.get(request.item)
                request.done.set()
