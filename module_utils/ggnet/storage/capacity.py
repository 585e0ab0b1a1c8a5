"""Space settings (the pool's reserve, the writeback quota) and the reserve check that
refuses new writebacks on a full pool."""

from __future__ import annotations

from .. import layout
from ..model import parse_size, parse_size_or_percent
from ..settings import default
from .results import CapacityError, StorageError
from .state import State


def reserve_bytes(cfg: dict, total: int) -> int:
    value = cfg.get("reserve", default("ggnet_storage", "reserve"))
    try:
        unit, amount = parse_size_or_percent(value)
    except ValueError as exc:
        raise StorageError(f"ggnet_storage.reserve: {value!r} {exc}") from None
    return int(total * amount / 100) if unit == "percent" else int(amount)


def quota_bytes(cfg: dict) -> int:
    value = cfg.get("writeback_quota")
    if value in (None, "none", 0, "0"):
        return 0
    try:
        return parse_size(value)
    except ValueError as exc:
        raise StorageError(f"ggnet_storage.writeback_quota: {value!r} {exc}") from None


def check_capacity(state: State, clients: list[str]) -> None:
    reserve = reserve_bytes(state.cfg, state.total)
    if state.available < reserve:
        raise CapacityError(
            f"pool {layout.pool(state.cfg)} has {_human(state.available)} free, below its reserve "
            f"ggnet_storage.reserve={state.cfg.get('reserve', '10%')} ({_human(reserve)}): "
            f"no new writeback for {', '.join(clients)}. Free space (playbooks/image.yml -e op=prune) "
            "or lower the reserve."
        )


def _human(n: float) -> str:
    for unit in ("B", "K", "M", "G", "T"):
        if abs(n) < 1024 or unit == "T":
            return f"{n:.0f}{unit}" if unit == "B" else f"{n:.1f}{unit}"
        n /= 1024
    return str(n)
