"""Validation of a whole ggnet inventory (placeholder: Problem type first)."""

from __future__ import annotations

from dataclasses import dataclass


class _Unresolved:
    """A value the loader could not template; validation skips its checks."""

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
