"""Power (issue 19): the magic packet and where it leaves from, the ggnet_bmc checks,
wakes confirmed by the PC's next request, privd's refusals, the API's power routes.

Sending for real (SO_BINDTODEVICE in a network namespace) and the Redfish emulator are
tests/integration/test_power_on_the_wire.py's."""

from __future__ import annotations

import time

import pytest
from ggnet import redfish, validate, wol
from ggnet.inventory import load_inventory
from ggnet_testing.api_project import (
    ALL,
    HOSTS,
    bearer,
    hosts_yml,
    inventory_app,
    role_tokens,
    write_inventory,
)
from prometheus_client.parser import text_string_to_metric_families

from ggnet_api.dnsmasq_log import DnsmasqLog
from ggnet_api.wakes import Wakes, state_of, view
from ggnet_privd.ops import Ops
from ggnet_privd.protocol import OpError

pytestmark = pytest.mark.unit

MAC = "52:54:00:aa:00:01"


# -- the magic packet ---------------------------------------------------------------------


def test_magic_packet_is_six_ff_then_the_mac_sixteen_times():
    packet = wol.magic_packet("52-54-00-AA-00-01")
    assert len(packet) == 102
    assert packet[:6] == b"\xff" * 6
    assert packet[6:] == bytes.fromhex("525400aa0001") * 16
    assert wol.mac_of_packet(packet) == MAC
    # Found inside a frame's payload too; a broken repetition is no magic packet.
    assert wol.mac_of_packet(b"\x00" * 8 + packet + b"\x00") == MAC
    assert wol.mac_of_packet(packet[:-1]) is None
    assert wol.mac_of_packet(b"\xff" * 6 + bytes.fromhex("525400aa0001") * 15 + b"\0" * 6) is None


@pytest.mark.parametrize(
    ("mac", "why"),
    [
        ("ff:ff:ff:ff:ff:ff", "broadcast"),
        ("01:00:5e:00:00:01", "multicast"),
        ("52:54:00:aa:00", "MAC"),
        (525400123456, "number"),
    ],
)
def test_magic_packet_refuses_what_is_no_nics_address(mac, why):
    with pytest.raises(ValueError, match=why):
        wol.magic_packet(mac)


def test_the_route_is_the_boot_interface_and_its_subnets_broadcast():
    route = wol.wake_route({"interface": "eth1", "subnet": "10.213.0.0/24"})
    assert (route.interface, route.broadcast, route.port) == ("eth1", "10.213.0.255", 9)
    assert wol.wake_route({"interface": "br0", "subnet": "10.1.0.0/22"}).broadcast == "10.1.3.255"


@pytest.mark.parametrize(
    ("network", "message"),
    [
        ({"subnet": "10.0.0.0/24"}, "ggnet_network.interface: is not set"),
        ({"interface": "a" * 16, "subnet": "10.0.0.0/24"}, "is not an interface name"),
        ({"interface": "../x", "subnet": "10.0.0.0/24"}, "is not an interface name"),
        ({"interface": "eth1", "subnet": "10.0.0.1/24"}, "ggnet_network.subnet: .*host bits"),
        ({"interface": "eth1", "subnet": "nope"}, "ggnet_network.subnet: 'nope'"),
    ],
)
def test_a_route_that_cannot_be_is_refused_naming_the_key(network, message):
    with pytest.raises(wol.WolError, match=message):
        wol.wake_route(network)


def test_send_refuses_an_interface_this_server_has_not():
    route = wol.Route("ggnet-none0", "10.213.0.255")
    with pytest.raises(wol.WolError, match="'ggnet-none0' is not an interface of this server"):
        wol.send(MAC, route)


# -- ggnet_bmc ----------------------------------------------------------------------------

GOOD_BMC = {"url": "https://10.213.1.21", "username": "admin", "password_file": "/etc/ggnet/b"}


def test_a_good_bmc_parses_with_tls_verified_by_default():
    cfg = redfish.parse_bmc(GOOD_BMC)
    assert cfg.verify_tls is True and cfg.url == "https://10.213.1.21"
    assert redfish.bmc_problems({**GOOD_BMC, "verify_tls": False, "ca_file": "/x.pem"}) == []


@pytest.mark.parametrize(
    ("change", "key", "message"),
    [
        ({"url": "ftp://x"}, "ggnet_bmc.url", "https://"),
        ({"url": "https://u:p@x"}, "ggnet_bmc.url", "credentials"),
        ({"username": ""}, "ggnet_bmc.username", "user name"),
        ({"password": "s3cret-pw"}, "ggnet_bmc", "exactly one of"),
        ({"password_file": "relative"}, "ggnet_bmc.password_file", "absolute"),
        ({"system": "/Systems/1"}, "ggnet_bmc.system", "/redfish/v1/Systems/"),
        ({"verify_tls": "yes"}, "ggnet_bmc.verify_tls", "true or false"),
        ({"port": 443}, "ggnet_bmc.port", "not a ggnet_bmc key"),
    ],
)
def test_bmc_problems_name_the_key(change, key, message):
    problems = redfish.bmc_problems({**GOOD_BMC, **change})
    assert [p[0] for p in problems] == [key]
    assert message in problems[0][2]
    assert all("s3cret-pw" not in str(p) for p in problems)


def test_the_validator_reports_a_bad_bmc_with_host_key_and_value(tmp_path):
    hosts = hosts_yml(
        """\
        hosts:
          pc-01:
            ggnet_mac: "52:54:00:aa:00:01"
            ggnet_bmc: {url: "ftp://10.213.1.21", username: admin, password: hunter2-secret}
        """
    )
    inv = write_inventory(tmp_path / "inv", hosts, ALL)
    problems = [str(p) for p in validate.validate(load_inventory(str(inv)))]
    assert problems == [
        "pc-01 (hosts.yml:10): ggnet_bmc.url: must be the BMC's https:// (or http://) URL "
        "(value: ftp://10.213.1.21)"
    ], problems
    assert not any("hunter2-secret" in p for p in problems)


def test_an_unresolved_bmc_password_is_reported_once(tmp_path):
    hosts = hosts_yml(
        """\
        hosts:
          pc-01:
            ggnet_mac: "52:54:00:aa:00:01"
            ggnet_bmc: {url: "https://10.213.1.21", username: admin, password: "{{ nope }}"}
        """
    )
    inv = write_inventory(tmp_path / "inv", hosts, ALL)
    problems = [str(p) for p in validate.validate(load_inventory(str(inv)))]
    assert len(problems) == 1 and "ggnet_bmc.password" in problems[0], problems
    assert "cannot be resolved" in problems[0]


def test_bmc_power_refuses_an_unknown_action_before_any_request():
    bmc = redfish.Bmc(redfish.parse_bmc({**GOOD_BMC, "url": "http://127.0.0.1:9"}))
    with pytest.raises(redfish.BmcError, match="'reboot' is not one of on, off, cycle"):
        bmc.power("reboot")


# -- wakes --------------------------------------------------------------------------------


class _DB:
    """The database's wake rows (the API's SQLite is test_api's: here the logic)."""

    def __init__(self, tmp_path):
        from ggnet_api.db.database import Database

        self.db = Database(str(tmp_path / "api.db"))


def test_a_wake_is_confirmed_by_the_next_request_and_timed(tmp_path):
    db = _DB(tmp_path).db
    seen: list[tuple[float, str]] = []
    wakes = Wakes(db, timeout=300.0, observe=lambda s, via: seen.append((s, via)))
    t0 = 1_000_000.0
    wakes.sent("pc-01", MAC, t0, "eth1", "j" * 32)
    assert state_of(db.last_wake(MAC), t0 + 1, 300.0) == "sent"
    assert wakes.seen("52:54:00:aa:00:02", t0 + 5, "boot") is None  # another PC
    assert wakes.seen(MAC, t0 - 1, "dhcp") is None  # older than the packet
    assert wakes.seen(MAC, t0 + 12.5, "boot") == 12.5
    assert wakes.seen(MAC, t0 + 13, "dhcp") is None  # confirmed once
    assert seen == [(12.5, "boot")]
    shown = view(db.last_wake(MAC), t0 + 20, 300.0)
    assert shown is not None
    assert (shown["state"], shown["via"], shown["seconds"]) == ("confirmed", "boot", 12.5)


def test_a_wake_without_a_request_in_time_is_unconfirmed(tmp_path):
    db = _DB(tmp_path).db
    wakes = Wakes(db, timeout=60.0)
    now = time.time()
    wakes.sent("pc-01", MAC, now - 10, "eth1", None)
    # A restart keeps what is pending (read back from the database).
    again = Wakes(db, timeout=60.0)
    assert again.pending() == [MAC]
    assert again.seen(MAC, now + 61, "boot") is None
    assert again.pending() == []
    shown = view(db.last_wake(MAC), now + 61, 60.0)
    assert shown is not None and shown["state"] == "unconfirmed" and shown["confirmed"] is None


def test_dnsmasq_log_names_the_macs_that_asked_for_an_address(tmp_path):
    log = tmp_path / "dnsmasq.log"
    log.write_text("")
    d = DnsmasqLog(str(log))
    d.poll()
    with log.open("a") as fh:
        fh.write(
            "Dec  7 10:00:01 dnsmasq-dhcp[9]: DHCPDISCOVER(eth1) 52:54:00:aa:00:01\n"
            "Dec  7 10:00:01 dnsmasq-dhcp[9]: DHCPOFFER(eth1) 10.213.0.101 52:54:00:aa:00:09\n"
            "Dec  7 10:00:02 dnsmasq-dhcp[9]: 123 DHCPREQUEST(eth1) 10.213.0.102 52:54:00:AA:00:02\n"
        )
    d.poll()
    assert d.seen == {MAC, "52:54:00:aa:00:02"}  # an OFFER is the server's, not the PC's
    d.poll()
    assert d.seen == set()


# -- privd --------------------------------------------------------------------------------


# No test here may send a packet on a real NIC: the inventory's boot interface is one
# no machine has (tests/integration/test_power_on_the_wire.py sends in a namespace of its own).
ABSENT_IF = ALL.replace("interface: eth1", "interface: ggtest-none0")


@pytest.fixture
def ops(tmp_path):
    assert ABSENT_IF != ALL
    app = inventory_app(tmp_path, HOSTS, ABSENT_IF)
    e = app.extensions["ggnet"]
    yield Ops(e.config, e.inventory, e.collector)
    e.close()


def test_privd_wakes_only_a_mac_of_its_inventory(ops):
    with pytest.raises(OpError, match="52:54:00:aa:00:99 is not the MAC of a client") as exc:
        ops.call("wake", {"mac": "52:54:00:AA:00:99"})
    assert exc.value.status == 404
    with pytest.raises(OpError, match=r"args\.mac: 'ff:ff:ff:ff:ff:ff' is the broadcast"):
        ops.call("wake", {"mac": "ff:ff:ff:ff:ff:ff"})
    with pytest.raises(OpError, match="args: wake does not take interface"):
        ops.call("wake", {"mac": MAC, "interface": "eth0"})
    # pc-01's MAC: the packet would leave from the inventory's interface, absent here.
    with pytest.raises(OpError, match=r"wake pc-01: .*'ggtest-none0' is not an interface") as exc:
        ops.call("wake", {"mac": MAC})
    assert exc.value.status == 409


def test_privd_powers_only_a_pc_with_a_bmc(ops):
    with pytest.raises(OpError, match="pc-01: the inventory names no BMC"):
        ops.call("power", {"client": "pc-01", "action": "off"})
    with pytest.raises(OpError, match=r"args\.action: 'reboot'"):
        ops.call("power", {"client": "pc-01", "action": "reboot"})
    with pytest.raises(OpError, match="'pc-99' is not a client"):
        ops.call("power", {"client": "pc-99", "action": "on"})


def test_privd_runs_no_playbook_for_a_power_job(ops):
    with pytest.raises(OpError, match="kind: 'power' runs no playbook"):
        ops.call(
            "run_job",
            {"job_id": "0" * 32, "kind": "power", "extravars": {"op": "wake", "client": "pc-01"}},
        )


# -- the API ------------------------------------------------------------------------------


@pytest.fixture
def app(tmp_path):
    a = inventory_app(tmp_path, HOSTS, ABSENT_IF)
    yield a
    a.extensions["ggnet"].close()


def test_wake_is_an_operators_job_of_kind_power(app):
    tokens = role_tokens(app, "viewer", "operator")
    client = app.test_client()
    assert (
        client.post("/api/machines/pc-01/wake", headers=bearer(tokens["viewer"])).status_code == 403
    )
    resp = client.post("/api/machines/pc-99/wake", headers=bearer(tokens["operator"]))
    assert resp.status_code == 404 and "pc-99" in resp.get_json()["error"]
    resp = client.post("/api/machines/pc-01/wake", headers=bearer(tokens["operator"]))
    assert resp.status_code == 202, resp.get_json()
    job = resp.get_json()
    assert (job["kind"], job["playbook"]) == ("power", "privd:power")
    assert job["extravars"] == {"op": "wake", "client": "pc-01"}
    # Pressed again while it waits: the same job, not a second packet in the queue.
    again = client.post("/api/machines/pc-01/wake", headers=bearer(tokens["operator"]))
    assert again.status_code == 202 and again.get_json()["id"] == job["id"]
    assert app.extensions["ggnet"].db.count_jobs("queued") == 1
    body = client.get("/api/machines/pc-01", headers=bearer(tokens["viewer"])).get_json()
    assert body["power"] == {"bmc": False, "wake": None}


def test_the_machine_view_shows_the_wake_and_metrics_its_time(app):
    tokens = role_tokens(app, "viewer")
    e = app.extensions["ggnet"]
    now = time.time()
    e.wakes.sent("pc-01", MAC, now - 7.0, "eth1", "a" * 32)
    client = app.test_client()
    wake = client.get("/api/machines/pc-01", headers=bearer(tokens["viewer"])).get_json()["power"]
    assert wake["wake"]["state"] == "sent" and wake["wake"]["interface"] == "eth1"
    # The PC's boot request confirms it (the script path, from the PC's own address).
    e.wakes.seen(MAC, now, "boot")
    listed = client.get("/api/machines", headers=bearer(tokens["viewer"])).get_json()["machines"]
    wake = listed[0]["power"]["wake"]
    assert (wake["state"], wake["via"]) == ("confirmed", "boot")
    assert 6.9 < wake["seconds"] < 7.1
    text = client.get("/metrics").get_data(as_text=True)
    fams = {f.name: f for f in text_string_to_metric_families(text)}
    samples = {
        (s.name, s.labels.get("via"), s.labels.get("le")): s.value
        for s in fams["ggnet_wake_to_request_seconds"].samples
    }
    assert samples[("ggnet_wake_to_request_seconds_count", "boot", None)] == 1
    assert samples[("ggnet_wake_to_request_seconds_bucket", "boot", "5.0")] == 0
    assert samples[("ggnet_wake_to_request_seconds_bucket", "boot", "10.0")] == 1
    assert samples[("ggnet_wake_to_request_seconds_count", "dhcp", None)] == 0


def test_power_needs_an_action_and_a_bmc(app):
    tokens = role_tokens(app, "operator")
    client = app.test_client()
    h = bearer(tokens["operator"])
    resp = client.post("/api/machines/pc-01/power", json={"action": "reboot"}, headers=h)
    assert resp.status_code == 400 and "body.action: 'reboot'" in resp.get_json()["error"]
    resp = client.post("/api/machines/pc-01/power", json={"action": "off"}, headers=h)
    assert resp.status_code == 409 and "names no BMC" in resp.get_json()["error"]
    resp = client.post("/api/machines/pc-01/wake", json={"mac": MAC}, headers=h)
    assert resp.status_code == 400 and "unknown field(s) mac" in resp.get_json()["error"]
