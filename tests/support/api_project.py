"""A ggnet project for the API's tests: an inventory in its own git repository (one
server on localhost, one client, CHAP on), a tiny site.yml standing in for every
playbook, and the API settings that run it."""

from __future__ import annotations

import subprocess
import sys
import textwrap

from ggnet_api.config import PLAYBOOKS

CHAP = "Sup3rS3cretChap"

# The inventory pieces the API's tests share: one server `boot1` on this machine, the
# lab's network in full DHCP mode, a file-backed pool.
LOCAL = "ansible_host: 127.0.0.1, ansible_connection: local"
NETWORK = (
    "ggnet_network: {interface: eth1, server_ip: 10.213.0.10, subnet: 10.213.0.0/24,\n"
    "  dhcp_mode: full, dhcp_range: [10.213.0.150, 10.213.0.199]}\n"
)
STORAGE = "ggnet_storage: {pool: ggtest, disk_format: file, reserve: 10%, writeback_quota: 1G}\n"


def hosts_yml(clients: str, server: str = LOCAL) -> str:
    """hosts.yml of the server boot1 (its vars: SERVER) and CLIENTS, the YAML that goes
    under ggnet_clients (written from column 0)."""
    return (
        "all:\n  children:\n    ggnet_servers:\n      hosts:\n"
        f"        boot1: {{{server}}}\n    ggnet_clients:\n"
        + textwrap.indent(textwrap.dedent(clients), " " * 6)
    )


def iscsi_yml(chap_secret: str | None = CHAP, backend: str = "tgt") -> str:
    chap = f"chap: true, chap_secret: {chap_secret}" if chap_secret else "chap: false"
    return f"ggnet_iscsi: {{backend: {backend}, {chap}}}\n"


HOSTS = hosts_yml(
    """\
    children:
      vip:
        hosts:
          pc-01: {ggnet_mac: "52:54:00:aa:00:01"}
      office: {}
    """,
    f"{LOCAL}, ansible_python_interpreter: {sys.executable}",
)
ALL = (
    NETWORK
    + STORAGE
    + iscsi_yml()
    + "ggnet_images:\n  win11: {size: 64M, kind: system}\nggnet_image: win11\n"
)
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
        # Every kind of the real allow-list, all running the tiny playbook (a power
        # job too, instead of its privd operation: no test API sends a magic packet
        # on a NIC of this machine, or asks a BMC).
        "playbooks": {
            **{
                kind: {**{k: v for k, v in spec.items() if k != "privd"}, "playbook": "site.yml"}
                for kind, spec in PLAYBOOKS.items()
            },
            "sleepy": {
                "playbook": "site.yml",
                "extravars": {"nap": {"type": "str", "pattern": r"\d{1,3}"}},
            },
        },
    }
    base.update(more)
    return base


def write_inventory(root, hosts: str, all_vars: str, **group_vars: str):
    """An inventory of HOSTS with group_vars/all.yml ALL (and more group_vars by
    name) at ROOT; ROOT."""
    (root / "group_vars").mkdir(parents=True)
    (root / "hosts.yml").write_text(hosts)
    for group, text in {"all": all_vars, **group_vars}.items():
        (root / "group_vars" / f"{group}.yml").write_text(text)
    return root


def inventory_app(tmp_path, hosts: str, all_vars: str, load: bool = True, **overrides):
    """The app factory on an inventory under tmp_path, as the routes' tests want it: no
    background threads, no writeback reset, the lab server's public URL; loaded and
    checked unless load is off."""
    from ggnet_api.app import create_app

    inv = tmp_path / "inventory"
    if not inv.exists():
        write_inventory(inv, hosts, all_vars)
    app = create_app(
        {
            "state_dir": str(tmp_path / "state"),
            "inventory": str(inv),
            "background": False,
            "reset_on_boot": False,
            "public_url": "http://10.213.0.10:8080",
            **overrides,
        }
    )
    if load:
        e = app.extensions["ggnet"]
        assert e.inventory.reload(), e.inventory.load_error
    return app


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def role_tokens(app, *roles: str) -> dict[str, str]:
    """A fresh token per role, added to the app's database: role -> token."""
    from ggnet_api.auth import new_token

    db = app.extensions["ggnet"].db
    out = {}
    for role in roles:
        out[role] = new_token()
        db.add_token(f"test-{role}", role, out[role])
    return out


# The boots table as the first versions made it (before `image` and `token_hash`).
OLD_BOOTS_TABLE = (
    "CREATE TABLE boots (id INTEGER PRIMARY KEY AUTOINCREMENT, mac TEXT NOT NULL, "
    "client TEXT, kind TEXT NOT NULL, started REAL NOT NULL, stage TEXT NOT NULL "
    "DEFAULT 'requested', stage_at REAL, result TEXT NOT NULL DEFAULT 'pending', "
    "duration REAL, detail TEXT{})"
)


def serve_api(daemons, tmp_path, cfg: dict, token_name: str, role: str):
    """The API as `ggnet serve` runs it (gunicorn, one worker) on a free loopback port
    with settings CFG, once /health answers: (url, port, its Database, a ROLE token
    named TOKEN_NAME)."""
    import argparse
    import contextlib
    import urllib.request
    from pathlib import Path

    import yaml

    from ggnet_api.auth import new_token
    from ggnet_api.db.database import Database
    from ggnet_cli import serve

    from .daemons import free_port, wait_for

    cfg_path = tmp_path / "api.yml"
    cfg_path.write_text(yaml.safe_dump(cfg))
    db = Database(str(Path(cfg["state_dir"]) / "api.db"))
    token = new_token()
    db.add_token(token_name, role, token)
    port = free_port()
    parser = argparse.ArgumentParser()
    serve.add_arguments(parser)
    argv = serve.gunicorn_argv(
        parser.parse_args(["--bind", f"127.0.0.1:{port}"]),
        str(Path(sys.executable).parent / "python"),
    )
    argv[-1:-1] = ["--env", f"GGNET_API_CONFIG={cfg_path}"]
    daemons.start(argv, tmp_path / "gunicorn.log", group=True)
    url = f"http://127.0.0.1:{port}"

    def up() -> bool:
        with contextlib.suppress(OSError):
            return urllib.request.urlopen(url + "/health", timeout=2).status == 200
        return False

    wait_for("the API", up, timeout=60)
    return url, port, db, token
