"""/api/anomalies (viewer): what is anomalous now, as the local Prometheus sees it.

The anomaly alerts (monitoring/rules/ggnet-anomaly.rules.yml) are evaluated by
Prometheus, not here: the API asks Prometheus's /api/v1/alerts for them and passes on
the firing ones.  Without a Prometheus the answer is a 503 naming the URL it tried and
what to do, never an empty list that would read as "all is well".
"""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from typing import Any

from flask import Blueprint, jsonify

from ggnet_api import auth
from ggnet_api.blueprints.common import ext, fail

bp = Blueprint("anomalies", __name__)

# The alerts of ggnet-anomaly.rules.yml (tests/unit/test_api_anomalies.py keeps the two
# in step).
ANOMALY_ALERTS = ("GgnetBootTimeAnomaly", "GgnetBootErrorRateAnomaly")
# A request thread waits at most this long; Prometheus answers its alerts in
# milliseconds when it is up.
TIMEOUT = 5.0
_FIX = (
    "start Prometheus on the monitoring host (systemctl start prometheus), or set the "
    "API's prometheus_url (GGNET_API_PROMETHEUS_URL) to where it listens"
)


def _alerts(url: str) -> list[dict[str, Any]]:
    """Prometheus's active alerts; fail(503) when they cannot be had."""
    where = f"{url.rstrip('/')}/api/v1/alerts"
    try:
        with urllib.request.urlopen(where, timeout=TIMEOUT) as resp:
            body = json.load(resp)
    except urllib.error.HTTPError as err:
        fail(503, f"Prometheus at {url} answered HTTP {err.code} for its alerts: {_FIX}")
    except (OSError, ValueError) as err:
        reason = getattr(err, "reason", err)
        fail(503, f"Prometheus at {url} does not answer ({reason}): {_FIX}")
    if not isinstance(body, dict) or body.get("status") != "success":
        fail(503, f"Prometheus at {url} gave no alerts (status {body.get('status')!r}): {_FIX}")
    alerts = body.get("data", {}).get("alerts", [])
    return alerts if isinstance(alerts, list) else []


def _value(raw: Any) -> float | None:
    try:
        return float(raw)
    except (TypeError, ValueError):
        return None


@bp.get("/api/anomalies")
@auth.require("viewer")
def anomalies():
    url = ext().config.get("prometheus_url")
    if not url:
        fail(503, f"no Prometheus is configured (prometheus_url is empty): {_FIX}")
    found = []
    for alert in _alerts(url):
        labels = alert.get("labels") or {}
        if alert.get("state") != "firing" or labels.get("alertname") not in ANOMALY_ALERTS:
            continue
        group = {k: v for k, v in labels.items() if k not in ("alertname", "severity")}
        found.append({
            "alert": labels["alertname"],
            "severity": labels.get("severity"),
            "group": group,
            "since": alert.get("activeAt"),
            "value": _value(alert.get("value")),
            "summary": (alert.get("annotations") or {}).get("summary"),
        })  # fmt: skip
    found.sort(key=lambda a: (a["alert"], sorted(a["group"].items())))
    return jsonify(prometheus=url, anomalies=found)
