#!/usr/bin/python
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
---
module: ggnet_preflight
short_description: Check that a ggnet boot server can boot PCs (pool, iSCSI, dnsmasq, TFTP, API, Prometheus)
description:
  - Runs the same checks as C(ggnet preflight) on the boot server and fails, naming
    every failed check and what to do about it, when any does not pass.
  - A check whose settings are not given is left out (not every server runs every
    service); O(skip) leaves out others by name.
  - Changes nothing, so check mode runs the checks too.
version_added: "0.1.0"
author: ggnet
options:
  pool: {description: ZFS pool (health, and free space against O(reserve))., type: str}
  reserve: {description: The pool's reserve, a size (50G) or a percentage (10%)., type: str, default: "10%"}
  iscsi_backend: {description: LIO must be loaded, or tgtd must answer., type: str, choices: [lio, tgt]}
  tgt_control_port: {description: tgtd's control port (tgtadm -C) when several run., type: int, default: 0}
  dnsmasq_config: {description: dnsmasq configuration checked with C(dnsmasq --test)., type: path}
  dnsmasq_pidfile: {description: dnsmasq's pid file; without it systemd is asked about O(dnsmasq_service)., type: path}
  dnsmasq_service: {description: The dnsmasq systemd unit., type: str}
  tftp_root: {description: TFTP root that must hold O(tftp_files)., type: path}
  tftp_files: {description: iPXE binaries expected in O(tftp_root)., type: list, elements: str}
  interface: {description: Boot interface, which must carry O(server_ip)., type: str}
  server_ip: {description: The server's address on the boot network., type: str}
  api_database: {description: The API's SQLite database., type: path}
  prometheus_url: {description: Prometheus base URL (its /-/ready must answer 200)., type: str}
  skip:
    description: Names of checks to leave out.
    type: list
    elements: str
    default: []
    choices: [pool, iscsi_backend, dnsmasq_config, dnsmasq_running, tftp_files, boot_interface, api_database, prometheus]
"""

EXAMPLES = r"""
- name: Check the boot server
  ggnet_preflight:
    pool: "{{ ggnet_storage.pool }}"
    reserve: "{{ ggnet_storage.reserve }}"
    iscsi_backend: "{{ ggnet_iscsi.backend }}"
    dnsmasq_config: /etc/ggnet/dnsmasq.conf
    dnsmasq_service: ggnet-dnsmasq
    tftp_root: /srv/ggnet/tftp
    interface: "{{ ggnet_network.interface }}"
    server_ip: "{{ ggnet_network.server_ip }}"
"""

RETURN = r"""
checks:
  description: Every check run, in order.
  returned: always
  type: list
  elements: dict
  sample: [{name: pool, ok: true, message: "pool ggpool ONLINE, 812.0 MiB free (reserve 51.2 MiB)"}]
failed_checks:
  description: Names of the checks that failed.
  returned: always
  type: list
  elements: str
summary:
  description: One line, e.g. C(preflight: 7 passed, 1 failed (dnsmasq_running)).
  returned: always
  type: str
"""

from ansible.module_utils.basic import AnsibleModule
from ansible.module_utils.ggnet.host_os import C_LOCALE
from ansible.module_utils.ggnet.preflight import CHECKS, run_checks, summary
from ansible.module_utils.ggnet.settings import BACKENDS, default


def main() -> None:
    module = AnsibleModule(
        argument_spec={
            "pool": {"type": "str"},
            "reserve": {"type": "str", "default": default("ggnet_storage", "reserve")},
            "iscsi_backend": {"type": "str", "choices": list(BACKENDS)},
            "tgt_control_port": {"type": "int", "default": 0},
            "dnsmasq_config": {"type": "path"},
            "dnsmasq_pidfile": {"type": "path"},
            "dnsmasq_service": {"type": "str"},
            "tftp_root": {"type": "path"},
            "tftp_files": {"type": "list", "elements": "str"},
            "interface": {"type": "str"},
            "server_ip": {"type": "str"},
            "api_database": {"type": "path"},
            "prometheus_url": {"type": "str"},
            "skip": {"type": "list", "elements": "str", "default": [], "choices": list(CHECKS)},
        },
        supports_check_mode=True,
    )
    # Commands run in the C locale (as the engine's own runner does) so their output
    # parses the same.
    module.run_command_environ_update = dict(C_LOCALE)

    def runner(argv):
        return module.run_command(list(argv), check_rc=False)

    checks = run_checks(module.params, run=runner)
    failed = [c for c in checks if not c.ok]
    result = {
        "changed": False,
        "checks": [c.as_dict() for c in checks],
        "failed_checks": [c.name for c in failed],
        "summary": summary(checks),
    }
    if failed:
        module.fail_json(
            msg=f"{summary(checks)} on this boot server: "
            + "; ".join(f"{c.name}: {c.message}" for c in failed),
            **result,
        )
    module.exit_json(**result)


if __name__ == "__main__":
    main()
