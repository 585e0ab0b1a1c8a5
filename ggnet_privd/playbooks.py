"""A job's playbook run through ansible-runner: the root half of ggnet_api/jobs.py.

The API queues jobs, takes their locks and stores their events; the run itself is
here, so that in production it happens in ggnet-privd (root) and in the API's own
process when no privd socket is configured.  Each run gets its own private_data_dir
under `jobs_dir`, removed afterwards.

Every event is stripped to what an operator reads (event, host, task, stdout) and
masked with the secrets of the inventory before it leaves: what privd sends the API
holds no secret, and neither does its log.  With the `tracing` setting on, it also
carries what the API's tracing builds spans from (ggnet_api/tracing_otel.py): the
event's time, the play's name, the play's and task's ids, the task's action, whether
a result changed something or had its failure ignored; and, only with
`tracing_task_args` on too, the task's arguments as written in the playbook
(ansible's DISPLAY_ARGS_TO_STDOUT; a no_log task's are hidden by ansible), masked
like the rest.  A result's own data (`res`) never leaves.

Cancelling: runner is always given a cancel_callback (without one it installs its own
SIGINT/SIGTERM handlers in our process).  When a job is cancelled the callback sends
SIGTERM to the ansible-playbook pid (taken from the first event) and lets ansible stop
its workers; only if it is still alive after cancel_grace does the callback return
True, letting runner SIGKILL the process group.  runner's SIGKILL alone leaves
ansible-core 2.19 workers behind, so after every run, cancelled or not, every process
carrying the job's GGNET_JOB_ID environment marker is killed.
"""

from __future__ import annotations

import base64
import contextlib
import functools
import json
import logging
import os
import re
import shlex
import shutil
import signal
import sys
import threading
import time
import urllib.parse
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import psutil

log = logging.getLogger(__name__)

_ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")

Emit = Callable[[dict[str, Any]], None]

ENV_MARKER = "GGNET_JOB_ID"
MASK = "********"
MAX_STDOUT = 8192
MAX_TASK_ARGS = 1024


@functools.lru_cache(maxsize=4096)
def secret_forms(secret: str) -> tuple[str, ...]:
    """The ways a secret shows up in a playbook's output: as written, escaped in JSON
    (once, or twice when JSON is printed inside JSON), as a Python repr, URL-encoded,
    in base64 (without its padding, so padded and unpadded both match) and shell-quoted.
    Longest first, so a form that contains another is masked whole."""
    raw = secret.encode()
    forms = {
        secret,
        json.dumps(secret)[1:-1],
        json.dumps(json.dumps(secret))[1:-1],
        json.dumps(secret, ensure_ascii=False)[1:-1],
        repr(secret)[1:-1],
        urllib.parse.quote(secret, safe=""),
        urllib.parse.quote(secret),
        urllib.parse.quote_plus(secret),
        base64.b64encode(raw).decode().rstrip("="),
        base64.urlsafe_b64encode(raw).decode().rstrip("="),
        shlex.quote(secret),
    }
    return tuple(sorted((f for f in forms if len(f) >= 4), key=len, reverse=True))


def redact(text: str | None, secrets: Iterable[str]) -> str | None:
    """The text with every known secret masked, in any of its secret_forms.  Secrets
    shorter than 4 characters are left alone: masking them would mask common words."""
    if not text:
        return text
    for secret in secrets:
        if not secret or len(secret) < 4:
            continue
        for form in secret_forms(secret):
            if form in text:
                text = text.replace(form, MASK)
    return text


def _for_tracing(
    data: dict[str, Any], ed: dict[str, Any], secrets: list[str], task_args: bool
) -> dict[str, Any]:
    """What the API's tracing needs of an event, beyond what an operator reads."""
    res = ed.get("res")
    out = {
        "created": data.get("created"),
        "play": redact(ed.get("play"), secrets),
        "play_uuid": ed.get("play_uuid"),
        "task_uuid": ed.get("task_uuid"),
        "task_action": ed.get("task_action"),
        "changed": bool(res.get("changed")) if isinstance(res, dict) else None,
        "ignore_errors": bool(ed.get("ignore_errors")),
    }
    if task_args and ed.get("task_args"):
        # Masked before it is cut: a secret cut in two would no longer be found.
        out["task_args"] = (redact(str(ed["task_args"]), secrets) or "")[:MAX_TASK_ARGS]
    return out


def processes_of(job_id: str) -> list[psutil.Process]:
    """Every live process that inherited the job's environment marker."""
    found = []
    for proc in psutil.process_iter(["pid"]):
        if proc.pid == os.getpid():
            continue
        try:
            env = proc.environ()
        except (psutil.Error, OSError):
            continue
        if env.get(ENV_MARKER) == job_id:
            found.append(proc)
    return found


def kill_tree(procs: list[psutil.Process], grace: float = 3.0) -> int:
    """SIGTERM, then SIGKILL what is still alive after `grace`; returns how many were left."""
    alive = [p for p in procs if is_alive(p)]
    for p in alive:
        with contextlib.suppress(psutil.Error):
            p.terminate()
    _gone, alive = psutil.wait_procs(alive, timeout=grace)
    for p in alive:
        with contextlib.suppress(psutil.Error):
            p.kill()
    psutil.wait_procs(alive, timeout=grace)
    return len(alive)


def is_alive(p: psutil.Process) -> bool:
    try:
        return p.is_running() and p.status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


class PlaybookRuns:
    def __init__(
        self, config: dict[str, Any], jobs_dir: Path, secrets: Callable[[], Iterable[str]]
    ):
        self.config = config
        self.jobs_dir = jobs_dir
        self.secrets = secrets
        self._lock = threading.Lock()
        self._running: set[str] = set()
        self._cancel: dict[str, float] = {}
        self._pids: dict[str, int] = {}
        self._termed: set[str] = set()

    def run(self, job_id: str, playbook: str, extravars: dict[str, Any], emit: Emit) -> dict:
        """Run playbooks/<playbook> (a name the caller took from the allow-list);
        {"status": runner's status, "rc": its return code}."""
        import ansible_runner

        with self._lock:
            if job_id in self._running:
                raise RuntimeError(f"job {job_id} is running already")
            self._running.add(job_id)
        pdd = self.jobs_dir / job_id
        try:
            self.jobs_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
            pdd.mkdir(mode=0o700, exist_ok=True)
            project = Path(self.config["project_dir"])
            runner = ansible_runner.run(
                private_data_dir=str(pdd),
                project_dir=str(project),
                playbook=str(project / "playbooks" / playbook),
                inventory=self._inventory(pdd),
                extravars=extravars or None,
                envvars=self._envvars(job_id, project),
                ident="run",
                quiet=True,
                event_handler=self._event_handler(job_id, emit),
                cancel_callback=lambda: self._should_stop(job_id),
                settings={
                    "pexpect_timeout": float(self.config["cancel_poll"]),
                    "suppress_ansible_output": True,
                },
            )
            return {"status": str(runner.status), "rc": runner.rc}
        finally:
            left = processes_of(job_id)
            if left:
                log.warning(
                    "job %s: %d process(es) left after the run; killing them", job_id, len(left)
                )
                kill_tree(left)
            with self._lock:
                self._running.discard(job_id)
                self._cancel.pop(job_id, None)
                self._pids.pop(job_id, None)
                self._termed.discard(job_id)
            shutil.rmtree(pdd, ignore_errors=True)

    def cancel(self, job_id: str) -> bool:
        """Ask the run of job_id to stop; False when no such run is going on."""
        with self._lock:
            if job_id not in self._running:
                return False
            self._cancel.setdefault(job_id, time.monotonic())
            return True

    def _event_handler(self, job_id: str, emit: Emit) -> Callable[[dict[str, Any]], bool]:
        seq = [0]
        tracing = bool(self.config.get("tracing"))
        task_args = tracing and bool(self.config.get("tracing_task_args"))

        def on_event(data: dict[str, Any]) -> bool:
            secrets = [s for s in self.secrets() if s]
            pid = data.get("pid")
            if pid and job_id not in self._pids:
                self._pids[job_id] = int(pid)
            seq[0] += 1
            ed = data.get("event_data") or {}
            # Masked whole, then cut: a cut first could split a secret past the masking.
            stdout = (redact(_ANSI.sub("", data.get("stdout") or ""), secrets) or "")[:MAX_STDOUT]
            event = {
                "counter": int(data.get("counter") or seq[0]),
                "event": str(data.get("event") or "verbose"),
                "host": ed.get("host"),
                "task": redact(ed.get("task"), secrets),
                "stdout": stdout,
                "pid": int(pid) if pid else None,
            }
            if tracing:
                event.update(_for_tracing(data, ed, secrets, task_args))
            try:
                emit(event)
            except OSError:
                # Nobody reads the events any more (the API went away): stop the job.
                with self._lock:
                    self._cancel.setdefault(job_id, time.monotonic())
            return False  # handed on; runner need not write it to the artifacts too

        return on_event

    def _envvars(self, job_id: str, project: Path) -> dict[str, str]:
        envvars = {
            ENV_MARKER: job_id,
            "ANSIBLE_FORCE_COLOR": "0",
            "ANSIBLE_NOCOLOR": "1",
            # ansible-playbook is the one next to our interpreter (the venv's), even
            # when the service's PATH does not name the venv.
            "PATH": os.pathsep.join(
                [os.path.dirname(sys.executable), os.environ.get("PATH", "/usr/bin:/bin")]
            ),
        }
        if (project / "ansible.cfg").is_file():
            envvars["ANSIBLE_CONFIG"] = str(project / "ansible.cfg")
        if self.config.get("tracing") and self.config.get("tracing_task_args"):
            # runner's callback puts a task's arguments into its events only so.
            envvars["ANSIBLE_DISPLAY_ARGS_TO_STDOUT"] = "True"
        return envvars

    def _inventory(self, pdd: Path) -> str | list[str]:
        main_inventory = str(self.config["inventory"])
        inventory: str | list[str] = main_inventory
        if self.config.get("local_hosts"):
            # The inventory says how the operator's machine reaches each server (SSH);
            # the server the API runs on reaches itself without SSH.  A second source's
            # host vars outrank the first's group_vars.
            local = pdd / "local-hosts.json"
            local.write_text(
                json.dumps(
                    {
                        "all": {
                            "hosts": {
                                name: {"ansible_connection": "local"}
                                for name in self.config["local_hosts"]
                            }
                        }
                    }
                )
            )
            inventory = [main_inventory, str(local)]
        return inventory

    def _should_stop(self, job_id: str) -> bool:
        asked = self._cancel.get(job_id)
        if asked is None:
            return False
        pid = self._pids.get(job_id)
        if pid is None:
            return True  # no playbook pid yet: let runner kill the process group
        if job_id not in self._termed:
            self._termed.add(job_id)
            try:
                os.kill(pid, signal.SIGTERM)
            except ProcessLookupError:
                return True
            return False
        try:
            if not is_alive(psutil.Process(pid)):
                return True
        except psutil.Error:
            return True
        # Ansible stops its workers on SIGTERM; past the grace period runner kills.
        return time.monotonic() - asked >= float(self.config["cancel_grace"])
