"""What a storage operation answers: the actions it took (or would take in check mode)
with its diff and warnings, or a refusal (StorageError) raised before anything changed."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from ..model import parse_duration as _parse_duration

FORCE_HINT = "pass force=true (playbooks: -e force=true) to do it anyway"


class StorageError(Exception):
    """Refused request: nothing was changed.  The message says what, where and what to do."""


class CapacityError(StorageError):
    """The pool is below its reserve: no new writebacks, boots refused."""


@dataclass
class Action:
    action: str
    target: str
    detail: str = ""
    client: str | None = None

    def describe(self) -> dict[str, Any]:
        out = {"action": self.action, "target": self.target}
        if self.detail:
            out["detail"] = self.detail
        if self.client:
            out["client"] = self.client
        return out


@dataclass
class Result:
    actions: list[Action] = field(default_factory=list)
    pending: list[dict[str, Any]] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    before: dict[str, Any] = field(default_factory=dict)
    after: dict[str, Any] = field(default_factory=dict)
    info: dict[str, Any] = field(default_factory=dict)

    @property
    def changed(self) -> bool:
        return bool(self.actions)

    def as_dict(self) -> dict[str, Any]:
        return {
            "changed": self.changed,
            "actions": [a.describe() for a in self.actions],
            "pending": self.pending,
            "warnings": self.warnings,
            "diff": {"before": self.before, "after": self.after},
            **self.info,
        }


def parse_duration(value: object, where: str) -> int:
    try:
        return _parse_duration(value)
    except ValueError as exc:
        raise StorageError(f"{where}: {value!r} {exc}") from None
