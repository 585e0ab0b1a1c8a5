"""Jobs: allow-listed playbooks run through ansible-runner in background threads.

A bounded number of jobs run at once, the rest wait in a queue.  A job starts only
when it can take its claim on the PCs and images it touches (ggnet_api/locks.py): it
waits while a running job, a boot's reset or a job queued before it conflicts, and its
`detail` says whom it waits for; jobs that conflict with nothing pass the waiting ones.  A submission with `wait: false`
is refused with 409 instead of waiting.

The run itself (ansible-runner, its private_data_dir, cancelling, the processes left
behind) is the privileged side's: ggnet_privd/playbooks.py, reached through
ggnet_api/privileged.py (in ggnet-privd, or in this process without a privd socket).
Its events arrive stripped to what an operator reads (event, host, task, stdout) with
known secrets masked, and are stored in SQLite as they arrive; a cancel is passed on.

A restart of the API marks the jobs that were running `interrupted` (after killing
what is left of them) and queues again the ones that had not started.
"""

from __future__ import annotations

import contextlib
import importlib.util
import logging
import threading
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ggnet_api.config import ExtraVarsError, check_extravars, job_spec, runs
from ggnet_api.db.database import JOB_DONE, Database
from ggnet_api.locks import Busy, Claim, Locks, describe, job_claim
from ggnet_api.snapshot import Snapshot
from ggnet_privd.playbooks import kill_tree, processes_of
from ggnet_privd.protocol import OpError

if TYPE_CHECKING:
    from opentelemetry.trace import Link

    from ggnet_api.privileged import Privileged
    from ggnet_api.tracing_otel import JobTrace, Tracing
    from ggnet_api.wakes import Wakes

log = logging.getLogger(__name__)


class JobError(Exception):
    """A job cannot be started or changed; status is the HTTP status that fits."""

    def __init__(self, message: str, status: int = 400):
        super().__init__(message)
        self.status = status


def job_label(job_id: str, kind: str, extravars: dict[str, Any]) -> str:
    """`job <id> (machine reset pc-01)`: how waiting jobs and refused boots name a job."""
    words = [kind, *(str(extravars[k]) for k in ("op", "client", "image") if extravars.get(k))]
    return f"job {job_id} ({' '.join(words)})"


class JobRunner:
    def __init__(
        self,
        db: Database,
        config: dict[str, Any],
        privileged: Privileged,
        on_finish: Callable[[dict[str, Any]], None] | None = None,
        locks: Locks | None = None,
        snapshot: Callable[[], Snapshot] = Snapshot,
        tracing: Tracing | None = None,
        wakes: Wakes | None = None,
    ):
        self.db = db
        # Where a power job's wake is recorded (its confirmation follows the PC's boot).
        self.wakes = wakes
        # With tracing on, each run is a trace of its own (ggnet_api/tracing_otel.py),
        # linked to the request that submitted it: job id -> that request's span.
        self.tracing = tracing
        self._links: dict[str, Link | None] = {}
        self.config = config
        self.privileged = privileged
        self.on_finish = on_finish
        self.locks = locks or Locks()
        self.snapshot = snapshot
        # Queued jobs in order: id -> (kind, extravars); the database holds the rest.
        self._pending: dict[str, tuple[str, dict[str, Any]]] = {}
        self._waiting: dict[str, str] = {}  # the detail last written for a queued job
        self._lock = threading.Lock()
        self._wake = threading.Condition(self._lock)
        self._has_runner = importlib.util.find_spec("ansible_runner") is not None
        # Jobs asked to stop; the run itself keeps when (ggnet_privd/playbooks.py).
        self._cancel: set[str] = set()
        self._running: set[str] = set()
        self._workers: list[threading.Thread] = []
        self._stopping = False

    # -- lifecycle ----------------------------------------------------------------------

    def start(self) -> None:
        self.recover()
        for i in range(int(self.config["max_concurrent_jobs"])):
            t = threading.Thread(target=self._worker, name=f"ggnet-job-{i}", daemon=True)
            t.start()
            self._workers.append(t)

    def recover(self) -> None:
        """After a restart: kill what is left of running jobs, mark them interrupted."""
        for job in self.db.jobs(limit=1_000_000, state="running"):
            left = processes_of(job["id"])
            if left:
                log.warning(
                    "job %s: killing %d process(es) left from before the restart",
                    job["id"],
                    len(left),
                )
                kill_tree(left)
            self.db.update_job(
                job["id"],
                state="interrupted",
                finished=time.time(),
                detail="the API restarted while this job was running; start it again",
            )
        queued = sorted(self.db.jobs(limit=1_000_000, state="queued"), key=lambda j: j["created"])
        with self._lock:
            for job in queued:
                self._pending[job["id"]] = (job["kind"], job["extravars"] or {})

    def stop(self, timeout: float = 30.0) -> None:
        """Cancel the running jobs and stop the workers (the queued jobs stay queued)."""
        self._stopping = True
        with self._lock:
            running = sorted(self._running)
            for job_id in running:
                self._cancel.add(job_id)
            self._wake.notify_all()
        for job_id in running:
            self._stop_run(job_id)
        deadline = time.monotonic() + timeout
        for t in self._workers:
            t.join(max(0.1, deadline - time.monotonic()))
        self._workers.clear()

    # -- API ------------------------------------------------------------------------

    def unavailable(self, playbook: bool = True) -> str | None:
        """Why no job could run now (None: jobs run, or wait for a worker); playbook:
        the job runs a playbook (ansible-runner), not a privd operation.

        An app started without its background threads (tests) still queues jobs."""
        if playbook and not self._has_runner:
            return (
                "the job runner is not available: ansible-runner is not installed on this "
                "server (the ggnet_api role's ggnet_api_jobs: false); install it to run jobs"
            )
        if self.config.get("background", True) and (
            self._stopping or not any(t.is_alive() for t in self._workers)
        ):
            return (
                "the job runner is not running (its worker threads have stopped); restart "
                "the API (systemctl restart ggnet-api) and submit the job again"
            )
        return None

    def submit(
        self,
        kind: str,
        extravars: Any,
        requested_by: str,
        wait: bool = True,
        reuse_queued: bool = False,
    ) -> dict[str, Any]:
        """Queue a job; reuse_queued: a job of the same kind and extra-vars still queued
        is the answer instead (a wake pressed twice sends one packet, and a button
        pressed in a loop cannot fill the queue)."""
        try:
            spec = job_spec(self.config["playbooks"], kind)
            checked = check_extravars(kind, spec, extravars)
        except ExtraVarsError as exc:
            raise JobError(str(exc)) from None
        if "privd" not in spec:
            playbook = Path(self.config["project_dir"]) / "playbooks" / spec["playbook"]
            if not playbook.is_file():
                raise JobError(
                    f"kind: {kind!r} runs playbooks/{spec['playbook']}, which this appliance does not have",
                    409,
                )
        down = self.unavailable("privd" not in spec)
        if down:
            raise JobError(down, 503)
        if reuse_queued:
            with self._lock:
                for queued_id, pending in self._pending.items():
                    if pending == (kind, checked):
                        return self._job(queued_id)
        queued = self.db.count_jobs("queued")
        if queued >= int(self.config["max_queued_jobs"]):
            raise JobError(f"the job queue is full ({queued} waiting); try again later", 503)
        claim = job_claim(kind, checked, self.snapshot())
        job_id = uuid.uuid4().hex
        with self._lock:
            reason = self._conflict(job_id, claim, self._claims_ahead(len(self._pending)))
            if reason and not wait:
                raise JobError(
                    f"{reason.replace('waiting for', 'conflicts with', 1)}; "
                    'submit it without "wait": false to queue it behind',
                    409,
                )
            self.db.add_job(job_id, kind, runs(spec), checked, requested_by)
            if self.tracing is not None:
                self.tracing.note("ggnet.job.id", job_id)
                self._links[job_id] = self.tracing.current_link()
            self._pending[job_id] = (kind, checked)
            if reason:
                self._note(job_id, reason)
            self._wake.notify()
        return self._job(job_id)

    def cancel(self, job_id: str) -> dict[str, Any]:
        job = self.db.job(job_id)
        if job is None:
            raise JobError(f"job {job_id}: no such job", 404)
        if job["state"] in JOB_DONE:
            raise JobError(f"job {job_id}: already {job['state']}", 409)
        with self._lock:
            running = job_id in self._running
            if not running:
                running = not self.db.cancel_queued_job(job_id, "cancelled before it started")
                if not running:
                    self._pending.pop(job_id, None)
                    self._waiting.pop(job_id, None)
                    self._links.pop(job_id, None)
                    self._wake.notify_all()  # a job waiting behind it may go now
            if running:
                # Running, or it started in between: cancel the run.
                self._cancel.add(job_id)
        if running:
            self._stop_run(job_id)
        return self._job(job_id)

    def _stop_run(self, job_id: str) -> None:
        """Pass a cancel on to the run (again from its events: the run may not have
        started on the privileged side when it was first asked)."""
        try:
            self.privileged.cancel_job(job_id)
        except OpError as exc:
            log.warning("job %s: the cancel was not passed on: %s", job_id, exc)

    def _job(self, job_id: str) -> dict[str, Any]:
        """A job known to exist: jobs are added, never deleted."""
        job = self.db.job(job_id)
        assert job is not None, f"job {job_id} vanished from the database"
        return job

    def running(self) -> list[str]:
        with self._lock:
            return sorted(self._running)

    # -- the work -----------------------------------------------------------------------

    # How often a worker with nothing to start looks again: a boot's reset releases its
    # PC without waking the workers.
    RECHECK = 0.5

    def _next(self) -> str | None:
        """The next job this worker runs (marked running, its claim held); None: stop."""
        with self._wake:
            while not self._stopping:
                job_id = self._pick()
                if job_id is not None:
                    return job_id
                self._wake.wait(self.RECHECK)
        return None

    def _pick(self) -> str | None:
        """The first queued job whose claim is free and that no earlier queued job
        conflicts with; notes on the others why they wait.  Called under _lock."""
        snap = self.snapshot()
        ahead: list[tuple[Claim, str]] = []
        for job_id, (kind, extravars) in list(self._pending.items()):
            claim = job_claim(kind, extravars, snap)
            reason = self._conflict(job_id, claim, ahead)
            if reason is None:
                try:
                    self.locks.take(job_id, claim, job_label(job_id, kind, extravars))
                except Busy as busy:
                    reason = f"waiting for {busy.holder}, which holds {describe(busy.key)}"
            if reason is None:
                del self._pending[job_id]
                self._waiting.pop(job_id, None)
                if not self.db.start_queued_job(job_id):
                    self.locks.release(job_id)  # cancelled while queued
                    continue
                self._running.add(job_id)
                return job_id
            self._note(job_id, reason)
            ahead.append((claim, job_label(job_id, kind, extravars)))
        return None

    def _claims_ahead(self, count: int) -> list[tuple[Claim, str]]:
        """The claims and labels of the first `count` queued jobs."""
        snap = self.snapshot()
        return [
            (job_claim(kind, extravars, snap), job_label(job_id, kind, extravars))
            for job_id, (kind, extravars) in list(self._pending.items())[:count]
        ]

    def _conflict(self, job_id: str, claim: Claim, ahead: list[tuple[Claim, str]]) -> str | None:
        """Why a job with `claim` cannot start now: a holder of the locks, or a job
        queued before it (which it must not pass); None when it could."""
        for other, label in ahead:
            key = claim.clash(other)
            if key is not None:
                return f"waiting for {label}, queued before it for {describe(key)}"
        busy = self.locks.blocker(claim, ignore=job_id)
        if busy is not None:
            return f"waiting for {busy.holder}, which holds {describe(busy.key)}"
        return None

    def _note(self, job_id: str, reason: str) -> None:
        if self._waiting.get(job_id) != reason:
            self._waiting[job_id] = reason
            self.db.note_queued_job(job_id, reason)

    def _worker(self) -> None:
        while True:
            job_id = self._next()
            if job_id is None:
                return
            try:
                self._run(job_id)
            except Exception as exc:  # the worker must survive any one job
                log.exception("job %s failed to run", job_id)
                self.db.update_job(
                    job_id,
                    state="error",
                    finished=time.time(),
                    detail=f"runner error: {type(exc).__name__}",
                )
            finally:
                with self._lock:
                    self._running.discard(job_id)
                    self._cancel.discard(job_id)
                    self.locks.release(job_id)
                    self._wake.notify_all()
                if self.on_finish:
                    job = self.db.job(job_id)
                    if job:
                        self.on_finish(job)

    def _run(self, job_id: str) -> None:
        job = self._job(job_id)
        trace = None
        if self.tracing is not None:
            with self._lock:
                link = self._links.pop(job_id, None)
            trace = self.tracing.job(job_id, job["kind"], job["playbook"], link)
        if job["playbook"].startswith("privd:"):
            self._run_op(job_id, job, trace)
            return
        try:
            # The run is the privileged side's (ggnet_privd/playbooks.py): in ggnet-privd
            # when a socket is configured, in this process otherwise.  Its events come
            # back redacted and are stored here as they arrive.
            with trace.use() if trace is not None else contextlib.nullcontext():
                result = self.privileged.run_job(
                    job_id, job["kind"], job["extravars"] or {}, self._event_handler(job_id, trace)
                )
        except Exception as exc:
            if trace is not None:
                trace.end("error", None, f"runner error: {type(exc).__name__}")
            raise
        state, detail = self._outcome(job_id, result["status"])
        self.db.update_job(
            job_id, state=state, rc=result["rc"], finished=time.time(), detail=detail
        )
        if trace is not None:
            trace.end(state, result["rc"], detail)

    def _run_op(self, job_id: str, job: dict[str, Any], trace: JobTrace | None) -> None:
        """A job of a privd operation (kind power): one call, its lines as events."""
        extravars = job["extravars"] or {}
        op, client = str(extravars.get("op")), str(extravars.get("client"))
        on_event = self._event_handler(job_id, trace)
        counter = [0]

        def note(event: str, stdout: str) -> None:
            counter[0] += 1
            on_event({"counter": counter[0], "event": event, "host": client, "stdout": stdout})

        note("power_start", f"{op} {client}")
        state, rc, detail = "successful", 0, None
        try:
            if op == "wake":
                snap = self.snapshot()
                mac = (snap.clients.get(client) or {}).get("mac")
                if mac is None:
                    raise OpError(
                        f"extravars.client: {client!r} is no longer in the inventory", 404
                    )
                result = self.privileged.wake(mac)
                if self.wakes is not None:
                    self.wakes.sent(
                        client, result["mac"], result["sent"], result["interface"], job_id
                    )
                note(
                    "power_ok",
                    f"magic packet for {result['mac']} sent from {result['interface']} "
                    f"to {result['broadcast']}",
                )
            else:
                result = self.privileged.power(client, op)
                for line in result.get("steps") or []:
                    note("power_step", str(line))
                note("power_ok", f"{client} is {result['state']}")
        except OpError as exc:
            state, rc, detail = "failed", 1, str(exc)[:500]
            note("power_failed", detail)
        if job_id in self._cancel:
            detail = (
                detail + "; " if detail else ""
            ) + "a power operation is not cancelled once asked"
        self.db.update_job(job_id, state=state, rc=rc, finished=time.time(), detail=detail)
        if trace is not None:
            trace.end(state, rc, detail)

    def _event_handler(
        self, job_id: str, trace: JobTrace | None = None
    ) -> Callable[[dict[str, Any]], None]:
        """Store each event the run sends (already stripped and redacted); note the
        playbook's pid from the first that carries one; with tracing on, the event
        becomes part of the job's trace."""
        noted, passed_on, traced = [False], [False], [trace is not None]

        def on_event(event: dict[str, Any]) -> None:
            pid = event.get("pid")
            if pid and not noted[0]:
                noted[0] = True
                self.db.update_job(job_id, pid=int(pid))
            if job_id in self._cancel and not passed_on[0]:
                passed_on[0] = True
                self._stop_run(job_id)
            self.db.add_event(
                job_id,
                int(event["counter"]),
                {k: event.get(k) for k in ("event", "host", "task", "stdout")},
            )
            if traced[0]:
                assert trace is not None
                try:
                    trace.event(event)
                except Exception:  # the job goes on without the rest of its trace
                    traced[0] = False
                    log.exception("job %s: tracing its events failed", job_id)

        return on_event

    def _outcome(self, job_id: str, status: str) -> tuple[str, str | None]:
        """(state, detail) the job ends in, from runner's status and our own requests."""
        state = {
            "successful": "successful",
            "failed": "failed",
            "canceled": "canceled",
            "timeout": "failed",
        }.get(status, "error")
        if job_id in self._cancel:
            # SIGTERM usually ends the playbook before runner sees the cancel flag.
            state = "canceled"
        detail = None
        if state == "canceled":
            detail = "cancelled by request"
        elif status == "timeout":
            detail = "timed out"
        elif state == "error":
            detail = f"runner status {status}"
        if self._stopping and state == "canceled":
            state, detail = (
                "interrupted",
                "the API stopped while this job was running; start it again",
            )
        return state, detail
