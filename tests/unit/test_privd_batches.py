"""ggnet_privd/batches.py: requests that wait are served together, a client is never
in two batches at once, each request gets its own item's result, and a batch's items
finish one by one."""

from __future__ import annotations

import threading
import time

import pytest

from ggnet_privd.batches import Batches
from ggnet_privd.protocol import OpError

pytestmark = pytest.mark.unit


def _until(cond, what: str) -> None:
    deadline = time.monotonic() + 10
    while not cond():
        assert time.monotonic() < deadline, what
        time.sleep(0.005)


class Held:
    """A run function that records each batch and finishes each item only when the
    test lets that item go (from another thread, as privd's rollbacks do)."""

    def __init__(self, fail: dict[str, Exception] | None = None, hold_first: bool = False):
        self.batches: list[list[str]] = []
        self.gates: dict[str, threading.Event] = {}
        self.fail = fail or {}
        # With hold_first, run itself does not return from the first batch until
        # let_go is set: the worker is busy, and what comes meanwhile waits.
        self.let_go = threading.Event()
        if not hold_first:
            self.let_go.set()

    def release(self, *items: str) -> None:
        for item in items:
            self.gates.setdefault(item, threading.Event()).set()

    def __call__(self, items, done):
        self.batches.append(list(items))
        for item in items:
            gate = self.gates.setdefault(item, threading.Event())

            def finish(item=item, gate=gate):
                gate.wait(10)
                done(item, self.fail.get(item))

            threading.Thread(target=finish, daemon=True).start()
        self.let_go.wait(10)


def _calls(b: Batches, items: list[str], queue_in_order: bool = False):
    """Call b with each item from a thread of its own.  queue_in_order (the worker
    held busy): each thread's request is queued before the next thread starts."""
    errors: dict[int, Exception] = {}
    finished: list[int] = []

    def one(n: int, item: str) -> None:
        try:
            b.call(item)
        except Exception as exc:
            errors[n] = exc
        finished.append(n)

    threads = [threading.Thread(target=one, args=(n, i)) for n, i in enumerate(items)]
    for t in threads:
        queued = len(b._waiting)
        t.start()
        if queue_in_order:
            _until(lambda queued=queued: len(b._waiting) > queued, "a request did not queue")
    return threads, errors, finished


def _join(*groups) -> None:
    for threads in groups:
        for t in threads:
            t.join(10)


def test_requests_that_wait_go_in_one_batch_but_not_a_client_being_served():
    run = Held(hold_first=True)
    b = Batches(run, "reset")
    first, _, _ = _calls(b, ["pc-1"])
    _until(lambda: run.batches, "the first batch did not start")
    rest, errors, _ = _calls(b, ["pc-1", "pc-2", "pc-3", "pc-2"], queue_in_order=True)
    _until(lambda: len(b._waiting) == 4, "the requests did not queue")
    run.let_go.set()
    # The next batch: pc-2 once and pc-3; pc-1 waits until its first reset is done.
    _until(lambda: len(run.batches) == 2, "the second batch did not start")
    assert run.batches[1] == ["pc-2", "pc-3"]
    assert [r.item for r in b._waiting] == ["pc-1"]
    run.release("pc-1", "pc-2", "pc-3")
    _join(first, rest)
    assert not errors
    assert run.batches == [["pc-1"], ["pc-2", "pc-3"], ["pc-1"]]


def test_an_item_finishes_without_waiting_for_its_batch():
    run = Held()
    b = Batches(run, "reset")
    blocker, _, _ = _calls(b, ["pc-0"])
    _until(lambda: run.batches, "the first batch did not start")
    threads, errors, finished = _calls(b, ["pc-1", "pc-2"])
    _until(lambda: sum(map(len, run.batches)) == 3, "pc-1 and pc-2 were not taken")
    run.release("pc-2")
    _until(lambda: finished == [1], "pc-2 did not finish alone")
    run.release("pc-0", "pc-1")
    _join(blocker, threads)
    assert sorted(finished) == [0, 1] and not errors


def test_each_request_gets_its_own_error():
    refused = OpError("pc-2: the pool is below its reserve", 409)
    run = Held(fail={"pc-2": refused})
    run.release("pc-1", "pc-2")
    b = Batches(run, "reset")
    threads, errors, _ = _calls(b, ["pc-1", "pc-2"])
    _join(threads)
    assert errors == {1: refused}


def test_each_request_gets_its_own_result():
    """What the boot's reset answers with (the version each disk boots) is the item's."""

    def versions(items, done):
        for item in reversed(items):
            done(item, None, {"system": f"v-{item}"})

    b = Batches(versions, "reset")
    assert b.call("pc-1") == {"system": "v-pc-1"}
    got: dict[str, object] = {}
    threads = [
        threading.Thread(target=lambda i=i: got.update({i: b.call(i)})) for i in ("pc-2", "pc-3")
    ]
    for t in threads:
        t.start()
    _join(threads)
    assert got == {"pc-2": {"system": "v-pc-2"}, "pc-3": {"system": "v-pc-3"}}


def test_a_batch_that_raises_fails_what_it_did_not_finish():
    def boom(items, done):
        done("pc-1", None)
        raise RuntimeError("zfs is gone")

    b = Batches(boom, "reset")
    b.call("pc-1")
    with pytest.raises(RuntimeError, match="zfs is gone"):
        b.call("pc-2")
    with pytest.raises(RuntimeError):  # the worker lives on for the next one
        b.call("pc-3")


def test_max_batch_bounds_a_batch():
    run = Held(hold_first=True)
    b = Batches(run, "reset", max_batch=2)
    first, _, _ = _calls(b, ["pc-0"])
    _until(lambda: run.batches, "the first batch did not start")
    rest, _, _ = _calls(b, ["pc-1", "pc-2", "pc-3"], queue_in_order=True)
    _until(lambda: len(b._waiting) == 3, "the requests did not queue")
    run.let_go.set()
    run.release("pc-0", "pc-1", "pc-2", "pc-3")
    _join(first, rest)
    assert run.batches == [["pc-0"], ["pc-1", "pc-2"], ["pc-3"]]


def test_a_request_not_served_in_time_is_refused():
    run = Held()
    b = Batches(run, "reset", timeout=0.05)
    with pytest.raises(OpError, match=r"reset: pc-1 not served within 0\.05 s") as exc:
        b.call("pc-1")
    assert exc.value.status == 503
    run.release("pc-1")


def test_bad_sizes_are_refused():
    with pytest.raises(ValueError, match="reset: max_batch must be at least 1"):
        Batches(lambda items, done: None, "reset", max_batch=0)
