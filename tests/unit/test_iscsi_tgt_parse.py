"""tgtadm output parsing, the persisted configuration, and the driver ggnet_targets picks."""

from __future__ import annotations

import contextlib
import os
import stat

import pytest
from ggnet import iscsi_tgt, iscsi_tgt_admin, iscsi_tgt_conf
from ggnet.iscsi import desired_targets, make_driver
from ggnet.iscsi_types import UNKNOWN_SECRET, IscsiError

pytestmark = pytest.mark.unit

P = "iqn.2025-01.lan.ggnet"

# As printed by tgt 1.0.85 with one live session (trimmed of per-LUN details that
# the parser must skip anyway).
SHOW = f"""\
Target 1: {P}:target.pc-01
    System information:
        Driver: iscsi
        State: ready
    I_T nexus information:
        I_T nexus: 3
            Initiator: {P}:initiator.pc-01 alias: pc-01
            Connection: 0
                IP Address: 10.214.0.2
    LUN information:
        LUN: 0
            Type: controller
            SCSI ID: IET     00010000
            Backing store type: null
            Backing store path: None
            Backing store flags:
        LUN: 1
            Type: disk
            Size: 67 MB, Block size: 512
            Backing store type: rdwr
            Backing store path: /wb/pc-01/system.img
            Backing store flags:
        LUN: 2
            Type: disk
            Backing store type: rdwr
            Backing store path: /wb/pc-01/game.img
            Backing store flags:
    Account information:
        {P}:initiator.pc-01
        mutual-user (outgoing)
    ACL information:
        255.255.255.255/32
        {P}:initiator.pc-01
Target 2: {P}:target.pc-02
    System information:
        Driver: iscsi
        State: ready
    I_T nexus information:
    LUN information:
        LUN: 0
            Type: controller
            Backing store path: None
        LUN: 1
            Type: disk
            Backing store path: /wb/pc-02/system.img
    Account information:
    ACL information:
        ALL
        {P}:initiator.pc-02
"""


def test_parse_show_keeps_sessions_disks_accounts_and_acls():
    t1, t2 = iscsi_tgt.parse_show(SHOW)
    assert (t1.tid, t1.iqn) == (1, f"{P}:target.pc-01")
    assert t1.sessions == [f"{P}:initiator.pc-01"]
    assert t1.luns == {1: "/wb/pc-01/system.img", 2: "/wb/pc-01/game.img"}
    assert t1.accounts == [f"{P}:initiator.pc-01"]
    assert t2.sessions == [] and t2.luns == {1: "/wb/pc-02/system.img"}
    assert t2.acls == ["ALL", f"{P}:initiator.pc-02"]


def test_model_ignores_our_closed_address_rule_but_not_all(tmp_path):
    model = iscsi_tgt.to_model(iscsi_tgt.parse_show(SHOW), str(tmp_path / "none.conf"))
    pc1, pc2 = model[f"{P}:target.pc-01"], model[f"{P}:target.pc-02"]
    assert pc1.initiator == f"{P}:initiator.pc-01" and pc1.extra_initiators == []
    assert [lun.path for lun in pc1.luns] == ["/wb/pc-01/system.img", "/wb/pc-01/game.img"]
    # No persisted secret to compare with: unknown, so the plan resets it.
    assert pc1.chap_secret == UNKNOWN_SECRET
    assert pc2.extra_initiators == ["ALL"] and pc2.chap_user is None


def test_login_keys_are_parsed_per_target_and_reach_the_model(tmp_path):
    params = iscsi_tgt_admin.parse_params(
        "Target 1:\nnop_interval=0\nMaxRecvDataSegmentLength=8192\nInitialR2T=Yes\n"
        "Target 2:\nMaxRecvDataSegmentLength=262144\n"
    )
    assert params == {
        1: {"nop_interval": "0", "MaxRecvDataSegmentLength": "8192", "InitialR2T": "Yes"},
        2: {"MaxRecvDataSegmentLength": "262144"},
    }
    found = iscsi_tgt.parse_show(SHOW)
    for t in found:
        t.params = params[t.tid]
    model = iscsi_tgt.to_model(found, str(tmp_path / "none.conf"))
    assert model[f"{P}:target.pc-01"].params["InitialR2T"] == "Yes"


def test_login_keys_of_every_target_come_from_one_shell(tmp_path):
    # A stand-in for tgtadm that prints the keys of the tid it is asked about.
    fake = tmp_path / "tgtadm"
    fake.write_text(
        '#!/bin/sh\nfor a; do last=$a; done\necho "seen $*" >> "$0.log"\n'
        'echo "MaxBurstLength=$((last * 1000))"\n'
    )
    fake.chmod(0o755)
    tgtadm = iscsi_tgt_admin.Tgtadm(control_port=21000, binary=str(fake))
    assert tgtadm.show_params([3, 7]) == {
        3: {"MaxBurstLength": "3000"},
        7: {"MaxBurstLength": "7000"},
    }
    calls = (tmp_path / "tgtadm.log").read_text().splitlines()
    assert calls == [
        f"seen -C 21000 --lld iscsi --op show --mode target --tid {tid}" for tid in (3, 7)
    ]
    assert tgtadm.show_params([]) == {}
    many = tgtadm.show_params(list(range(1, 101)))
    assert many == {tid: {"MaxBurstLength": str(tid * 1000)} for tid in range(1, 101)}
    fake.write_text("#!/bin/sh\necho 'tgtadm: can not find the target' >&2\nexit 22\n")
    with pytest.raises(IscsiError, match="can not find the target"):
        tgtadm.show_params([1])


def test_conf_round_trip_is_private_and_carries_the_secret(tmp_path):
    wanted = desired_targets(
        [
            {
                "name": "pc-01",
                "target_iqn": f"{P}:target.pc-01",
                "initiator_iqn": f"{P}:initiator.pc-01",
                "luns": [{"path": "/wb/pc-01/system.img"}, {"path": "/wb/pc-01/game.img"}],
                "chap_secret": "Abcdefgh-1234",
            }
        ]
    )
    path = tmp_path / "conf.d" / "ggnet.conf"
    assert iscsi_tgt_conf.write_conf(str(path), iscsi_tgt_conf.render_conf(wanted), check_mode=True)
    assert not path.exists()
    assert iscsi_tgt_conf.write_conf(str(path), iscsi_tgt_conf.render_conf(wanted))
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    assert not iscsi_tgt_conf.write_conf(str(path), iscsi_tgt_conf.render_conf(wanted))
    text = path.read_text()
    assert "lun 1" in text and "lun 2" in text and "initiator-address 255.255.255.255/32" in text
    # Restored by tgt-admin at start, so a restarted tgtd offers the same login keys.
    assert "    MaxXmitDataSegmentLength 262144\n" in text and "    InitialR2T No\n" in text
    assert iscsi_tgt_conf.read_conf_secrets(str(path)) == {
        f"{P}:target.pc-01": {"incominguser": (f"{P}:initiator.pc-01", "Abcdefgh-1234")}
    }
    # A world-readable copy (someone chmod'ed it) is rewritten private.
    os.chmod(path, 0o644)
    assert iscsi_tgt_conf.write_conf(str(path), iscsi_tgt_conf.render_conf(wanted))
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600


def test_tgtadm_errors_mask_the_secret():
    tgtadm = iscsi_tgt_admin.Tgtadm(binary="false")
    with pytest.raises(IscsiError) as err:
        tgtadm.run(
            "--op",
            "new",
            "--mode",
            "account",
            "--password",
            "Abcdefgh-1234",
            secret="Abcdefgh-1234",
        )
    assert "Abcdefgh-1234" not in str(err.value) and "********" in str(err.value)


def test_missing_tgtadm_says_what_to_install():
    with pytest.raises(IscsiError, match="install the tgt package"):
        iscsi_tgt_admin.Tgtadm(binary="/nonexistent/tgtadm").run("--op", "show")


# The plan ggnet_targets applies (new targets, refusals under a live session, masked
# secrets) is tested in test_iscsi_plan.py, its run in test_iscsi_converge.py, the
# module itself through ansible-playbook in tests/integration/test_iscsi_tgt.py.


@pytest.mark.parametrize("backend", ["tgt", "lio"])
def test_make_driver_takes_both_backends_options(backend):
    # ggnet_targets hands over every option it declares, for either backend.
    options = dict(
        control_port=None, netns=None, conf_path=None, savefile=None, portal="0.0.0.0", port=3260
    )
    drv = make_driver(backend, **options)
    assert type(drv).__module__.rsplit(".", 1)[-1] == f"iscsi_{backend}"


class _FakeTgtd:
    """A stand-in for tgtd's management socket: answers each request with answer(req)."""

    def __init__(self, path, answer):
        import socket
        import threading

        self.requests = []
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.bind(str(path))
        self.sock.listen(64)
        self.answer = answer
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self):
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            with conn:
                req = b""
                while len(req) < iscsi_tgt_admin._IPC_REQ.size:
                    chunk = conn.recv(iscsi_tgt_admin._IPC_REQ.size - len(req))
                    if not chunk:
                        break
                    req += chunk
                fields = iscsi_tgt_admin._IPC_REQ.unpack(req)
                self.requests.append(fields)
                with contextlib.suppress(OSError):  # the client gave up on this window
                    conn.sendall(self.answer(fields))

    def close(self):
        self.sock.close()


def _rsp(text, err=0):
    body = text.encode()
    return iscsi_tgt_admin._IPC_RSP.pack(err, iscsi_tgt_admin._IPC_RSP.size + len(body)) + body


def _keys_text(tid):
    return (
        f"nop_interval=0\nMaxRecvDataSegmentLength={tid * 8192}\n"
        "MaxBurstLength=262144\nInitialR2T=Yes\n"
    )


def _fake_tgtadm(tmp_path, monkeypatch):
    fake = tmp_path / "tgtadm"
    fake.write_text(
        '#!/bin/sh\nfor a; do last=$a; done\necho "seen $*" >> "$0.log"\n'
        'echo "MaxRecvDataSegmentLength=$((last * 8192))"\n'
    )
    fake.chmod(0o755)
    # The socket is used only by the tgtadm the driver would run by default.
    monkeypatch.setattr(iscsi_tgt_admin, "TGTADM", str(fake))
    monkeypatch.setattr(iscsi_tgt_admin, "IPC_PATH", str(tmp_path / "socket.{port}"))
    return iscsi_tgt_admin.Tgtadm(control_port=21000, binary=str(fake))


def test_login_keys_come_from_the_management_socket_as_tgtadm_asks(tmp_path, monkeypatch):
    tgtadm = _fake_tgtadm(tmp_path, monkeypatch)
    server = _FakeTgtd(tmp_path / "socket.21000", lambda f: _rsp(_keys_text(f[4])))
    try:
        tids = list(range(1, 41))  # more than one window in flight
        got = tgtadm.show_params(tids)
    finally:
        server.close()
    assert got == {
        tid: {
            "nop_interval": "0",
            "MaxRecvDataSegmentLength": str(tid * 8192),
            "MaxBurstLength": "262144",
            "InitialR2T": "Yes",
        }
        for tid in tids
    }
    # Exactly tgtadm's request: --mode target --op show --lld iscsi --tid N, no LUN.
    assert sorted(f[4] for f in server.requests) == tids
    mode, op, lld, length, _, sid, lun, *rest = server.requests[0]
    assert (mode, op, lld.rstrip(b"\0"), length, sid, lun) == (
        1, 2, b"iscsi", 120, 0, (1 << 64) - 1,
    )  # fmt: skip
    assert rest == [0] * 6
    assert not (tmp_path / "tgtadm.log").exists()  # no tgtadm process at all


@pytest.mark.parametrize(
    "answer",
    [
        lambda f: _rsp("", err=15),  # tgtd refuses the request (another tgt's layout)
        lambda f: _rsp("Target 1: something else\n"),  # not the keys tgtadm prints
        lambda f: iscsi_tgt_admin._IPC_RSP.pack(0, 4000),  # closes mid-answer
    ],
)
def test_an_unusable_socket_answer_falls_back_to_tgtadm(tmp_path, monkeypatch, answer):
    tgtadm = _fake_tgtadm(tmp_path, monkeypatch)
    server = _FakeTgtd(tmp_path / "socket.21000", answer)
    try:
        got = tgtadm.show_params([3, 7])
    finally:
        server.close()
    assert got == {
        3: {"MaxRecvDataSegmentLength": "24576"},
        7: {"MaxRecvDataSegmentLength": "57344"},
    }
    assert len((tmp_path / "tgtadm.log").read_text().splitlines()) == 2


def test_no_socket_falls_back_to_tgtadm(tmp_path, monkeypatch):
    tgtadm = _fake_tgtadm(tmp_path, monkeypatch)
    assert tgtadm.show_params([2]) == {2: {"MaxRecvDataSegmentLength": "16384"}}


def test_a_target_gone_while_read_is_an_error_not_a_fallback(tmp_path, monkeypatch):
    tgtadm = _fake_tgtadm(tmp_path, monkeypatch)
    server = _FakeTgtd(tmp_path / "socket.21000", lambda f: _rsp("", err=4))
    try:
        with pytest.raises(IscsiError, match="vanished"):
            tgtadm.show_params([5])
    finally:
        server.close()
    assert not (tmp_path / "tgtadm.log").exists()


def test_read_of_some_iqns_reads_only_their_keys(tmp_path, monkeypatch):
    driver = iscsi_tgt.Driver(conf_path=None)
    asked = []
    monkeypatch.setattr(driver.tgtadm, "run", lambda *a, **k: SHOW)
    monkeypatch.setattr(
        driver.tgtadm,
        "show_params",
        lambda tids: asked.append(list(tids)) or {t: {"InitialR2T": "No"} for t in tids},
    )
    found, live = driver.read(iqns=[f"{P}:target.pc-01", f"{P}:target.elsewhere"])
    assert asked == [[1]]
    assert list(found) == [f"{P}:target.pc-01"]
    assert live == {f"{P}:target.pc-01": [f"{P}:initiator.pc-01"]}
    # apply() still knows every target: a new one gets a tid after all of them.
    assert [t.tid for t in driver._raw] == [1, 2]
    found_all, _ = driver.read()
    assert asked[-1] == [1, 2] and set(found_all) == {f"{P}:target.pc-01", f"{P}:target.pc-02"}


def test_a_zvol_lun_is_opened_direct_live_and_at_restart_a_file_lun_is_not():
    """tgt's rdwr goes through the page cache, which a zvol's rollback does not empty:
    a zvol LUN is opened O_DIRECT, by tgtadm now and by tgt-admin at the next start."""
    from ggnet import iscsi_tgt

    assert iscsi_tgt.bs_flags("block") == ["--bsoflags", "direct"]
    assert iscsi_tgt.bs_flags("file") == []
    wanted = desired_targets(
        [
            {
                "name": "pc-01",
                "target_iqn": f"{P}:target.pc-01",
                "initiator_iqn": f"{P}:initiator.pc-01",
                "luns": [
                    {"path": "/dev/zvol/tank/writebacks/pc-01/system", "kind": "block"},
                    {"path": "/wb/pc-01/game.img", "kind": "file"},
                ],
            }
        ]
    )
    text = iscsi_tgt_conf.render_conf(wanted)
    zvol, game = text.split("<backing-store ")[1:]
    assert zvol.startswith("/dev/zvol/") and "        bsoflags direct\n" in zvol
    assert "bsoflags" not in game
