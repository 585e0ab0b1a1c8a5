"""Per-PC CHAP: the derivation, the one character rule, per-host pins, mutual CHAP."""

from __future__ import annotations

import importlib.util
import json
import string

import pytest
from ggnet import chap, iscsi, iscsi_tgt, iscsi_tgt_conf, model, net
from ggnet import ipxe as ipxe_mod
from ggnet.inventory import REPO_ROOT
from ggnet.validate import validate

from ggnet_api import converged

pytestmark = pytest.mark.unit

SERVER = "Serv3r-Secret-01"
P = "iqn.2025-01.lan.ggnet"
API = "http://10.213.0.10:8080"


def test_a_pc_secret_is_deterministic_and_its_own():
    first = chap.pc_secret(SERVER, "pc-01")
    assert first == chap.pc_secret(SERVER, "pc-01")
    assert first != chap.pc_secret(SERVER, "pc-02")
    assert first != chap.pc_secret("Other-Server-02", "pc-01")
    assert first != chap.target_secret(SERVER, "pc-01")
    assert SERVER not in first


@pytest.mark.parametrize("name", ["pc-01", "pc-bios", "a", "x" * 60])
def test_a_derived_secret_obeys_the_rule_at_the_windows_length(name):
    for secret in (chap.pc_secret(SERVER, name), chap.target_secret(SERVER, name)):
        assert len(secret) == 16
        assert set(secret) <= set(string.ascii_letters + string.digits)
        assert chap.secret_problem(secret) is None


@pytest.mark.parametrize(
    "bad", ["abc$def-ghijk", "abc#def-ghijk", 'abc"def-ghijk', "abc\\def-ghij"]
)
def test_validation_and_the_script_refuse_the_same_characters(bad):
    # Validation used to accept these while the script builder refused them.
    assert chap.secret_problem(bad) is not None
    problems = validate(_inventory(server_secret=bad))
    assert [p.key for p in problems] == ["ggnet_iscsi.chap_secret"]
    client = {
        "name": "pc-01",
        "mac": "52:54:00:00:00:01",
        "initiator_iqn": net.initiator_iqn("pc-01"),
    }
    uri = iscsi.san_uri("10.0.0.1", net.target_iqn("pc-01"), "lio")
    with pytest.raises(ipxe_mod.IpxeError):
        ipxe_mod.boot_script(client, [uri], API, {"user": client["initiator_iqn"], "secret": bad})
    with pytest.raises(iscsi.IscsiError):
        iscsi.check_chap_secret(bad, "pc-01")


def _inventory(server_secret=SERVER, mutual=False, **pc_vars):
    iscsi_settings = {"chap": True, "chap_secret": server_secret, "chap_mutual": mutual}
    settings = {
        "ggnet_network": {
            "interface": "eth0",
            "server_ip": "10.0.0.1",
            "subnet": "10.0.0.0/24",
            "dhcp_mode": "proxy",
        },
        "ggnet_iscsi": iscsi_settings,
        "ggnet_images": {"os": {"size": "1G", "kind": "system"}},
    }
    hostvars = {
        "boot1": dict(settings),
        "pc-01": {**settings, "ggnet_mac": "52:54:00:00:00:01", "ggnet_image": "os", **pc_vars},
        "pc-02": {**settings, "ggnet_mac": "52:54:00:00:00:02", "ggnet_image": "os"},
    }
    groups = {
        "all": ["boot1", "pc-01", "pc-02"],
        "ggnet_servers": ["boot1"],
        "ggnet_clients": ["pc-01", "pc-02"],
    }
    return {"groups": groups, "hostvars": hostvars}


@pytest.mark.parametrize(
    ("pinned", "why"),
    [
        ("tooShort1", "has 9 characters"),
        ("with space 1234", "contains ' '"),
        ("abc$def-ghijk", "'$'"),
    ],
)
def test_a_bad_per_host_secret_is_named_by_host_and_key_never_shown(pinned, why):
    problems = validate(_inventory(ggnet_chap_secret=pinned))
    assert [(p.where, p.key) for p in problems] == [("pc-01", "ggnet_chap_secret")]
    text = str(problems[0]) + json.dumps(problems[0].as_dict())
    assert why in text and pinned not in text


def test_a_good_per_host_secret_is_accepted_and_pins_that_pc_only():
    inventory = _inventory(ggnet_chap_secret="Pinned-Secret-9")
    assert validate(inventory) == []
    hostvars = inventory["hostvars"]
    assert model.chap_credentials("pc-01", hostvars["pc-01"])["secret"] == "Pinned-Secret-9"
    assert model.chap_credentials("pc-02", hostvars["pc-02"])["secret"] == chap.pc_secret(
        SERVER, "pc-02"
    )


def test_chap_mutual_must_be_a_boolean():
    problems = validate(_inventory(mutual="yes"))
    assert [p.key for p in problems] == ["ggnet_iscsi.chap_mutual"]


def test_mutual_credentials_name_the_target_and_carry_its_own_secret():
    hostvars = _inventory(mutual=True)["hostvars"]
    creds = model.chap_credentials("pc-01", hostvars["pc-01"])
    assert creds == {
        "user": f"{P}:initiator.pc-01",
        "secret": chap.pc_secret(SERVER, "pc-01"),
        "mutual_user": f"{P}:target.pc-01",
        "mutual_secret": chap.target_secret(SERVER, "pc-01"),
    }


def test_the_script_carries_the_reverse_credentials_for_mutual_chap():
    hostvars = _inventory(mutual=True)["hostvars"]
    creds = model.chap_credentials("pc-01", hostvars["pc-01"])
    client = {"name": "pc-01", "mac": "52:54:00:00:00:01", "initiator_iqn": creds["user"]}
    uri = iscsi.san_uri("10.0.0.1", creds["mutual_user"], "lio")
    lines = ipxe_mod.boot_script(client, [uri], API, creds).splitlines()
    assert f"set reverse-username {creds['mutual_user']}" in lines
    assert f"set reverse-password {creds['mutual_secret']}" in lines
    # Without mutual CHAP a retried script drops what a previous one set.
    one_way = {"user": creds["user"], "secret": creds["secret"]}
    lines = ipxe_mod.boot_script(client, [uri], API, one_way).splitlines()
    assert "clear reverse-password ||" in lines and not any("set reverse" in x for x in lines)


def _wanted(mutual: bool):
    hostvars = _inventory(mutual=mutual)["hostvars"]
    clients = [model.client(n, hostvars[n], _inventory()["groups"]) for n in ("pc-01",)]
    creds = {"pc-01": model.chap_credentials("pc-01", hostvars["pc-01"])}
    storage = {"pool": "ggpool", "disk_format": "file", "mountpoint": "/ggpool"}
    return iscsi.desired_targets(iscsi.targets_from_clients(clients, storage, creds))


def _found(wanted):
    return {
        iqn: iscsi.Target.from_live(
            iqn,
            luns={i: lun for i, lun in enumerate(t.luns)},
            first_lun=0,
            initiators=[t.initiator],
            chap_user=t.chap_user,
            chap_secret=t.chap_secret,
            mutual_user=t.mutual_user,
            mutual_secret=t.mutual_secret,
            params=t.params,
        )
        for iqn, t in wanted.items()
    }


def test_planning_sets_chap_when_mutual_chap_changes():
    one_way, both = _wanted(False), _wanted(True)
    (target,) = both.values()
    assert target.mutual_user == f"{P}:target.pc-01"
    assert target.mutual_secret == chap.target_secret(SERVER, "pc-01")
    ops = lambda w, f: [a.op for a in iscsi.plan("lio", w, f, {})[0]]  # noqa: E731
    assert ops(both, _found(both)) == []
    assert ops(both, _found(one_way)) == ["set_chap"]  # turned on
    assert ops(one_way, _found(both)) == ["set_chap"]  # turned off
    changed = _found(both)
    next(iter(changed.values())).mutual_secret = "Another-Secret-7"
    assert ops(both, changed) == ["set_chap"]
    # The diff names the target's user but masks its secret.
    assert target.summary()["mutual_secret"] == iscsi.MASK


def test_a_mutual_secret_equal_to_the_pc_secret_is_refused():
    spec = {
        "target_iqn": f"{P}:target.pc-01",
        "initiator_iqn": f"{P}:initiator.pc-01",
        "luns": [{"path": "/wb/pc-01"}],
        "chap_secret": "Same-Secret-123",
        "chap_mutual_secret": "Same-Secret-123",
    }
    with pytest.raises(iscsi.IscsiError, match="must differ"):
        iscsi.target_from_spec(spec)


def test_tgt_keeps_the_targets_outgoing_account_in_its_conf_and_reads_it_back(tmp_path):
    wanted = _wanted(True)
    path = tmp_path / "ggnet.conf"
    iscsi_tgt_conf.write_conf(str(path), iscsi_tgt_conf.render_conf(wanted))
    (t,) = wanted.values()
    assert f"    outgoinguser {t.mutual_user} {t.mutual_secret}\n" in path.read_text()
    shown = iscsi_tgt.TgtTarget(
        1, t.iqn, luns={1: "/x"}, accounts=[t.chap_user], outgoing=[t.mutual_user]
    )
    (found,) = iscsi_tgt.to_model([shown], str(path)).values()
    assert (found.mutual_user, found.mutual_secret) == (t.mutual_user, t.mutual_secret)


def test_tgt_binds_the_targets_account_outgoing():
    calls = []

    class Recorder:
        def run(self, *args, secret=None):
            calls.append(args)
            return "Account list:\n"

    driver = iscsi_tgt.Driver(conf_path=None)
    driver.tgtadm = Recorder()  # type: ignore[assignment]
    wanted = _wanted(True)
    (iqn,) = wanted
    driver._set_chap(iscsi.Action("set_chap", iqn), "7", wanted, {})
    binds = [c for c in calls if c[:4] == ("--op", "bind", "--mode", "account")]
    assert binds == [
        ("--op", "bind", "--mode", "account", "--tid", "7", "--user", f"{P}:initiator.pc-01"),
        (
            "--op",
            "bind",
            "--mode",
            "account",
            "--tid",
            "7",
            "--user",
            f"{P}:target.pc-01",
            "--outgoing",
        ),
    ]


def test_the_filter_and_the_api_file_carry_each_pcs_own_credentials(tmp_path):
    spec = importlib.util.spec_from_file_location(
        "ggnet_filters", REPO_ROOT / "filter_plugins/ggnet.py"
    )
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    inventory = _inventory(mutual=True)
    clients = model.clients(inventory["groups"], inventory["hostvars"])
    creds = module.ggnet_chap_credentials(clients, inventory["hostvars"])
    assert creds["pc-01"]["secret"] != creds["pc-02"]["secret"]
    assert creds["pc-01"] == model.chap_credentials("pc-01", inventory["hostvars"]["pc-01"])
    path = tmp_path / "targets.json"
    path.write_text(json.dumps({"backend": "lio", "chap": creds}))
    assert converged.load(str(path))["chap"] == creds
