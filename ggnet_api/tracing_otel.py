"""Tracing on: OpenTelemetry spans of the API, its jobs and their playbooks.

Imported only by ggnet_api/tracing.py's setup when the `tracing` setting is true.

What is traced:
- every API request (a SERVER span named `<METHOD> <route>`, the route's rule and never
  the query string, which may carry a boot's token; a W3C `traceparent` header is
  honoured);
- the boot path's writeback reset (`boot.reset`, its PC's lock included) and every call
  to the privileged side made inside a request or a job (`privd <op>`; the collector's
  periodic `sample` has no parent and is not traced);
- every job: one trace per job, its root span `job <kind>` from the start of the run
  to its end (linked to the request that submitted it), and under it the playbook as
  ansible-runner reports it: a span per play, per task (`playbook_on_task_start`) and
  per host result (`runner_on_ok/failed/skipped/unreachable`), built in this process
  from the events the run sends back (already stripped and redacted by
  ggnet_privd/playbooks.py), timed by the events' own `created` stamps.

Spans built from events, rather than a TRACEPARENT handed to ansible-playbook: the
events already reach this process, redacted, whichever way the API runs (in process or
through ggnet-privd), so the playbook needs no callback plugin or OpenTelemetry in its
interpreter, root's process exports nothing, and one exporter (one file) serves all.

Spans go through BoundedProcessor (a queue of at most MAX_QUEUE spans and one
exporting thread; what does not fit is dropped and counted) to OTLP/HTTP or to
JsonLinesExporter.  The counts are on /metrics (ggnet_api/metrics.py).
"""

from __future__ import annotations

import collections
import contextlib
import json
import logging
import os
import threading
import time
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, SpanProcessor, TracerProvider
from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult
from opentelemetry.trace import Link, Span, SpanKind, Status, StatusCode
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from ggnet_api.tracing import JOB_ID, MAX_LINE, trace_file

log = logging.getLogger(__name__)

SERVICE = "ggnet-api"
MAX_QUEUE = 4096
BATCH = 512
# How long an exported task argument string may be (the rest is cut).
MAX_ARGS = 1024

# runner's result events -> the status a host's span shows.
RESULTS = {
    "runner_on_ok": "ok",
    "runner_on_failed": "failed",
    "runner_on_skipped": "skipped",
    "runner_on_unreachable": "unreachable",
}
TASK_STARTS = ("playbook_on_task_start", "playbook_on_handler_task_start")
DROP_REASONS = ("queue_full", "export_failed", "too_large")


class Counts:
    """Spans exported and dropped (by reason), for /metrics."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.exported = 0
        self.dropped = dict.fromkeys(DROP_REASONS, 0)

    def drop(self, reason: str, n: int = 1) -> None:
        with self._lock:
            self.dropped[reason] += n

    def export(self, n: int) -> None:
        with self._lock:
            self.exported += n

    def snapshot(self) -> tuple[int, dict[str, int]]:
        with self._lock:
            return self.exported, dict(self.dropped)


# -- exporting ----------------------------------------------------------------------------


def span_json(span: ReadableSpan) -> dict[str, Any]:
    """A span as one line of the JSON-lines file (the shape ggnet_api/tracing.py names)."""
    ctx = span.context
    assert ctx is not None
    return {
        "trace_id": format(ctx.trace_id, "032x"),
        "span_id": format(ctx.span_id, "016x"),
        "parent_id": format(span.parent.span_id, "016x") if span.parent else None,
        "name": span.name,
        "kind": span.kind.name,
        "start_ns": span.start_time,
        "end_ns": span.end_time,
        "status": span.status.status_code.name,
        "status_message": span.status.description,
        "attributes": dict(span.attributes or {}),
        "links": [
            {
                "trace_id": format(lk.context.trace_id, "032x"),
                "span_id": format(lk.context.span_id, "016x"),
            }
            for lk in span.links
        ],
        "service": SERVICE,
    }


class JsonLinesExporter(SpanExporter):
    """One span per line, appended to `path`; at max_bytes the file is rotated to
    path.1 (path.1 to path.2, ...), `backups` of them kept, so the files never hold
    more than max_bytes * (backups + 1).  A span whose line is longer than MAX_LINE is
    dropped (counted); a write that fails fails the batch (counted by the processor)."""

    def __init__(self, path: Path, max_bytes: int, backups: int, counts: Counts):
        self.path = path
        self.max_bytes = max_bytes
        self.backups = backups
        self.counts = counts
        self._lock = threading.Lock()
        self._fh: Any = None
        self._size = 0

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        lines = []
        for span in spans:
            line = (json.dumps(span_json(span), separators=(",", ":"), default=str) + "\n").encode()
            if len(line) > MAX_LINE:
                self.counts.drop("too_large")
                continue
            lines.append(line)
        try:
            with self._lock:
                for line in lines:
                    self._write(line)
                if self._fh is not None:
                    self._fh.flush()
        except OSError as exc:
            log.warning("tracing: cannot write %s: %s", self.path, exc)
            self._close()
            return SpanExportResult.FAILURE
        self.counts.export(len(lines))
        return SpanExportResult.SUCCESS

    def _write(self, line: bytes) -> None:
        if self._fh is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o640)
            self._fh = os.fdopen(fd, "ab")
            self._size = self._fh.tell()
        if self._size and self._size + len(line) > self.max_bytes:
            self._rotate()
            return self._write(line)
        self._fh.write(line)
        self._size += len(line)

    def _rotate(self) -> None:
        self._close()
        if self.backups == 0:
            self.path.unlink(missing_ok=True)
            return
        for i in range(self.backups - 1, 0, -1):
            older = self.path.with_name(f"{self.path.name}.{i}")
            if older.exists():
                older.replace(self.path.with_name(f"{self.path.name}.{i + 1}"))
        self.path.replace(self.path.with_name(f"{self.path.name}.1"))

    def _close(self) -> None:
        if self._fh is not None:
            with contextlib.suppress(OSError):
                self._fh.close()
            self._fh = None
            self._size = 0

    def shutdown(self) -> None:
        with self._lock:
            self._close()

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return True


class BoundedProcessor(SpanProcessor):
    """Ended spans wait in a queue of at most max_queue (beyond: dropped, counted) for
    one thread that hands them to the exporter in batches."""

    def __init__(
        self,
        exporter: SpanExporter,
        counts: Counts,
        max_queue: int = MAX_QUEUE,
        interval: float = 1.0,
        count_exports: bool = True,
    ):
        self.exporter = exporter
        self.counts = counts
        self.max_queue = max_queue
        self.interval = interval
        # The JSON-lines exporter counts what it wrote itself (it may drop a span).
        self.count_exports = count_exports
        self._queue: collections.deque[ReadableSpan] = collections.deque()
        self._cond = threading.Condition()
        self._busy = False
        self._stopping = False
        self._thread = threading.Thread(target=self._run, name="ggnet-trace-export", daemon=True)
        self._thread.start()

    def on_start(self, span: Any, parent_context: Any = None) -> None:
        pass

    def on_end(self, span: ReadableSpan) -> None:
        with self._cond:
            if self._stopping or len(self._queue) >= self.max_queue:
                self.counts.drop("queue_full")
                return
            self._queue.append(span)
            if len(self._queue) >= BATCH:
                self._cond.notify_all()

    def _run(self) -> None:
        while True:
            with self._cond:
                if not self._queue and not self._stopping:
                    self._cond.wait(self.interval)
                batch = [self._queue.popleft() for _ in range(min(BATCH, len(self._queue)))]
                if not batch and self._stopping:
                    return
                self._busy = bool(batch)
            if batch:
                self._export(batch)
                with self._cond:
                    self._busy = False
                    self._cond.notify_all()

    def _export(self, batch: list[ReadableSpan]) -> None:
        try:
            result = self.exporter.export(batch)
        except Exception:  # an exporter's bug must not stop the exporting thread
            log.exception("tracing: the exporter failed")
            result = SpanExportResult.FAILURE
        if result is not SpanExportResult.SUCCESS:
            self.counts.drop("export_failed", len(batch))
        elif self.count_exports:
            self.counts.export(len(batch))

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        deadline = time.monotonic() + timeout_millis / 1000
        with self._cond:
            self._cond.notify_all()
            while self._queue or self._busy:
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._cond.wait(min(left, 0.05))
                self._cond.notify_all()
        return True

    def shutdown(self) -> None:
        self.force_flush(10_000)
        with self._cond:
            self._stopping = True
            self._cond.notify_all()
        self._thread.join(10)
        self.exporter.shutdown()


# -- the spans ----------------------------------------------------------------------------


class Tracing:
    def __init__(self, config: dict[str, Any]):
        self.task_args = bool(config.get("tracing_task_args"))
        self.counts = Counts()
        endpoint = config.get("tracing_otlp_endpoint")
        exporter: SpanExporter
        if endpoint:
            from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

            exporter = OTLPSpanExporter(endpoint=endpoint, timeout=10)
            self.destination = endpoint
        else:
            path = trace_file(config)
            exporter = JsonLinesExporter(
                path,
                int(config["tracing_file_max_bytes"]),
                int(config["tracing_file_backups"]),
                self.counts,
            )
            self.destination = str(path)
        self.processor = BoundedProcessor(exporter, self.counts, count_exports=bool(endpoint))
        self.provider = TracerProvider(resource=Resource.create({"service.name": SERVICE}))
        self.provider.add_span_processor(self.processor)
        self.tracer = self.provider.get_tracer("ggnet_api")
        self.propagator = TraceContextTextMapPropagator()
        self._shut = False

    # -- generic ------------------------------------------------------------------------

    @contextlib.contextmanager
    def span(
        self,
        name: str,
        attributes: dict[str, Any] | None = None,
        kind: SpanKind = SpanKind.INTERNAL,
    ) -> Iterator[Span]:
        """A child of the current span (an exception ends it as ERROR)."""
        with self.tracer.start_as_current_span(name, kind=kind, attributes=attributes) as s:
            yield s

    @staticmethod
    def in_span() -> bool:
        return trace.get_current_span().get_span_context().is_valid

    @contextlib.contextmanager
    def child_span(self, name: str, attributes: dict[str, Any], kind: SpanKind) -> Iterator[None]:
        """A span only inside a request or a job's span (none for background work)."""
        if not self.in_span():
            yield
            return
        with self.span(name, attributes, kind):
            yield

    def current_link(self) -> Link | None:
        ctx = trace.get_current_span().get_span_context()
        return Link(ctx) if ctx.is_valid else None

    @staticmethod
    def note(key: str, value: Any) -> None:
        """An attribute on the current span (if any)."""
        trace.get_current_span().set_attribute(key, value)

    def stats(self) -> tuple[int, dict[str, int]]:
        return self.counts.snapshot()

    def flush(self, timeout: float = 10.0) -> bool:
        return self.processor.force_flush(int(timeout * 1000))

    def shutdown(self) -> None:
        if not self._shut:
            self._shut = True
            self.provider.shutdown()

    # -- requests -------------------------------------------------------------------------

    def instrument(self, app: Any) -> None:
        """A SERVER span around every request of the Flask app."""
        from flask import g, request

        @app.before_request
        def _trace_start() -> None:
            rule = request.url_rule.rule if request.url_rule is not None else "unmatched"
            parent = self.propagator.extract(request.headers)
            span = self.tracer.start_span(
                f"{request.method} {rule}",
                context=parent,
                kind=SpanKind.SERVER,
                attributes={
                    "http.request.method": request.method,
                    "http.route": rule,
                    "url.path": request.path[:200],
                },
            )
            token = otel_context.attach(trace.set_span_in_context(span, parent))
            g.ggnet_trace = (span, token)

        @app.after_request
        def _trace_status(resp: Any) -> Any:
            held = g.get("ggnet_trace")
            if held is not None:
                held[0].set_attribute("http.response.status_code", resp.status_code)
                if resp.status_code >= 500:
                    held[0].set_status(Status(StatusCode.ERROR))
            return resp

        @app.teardown_request
        def _trace_end(exc: BaseException | None) -> None:
            held = g.pop("ggnet_trace", None)
            if held is None:
                return
            span, token = held
            if exc is not None:
                span.record_exception(exc)
                span.set_status(Status(StatusCode.ERROR, type(exc).__name__))
            span.end()
            with contextlib.suppress(Exception):
                otel_context.detach(token)

    # -- jobs -----------------------------------------------------------------------------

    def job(self, job_id: str, kind: str, playbook: str, link: Link | None) -> JobTrace:
        return JobTrace(self, job_id, kind, playbook, link)


def event_ns(created: Any) -> int | None:
    """runner's `created` stamp (ISO 8601, UTC when it names no zone) in ns."""
    if not isinstance(created, str):
        return None
    try:
        at = datetime.fromisoformat(created)
    except ValueError:
        return None
    if at.tzinfo is None:
        at = at.replace(tzinfo=UTC)
    return int(at.timestamp() * 1e9)


class _Task:
    def __init__(self, span: Span):
        self.span = span
        self.hosts: dict[str, Span] = {}  # host -> its span while its result is awaited
        self.statuses: list[str] = []
        self.last_end = 0


class JobTrace:
    """One job's trace, built from its events as they arrive (one thread: the job's)."""

    def __init__(self, tracing: Tracing, job_id: str, kind: str, playbook: str, link: Link | None):
        self.tracing = tracing
        self.tracer = tracing.tracer
        self.job_id = job_id
        # A root: a trace of its own, whatever context the caller is in.
        self.root = self.tracer.start_span(
            f"job {kind}",
            context=otel_context.Context(),
            attributes={JOB_ID: job_id, "ggnet.job.kind": kind, "ansible.playbook": playbook},
            links=[link] if link is not None else None,
        )
        self.play: Span | None = None
        self.tasks: dict[str, _Task] = {}  # task uuid -> the open task

    def use(self) -> Any:
        """The root as the current span (the privileged call becomes its child)."""
        return trace.use_span(self.root, end_on_exit=False)

    def _start(self, name: str, parent: Span, at: int, attributes: dict[str, Any]) -> Span:
        return self.tracer.start_span(
            name,
            context=trace.set_span_in_context(parent),
            start_time=at,
            attributes={JOB_ID: self.job_id, **attributes},
        )

    def event(self, ev: dict[str, Any]) -> None:
        kind = ev.get("event")
        at = event_ns(ev.get("created")) or time.time_ns()
        if kind == "playbook_on_play_start":
            self._close_play(at)
            name = ev.get("play") or ""
            self.play = self._start(f"play {name}".strip(), self.root, at, {"ansible.play": name})
        elif kind in TASK_STARTS:
            # Tasks whose every host has answered are over (free strategy: others go on).
            for uuid, task in list(self.tasks.items()):
                if not task.hosts:
                    self._close_task(uuid, at)
            attrs: dict[str, Any] = {
                "ansible.task": ev.get("task") or "",
                "ansible.task.action": ev.get("task_action") or "",
                "ansible.task.uuid": ev.get("task_uuid") or "",
            }
            if kind == "playbook_on_handler_task_start":
                attrs["ansible.handler"] = True
            if self.tracing.task_args and ev.get("task_args"):
                attrs["ansible.task.args"] = str(ev["task_args"])[:MAX_ARGS]
            span = self._start(str(ev.get("task") or "task"), self.play or self.root, at, attrs)
            self.tasks[str(ev.get("task_uuid"))] = _Task(span)
        elif kind == "runner_on_start":
            started = self.tasks.get(str(ev.get("task_uuid")))
            host = str(ev.get("host"))
            if started is not None and host not in started.hosts:
                started.hosts[host] = self._start(host, started.span, at, {"ansible.host": host})
        elif kind in RESULTS:
            self._result(ev, RESULTS[kind], at)
        elif kind == "playbook_on_stats":
            self._close_play(at)

    def _result(self, ev: dict[str, Any], status: str, at: int) -> None:
        task = self.tasks.get(str(ev.get("task_uuid")))
        if task is None:
            return
        host = str(ev.get("host"))
        span = task.hosts.pop(host, None) or self._start(
            host, task.span, at, {"ansible.host": host}
        )
        if status == "ok" and ev.get("changed"):
            status = "changed"
        ignored = status == "failed" and bool(ev.get("ignore_errors"))
        span.set_attribute("ansible.status", "ignored" if ignored else status)
        if ignored:
            span.set_attribute("ansible.ignore_errors", True)
        elif status in ("failed", "unreachable"):
            span.set_status(Status(StatusCode.ERROR, status))
        span.end(end_time=at)
        task.statuses.append("ignored" if ignored else status)
        task.last_end = max(task.last_end, at)

    def _close_task(self, uuid: str, at: int) -> None:
        task = self.tasks.pop(uuid)
        for span in task.hosts.values():  # no result came (cancelled, interrupted)
            span.set_attribute("ansible.status", "no result")
            span.end(end_time=at)
        statuses = set(task.statuses)
        if statuses & {"failed", "unreachable"}:
            status = "failed" if "failed" in statuses else "unreachable"
            task.span.set_status(Status(StatusCode.ERROR, status))
        elif "changed" in statuses:
            status = "changed"
        elif statuses & {"ok", "ignored"}:
            status = "ok"
        elif statuses:
            status = "skipped"
        else:
            status = "no result"
        task.span.set_attribute("ansible.status", status)
        task.span.end(end_time=at if task.hosts or not task.last_end else task.last_end)

    def _close_play(self, at: int) -> None:
        for uuid in list(self.tasks):
            self._close_task(uuid, at)
        if self.play is not None:
            self.play.end(end_time=at)
            self.play = None

    def end(self, state: str, rc: Any, detail: str | None) -> None:
        at = time.time_ns()
        self._close_play(at)
        self.root.set_attribute("ggnet.job.state", state)
        if rc is not None:
            self.root.set_attribute("ggnet.job.rc", int(rc))
        if state != "successful":
            self.root.set_status(Status(StatusCode.ERROR, detail or state))
        self.root.end(end_time=at)
