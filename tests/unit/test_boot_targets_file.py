"""The file the ggnet_api role writes (filter ggnet_boot_targets) is the file the API
reads (ggnet_api.converged): one contract, checked from both ends."""

from __future__ import annotations

import importlib.util
import json

import pytest
from ggnet import chap
from ggnet.inventory import REPO_ROOT, load_inventory

from ggnet_api import converged

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
