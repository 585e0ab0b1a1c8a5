"""Tracing (ggnet_api/tracing.py, tracing_otel.py) without a playbook: off costs
nothing, the settings are checked, the trace file is bounded and counts what it
drops, a request's span honours traceparent and keeps no query string, and the boot
path's reset is a span of the PC's boot request."""

from __future__ import annotations

import json
import subprocess
import sys
import threading

import pytest

from ggnet_api import config as config_mod
from ggnet_api.tracing import MAX_LINE, job_waterfall, read_spans, trace_files

pytestmark = pytest.mark.unit


@pytest.fixture
def otel():
    """Tests of tracing on need the OpenTelemetry packages (requirements/dev.lock)."""
    return pytest.importorskip("opentelemetry.sdk", reason="tracing on needs OpenTelemetry")


# The boot path's own test setup (its inventory; pytest's prepend mode puts tests/unit
# on sys.path).
from test_boot_security import PC1, PC1_IP, make_app  # noqa: E402


def traced_config(tmp_path, **more):
    return config_mod.load(state_dir=str(tmp_path / "state"), tracing=True, **more)


def test_off_imports_no_opentelemetry_and_exports_no_series(tmp_path):
    code = (
        "import sys\n"
        "from ggnet_api.app import create_app\n"
        f"app = create_app({{'state_dir': {str(tmp_path)!r}, 'background': False}})\n"
        "assert app.extensions['ggnet'].tracing is None\n"
        "text = app.test_client().get('/metrics').get_data(as_text=True)\n"
        "assert 'ggnet_api_trace_' not in text, 'trace series with tracing off'\n"
        "loaded = sorted(m for m in sys.modules if m.startswith('opentelemetry'))\n"
        "assert not loaded and 'ggnet_api.tracing_otel' not in sys.modules, loaded\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr


@pytest.mark.parametrize(
    ("key", "value", "message"),
    [
        ("tracing_otlp_endpoint", "collector:4318", "tracing_otlp_endpoint: 'collector:4318'"),
        ("tracing_file_max_bytes", 100, "tracing_file_max_bytes: 100 is not an integer"),
        ("tracing_file_backups", -1, "tracing_file_backups: -1 is not an integer"),
    ],
)
def test_bad_tracing_settings_are_refused_by_name(tmp_path, key, value, message):
    with pytest.raises(ValueError, match=message):
        config_mod.load(state_dir=str(tmp_path), **{key: value})


def test_the_trace_file_is_rotated_within_its_bound_and_counts_too_large(tmp_path, otel):
    from ggnet_api.tracing_otel import Tracing

    path = tmp_path / "t.jsonl"
    t = Tracing(
        traced_config(
            tmp_path,
            tracing_file=str(path),
            tracing_file_max_bytes=MAX_LINE,
            tracing_file_backups=1,
        )
    )
    for i in range(1500):
        with t.span(f"span {i}", {"filler": "x" * 200}):
            pass
    with t.span("huge", {"filler": "x" * (MAX_LINE + 1)}):
        pass
    with t.span("last"):
        pass
    assert t.flush()
    files = trace_files(path, 5)
    assert files == [tmp_path / "t.jsonl.1", path]  # one backup kept, never a second
    assert all(f.stat().st_size <= MAX_LINE for f in files)
    names = [s["name"] for s in read_spans(files)]
    assert names[-1] == "last" and "span 0" not in names and "huge" not in names
    exported, dropped = t.stats()
    assert dropped == {"queue_full": 0, "export_failed": 0, "too_large": 1}
    assert exported == 1501 and len(names) < exported
    t.shutdown()


def test_a_full_queue_and_a_failed_export_are_counted_and_shown(tmp_path, otel):
    from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult

    from ggnet_api.metrics import render_tracing
    from ggnet_api.tracing_otel import BoundedProcessor, Counts, Tracing

    release = threading.Event()

    class Stalled(SpanExporter):
        """An exporter that waits for the test (a stand-in for a slow collector)."""

        def export(self, spans):
            release.wait(10)
            return SpanExportResult.SUCCESS

    from opentelemetry.sdk.trace import TracerProvider

    counts = Counts()
    processor = BoundedProcessor(Stalled(), counts, max_queue=3, interval=0.01)
    provider = TracerProvider()
    provider.add_span_processor(processor)
    tracer = provider.get_tracer("test")
    for i in range(20):
        with tracer.start_as_current_span(f"s{i}"):
            pass
    release.set()
    assert processor.force_flush(5000)
    exported, dropped = counts.snapshot()
    assert dropped["queue_full"] >= 20 - 3 - 1 and exported + dropped["queue_full"] == 20
    # A trace file that cannot be written: the batch is dropped as export_failed.
    (tmp_path / "adir").mkdir()
    broken = Tracing(traced_config(tmp_path, tracing_file=str(tmp_path / "adir")))
    with broken.span("lost"):
        pass
    assert broken.flush()
    assert broken.stats()[1]["export_failed"] == 1
    text = render_tracing(broken)
    assert 'ggnet_api_trace_spans_dropped_total{reason="export_failed"} 1.0' in text
    assert "ggnet_api_trace_spans_exported_total 0.0" in text


def test_a_request_span_follows_traceparent_and_keeps_no_query(tmp_path, otel, monkeypatch):
    from ggnet import storage

    resets: list[str] = []  # storage.reset recorded: no ZFS here
    monkeypatch.setattr(
        storage, "reset", lambda _s, _i, _c, name, **_k: resets.append(name) or storage.Result()
    )
    monkeypatch.setattr(storage, "read_for_reset", lambda *_a, **_k: None)  # a batch's read
    app = make_app(tmp_path, tracing=True)
    ext = app.extensions["ggnet"]
    parent_trace, parent_span = "4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b7"
    client = app.test_client()
    client.get(
        "/health?token=sekrit", headers={"traceparent": f"00-{parent_trace}-{parent_span}-01"}
    )
    # The boot of a PC: its request, the reset (its lock's wait), the privileged call.
    resp = client.get(f"/boot/{PC1}?token=sekrit2", environ_base={"REMOTE_ADDR": PC1_IP})
    assert resp.status_code == 200 and resets == ["pc-01"]
    assert ext.tracing.flush()
    lines = (tmp_path / "state" / "traces.jsonl").read_text()
    assert "sekrit" not in lines
    spans = {s["name"]: s for s in map(json.loads, lines.splitlines())}
    health = spans["GET /health"]
    assert (health["trace_id"], health["parent_id"]) == (parent_trace, parent_span)
    assert health["attributes"]["url.path"] == "/health"
    assert health["attributes"]["http.response.status_code"] == 200
    boot, reset, privd = spans["GET /boot/<raw_mac>"], spans["boot.reset"], spans["privd reset"]
    assert boot["parent_id"] is None and boot["kind"] == "SERVER"
    assert reset["parent_id"] == boot["span_id"] and reset["attributes"]["ggnet.client"] == "pc-01"
    assert privd["parent_id"] == reset["span_id"] and privd["kind"] == "CLIENT"
    assert len({boot["trace_id"], reset["trace_id"], privd["trace_id"]}) == 1
    ext.close()


def test_the_waterfall_orders_children_under_parents():
    spans = [
        {"trace_id": "t", "span_id": "a", "parent_id": None, "name": "job x", "start_ns": 0,
         "end_ns": 4_000_000_000, "status": "UNSET", "attributes": {"ggnet.job.state": "failed"}},
        {"trace_id": "t", "span_id": "c", "parent_id": "a", "name": "second", "start_ns": 2_000_000_000,
         "end_ns": 3_000_000_000, "status": "ERROR", "attributes": {}},
        {"trace_id": "t", "span_id": "b", "parent_id": "a", "name": "first", "start_ns": 1_000_000_000,
         "end_ns": 1_500_000_000, "status": "UNSET", "attributes": {"ansible.status": "skipped"}},
    ]  # fmt: skip
    rows = job_waterfall(sorted(spans, key=lambda s: s["start_ns"]))
    assert [(r["name"], r["depth"], r["offset"], r["duration"], r["status"]) for r in rows] == [
        ("job x", 0, 0.0, 4.0, "failed"),
        ("first", 1, 1.0, 0.5, "skipped"),
        ("second", 1, 2.0, 1.0, "error"),
    ]


def test_tracing_on_without_the_packages_says_which(tmp_path, monkeypatch):
    import ggnet_api
    from ggnet_api import tracing

    monkeypatch.setitem(sys.modules, "ggnet_api.tracing_otel", None)  # as if not installed
    # An earlier test's import left the submodule on the package, where `from ... import`
    # would find it without looking at sys.modules.
    monkeypatch.delattr(ggnet_api, "tracing_otel", raising=False)
    with pytest.raises(RuntimeError, match="tracing: true needs the OpenTelemetry packages"):
        tracing.setup(config_mod.load(state_dir=str(tmp_path), tracing=True))
    assert tracing.setup(config_mod.load(state_dir=str(tmp_path))) is None
