"""A ggnet project for the API's tests: an inventory in its own git repository (one
server on localhost, one client, CHAP on), a tiny site.yml standing in for every
playbook, and the API settings that run it."""

from __future__ import annotations

import subprocess
import sys

from ggnet_api.config import PLAYBOOKS

CHAP = "Sup3rS3cretChap"

HOSTS = f"""\
all:
  children:
    ggnet_servers:
      hosts:
        boot1: {{ansible_host: 127.0.0.1, ansible_connection: local, ansible_python_interpreter: {sys.executable}}}
    ggnet_clients:
      children:
        vip:
          hosts:
            pc-01: {{ggnet_mac: "52:54:00:aa:00:01"}}
        office: {{}}
"""
ALL = f"""\
ggnet_network: {{interface: eth1, server_ip: 10.213.0.10, subnet: 10.213.0.0/24,
  dhcp_mode: full, dhcp_range: [10.213.0.150, 10.213.0.199]}}
ggnet_storage: {{pool: ggtest, disk_format: file, reserve: 10%, writeback_quota: 1G}}
ggnet_iscsi: {{backend: tgt, chap: true, chap_secret: {CHAP}}}
ggnet_images:
  win11: {{size: 64M, kind: system}}
ggnet_image: win11
"""
PLAYBOOK = """\
- name: A tiny converge
  hosts: ggnet_servers
  gather_facts: false
  tasks:
    - name: Show what a careless task would leak
      ansible.builtin.debug:
        msg: "clients {{ groups['ggnet_clients'] | join(',') }} secret {{ ggnet_iscsi.chap_secret }}"
    - name: Take a while
      ansible.builtin.command: sleep {{ nap | default(0) }}
      changed_when: false
"""


def make_project(root):
    inv = root / "repo" / "inventory"
    (inv / "group_vars").mkdir(parents=True)
    (inv / "hosts.yml").write_text(HOSTS)
    (inv / "group_vars" / "all.yml").write_text(ALL)
    repo = root / "repo"
    git = ["git", "-C", str(repo), "-c", "user.name=t", "-c", "user.email=t@localhost"]
    subprocess.run(["git", "init", "-q", str(repo)], check=True)
    subprocess.run([*git, "add", "."], check=True)
    subprocess.run([*git, "commit", "-q", "-m", "inventory"], check=True)
    project = root / "project"
    (project / "playbooks").mkdir(parents=True)
    (project / "playbooks" / "site.yml").write_text(PLAYBOOK)
    return project, inv


def settings(tmp_path, project, inv, **more):
    base = {
        "state_dir": str(tmp_path / "state"),
        "project_dir": str(project),
        "inventory": str(inv),
        "reset_on_boot": False,
        "collect_interval": 3600.0,
        "max_concurrent_jobs": 1,
        # Every kind of the real allow-list, all running the tiny playbook.
        "playbooks": {
            **{kind: {**spec, "playbook": "site.yml"} for kind, spec in PLAYBOOKS.items()},
            "sleepy": {
                "playbook": "site.yml",
                "extravars": {"nap": {"type": "str", "pattern": r"\d{1,3}"}},
            },
        },
    }
    base.update(more)
    return base
