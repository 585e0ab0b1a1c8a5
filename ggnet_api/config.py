"""The API's settings: defaults, overridden by a YAML file and GGNET_API_* variables.

The allow-list of playbooks lives here too: a job kind names a playbook and the only
extra-vars it accepts, each with the shape its value must have.  Nothing else can be
run through the API, and no value can carry Jinja (Ansible would template it).
"""

from __future__ import annotations

import copy
import os
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml
from ggnet.inventory import REPO_ROOT
from ggnet.model import DURATION_UNITS, parse_duration

from ggnet_api import tracing

# A value's shape: type, and for strings a pattern; "required" marks the ones a job
# cannot start without.  Patterns are anchored by fullmatch.
_NAME = r"[a-z0-9][a-z0-9._-]{0,62}"
# Image, version and PC names as the API accepts them (the blueprints check paths by it).
NAME_PATTERN = _NAME
_COMMENT = r"[^\x00-\x1f{}%#]{1,200}"
# A duration as the API passes one on: at most six ASCII digits and one of the engine's
# units (openapi.yml publishes the same pattern); the engine's parser then reads it.
_DURATION = "[0-9]{1,6}[" + "".join(unit for unit in DURATION_UNITS if unit) + "]?"
# Rules may name a notation: the value must then parse by the engine's one parser.
_NOTATIONS: dict[str, Callable[[object], object]] = {"duration": parse_duration}

PLAYBOOKS: dict[str, dict[str, Any]] = {
    "converge": {
        "playbook": "site.yml",
        "description": "converge every boot server from the inventory",
        "extravars": {},
    },
    "preflight": {
        "playbook": "preflight.yml",
        "description": "check that the boot servers can be converged",
        "extravars": {},
    },
    # The extra-vars are the playbooks' own (see the usage comment atop each playbook).
    "image": {
        "playbook": "image.yml",
        "description": "image operations: roll back to a version, move a version's state "
        "(tested, canary, promoted, rejected), prune, delete a version, boot-test a "
        "candidate in a throwaway VM (boot_test)",
        "extravars": {
            "op": {
                "type": "str",
                "enum": ["rollback", "state", "prune", "delete", "boot_test"],
                "required": True,
            },
            "image": {"type": "str", "pattern": _NAME},
            "version": {"type": "str", "pattern": _NAME},
            "state": {"type": "str", "enum": ["tested", "canary", "promoted", "rejected"]},
            "keep_versions": {"type": "int"},
            "idle": {"type": "str", "pattern": _DURATION, "notation": "duration"},
            "force": {"type": "bool"},
        },
    },
    "machine": {
        "playbook": "machine.yml",
        "description": "machine operations: reset, maintenance on (keep) / off (release), "
        "apply a writeback as a new image version",
        "extravars": {
            "op": {
                "type": "str",
                "enum": ["reset", "keep", "release", "apply"],
                "required": True,
            },
            "client": {"type": "str", "pattern": _NAME, "required": True},
            "comment": {"type": "str", "pattern": _COMMENT},
            "version": {"type": "str", "pattern": _NAME},
            "disk": {"type": "str", "enum": ["system", "game"]},
            "promote": {"type": "bool"},
            "force": {"type": "bool"},
        },
    },
    # Not a playbook: ggnet-privd's wake and power operations (ggnet_privd/ops.py), run
    # as a job for its record, its events and its claim on the PC's power.
    "power": {
        "privd": "power",
        "description": "power: wake a PC with a magic packet from the boot interface, or "
        "switch it on, off or cycle it through its BMC (ggnet_bmc), the state read back",
        "extravars": {
            "op": {"type": "str", "enum": ["wake", "on", "off", "cycle"], "required": True},
            "client": {"type": "str", "pattern": _NAME, "required": True},
        },
    },
}


def runs(spec: dict[str, Any]) -> str:
    """What a job kind runs, as jobs record it: its playbook, or privd:<operation>."""
    return f"privd:{spec['privd']}" if "privd" in spec else str(spec["playbook"])


DEFAULTS: dict[str, Any] = {
    # Where the API keeps its SQLite file and one private data dir per job.
    "state_dir": "/var/lib/ggnet-api",
    # The project the playbooks are run from (a checkout of this repository).
    "project_dir": str(REPO_ROOT),
    "inventory": str(REPO_ROOT / "inventory" / "lab"),
    # Inventory hosts that are the machine the API runs on: jobs reach them locally.
    "local_hosts": [],
    "playbooks": PLAYBOOKS,
    "max_concurrent_jobs": 2,
    "max_queued_jobs": 50,
    # Seconds between runner's checks of the cancel flag, and how long a cancelled
    # ansible-playbook has after SIGTERM before everything left is killed.
    "cancel_poll": 0.5,
    "cancel_grace": 10.0,
    "max_body_bytes": 64 * 1024,
    "auth_fail_limit": 10,
    "auth_fail_window": 60.0,
    # Subprocess-based gauges (zfs, tgtadm) and the inventory are refreshed on these
    # intervals by background threads; a scrape or a boot never waits for them.
    "collect_interval": 15.0,
    "inventory_poll": 2.0,
    "boot_timeout": 600.0,
    # LIO's per-session byte counters (configfs), read by the collector thread.
    "lio_stats_root": "/sys/kernel/config/target/iscsi",
    # Reset writebacks at boot (off only for benchmarks and unit tests without ZFS).
    "reset_on_boot": True,
    # Act on the rollouts' decisions (ggnet_api/rollouts.py): a promote or a rollback
    # decision starts its image job (op=state) by itself.  Off: only shown (the API's
    # images view, /metrics), the operator starts the job.
    "rollout_auto": True,
    # The iSCSI backend and the clients' CHAP credentials as the last converge gave
    # them to the targets (ggnet_api/converged.py; a root-only JSON file the ggnet_api
    # role writes).  None: take both from the inventory (tests, a controller-side API).
    "targets_file": None,
    # Where the API writes the inventory commit and the PCs' boot-path entries it
    # serves after each load (ggnet.boot_entries); a converge waits on it.  None: not written.
    "served_file": None,
    # Where the image boot tests keep their screenshots (ggnet.storage.boot_test_job's
    # state dir, the image.yml op=boot_test default): GET .../screenshot serves them.
    "boot_test_dir": "/var/lib/ggnet/boot-tests",
    # The URL PCs reach the API at; None = the URL of the request.
    "public_url": None,
    # Where operators' browsers reach the ggnet_console (noVNC) of this server:
    # host (None = the host of the API request) and port (ggnet_console_port).
    "console_host": None,
    "console_port": 6080,
    "git_author": "ggnet-api <ggnet-api@localhost>",
    "max_discovered": 4096,
    # How long boot history, and discovered machines not seen since, are kept (the
    # engine's durations: 30d, 12h; 0 keeps them forever).  Each inventory machine's
    # latest boot stays whatever its age; /metrics' totals are not lowered.
    "boot_retention": "30d",
    "discovered_retention": "7d",
    # Seconds between two retention passes.
    "retention_interval": 3600.0,
    # The boot path (/boot/*) against the people at the PCs (ggnet_api/boot_origin.py).
    # A PC's script goes only to the PC itself: to its fixed ggnet_ip, to the address
    # dnsmasq's lease file gives its MAC (the netboot role's ggnet_netboot_lease_file),
    # or to a source the kernel's IPv4 neighbour table maps to its MAC.
    "lease_file": "/var/lib/ggnet/dnsmasq.leases",
    # dnsmasq's log file (the netboot role's ggnet_netboot_log_facility when it is a
    # path), followed by the collector for the DHCP and TFTP counters; None: no such
    # series.  tftp_root: where the sent boot files are, for the TFTP bytes.
    "dnsmasq_log": None,
    "tftp_root": "/srv/ggnet/tftp",
    "neighbour_file": "/proc/net/arp",
    # Requests per boot_limit_window seconds on /boot/* per source address and per MAC
    # (token buckets: a burst of that many, refilled evenly); beyond them 429 with
    # Retry-After.  boot_limit_keys bounds the addresses and MACs tracked (the least
    # recently seen are forgotten first).
    "boot_limit_source": 120,
    "boot_limit_mac": 60,
    "boot_limit_window": 60.0,
    "boot_limit_keys": 8192,
    # The largest report_os.py body /boot/<mac>/report accepts (413 beyond).
    "max_report_bytes": 16 * 1024,
    # Server-sent event streams each hold a request thread while open: at most this
    # many at once per token and in all (never more than half of request_threads, so
    # /boot keeps threads), each closed after event_stream_lifetime seconds with an
    # `event: reconnect` (EventSource comes back with Last-Event-ID and loses nothing).
    "max_event_streams": 8,
    "max_event_streams_per_token": 4,
    "event_stream_lifetime": 300.0,
    # The web console (/ui): how long a sign-in lasts (seconds; never beyond the
    # token's own expiry), and how often an open machines page asks for its table.
    "ui_session_lifetime": 12 * 3600.0,
    "ui_poll_seconds": 2.0,
    # gunicorn's --threads (`ggnet serve` passes it on as GGNET_API_REQUEST_THREADS).
    "request_threads": 16,
    # What needs root (a boot's writeback reset, the jobs' playbooks, the collector's
    # zfs/iSCSI/LIO reads, an approval's inventory commit) is asked of ggnet-privd
    # (`ggnet privd`, root) on this Unix socket.  None: done in the API's own process
    # (development, tests, `ggnet serve` run as root on its own).
    "privd_socket": None,
    # The user the API runs as: besides root, the only peer ggnet-privd answers (its
    # socket's group is this user's group).
    "privd_api_user": "ggnet-api",
    # Reset a PC's writeback as soon as its session has ended (the collector saw its
    # target without an initiator twice, ggnet_api/boot_sessions.py), so that its next
    # boot only checks it; with reset_on_boot only.  Maintenance keeps it as ever.
    "reset_on_session_end": True,
    # Where the iSCSI backend's admin listens, for the collector's and privd's reads
    # of the sessions: tgt's control_port (tgtd -C) and netns; {} = the system's.
    "iscsi_options": {},
    # How many of the boot path's resets ggnet-privd runs at once.  They come in
    # batches (ggnet_privd/batches.py: one zfs read for every reset asked meanwhile);
    # the rollbacks they need run side by side, as many as this.
    "reset_workers": 16,
    # A wake is confirmed by the PC's next DHCP or boot request within this many
    # seconds of its magic packet, else it is unconfirmed (ggnet_api/wakes.py).
    "wake_timeout": 300.0,
    # How long a BMC power request waits for the state read back, and how often it reads.
    "power_timeout": 60.0,
    "power_poll": 1.0,
    # Start the background threads (tests that only need the routes turn it off).
    "background": True,
    # The fleet key that signs the calls between boot servers (/v1/status and every
    # fleet call; ggnet_api/fleet_signing.py), from the inventory, vaulted; None: the
    # signed endpoints answer 503.  fleet_key_previous is also accepted during a
    # rotation, until every server has the new key.  At least FLEET_KEY_MIN characters.
    "fleet_key": None,
    "fleet_key_previous": None,
    # The Prometheus that evaluates the anomaly alerts (/api/anomalies asks its
    # /api/v1/alerts); None or "": /api/anomalies answers 503.
    "prometheus_url": "http://127.0.0.1:9090",
    # Opt-in OpenTelemetry tracing of requests, the boot path's reset and every job with
    # its playbook's tasks (ggnet_api/tracing.py, docs/monitoring.md "Tracing").  Spans
    # go over OTLP/HTTP to tracing_otlp_endpoint (e.g. http://collector:4318/v1/traces)
    # when it is set, else to the JSON-lines tracing_file (None: traces.jsonl in
    # state_dir), rotated at tracing_file_max_bytes with tracing_file_backups older
    # files kept.  Task arguments are left out unless tracing_task_args is true (known
    # secrets are masked in them whatever it says).
    "tracing": False,
    "tracing_otlp_endpoint": None,
    "tracing_file": None,
    "tracing_file_max_bytes": 16 * 1024 * 1024,
    "tracing_file_backups": 2,
    "tracing_task_args": False,
}

# A fleet key shorter than this is refused at load (hex of 16 random bytes at least).
FLEET_KEY_MIN = 32

_ENV_PREFIX = "GGNET_API_"


def _coerce(value: str, like: Any) -> Any:
    if isinstance(like, bool):
        return value.strip().lower() in ("1", "true", "yes", "on")
    if isinstance(like, int):
        return int(value)
    if isinstance(like, float):
        return float(value)
    return value


def load(path: str | os.PathLike[str] | None = None, **overrides: Any) -> dict[str, Any]:
    """Settings from DEFAULTS, then the YAML file (GGNET_API_CONFIG), env, overrides."""
    config = copy.deepcopy(DEFAULTS)
    path = path or os.environ.get(_ENV_PREFIX + "CONFIG")
    if path:
        with open(path, encoding="utf-8") as fh:
            data = yaml.safe_load(fh) or {}
        if not isinstance(data, dict):
            raise ValueError(f"{path}: the API configuration must be a mapping")
        unknown = sorted(set(data) - set(DEFAULTS))
        if unknown:
            raise ValueError(f"{path}: unknown setting(s): {', '.join(unknown)}")
        config.update(data)
    for key, default in DEFAULTS.items():
        env = os.environ.get(_ENV_PREFIX + key.upper())
        if env is not None and not isinstance(default, dict):
            config[key] = _coerce(env, default) if default is not None else env
    config.update(overrides)
    config["state_dir"] = str(Path(config["state_dir"]))
    for key in ("fleet_key", "fleet_key_previous"):
        value = config[key] = config[key] or None  # an empty value: no key
        # Only the length is named: the value is a secret.
        if value is not None and (not isinstance(value, str) or len(value) < FLEET_KEY_MIN):
            raise ValueError(f"{key}: a string of at least {FLEET_KEY_MIN} characters")
    options = config["iscsi_options"]
    if not isinstance(options, dict) or set(options) - {"control_port", "netns"}:
        raise ValueError(
            f"iscsi_options: {str(options)[:60]!r} is not a mapping of control_port and netns"
        )
    workers = config["reset_workers"]
    if not isinstance(workers, int) or isinstance(workers, bool) or not 1 <= workers <= 64:
        raise ValueError(f"reset_workers: {str(workers)[:40]!r} is not a whole number from 1 to 64")
    for key in ("tracing_otlp_endpoint", "tracing_file"):
        config[key] = config[key] or None  # an empty value: not set
    tracing.check(config)
    for key in _DURATIONS:
        try:
            parse_duration(config[key])
        except ValueError as exc:
            raise ValueError(f"{key}: {str(config[key])[:40]!r} {exc}") from None
    return config


# Settings given as the engine's durations (read with seconds()).
_DURATIONS = ("boot_retention", "discovered_retention")


def seconds(config: dict[str, Any], key: str) -> int:
    """A duration setting in seconds (load() checked that it parses)."""
    return parse_duration(config[key])


class ExtraVarsError(ValueError):
    pass


_JINJA = re.compile(r"\{\{|\{%|\{#")


def job_spec(playbooks: dict[str, dict[str, Any]], kind: Any) -> dict[str, Any]:
    """The allow-list entry of a job kind (ExtraVarsError when there is none)."""
    spec = playbooks.get(kind) if isinstance(kind, str) else None
    if spec is None:
        known = ", ".join(sorted(playbooks))
        raise ExtraVarsError(f"kind: {str(kind)[:60]!r} is not a job kind; use one of {known}")
    return spec


def check_extravars(kind: str, spec: dict[str, Any], given: Any) -> dict[str, Any]:
    """The extra-vars of a job of `kind`, checked against its allow-list entry."""
    if given is None:
        given = {}
    if not isinstance(given, dict):
        raise ExtraVarsError("extravars: must be an object of variable names to values")
    allowed = spec.get("extravars") or {}
    out: dict[str, Any] = {}
    for key, value in given.items():
        rule = allowed.get(key)
        if rule is None:
            names = ", ".join(sorted(allowed)) or "none"
            raise ExtraVarsError(
                f"extravars.{key}: not accepted by job kind {kind!r} (accepted: {names})"
            )
        out[key] = _check_value(f"extravars.{key}", rule, value)
    missing = sorted(k for k, rule in allowed.items() if rule.get("required") and k not in given)
    if missing:
        raise ExtraVarsError(f"extravars: job kind {kind!r} needs {', '.join(missing)}")
    return out


def _check_value(where: str, rule: dict[str, Any], value: Any) -> Any:
    kind = rule.get("type", "str")
    if kind == "bool":
        if not isinstance(value, bool):
            raise ExtraVarsError(f"{where}: must be true or false")
        return value
    if kind == "int":
        if isinstance(value, bool) or not isinstance(value, int):
            raise ExtraVarsError(f"{where}: must be an integer")
        return value
    if not isinstance(value, str):
        raise ExtraVarsError(f"{where}: must be a string")
    if _JINJA.search(value):
        raise ExtraVarsError(f"{where}: must not contain template markers ({{{{, {{%, {{#)")
    if "enum" in rule and value not in rule["enum"]:
        raise ExtraVarsError(f"{where}: {value!r} is not one of {', '.join(rule['enum'])}")
    if "pattern" in rule and not re.fullmatch(rule["pattern"], value):
        raise ExtraVarsError(f"{where}: {value[:60]!r} is not an accepted value")
    if "notation" in rule:
        parse = _NOTATIONS.get(rule["notation"])
        if parse is None:
            raise ExtraVarsError(
                f"{where}: the API configuration names notation {rule['notation']!r}; "
                f"known: {', '.join(_NOTATIONS)}"
            )
        try:
            parse(value)
        except ValueError as exc:
            raise ExtraVarsError(f"{where}: {value[:60]!r} {exc}") from None
    return value
