"""Image rollouts as the API runs them: per image, the version PCs boot, the version in
canary, and the rollout engine's decision (ggnet.rollout.decide) over the boot path's
own records (the boots table: each boot's image, version, result and duration).

The versions and their states come from the collector's Sample (ZFS, read by root);
the decision is recomputed on every collection.  With `rollout_auto` on, a promote or
rollback decision starts an `image` job (op=state) once: the job is the audit trail,
and the state change happens in the storage engine like an operator's.  A rollback
rejects the version, so the canary PCs get the promoted version at their next boot.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Any

from ggnet import rollout
from ggnet.notation import iso_seconds

log = logging.getLogger(__name__)

# Boots of the previous version whose times make its p95 (the newest ones).
PREVIOUS_BOOTS = 50
# The job's state for each decision that acts.
ACTS = {"promote": rollout.PROMOTED, "rollback": rollout.REJECTED}


def image_rollout(
    name: str,
    spec: dict[str, Any],
    versions: list[dict[str, Any]],
    current: str | None,
    setting: Any,
    db: Any,
    now: float,
) -> dict[str, Any]:
    """{served, canary, decision} of one image: the version every PC but the canaries
    boots, the version the canaries boot (None when there is no rollout), and the
    decision over the canary version's boots (None when there is no rollout)."""
    infos = [rollout.VersionInfo(v["name"], v.get("state")) for v in versions]
    pinned = spec.get("version") if isinstance(spec, dict) else None
    pinned = str(pinned) if pinned is not None else None
    served = rollout.served_version(infos, current, pinned, False)
    canary = rollout.served_version(infos, current, pinned, True)
    out: dict[str, Any] = {"served": served, "canary": None, "decision": None}
    if canary is None or canary == served:
        return out
    out["canary"] = canary
    knobs = rollout.parse_rollout(setting)[0].knobs
    info = next(v for v in versions if v["name"] == canary)
    since = iso_seconds(info.get("state_at")) or 0.0

    def evidence(rows: list[dict[str, Any]]) -> list[rollout.Boot]:
        return [
            rollout.Boot(b["result"], b["duration"], b["stage"], now - float(b["started"]))
            for b in rows
        ]

    boots = evidence(db.version_boots(name, canary, since))
    previous: list[float] = []
    if served is not None:
        # Times measured the same way as the canaries' (to the hand-over, or to the
        # OS's report with healthy_at os).
        previous = [
            float(b.duration)
            for b in evidence(db.version_boots(name, served, limit=PREVIOUS_BOOTS))
            if b.duration is not None and rollout.outcome(b, knobs) == "ok"
        ]
    state = rollout.state_of(info.get("state"))
    elapsed = max(0.0, now - since) if since else 0.0
    out["decision"] = rollout.decide(state, boots, previous, knobs, elapsed).as_dict()
    return out


class Rollouts:
    """The latest decision per image, and the jobs started from them."""

    def __init__(self, ext: Any):
        self.ext = ext
        self.latest: dict[str, dict[str, Any]] = {}
        # (image, version, action) -> job id: each act is started once per process.
        self.started: dict[tuple[str, str, str], str] = {}
        self._lock = threading.Lock()

    def evaluate(self, now: float | None = None) -> dict[str, dict[str, Any]]:
        """{image: image_rollout(...)} for the inventory's images the pool has."""
        now = time.time() if now is None else now
        e = self.ext
        snap, sample = e.inventory.snapshot, e.collector.sample
        if "storage" in sample.errors:
            return {}
        found = {}
        for name, spec in sorted(snap.images.items()):
            versions = sample.versions.get(name)
            if not versions:
                continue
            found[name] = image_rollout(
                name,
                spec,
                versions,
                sample.image_current.get(name),
                snap.rollout,
                e.db,
                now,
            )
        self.latest = found
        return found

    def tick(self, now: float | None = None) -> list[str]:
        """Evaluate, and (rollout_auto) start the job of each promote or rollback
        decision not started yet; the ids of the jobs started."""
        found = self.evaluate(now)
        if not self.ext.config.get("rollout_auto"):
            return []
        started = []
        with self._lock:
            for image, view in found.items():
                decision = view["decision"]
                if not decision or decision["action"] not in ACTS:
                    continue
                key = (image, view["canary"], decision["action"])
                if key in self.started:
                    continue
                extravars = {
                    "op": "state",
                    "image": image,
                    "version": view["canary"],
                    "state": ACTS[decision["action"]],
                }
                try:
                    job = self.ext.jobs.submit("image", extravars, "rollout")
                except Exception as exc:  # the next tick tries again
                    log.warning("rollout of %s@%s: job not started: %s", image, key[1], exc)
                    continue
                self.started[key] = job["id"]
                started.append(job["id"])
                log.warning(
                    "rollout of %s@%s: %s (%s), job %s",
                    image,
                    key[1],
                    decision["action"],
                    decision["reason"],
                    job["id"],
                )
                if self.ext.metrics is not None:
                    self.ext.metrics.rollout_actions.labels(action=decision["action"]).inc()
        return started
