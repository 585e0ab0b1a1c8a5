"""Opt-in tracing of the API: the settings, the off switch and the JSON-lines reader.

Tracing is off unless the `tracing` setting is true.  Off, nothing of OpenTelemetry is
imported and every hook is skipped (`setup` returns None and the callers test for
it), so an API without tracing pays nothing and needs no OpenTelemetry package.  On,
ggnet_api/tracing_otel.py builds the spans (requests, the boot path's reset, the
privileged calls, every job and its playbook's plays, tasks and hosts) and exports
them over OTLP/HTTP to `tracing_otlp_endpoint`, or, without one, to a JSON-lines file
(`tracing_file`, by default traces.jsonl in the state directory), rotated at
`tracing_file_max_bytes` with `tracing_file_backups` older files kept.

One line of the file is one span:
  {"trace_id": 32 hex, "span_id": 16 hex, "parent_id": 16 hex or null, "name",
   "kind", "start_ns", "end_ns", "status": "UNSET"|"OK"|"ERROR", "status_message",
   "attributes": {...}, "links": [{"trace_id", "span_id"}], "service"}

`ggnet job trace ID` reads it back (job_waterfall, below) into a job's waterfall.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ggnet_api.tracing_otel import Tracing

# The attribute that marks a job's root span, and the one every span of a job carries.
JOB_ID = "ggnet.job.id"
# A line longer than this is not written (counted as dropped, reason too_large).
MAX_LINE = 64 * 1024


def enabled(config: dict[str, Any]) -> bool:
    return bool(config.get("tracing"))


def trace_file(config: dict[str, Any]) -> Path:
    """Where the JSON-lines exporter writes (when no OTLP endpoint is set)."""
    return Path(config.get("tracing_file") or Path(config["state_dir"]) / "traces.jsonl")


def check(config: dict[str, Any]) -> None:
    """Refuse tracing settings that cannot work, naming the key and value (config.load)."""
    endpoint = config.get("tracing_otlp_endpoint")
    if endpoint is not None and (
        not isinstance(endpoint, str) or not endpoint.startswith(("http://", "https://"))
    ):
        raise ValueError(
            f"tracing_otlp_endpoint: {str(endpoint)[:80]!r} is not an http:// or https:// URL"
        )
    for key, low in (("tracing_file_max_bytes", MAX_LINE), ("tracing_file_backups", 0)):
        value = config.get(key)
        if isinstance(value, bool) or not isinstance(value, int) or value < low:
            raise ValueError(f"{key}: {value!r} is not an integer of at least {low}")


def setup(config: dict[str, Any]) -> Tracing | None:
    """The tracing the settings ask for; None when it is off (nothing imported)."""
    if not enabled(config):
        return None
    try:
        from ggnet_api import tracing_otel
    except ImportError as exc:
        raise RuntimeError(
            "tracing: true needs the OpenTelemetry packages (opentelemetry-sdk, "
            "opentelemetry-exporter-otlp-proto-http; requirements/server-jobs.lock): "
            f"{exc}"
        ) from None
    return tracing_otel.Tracing(config)


# -- reading the JSON-lines file back -----------------------------------------------------


def trace_files(path: Path, backups: int) -> list[Path]:
    """The file and its rotated copies, oldest first."""
    found = [path.with_name(f"{path.name}.{i}") for i in range(backups, 0, -1)]
    return [p for p in [*found, path] if p.is_file()]


def read_spans(paths: Iterable[Path]) -> Iterator[dict[str, Any]]:
    """Every span of the files; a line cut short (a rotation, a crash) is skipped."""
    for path in paths:
        with open(path, encoding="utf-8", errors="replace") as fh:
            for line in fh:
                try:
                    span = json.loads(line)
                except ValueError:
                    continue
                if isinstance(span, dict) and "trace_id" in span and "span_id" in span:
                    yield span


def job_spans(spans: Iterable[dict[str, Any]], job_id: str) -> list[dict[str, Any]]:
    """The spans of the job's trace (the trace of its root span), in start order."""
    by_trace: dict[str, list[dict[str, Any]]] = {}
    trace_id = None
    for span in spans:
        by_trace.setdefault(span["trace_id"], []).append(span)
        attrs = span.get("attributes") or {}
        if attrs.get(JOB_ID) == job_id and span.get("parent_id") is None:
            trace_id = span["trace_id"]
    if trace_id is None:
        return []
    return sorted(by_trace[trace_id], key=lambda s: (s["start_ns"], s["end_ns"]))


def job_waterfall(spans: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Rows of a job's waterfall, depth-first from its root: name, depth, offset and
    duration in seconds from the root's start, and status."""
    ids = {s["span_id"] for s in spans}
    children: dict[str | None, list[dict[str, Any]]] = {}
    for s in spans:
        parent = s.get("parent_id") if s.get("parent_id") in ids else None
        children.setdefault(parent, []).append(s)
    roots = children.get(None, [])
    if not roots:
        return []
    t0 = min(s["start_ns"] for s in roots)
    rows: list[dict[str, Any]] = []

    def walk(span: dict[str, Any], depth: int) -> None:
        attrs = span.get("attributes") or {}
        rows.append(
            {
                "name": span["name"],
                "depth": depth,
                "offset": (span["start_ns"] - t0) / 1e9,
                "duration": (span["end_ns"] - span["start_ns"]) / 1e9,
                "status": attrs.get("ansible.status")
                or attrs.get("ggnet.job.state")
                or ("error" if span.get("status") == "ERROR" else "ok"),
                "args": attrs.get("ansible.task.args"),
            }
        )
        for child in children.get(span["span_id"], []):
            walk(child, depth + 1)

    for root in roots:
        walk(root, 0)
    return rows


def format_waterfall(rows: list[dict[str, Any]], width: int = 30) -> str:
    """The waterfall as text: offset, duration, status, the name indented by depth and
    a bar placed on the job's time line."""
    if not rows:
        return ""
    total = max(r["offset"] + r["duration"] for r in rows) or 1e-9
    lines = [f"{'offset':>9} {'duration':>9}  {'status':<11} {'':<{width}}  name"]
    for r in rows:
        start = int(r["offset"] / total * width)
        length = max(1, round(r["duration"] / total * width))
        bar = (" " * start + "#" * length)[:width]
        name = "  " * r["depth"] + r["name"]
        if r.get("args"):
            name += f"  [{r['args']}]"
        lines.append(
            f"{r['offset']:>8.3f}s {r['duration']:>8.3f}s  {r['status']:<11} {bar:<{width}}  {name}"
        )
    return "\n".join(lines) + "\n"
