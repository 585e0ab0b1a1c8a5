"""What a check reports (Problem), how checks collect them, and one line per shared cause."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any


@dataclass
class Problem:
    where: str
    key: str
    value: object
    message: str
    origin: str | None = None

    def __str__(self) -> str:
        text = f"{self.where}: {self.key}: {self.message}"
        if self.value is not None:
            text += f" (value: {self.value})"
        return text

    def as_dict(self) -> dict[str, Any]:
        return {
            "where": self.where,
            "key": self.key,
            "value": None if self.value is None else str(self.value),
            "message": self.message,
            "origin": self.origin,
        }


class _Collector:
    def __init__(self, origins: Mapping[str, Mapping[str, str]]):
        self.origins = origins
        self.problems: list[Problem] = []

    def origin(self, host: str, key: str) -> str | None:
        known = self.origins.get(host) or {}
        while key:
            if key in known:
                return known[key]
            key = key.rpartition(".")[0]
        return None

    def add(self, host: str, key: str, value: object, message: str) -> None:
        self.problems.append(
            Problem(host, key, _show(value), message, origin=self.origin(host, key))
        )

    def add_secret(self, host: str, key: str, value: object, message: str) -> None:
        shown = f"(hidden, {len(value)} characters)" if isinstance(value, str) else "(hidden)"
        self.problems.append(Problem(host, key, shown, message, self.origin(host, key)))


def _show(value: object) -> object:
    if value is None:
        return None
    if isinstance(value, bool):
        return "true" if value else "false"
    return value


def _group_of(origin: str) -> str | None:
    parts = Path(origin.split(":", 1)[0]).parts
    if "group_vars" in parts:
        index = parts.index("group_vars")
        if index + 1 < len(parts):
            return Path(parts[index + 1]).stem if index + 2 == len(parts) else parts[index + 1]
    return None


def _merge_shared(problems: list[Problem]) -> list[Problem]:
    """One line for a problem that many hosts inherit from the same declaration."""
    buckets: dict[tuple, list[Problem]] = {}
    order: list[tuple] = []
    for problem in problems:
        if problem.origin is None:
            bucket_key: tuple = (id(problem),)
        else:
            bucket_key = (problem.origin, problem.key, problem.message, str(problem.value))
        if bucket_key not in buckets:
            buckets[bucket_key] = []
            order.append(bucket_key)
        buckets[bucket_key].append(problem)
    merged = []
    for bucket_key in order:
        group = buckets[bucket_key]
        first = group[0]
        hosts = [p.where for p in group]
        if first.origin is None:
            merged.append(first)
            continue
        group_name = _group_of(first.origin)
        if group_name:
            where = f"group {group_name} ({first.origin})"
        elif len(hosts) == 1:
            where = f"{hosts[0]} ({first.origin})"
        else:
            shown = ", ".join(hosts[:5]) + (f" and {len(hosts) - 5} more" if len(hosts) > 5 else "")
            where = f"{first.origin} (hosts {shown})"
        merged.append(Problem(where, first.key, first.value, first.message, first.origin))
    return merged
