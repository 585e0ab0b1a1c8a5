"""Values as the inventory loader hands them over: unresolved ones, Ansible's tagged types."""

from __future__ import annotations

from typing import Any


class _Unresolved:
    """A value the loader could not template; it was reported already, checks skip it."""

    _instance = None

    def __new__(cls):
        if cls._instance is None:
            cls._instance = super().__new__(cls)
        return cls._instance

    def __repr__(self) -> str:
        return "UNRESOLVED"

    def __bool__(self) -> bool:
        return False


UNRESOLVED = _Unresolved()


def plain(value: Any) -> Any:
    """Strip Ansible's tagged types (2.19 data tagging) down to builtin ones."""
    if isinstance(value, bool) or value is None:
        return value
    if isinstance(value, str):
        return str(value)
    if isinstance(value, int):
        return int(value)
    if isinstance(value, float):
        return float(value)
    if isinstance(value, dict):
        return {str(k): plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [plain(v) for v in value]
    return value
