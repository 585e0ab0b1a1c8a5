"""The file the ggnet_api role writes (filter ggnet_boot_targets) is the file the API
reads (ggnet_api.converged): one contract, checked from both ends."""

from __future__ import annotations

import importlib.util
import json

import pytest
from ggnet import chap
from ggnet.inventory import REPO_ROOT, load_inventory

from ggnet_api import converged
from ggnet_api.snapshot import build_snapshot, with_converged_targets

pytestmark = pytest.mark.unit


def _filters():
    spec = importlib.util.spec_from_file_location(
        "ggnet_filters", REPO_ROOT / "filter_plugins/ggnet.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.FilterModule().filters()


@pytest.mark.parametrize("backend", ["lio", "tgt"])
def test_what_the_role_writes_the_api_reads(tmp_path, backend):
    inventory = load_inventory(REPO_ROOT / "inventory" / "lab")
    hostvars = {name: dict(hv) for name, hv in inventory.hostvars.items()}
    hostvars["boot1"]["ggnet_iscsi"] = {**hostvars["boot1"]["ggnet_iscsi"], "backend": backend}
    written = _filters()["ggnet_boot_targets"](inventory.groups, hostvars, "boot1")
    path = tmp_path / "targets.json"
    path.write_text(json.dumps(written))
    read = converged.load(str(path))
    assert read["backend"] == backend
    assert set(read["chap"]) == {"pc-bios", "pc-uefi", "pc-pxe"}
    server_secret = hostvars["boot1"]["ggnet_iscsi"]["chap_secret"]
    for name, creds in read["chap"].items():
        # Each PC's own secret, derived as the iSCSI role's targets get it.
        secret = chap.pc_secret(server_secret, name)
        assert creds == {"user": f"iqn.2025-01.lan.ggnet:initiator.{name}", "secret": secret}
    assert len({c["secret"] for c in read["chap"].values()} | {server_secret}) == 4


def test_a_server_without_ggnet_iscsi_gets_the_default_backend(tmp_path):
    inventory = load_inventory(REPO_ROOT / "inventory" / "lab")
    hostvars = {name: dict(hv) for name, hv in inventory.hostvars.items()}
    del hostvars["boot1"]["ggnet_iscsi"]
    for name in ("pc-bios", "pc-uefi", "pc-pxe"):
        hostvars[name].pop("ggnet_iscsi", None)
    written = _filters()["ggnet_boot_targets"](inventory.groups, hostvars, "boot1")
    assert written == {"backend": "lio", "chap": {}}


def test_pcs_whose_secret_this_process_cannot_resolve_boot_with_the_targets_files(tmp_path):
    # On the server the API runs without root: the lab's password lookup (a vault, in
    # production) does not resolve there. The PCs must stay, with the credentials the
    # converge gave their targets; before, all three vanished from the boot path.
    inventory = load_inventory(REPO_ROOT / "inventory" / "lab")
    hostvars = {name: dict(hv) for name, hv in inventory.hostvars.items()}
    written = _filters()["ggnet_boot_targets"](inventory.groups, hostvars, "boot1")
    path = tmp_path / "targets.json"
    path.write_text(json.dumps(written))
    unresolved = {name: dict(hv) for name, hv in hostvars.items()}
    for hv in unresolved.values():
        if "ggnet_iscsi" in hv:
            hv["ggnet_iscsi"] = {k: v for k, v in hv["ggnet_iscsi"].items() if k != "chap_secret"}
    snap = build_snapshot(inventory.groups, unresolved, "boot1")
    assert set(snap.clients) == {"pc-bios", "pc-uefi", "pc-pxe"}
    assert snap.chap == {}
    assert len(snap.problems) == 3 and all("chap_secret" in p for p in snap.problems)
    served = with_converged_targets(snap, str(path))
    assert served.chap == written["chap"]
    assert served.problems == () and served.chap_unresolved == {}
    assert written["chap"]["pc-bios"]["secret"] in served.secrets
    # A PC the targets file does not know stays a problem, and gets no credentials.
    del written["chap"]["pc-pxe"]
    path.write_text(json.dumps(written))
    partial = with_converged_targets(snap, str(path))
    assert "pc-pxe" not in partial.chap and set(partial.chap_unresolved) == {"pc-pxe"}
    assert len(partial.problems) == 1 and partial.problems[0].startswith("pc-pxe")
