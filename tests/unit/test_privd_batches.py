"""ggnet_privd/batches.py: requests that wait are served together, a client is never
in two running batches, and each request gets its own item's error."""

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


class Gate:
    """A run function that records each batch and holds the first ones until let go."""

    def __init__(self, fail: dict[str, Exception] | None = None):
        self.batches: list[list[str]] = []
        self.release = threading.Event()
        self.fail = fail or {}

    def __call__(self, items: list[str]) -> dict[str, Exception]:
        self.batches.append(list(items))
        self.release.wait(10)
        return {i: e for i, e in self.fail.items() if i in items}


def _calls(b: Batches, items: list[str]) -> tuple[list[threading.Thread], dict[int, Exception]]:
    errors: dict[int, Exception] = {}

    def one(n: int, item: str) -> None:
        try:
            b.call(item)
        except Exception as exc:
            errors[n] = exc

    threads = [threading.Thread(target=one, args=(n, i)) for n, i in enumerate(items)]
    for t in threads:
        t.start()
    return threads, errors


def test_waiting_requests_go_in_one_batch():
    run = Gate()
    b = Batches(run, "reset", workers=1)
    first, _ = _calls(b, ["pc-1"])
    _until(lambda: run.batches, "the first batch did not start")
    rest, errors = _calls(b, ["pc-2", "pc-3", "pc-2", "pc-4"])
    _until(lambda: len(b._waiting) == 4, "the requests did not queue")
    run.release.set()
    for t in first + rest:
        t.join(10)
    assert not errors
    # pc-2 asked twice rides once in the second batch.
    assert run.batches == [["pc-1"], ["pc-2", "pc-3", "pc-4"]]


def test_a_client_is_never_in_two_running_batches():
    run = Gate()
    b = Batches(run, "reset", workers=2)
    first, _ = _calls(b, ["pc-1"])
    _until(lambda: len(run.batches) == 1, "the first batch did not start")
    again, _ = _calls(b, ["pc-1", "pc-2"])
    # The second worker takes pc-2 only: pc-1 is still being reset.
    _until(lambda: len(run.batches) == 2, "the second batch did not start")
    assert run.batches[1] == ["pc-2"]
    assert [r.item for r in b._waiting] == ["pc-1"]
    run.release.set()
    for t in first + again:
        t.join(10)
    assert run.batches[2:] == [["pc-1"]]


def test_each_request_gets_its_own_error():
    refused = OpError("pc-2: the pool is below its reserve", 409)
    run = Gate(fail={"pc-2": refused})
    run.release.set()
    b = Batches(run, "reset")
    threads, errors = _calls(b, ["pc-1", "pc-2"])
    for t in threads:
        t.join(10)
    assert list(errors.values()) == [refused] and errors.keys() == {1}


def test_a_batch_that_raises_fails_all_of_its_requests():
    def boom(items):
        raise RuntimeError("zfs is gone")

    b = Batches(boom, "reset")
    with pytest.raises(RuntimeError, match="zfs is gone"):
        b.call("pc-1")
    with pytest.raises(RuntimeError):  # the worker lives on for the next one
        b.call("pc-2")


def test_max_batch_bounds_a_batch():
    run = Gate()
    b = Batches(run, "reset", workers=1, max_batch=2)
    first, _ = _calls(b, ["pc-0"])
    _until(lambda: run.batches, "the first batch did not start")
    rest, _ = _calls(b, ["pc-1", "pc-2", "pc-3"])
    _until(lambda: len(b._waiting) == 3, "the requests did not queue")
    run.release.set()
    for t in first + rest:
        t.join(10)
    assert [len(x) for x in run.batches] == [1, 2, 1]


@pytest.mark.parametrize("workers, max_batch", [(0, 1), (1, 0)])
def test_bad_sizes_are_refused(workers, max_batch):
    with pytest.raises(ValueError, match="reset: workers and max_batch"):
        Batches(lambda items: {}, "reset", workers=workers, max_batch=max_batch)
