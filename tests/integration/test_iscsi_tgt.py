"""ggnet_targets against a real tgtd in a private netns, checked by real initiators.

libiscsi's iscsi-inq proves a login (or its refusal); qemu-io's iSCSI driver reads and
writes; a qemu-io left at its prompt is a live session that a converge must not drop.
"""

from __future__ import annotations

import os
import stat
import subprocess

import pytest
from ggnet.iscsi import SESSION_PARAMS, lun_number, san_uri
from ggnet.net import initiator_iqn, target_iqn
from ggnet_testing.playbook import run_module
from ggnet_testing.tgt_netns import ENV_C, PREFIX, nsexec, tgt_in_netns

pytestmark = pytest.mark.integration

SECRET = "s3cret-Chap-01"  # 14 characters
OTHER_SECRET = "0ther-Secret-2"
LUN = lun_number("tgt", 0)


@pytest.fixture
def tgt(tmp_path):
    with tgt_in_netns(tmp_path) as t:
        yield t


def make_disk(tmp_path, name, size=16 << 20):
    path = tmp_path / f"{name}.img"
    with open(path, "wb") as fh:
        fh.truncate(size)
    return str(path)


def client(tmp_path, name, chap=True, game=False, secret=SECRET):
    luns = [{"path": make_disk(tmp_path, f"{name}-system"), "kind": "file"}]
    if game:
        luns.append({"path": make_disk(tmp_path, f"{name}-game"), "kind": "file"})
    spec = {
        "name": name,
        "target_iqn": target_iqn(name, PREFIX),
        "initiator_iqn": initiator_iqn(name, PREFIX),
        "luns": luns,
    }
    if chap:
        spec["chap_secret"] = secret
    return spec


def args(tgt, tmp_path, targets, **extra):
    return {
        "backend": "tgt",
        "control_port": tgt.control_port,
        "netns": tgt.netns,
        "conf_path": str(tmp_path / "conf.d" / "ggnet.conf"),
        "iqn_prefix": PREFIX,
        "targets": targets,
        **extra,
    }


def creds(spec, secret=None):
    return {"user": spec["initiator_iqn"], "secret": secret or spec.get("chap_secret")}


def login(tgt, spec, initiator=None, secret=None, lun=LUN):
    c = creds(spec, secret) if spec.get("chap_secret") or secret else {}
    return tgt.inq(initiator or spec["initiator_iqn"], spec["target_iqn"], lun, **c)


def test_login_read_write_through_converged_target(tgt, tmp_path):
    pc = client(tmp_path, "pc-01", game=True)
    result, _ = run_module("ggnet_targets", args(tgt, tmp_path, [pc]), workdir=tmp_path)
    assert result["changed"], result
    ops = [a["op"] for a in result["actions"]]
    assert ops.count("add_lun") == 2 and "set_chap" in ops

    assert login(tgt, pc).returncode == 0
    io = tgt.qemu_io(
        ["write -P 0xab 1M 2M", "read -P 0xab 1M 2M"],
        pc["initiator_iqn"],
        pc["target_iqn"],
        LUN,
        **creds(pc),
    )
    assert io.returncode == 0 and "Pattern verification failed" not in io.stdout, (
        io.stdout + io.stderr
    )
    with open(pc["luns"][0]["path"], "rb") as fh:
        fh.seek(1 << 20)
        assert fh.read(2 << 20) == b"\xab" * (2 << 20)
    # The game disk is the next LUN, backed by its own file.
    io = tgt.qemu_io(
        ["write -P 0xcd 0 64k"], pc["initiator_iqn"], pc["target_iqn"], LUN + 1, **creds(pc)
    )
    assert io.returncode == 0, io.stdout + io.stderr
    with open(pc["luns"][1]["path"], "rb") as fh:
        assert fh.read(65536) == b"\xcd" * 65536
    # The boot path's URI names the same LUN the initiator just used.
    assert san_uri("127.0.0.1", pc["target_iqn"], "tgt").endswith(f":{LUN}:{pc['target_iqn']}")


def test_acl_refuses_another_initiator(tgt, tmp_path):
    pc1, pc2 = client(tmp_path, "pc-01", chap=False), client(tmp_path, "pc-02", chap=False)
    run_module("ggnet_targets", args(tgt, tmp_path, [pc1, pc2]), workdir=tmp_path)
    assert login(tgt, pc1).returncode == 0
    refused = login(tgt, pc1, initiator=pc2["initiator_iqn"])
    assert refused.returncode != 0
    assert "Login Failed" in refused.stdout + refused.stderr
    # An address rule admits anyone whatever the name rule says: a converge removes it.
    tgt.tgtadm("--op", "bind", "--mode", "target", "--tid", "1", "--initiator-address", "ALL")
    assert login(tgt, pc1, initiator=pc2["initiator_iqn"]).returncode == 0
    closed, _ = run_module("ggnet_targets", args(tgt, tmp_path, [pc1, pc2]), workdir=tmp_path)
    assert closed.get("actions") == [
        {"op": "remove_acl", "target": pc1["target_iqn"], "initiator": "ALL"}
    ], closed.get("msg")
    assert login(tgt, pc1, initiator=pc2["initiator_iqn"]).returncode != 0
    assert login(tgt, pc1).returncode == 0


def test_wrong_chap_secret_refused_right_one_accepted(tgt, tmp_path):
    pc = client(tmp_path, "pc-01")
    run_module("ggnet_targets", args(tgt, tmp_path, [pc]), workdir=tmp_path)
    wrong = login(tgt, pc, secret="Wrong-secret-1")
    assert wrong.returncode != 0 and "Authentication failure" in wrong.stdout + wrong.stderr
    no_chap = tgt.inq(pc["initiator_iqn"], pc["target_iqn"], LUN)
    assert no_chap.returncode != 0
    assert login(tgt, pc).returncode == 0


def test_mutual_chap_target_proves_itself_and_a_wrong_target_secret_is_refused(tgt, tmp_path):
    # The target's own account is bound --outgoing: libiscsi checks the target's answer
    # against target_user/target_password, as iPXE does with reverse-username/-password.
    pc = {**client(tmp_path, "pc-01"), "chap_mutual_secret": OTHER_SECRET}
    result, _ = run_module("ggnet_targets", args(tgt, tmp_path, [pc]), workdir=tmp_path)
    assert "set_chap" in [a["op"] for a in result["actions"]], result
    assert f"{pc['target_iqn']} (outgoing)" in tgt.show()

    def mutual_login(target_secret):
        url = tgt.url(pc["target_iqn"], LUN, pc["initiator_iqn"], SECRET)
        url += f"?target_user={pc['target_iqn']}&target_password={target_secret}"
        argv = nsexec(tgt.netns, "iscsi-inq", "-i", pc["initiator_iqn"], url)
        return subprocess.run(argv, capture_output=True, text=True, env=ENV_C, timeout=60)

    assert mutual_login(OTHER_SECRET).returncode == 0
    assert mutual_login("Wrong-target-1").returncode != 0
    # A second converge reads the outgoing secret back from the conf: nothing to do.
    again, _ = run_module("ggnet_targets", args(tgt, tmp_path, [pc]), workdir=tmp_path)
    assert not again["changed"], again["actions"]


def test_second_converge_reports_no_change(tgt, tmp_path):
    pcs = [client(tmp_path, "pc-01", game=True), client(tmp_path, "pc-02", chap=False)]
    first, _ = run_module("ggnet_targets", args(tgt, tmp_path, pcs), workdir=tmp_path)
    assert first["changed"]
    second, _ = run_module("ggnet_targets", args(tgt, tmp_path, pcs), workdir=tmp_path)
    assert not second["changed"] and second["actions"] == [], second


def test_check_mode_changes_nothing(tgt, tmp_path):
    pc = client(tmp_path, "pc-01")
    result, _ = run_module("ggnet_targets", args(tgt, tmp_path, [pc]), check=True, workdir=tmp_path)
    assert result["changed"] and result["actions"]
    assert "Target " not in tgt.show()
    assert not (tmp_path / "conf.d" / "ggnet.conf").exists()


def test_reconcile_keeps_sessions_of_unchanged_clients(tgt, tmp_path):
    pc1, pc2, pc3 = (client(tmp_path, n) for n in ("pc-01", "pc-02", "pc-03"))
    run_module("ggnet_targets", args(tgt, tmp_path, [pc1, pc2]), workdir=tmp_path)
    with tgt.session(pc1["initiator_iqn"], pc1["target_iqn"], LUN, **creds(pc1)) as sess:
        nexus_before = [line for line in tgt.show().splitlines() if "I_T nexus:" in line]
        # pc-02 leaves the room, pc-03 joins; pc-01 is running and not concerned.
        result, _ = run_module("ggnet_targets", args(tgt, tmp_path, [pc1, pc3]), workdir=tmp_path)
        assert result["changed"], result
        touched = {a["target"] for a in result["actions"]}
        assert touched == {pc2["target_iqn"], pc3["target_iqn"]}
        shown = tgt.show()
        assert pc2["target_iqn"] not in shown and pc3["target_iqn"] in shown
        assert [line for line in shown.splitlines() if "I_T nexus:" in line] == nexus_before
        assert sess.alive()
        # The very same session still does I/O.
        sess.proc.stdin.write("write -P 0x5a 0 4k\nread -P 0x5a 0 4k\n")
        sess.proc.stdin.flush()
    with open(pc1["luns"][0]["path"], "rb") as fh:
        assert fh.read(4096) == b"\x5a" * 4096
    assert login(tgt, pc3).returncode == 0


def test_live_session_blocks_change_unless_forced(tgt, tmp_path):
    pc1 = client(tmp_path, "pc-01")
    run_module("ggnet_targets", args(tgt, tmp_path, [pc1]), workdir=tmp_path)
    moved = {**pc1, "luns": [{"path": make_disk(tmp_path, "pc-01-elsewhere"), "kind": "file"}]}
    with tgt.session(pc1["initiator_iqn"], pc1["target_iqn"], LUN, **creds(pc1)):
        before = tgt.show()
        refused, _ = run_module("ggnet_targets", args(tgt, tmp_path, [moved]), workdir=tmp_path)
        assert refused.get("failed"), refused
        assert pc1["initiator_iqn"] in refused["msg"] and "force" in refused["msg"]
        removed, _ = run_module("ggnet_targets", args(tgt, tmp_path, []), workdir=tmp_path)
        assert removed.get("failed") and pc1["initiator_iqn"] in removed["msg"]
        assert tgt.show() == before
        forced, _ = run_module(
            "ggnet_targets", args(tgt, tmp_path, [moved], force=True), workdir=tmp_path
        )
        assert forced["changed"] and not forced.get("failed"), forced
        assert moved["luns"][0]["path"] in tgt.show()


def test_secrets_stay_out_of_output_and_config_is_private(tgt, tmp_path):
    pc1, pc2 = client(tmp_path, "pc-01"), client(tmp_path, "pc-02", secret=OTHER_SECRET)
    result, output = run_module(
        "ggnet_targets", args(tgt, tmp_path, [pc1, pc2]), diff=True, verbosity=3, workdir=tmp_path
    )
    assert result["changed"]
    # Rotate one secret: the diff shows a change, masked.
    rotated = {**pc2, "chap_secret": "Rotated-Secr3t"}
    result2, output2 = run_module(
        "ggnet_targets",
        args(tgt, tmp_path, [pc1, rotated]),
        diff=True,
        verbosity=3,
        workdir=tmp_path,
    )
    assert [a["op"] for a in result2["actions"]] == ["set_chap"]
    for text in (output, output2, repr(result), repr(result2)):
        for secret in (SECRET, OTHER_SECRET, "Rotated-Secr3t"):
            assert secret not in text
    conf = tmp_path / "conf.d" / "ggnet.conf"
    assert stat.S_IMODE(os.stat(conf).st_mode) == 0o600
    assert login(tgt, pc2, secret="Rotated-Secr3t").returncode == 0
    assert login(tgt, pc2, secret=OTHER_SECRET).returncode != 0


def test_bad_input_changes_nothing(tgt, tmp_path):
    good = client(tmp_path, "pc-01")
    bad = client(tmp_path, "pc-02", secret="short")
    result, output = run_module("ggnet_targets", args(tgt, tmp_path, [good, bad]), workdir=tmp_path)
    assert result.get("failed")
    assert "pc-02" in result["msg"] and "12 to 16" in result["msg"]
    assert "short" not in output.replace("12 to 16", "")
    assert "Target " not in tgt.show()


def test_persisted_configuration_restores_after_tgt_restart(tgt, tmp_path):
    pcs = [client(tmp_path, "pc-01", game=True), client(tmp_path, "pc-02", chap=False)]
    run_module("ggnet_targets", args(tgt, tmp_path, pcs), workdir=tmp_path)
    before = tgt.show()
    tgt.stop()
    tgt.start()
    assert "Target " not in tgt.show()
    # What tgt's service runs at start (ExecStartPost=tgt-admin -e -c targets.conf).
    conf = tmp_path / "conf.d" / "ggnet.conf"
    subprocess.run(
        [
            "nsenter",
            f"--net=/var/run/netns/{tgt.netns}",
            "tgt-admin",
            "-C",
            str(tgt.control_port),
            "-e",
            "-c",
            str(conf),
        ],
        check=True,
        capture_output=True,
    )
    assert _same_targets(tgt.show(), before)
    assert login(tgt, pcs[0]).returncode == 0
    assert login(tgt, pcs[0], secret="Wrong-secret-1").returncode != 0
    assert login(tgt, pcs[1]).returncode == 0
    assert login(tgt, pcs[1], initiator=pcs[0]["initiator_iqn"]).returncode != 0
    again, _ = run_module("ggnet_targets", args(tgt, tmp_path, pcs), workdir=tmp_path)
    assert not again["changed"], again


def _same_targets(a: str, b: str) -> bool:
    from ggnet.iscsi_tgt import parse_show

    def key(text):
        return sorted(
            (
                t.iqn,
                sorted(t.luns.items()),
                sorted(a for a in t.acls if a.startswith("iqn.")),
                sorted(t.accounts),
            )
            for t in parse_show(text)
        )

    return key(a) == key(b)


def _keys(tgt, tid):
    from ggnet.iscsi_tgt_admin import parse_params

    return parse_params(
        f"Target {tid}:\n"
        + tgt.tgtadm("--op", "show", "--mode", "target", "--tid", str(tid)).stdout
    )[tid]


def test_login_keys_are_set_and_drift_is_undone_under_a_live_session(tgt, tmp_path):
    pc = client(tmp_path, "pc-01")
    run_module("ggnet_targets", args(tgt, tmp_path, [pc]), workdir=tmp_path)
    keys = _keys(tgt, 1)
    assert {k: keys.get(k) for k in SESSION_PARAMS} == SESSION_PARAMS
    with tgt.session(pc["initiator_iqn"], pc["target_iqn"], LUN, **creds(pc)) as sess:
        # Someone puts tgt's default back by hand while the client runs.
        tgt.tgtadm(
            "--op", "update", "--mode", "target", "--tid", "1",
            "--name", "MaxXmitDataSegmentLength", "--value", "8192",
        )  # fmt: skip
        result, _ = run_module("ggnet_targets", args(tgt, tmp_path, [pc]), workdir=tmp_path)
        assert not result.get("failed"), result.get("msg")
        assert result["actions"] == [{"op": "set_params", "target": pc["target_iqn"]}]
        assert _keys(tgt, 1)["MaxXmitDataSegmentLength"] == "262144"
        assert sess.alive()
        sess.proc.stdin.write("write -P 0x6b 0 64k\nread -P 0x6b 0 64k\n")
        sess.proc.stdin.flush()
    with open(pc["luns"][0]["path"], "rb") as fh:
        assert fh.read(65536) == b"\x6b" * 65536
    again, _ = run_module("ggnet_targets", args(tgt, tmp_path, [pc]), workdir=tmp_path)
    assert not again["changed"], again


def test_live_sessions_are_reported(tgt, tmp_path):
    pc = client(tmp_path, "pc-01", chap=False)
    run_module("ggnet_targets", args(tgt, tmp_path, [pc]), workdir=tmp_path)
    with tgt.session(pc["initiator_iqn"], pc["target_iqn"], LUN) as sess:
        result, _ = run_module(
            "ggnet_targets", args(tgt, tmp_path, [pc], persist=False), check=True, workdir=tmp_path
        )
        assert result["sessions"] == {pc["target_iqn"]: [pc["initiator_iqn"]]}
        assert sess.alive()


def test_socket_and_tgtadm_read_the_same_login_keys(tgt, tmp_path):
    from ggnet import iscsi_tgt, iscsi_tgt_admin

    pcs = [client(tmp_path, f"pc-{i:02}", chap=False) for i in range(1, 4)]
    run_module("ggnet_targets", args(tgt, tmp_path, pcs), workdir=tmp_path)
    # One target changed by hand, as someone at the server might.
    tgt.tgtadm(
        "--op", "update", "--mode", "target", "--tid", "2",
        "--name", "MaxBurstLength", "--value", "65536",
    )  # fmt: skip
    tgtadm = iscsi_tgt_admin.Tgtadm(tgt.control_port, tgt.netns)
    by_socket = tgtadm._ipc_params([1, 2, 3])
    assert by_socket == tgtadm._shell_params([1, 2, 3])
    assert by_socket[2]["MaxBurstLength"] == "65536"
    assert by_socket[1]["MaxBurstLength"] == SESSION_PARAMS["MaxBurstLength"]
    driver = iscsi_tgt.Driver(tgt.control_port, tgt.netns, None)
    found, _ = driver.read(iqns=[pcs[1]["target_iqn"]])
    assert list(found) == [pcs[1]["target_iqn"]]
    assert found[pcs[1]["target_iqn"]].params["MaxBurstLength"] == "65536"
    result, _ = run_module("ggnet_targets", args(tgt, tmp_path, pcs), workdir=tmp_path)
    assert result["actions"] == [{"op": "set_params", "target": pcs[1]["target_iqn"]}]
