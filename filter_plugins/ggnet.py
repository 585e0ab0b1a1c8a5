"""ggnet's Jinja filters: thin wrappers over the ggnet engine (net, model, settings).

Templates and validation share one implementation, so a MAC that validates is exactly
the MAC the dnsmasq and iPXE templates write.
"""

from __future__ import annotations

DOCUMENTATION = r"""
name: ggnet
short_description: ggnet filters (MAC, IQN, addresses, sizes, the client model)
description:
  - C(ggnet_mac) normalises a MAC to aa:bb:cc:dd:ee:ff.
  - C(ggnet_target_iqn) and C(ggnet_initiator_iqn) derive IQNs from a client name.
  - C(ggnet_in_subnet) and C(ggnet_in_range) check IPv4 addresses.
  - C(ggnet_size_bytes) parses 64G, 512M, 1.5T.
  - C(ggnet_clients) turns groups and hostvars into the sorted per-client desired state.
  - C(ggnet_boot_targets) is what the API's boot path reads of the converged targets.
  - C(ggnet_chap_credentials) maps each client to its own CHAP credentials (ggnet.chap:
    derived from the server secret unless the host pins one); mark tasks no_log.
  - C(ggnet_settings) is one of a host's settings (ggnet_network, ggnet_storage,
    ggnet_iscsi) with the defaults of ggnet's settings model under the inventory's values.
"""

from ansible.errors import AnsibleFilterError
from ggnet import model, net, settings
from ggnet.storage.capacity import quota_bytes


def _wrap(func, what):
    def filter_(*args, **kwargs):
        try:
            return func(*args, **kwargs)
        except ValueError as exc:
            raise AnsibleFilterError(f"{what}: {args[0]!r} {exc}") from exc

    filter_.__name__ = func.__name__
    return filter_


def ggnet_target_iqn(name, prefix=None):
    return net.target_iqn(name, prefix)


def ggnet_initiator_iqn(name, prefix=None):
    return net.initiator_iqn(name, prefix)


def ggnet_clients(groups, hostvars, server=None):
    # hostvars is Ansible's lazy HostVars object: take only the clients' views.
    names = model.clients_of(groups)
    plain = {name: dict(hostvars[name]) for name in names}
    try:
        return model.clients(groups, plain, server=server)
    except model.ModelError as exc:
        raise AnsibleFilterError(f"ggnet_clients: {exc}") from exc


def ggnet_chap_credentials(clients, hostvars):
    """{client: {user, secret[, mutual_user, mutual_secret]}} of `clients` (ggnet_clients)
    with CHAP on, as model.chap_credentials gives them: the iSCSI role's targets and the
    API's boot scripts get the same values from this one derivation (mark tasks no_log)."""
    out = {}
    for client in clients:
        name = client["name"]
        try:
            creds = model.chap_credentials(name, dict(hostvars[name]))
        except model.ModelError as exc:
            raise AnsibleFilterError(f"ggnet_chap_credentials: {exc}") from exc
        if creds:
            out[name] = creds
    return out


def ggnet_boot_targets(groups, hostvars, server):
    """What the boot path must know of the converged targets (mark tasks no_log).

    {"backend": lio|tgt, "chap": {client: credentials}} for the server's clients with
    CHAP on: the backend picks the LUN numbers and the LUNs to close around a re-clone,
    the credentials are the ones the iSCSI role gave the targets."""
    chap = ggnet_chap_credentials(ggnet_clients(groups, hostvars, server), hostvars)
    # Only ggnet_iscsi is read: dict(hostvars[server]) would template every server var.
    given = {"ggnet_iscsi": hostvars[server].get("ggnet_iscsi")}
    backend = model.settings(given, "ggnet_iscsi")["backend"]
    return {"backend": backend, "chap": chap}


def ggnet_settings(host_vars, key):
    """`hostvars[inventory_hostname] | ggnet_settings('ggnet_storage')`.

    Roles and playbooks read settings through this rather than `| default(...)`, so a
    default is never restated outside the settings model."""
    if key not in settings.DEFAULTS:
        raise AnsibleFilterError(
            f"ggnet_settings: {key!r} is not one of {', '.join(sorted(settings.DEFAULTS))}"
        )
    # hostvars[host] is lazy: .get templates only this one variable.
    try:
        return settings.merged(key, host_vars.get(key))
    except TypeError as exc:
        raise AnsibleFilterError(f"ggnet_settings: {exc}") from exc


class FilterModule:
    def filters(self):
        return {
            "ggnet_mac": _wrap(net.normalize_mac, "ggnet_mac"),
            "ggnet_target_iqn": _wrap(ggnet_target_iqn, "ggnet_target_iqn"),
            "ggnet_initiator_iqn": _wrap(ggnet_initiator_iqn, "ggnet_initiator_iqn"),
            "ggnet_in_subnet": _wrap(net.ip_in_subnet, "ggnet_in_subnet"),
            "ggnet_in_range": _wrap(net.ip_in_range, "ggnet_in_range"),
            "ggnet_size_bytes": _wrap(model.parse_size, "ggnet_size_bytes"),
            "ggnet_size_or_percent": _wrap(
                lambda v: list(model.parse_size_or_percent(v)), "ggnet_size_or_percent"
            ),
            # 0 for no quota ("none", 0), as the storage modules read it.
            "ggnet_writeback_quota_bytes": _wrap(
                lambda v: quota_bytes({"writeback_quota": v}), "ggnet_writeback_quota_bytes"
            ),
            "ggnet_ipv4_int": _wrap(lambda v: int(net.parse_ipv4(v)), "ggnet_ipv4_int"),
            "ggnet_subnet_network": _wrap(
                lambda v: str(net.parse_subnet(v).network), "ggnet_subnet_network"
            ),
            "ggnet_clients": ggnet_clients,
            "ggnet_boot_targets": ggnet_boot_targets,
            "ggnet_chap_credentials": ggnet_chap_credentials,
            "ggnet_settings": ggnet_settings,
        }
