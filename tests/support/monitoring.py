"""The ggnet_monitoring role rendered for a one-server inventory on 127.0.0.1, and what
Prometheus says about it: shared by the monitoring stack and pool fault tests."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import urllib.request
from pathlib import Path

from .playbook import REPO, VENV_BIN


def get_json(url):
    try:
        with urllib.request.urlopen(url, timeout=5) as resp:
            return json.load(resp)
    except OSError:
        return None


DEFAULT_STORAGE = "{pool: ggpool, reserve: 10%, writeback_quota: 40G}"


def render_role(tmp: Path, ports: dict, storage: str = DEFAULT_STORAGE) -> Path:
    """Run the role (config only) against localhost; returns the config dir.

    `storage` is the server's ggnet_storage (YAML flow mapping): the inventory rules
    derive the pool's reserve from it."""
    inv = tmp / "inventory"
    (inv / "group_vars").mkdir(parents=True)
    (inv / "hosts.yml").write_text(
        "all:\n  children:\n    ggnet_servers:\n      hosts:\n        boot1:\n"
        "          ansible_host: 127.0.0.1\n          ansible_connection: local\n"
        f"          ansible_python_interpreter: {sys.executable}\n"
        f"          ggnet_api_port: {ports['api']}\n"
    )
    (inv / "group_vars" / "all.yml").write_text(
        f"ggnet_storage: {storage}\n"
        f"ggnet_monitoring_config_dir: {tmp / 'etc'}\n"
        f"ggnet_monitoring_textfile_dir: {tmp / 'textfile'}\n"
        f"ggnet_monitoring_prometheus_port: {ports['prometheus']}\n"
        f"ggnet_monitoring_alertmanager_port: {ports['alertmanager']}\n"
        f"ggnet_monitoring_node_exporter_port: {ports['node']}\n"
        "ggnet_monitoring_scrape_interval: 1s\n"
        "ggnet_monitoring_evaluation_interval: 1s\n"
        "ggnet_monitoring_install_packages: false\n"
        "ggnet_monitoring_manage_service: false\n"
    )
    play = tmp / "play.yml"
    play.write_text(
        "- name: Monitoring\n  hosts: ggnet_servers\n  gather_facts: false\n"
        f"  vars: {{ggnet_source_dir: {REPO}}}\n"
        "  roles: [ggnet_monitoring]\n"
    )
    env = {
        **os.environ,
        "ANSIBLE_CONFIG": str(REPO / "ansible.cfg"),
        "ANSIBLE_ROLES_PATH": str(REPO / "roles"),
        "PATH": f"{VENV_BIN}:{os.environ['PATH']}",
    }
    proc = subprocess.run(
        [str(VENV_BIN / "ansible-playbook"), "-i", str(inv), str(play)],
        capture_output=True,
        text=True,
        env=env,
        check=False,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-2000:]
    return tmp / "etc"


def shorten_for(etc: Path) -> None:
    """The rules as shipped, but with `for:` shortened so a fault is seen in seconds."""
    rules = etc / "rules" / "ggnet.rules.yml"
    rules.write_text(re.sub(r"(\n\s+for: )\S+", r"\g<1>2s", rules.read_text()))


def alerts(prom: str) -> dict[str, str]:
    data = get_json(f"{prom}/api/v1/alerts") or {"data": {"alerts": []}}
    return {a["labels"]["alertname"]: a["state"] for a in data["data"]["alerts"]}
