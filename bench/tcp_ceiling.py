"""The most any TCP-attached target could give a reader of a hot file on this machine.

`python tcp_ceiling.py FILE ROUNDS` (run inside the bench's network namespace) prints
JSON: per round, the MiB/s of the raw read (readinto one reused 1 MiB buffer) and of
the same bytes received over loopback TCP into the same buffer from a sender that uses
sendfile(2), so it copies nothing and speaks no protocol.  No iSCSI target can beat
that sender; the ratio of the two is the ceiling for the bench's hot-cache ratio.
"""

from __future__ import annotations

import json
import os
import socket
import sys
import time

CHUNK = 1 << 20


def warm(path: str) -> None:
    with open(path, "rb") as fh:
        while fh.read(8 << 20):
            pass


def raw_read(path: str, buf: memoryview) -> float:
    size = os.path.getsize(path)
    with open(path, "rb", buffering=0) as fh:
        started = time.perf_counter()
        while fh.readinto(buf):
            pass
        return size / (time.perf_counter() - started) / 2**20


def tcp_read(path: str, buf: memoryview) -> float:
    size = os.path.getsize(path)
    with socket.create_server(("127.0.0.1", 0)) as server:
        pid = os.fork()
        if pid == 0:  # the sender: the file straight from the page cache to the socket
            conn, _ = server.accept()
            with open(path, "rb") as fh:
                sent = 0
                while sent < size:
                    sent += os.sendfile(conn.fileno(), fh.fileno(), sent, size - sent)
            conn.close()
            os._exit(0)
        with socket.create_connection(server.getsockname()) as sock:
            started = time.perf_counter()
            got = 0
            while got < size:
                n = sock.recv_into(buf)
                if not n:
                    break
                got += n
            elapsed = time.perf_counter() - started
        _, status = os.waitpid(pid, 0)
    if got != size or status != 0:
        raise RuntimeError(f"received {got} of {size} bytes (sender status {status})")
    return size / elapsed / 2**20


def main(path: str, rounds: int) -> dict:
    buf = memoryview(bytearray(CHUNK))
    runs: dict[str, list[float]] = {"raw": [], "tcp": []}
    for _ in range(rounds):
        for name, read in (("raw", raw_read), ("tcp", tcp_read)):
            warm(path)
            runs[name].append(read(path, buf))
    return runs


if __name__ == "__main__":
    print(json.dumps(main(sys.argv[1], int(sys.argv[2]))))
