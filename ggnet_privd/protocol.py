"""The privd protocol: one JSON object per line, one request per connection.

Request:  {"op": name, "args": {...}}
Replies:  zero or more {"event": {...}} lines (a job's events as they come), then one
          {"ok": true, "result": ...} or {"ok": false, "error": "...", "status": int}
          (and "problems": [...] when an approval's inventory does not validate).

status is the HTTP status the API answers with when it passes the refusal on.
"""

from __future__ import annotations

import json
import re
from typing import Any

# A request is a name and a few short values: anything longer is not one of ours.
MAX_REQUEST = 64 * 1024
# A reply may carry a Sample (every client's writeback size, every image's versions).
MAX_REPLY = 16 * 1024 * 1024

_TEMPLATE = re.compile(r"\{\{|\{%|\{#")


class OpError(Exception):
    """A refused or failed operation; the message names the field and the value."""

    def __init__(self, message: str, status: int = 400, problems: list[str] | None = None):
        super().__init__(message)
        self.status = status
        self.problems = problems or []


def encode(message: dict[str, Any]) -> bytes:
    return json.dumps(message, separators=(",", ":")).encode() + b"\n"


def request(op: str, args: dict[str, Any]) -> bytes:
    return encode({"op": op, "args": args})


def ok(result: Any) -> bytes:
    return encode({"ok": True, "result": result})


def error(exc: OpError) -> bytes:
    reply: dict[str, Any] = {"ok": False, "error": str(exc), "status": exc.status}
    if exc.problems:
        reply["problems"] = exc.problems
    return encode(reply)


def event(data: dict[str, Any]) -> bytes:
    return encode({"event": data})


def parse_request(line: bytes) -> tuple[str, dict[str, Any]]:
    """(op, args) of a request line; OpError when it is not a request."""
    try:
        message = json.loads(line)
    except (ValueError, UnicodeDecodeError):
        raise OpError("request: not a JSON object on one line") from None
    if not isinstance(message, dict) or set(message) != {"op", "args"}:
        raise OpError('request: must be {"op": name, "args": {...}} and nothing else')
    op, args = message["op"], message["args"]
    if not isinstance(op, str) or not isinstance(args, dict):
        raise OpError("request: op must be a string and args an object")
    return op, args


def check_no_template(value: Any, where: str) -> None:
    """Refuse a Jinja marker anywhere in a value: Ansible would template it."""
    if isinstance(value, str):
        if _TEMPLATE.search(value):
            raise OpError(f"{where}: {value[:60]!r} contains template markers ({{{{, {{%, {{#)")
    elif isinstance(value, dict):
        for k, v in value.items():
            check_no_template(str(k), f"{where} (a key)")
            check_no_template(v, f"{where}.{k}")
    elif isinstance(value, list):
        for i, v in enumerate(value):
            check_no_template(v, f"{where}[{i}]")


def parse_reply(line: bytes) -> dict[str, Any]:
    try:
        message = json.loads(line)
    except (ValueError, UnicodeDecodeError):
        raise OpError("ggnet-privd: a reply that is not JSON", 502) from None
    if not isinstance(message, dict):
        raise OpError("ggnet-privd: a reply that is not an object", 502)
    return message
