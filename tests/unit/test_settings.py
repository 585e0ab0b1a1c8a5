"""The settings model (module_utils/ggnet/settings.py) and the rooms that apply it."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest
from ansible.errors import AnsibleFilterError
from ggnet import layout, model, settings

pytestmark = pytest.mark.unit

REPO = Path(__file__).resolve().parents[2]


def _filters():
    spec = importlib.util.spec_from_file_location("ggnet_filters", REPO / "filter_plugins/ggnet.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.FilterModule().filters()


def test_merged_puts_the_inventory_over_the_defaults():
    storage = settings.merged("ggnet_storage", {"disk_format": "file", "vdevs": ["/dev/vdb"]})
    assert storage["disk_format"] == "file" and storage["vdevs"] == ["/dev/vdb"]
    assert storage["reserve"] == settings.default("ggnet_storage", "reserve")
    assert settings.merged("ggnet_iscsi", None) == settings.DEFAULTS["ggnet_iscsi"]


def test_merged_never_hands_out_the_defaults_themselves():
    settings.merged("ggnet_storage", None)["pool"] = "changed"
    assert settings.default("ggnet_storage", "pool") == "ggpool"


def test_merged_refuses_a_non_mapping():
    with pytest.raises(TypeError, match="ggnet_storage must be a mapping"):
        settings.merged("ggnet_storage", ["pool"])
    with pytest.raises(model.ModelError):
        model.settings({"ggnet_iscsi": "lio"}, "ggnet_iscsi")


def test_the_layout_and_the_model_agree_on_disk_format():
    """The layout once fell back to `file` while the model said `zvol`."""
    assert layout.disk_format({}) == settings.default("ggnet_storage", "disk_format") == "zvol"
    assert model.settings({}, "ggnet_storage")["disk_format"] == "zvol"
    assert layout.pool({}) == "ggpool"


@pytest.mark.parametrize(
    ("key", "secret"),
    [("ggnet_iscsi.chap_secret", True), ("vault_password", True), ("ggnet_image", False)],
)
def test_secret_keys(key, secret):
    assert settings.is_secret_key(key) is secret


def test_the_settings_filter_merges_one_host_s_settings():
    class HostVars(dict):
        """Like Ansible's lazy hostvars[host]: read with .get, one variable at a time."""

    ggnet_settings = _filters()["ggnet_settings"]
    host = HostVars(ggnet_iscsi={"chap": True})
    assert ggnet_settings(host, "ggnet_iscsi") == {**settings.DEFAULTS["ggnet_iscsi"], "chap": True}
    assert ggnet_settings(HostVars(), "ggnet_network") == {"dhcp_mode": "full"}
    with pytest.raises(AnsibleFilterError, match="not one of"):
        ggnet_settings(host, "ggnet_images")
    with pytest.raises(AnsibleFilterError, match="must be a mapping"):
        ggnet_settings(HostVars(ggnet_storage="ggpool"), "ggnet_storage")
