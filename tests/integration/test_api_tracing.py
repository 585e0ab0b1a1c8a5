"""Tracing of real jobs: playbooks run through ansible-runner in process against
localhost (as tests/integration/test_api_jobs.py runs them), their spans read back
from the JSON-lines file, or received over OTLP/HTTP by a stand-in collector (a small
http.server on loopback decoding the protobuf with opentelemetry-proto)."""

from __future__ import annotations

import contextlib
import http.server
import io
import json
import threading
from contextlib import redirect_stdout
from typing import ClassVar

import pytest
from ggnet_testing.api_project import CHAP, make_project, settings

from ggnet_api.tracing import JOB_ID, job_spans, read_spans, trace_files

pytest.importorskip("opentelemetry.sdk", reason="tracing needs the OpenTelemetry packages")

# The job tests' own helpers (their directory is on sys.path: pytest's prepend mode).
from test_api_jobs import finished, running_api, wait_for

pytestmark = pytest.mark.integration

# A play of every kind of task result: ok, changed, skipped, failed and ignored, a
# no_log task, and a literal secret in a task's arguments.
PLAYBOOK = f"""\
- name: Traced play
  hosts: ggnet_servers
  gather_facts: false
  tasks:
    - name: Say the secret literally
      ansible.builtin.debug:
        msg: "literal {CHAP} here"
    - name: Take a while
      ansible.builtin.command: sleep {{{{ nap | default(0) }}}}
      changed_when: true
    - name: Never runs
      ansible.builtin.debug:
        msg: skipped
      when: false
    - name: Fails and is ignored
      ansible.builtin.command: /bin/false
      ignore_errors: true
    - name: Hidden
      ansible.builtin.debug:
        msg: "{{{{ ggnet_iscsi.chap_secret }}}}"
      no_log: true
"""
TASKS = ["Say the secret literally", "Take a while", "Never runs", "Fails and is ignored", "Hidden"]
RESULTS = ("runner_on_ok", "runner_on_failed", "runner_on_skipped", "runner_on_unreachable")


def traced_project(tmp_path, **more):
    """The API's settings with tracing on; jobs of kind `preflight` run PLAYBOOK with a
    nap and claim nothing, so two of them run at the same time."""
    project, inv = make_project(tmp_path)
    (project / "playbooks" / "site.yml").write_text(PLAYBOOK)
    config = settings(tmp_path, project, inv, tracing=True, **more)
    config["playbooks"]["preflight"] = {
        "playbook": "site.yml",
        "extravars": {"nap": {"type": "str", "pattern": r"\d{1,3}"}},
    }
    return config


def spans_of(path):
    return list(read_spans(trace_files(path, 2)))


def check_job_trace(spans, job_id, events):
    """The job's trace: one root, the right parents, a span per task and per result."""
    trace = job_spans(spans, job_id)
    roots = [s for s in trace if s["parent_id"] is None]
    assert len(roots) == 1 and roots[0]["name"] == "job preflight"
    root = roots[0]
    ids = {s["span_id"]: s for s in trace}
    # Nothing of another job, and every parent in this trace.
    assert all(s["attributes"].get(JOB_ID, job_id) == job_id for s in trace)
    assert all(s["parent_id"] is None or s["parent_id"] in ids for s in trace)
    plays = [s for s in trace if s["name"].startswith("play ")]
    assert [p["name"] for p in plays] == ["play Traced play"]
    assert plays[0]["parent_id"] == root["span_id"]
    tasks = [s for s in trace if "ansible.task.uuid" in s["attributes"]]
    task_events = [e for e in events if e["event"] == "playbook_on_task_start"]
    assert [t["name"] for t in tasks] == [e["task"] for e in task_events] == TASKS
    assert all(t["parent_id"] == plays[0]["span_id"] for t in tasks)
    hosts = [s for s in trace if "ansible.host" in s["attributes"]]
    assert len(hosts) == sum(e["event"] in RESULTS for e in events) == len(TASKS)
    task_ids = {t["span_id"]: t["name"] for t in tasks}
    assert all(h["parent_id"] in task_ids and h["name"] == "boot1" for h in hosts)
    status = {t["name"]: t["attributes"]["ansible.status"] for t in tasks}
    assert status == {
        "Say the secret literally": "ok",
        "Take a while": "changed",
        "Never runs": "skipped",
        "Fails and is ignored": "ok",
        "Hidden": "ok",
    }
    # Children within their parents' time.
    for s in trace:
        if s["parent_id"]:
            parent = ids[s["parent_id"]]
            assert parent["start_ns"] <= s["start_ns"] <= s["end_ns"] <= parent["end_ns"], s
    privd = [s for s in trace if s["name"] == "privd run_job"]
    assert len(privd) == 1 and privd[0]["parent_id"] == root["span_id"]
    assert root["attributes"]["ggnet.job.state"] == "successful"
    return trace


def test_two_concurrent_jobs_each_one_trace_with_a_span_per_task_event(tmp_path):
    config = traced_project(tmp_path, max_concurrent_jobs=2)
    path = tmp_path / "state" / "traces.jsonl"
    with running_api(config) as (app, client):
        jobs = [
            client.post("/api/jobs", json={"kind": "preflight", "extravars": {"nap": "1"}}).json
            for _ in range(2)
        ]
        done = [finished(client, j["id"]) for j in jobs]
        assert [d["state"] for d in done] == ["successful", "successful"]
        # They ran at the same time.
        assert max(d["started"] for d in done) < min(d["finished"] for d in done)
        events = {j["id"]: client.get(f"/api/jobs/{j['id']}/events").json["events"] for j in jobs}
        tracing = app.extensions["ggnet"].tracing
        assert tracing.flush()
        metrics = client.get("/metrics").get_data(as_text=True)
    spans = spans_of(path)
    traces = [check_job_trace(spans, j["id"], events[j["id"]]) for j in jobs]
    a, b = ({s["trace_id"] for s in t} for t in traces)
    assert len(a) == len(b) == 1 and a != b
    assert not {s["span_id"] for s in traces[0]} & {s["span_id"] for s in traces[1]}
    # Each job's root links to the request that submitted it.
    posts = {
        s["attributes"]["ggnet.job.id"]: s
        for s in spans
        if s["name"] == "POST /api/jobs" and "ggnet.job.id" in s["attributes"]
    }
    for job, trace in zip(jobs, traces, strict=True):
        root = trace[0]
        assert root["links"] == [
            {"trace_id": posts[job["id"]]["trace_id"], "span_id": posts[job["id"]]["span_id"]}
        ]
        assert posts[job["id"]]["attributes"]["http.response.status_code"] == 202
    # Arguments hidden by default; the secret nowhere.
    text = path.read_text()
    assert "ansible.task.args" not in text and CHAP not in text
    assert 'ggnet_api_trace_spans_dropped_total{reason="queue_full"} 0.0' in metrics
    assert "ggnet_api_trace_spans_exported_total" in metrics
    # The CLI's waterfall of the first job.
    from ggnet_cli.main import main

    out = io.StringIO()
    with redirect_stdout(out), _env(GGNET_API_STATE_DIR=str(tmp_path / "state")):
        assert main(["job", "trace", jobs[0]["id"]]) == 0
    lines = out.getvalue().splitlines()
    assert lines[1].split()[2:4] == ["successful", "#" * 30] or "job preflight" in lines[1]
    shown = "\n".join(lines)
    for name in TASKS:
        assert name in shown
    assert "skipped" in shown and "changed" in shown


@contextlib.contextmanager
def _env(**values):
    import os

    old = {k: os.environ.get(k) for k in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def test_task_arguments_on_request_are_masked(tmp_path):
    config = traced_project(tmp_path, tracing_task_args=True)
    path = tmp_path / "state" / "traces.jsonl"
    with running_api(config) as (app, client):
        job = client.post("/api/jobs", json={"kind": "preflight", "extravars": {"nap": "0"}}).json
        assert finished(client, job["id"])["state"] == "successful"
        assert app.extensions["ggnet"].tracing.flush()
    tasks = {
        s["name"]: s["attributes"].get("ansible.task.args")
        for s in job_spans(spans_of(path), job["id"])
        if "ansible.task.uuid" in s["attributes"]
    }
    assert tasks["Say the secret literally"] == "msg=literal ******** here"
    assert tasks["Take a while"].startswith("_raw_params=sleep")
    assert "no_log" in tasks["Hidden"] and "chap_secret" not in tasks["Hidden"]
    assert CHAP not in path.read_text()


class _StandInCollector(http.server.BaseHTTPRequestHandler):
    """A stand-in for an OpenTelemetry collector's OTLP/HTTP receiver: it decodes each
    ExportTraceServiceRequest and keeps its spans."""

    received: ClassVar[list[dict]] = []

    def do_POST(self):
        from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
            ExportTraceServiceRequest,
            ExportTraceServiceResponse,
        )

        body = self.rfile.read(int(self.headers["Content-Length"]))
        request = ExportTraceServiceRequest()
        request.ParseFromString(body)
        for rs in request.resource_spans:
            service = {a.key: a.value.string_value for a in rs.resource.attributes}
            for ss in rs.scope_spans:
                for span in ss.spans:
                    attrs = {a.key: a.value for a in span.attributes}
                    self.received.append(
                        {
                            "service": service.get("service.name"),
                            "path": self.path,
                            "trace_id": span.trace_id.hex(),
                            "span_id": span.span_id.hex(),
                            "parent_id": span.parent_span_id.hex() or None,
                            "name": span.name,
                            "job": attrs[JOB_ID].string_value if JOB_ID in attrs else None,
                        }
                    )
        reply = ExportTraceServiceResponse().SerializeToString()
        self.send_response(200)
        self.send_header("Content-Type", "application/x-protobuf")
        self.send_header("Content-Length", str(len(reply)))
        self.end_headers()
        self.wfile.write(reply)

    def log_message(self, *args):
        pass


def test_otlp_export_to_a_stand_in_collector(tmp_path):
    _StandInCollector.received = []
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _StandInCollector)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    endpoint = f"http://127.0.0.1:{server.server_address[1]}/v1/traces"
    try:
        config = traced_project(tmp_path, tracing_otlp_endpoint=endpoint)
        with running_api(config) as (app, client):
            job = client.post(
                "/api/jobs", json={"kind": "preflight", "extravars": {"nap": "0"}}
            ).json
            assert finished(client, job["id"])["state"] == "successful"
            assert app.extensions["ggnet"].tracing.flush()
            got = wait_for(
                lambda: [s for s in _StandInCollector.received if s["job"] == job["id"]],
                timeout=10,
                what="the job's spans at the stand-in collector",
            )
            metrics = client.get("/metrics").get_data(as_text=True)
    finally:
        server.shutdown()
        server.server_close()
    assert not (tmp_path / "state" / "traces.jsonl").exists()
    assert {s["path"] for s in got} == {"/v1/traces"}
    assert {s["service"] for s in got} == {"ggnet-api"}
    # The submitting request's span carries the job's id too, in a trace of its own.
    assert {s["name"] for s in got if s["parent_id"] is None} == {"POST /api/jobs", "job preflight"}
    (root,) = (s for s in got if s["name"] == "job preflight")
    trace = [s for s in got if s["trace_id"] == root["trace_id"]]
    ids = {s["span_id"] for s in trace}
    assert all(s["parent_id"] is None or s["parent_id"] in ids for s in trace)
    assert sorted(s["name"] for s in trace if s["name"] in TASKS) == sorted(TASKS)
    assert "ggnet_api_trace_spans_exported_total" in metrics
    assert json.dumps(got).count(CHAP) == 0
